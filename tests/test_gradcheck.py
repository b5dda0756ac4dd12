"""tinyhw.gradcheck must catch wrong gradients, not only pass right ones."""
import numpy as np
import pytest

from tinyhw import Tensor
from tinyhw.autograd import Function
from tinyhw.gradcheck import GradcheckError, gradcheck


class _TransposedGradient(Function):
    """y = x @ w with a deliberately wrong backward for w (transposed roles)."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save(x, w)
        return x @ w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved
        return g @ w.T, (g.T @ x).T * 1.01


class _MissingFactor(Function):
    """y = x^3 with backward 3x (the x is missing)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * 3 * x


def test_directional_mode_catches_a_wrong_gradient():
    r = np.random.default_rng(0)
    with pytest.raises(GradcheckError, match="analytic .* numeric"):
        gradcheck(lambda x, w: _TransposedGradient.apply(x, w), [r.standard_normal((3, 3)),
                                                                 r.standard_normal((3, 3))])


def test_full_mode_reports_the_worst_element():
    with pytest.raises(GradcheckError, match=r"inputs\[0\]\[2\]"):
        gradcheck(lambda x: _MissingFactor.apply(x), [np.array([0.5, 1.0, 3.0])], mode="full")


def test_passes_for_a_correct_gradient_and_ignores_integer_inputs():
    x = np.random.default_rng(1).standard_normal(4)
    idx = np.array([3, 0])
    assert gradcheck(lambda t, i: (t * t)[i], [x, idx], mode="full")


def test_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda t: t * 2.0, [np.ones(3, np.float32)])


def test_accepts_tensor_inputs_and_nested_outputs():
    x = Tensor(np.array([1.0, 2.0]))
    assert gradcheck(lambda t: (t * 2.0, (t * t, None)), [x])
