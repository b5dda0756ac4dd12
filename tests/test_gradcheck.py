"""tinyhw.gradcheck must catch wrong gradients, not only pass right ones."""
import numpy as np
import pytest

from tinyhw import Tensor
from tinyhw.autograd import Function
from tinyhw.gradcheck import GradcheckError, gradcheck


def _matmul(weight_gradient):
    """y = x @ w whose backward gives dL/dx right and dL/dw = weight_gradient(x, g): the
    right one is x.T @ g."""

    class MatMul(Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save(x, w)
            return x @ w

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved
            return g @ w.T, weight_gradient(x, g)
    return MatMul


def _matmul_with_wrong_weight_gradient(error):
    """y = x @ w whose backward scales dL/dw by (1 + error)."""
    return _matmul(lambda x, g: (x.T @ g) * (1 + error))


# dL/dw with the roles transposed: g.T @ x instead of x.T @ g (the shapes agree for square
# matrices)
_TransposedGradient = _matmul(lambda x, g: g.T @ x)


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
    # not seed 0: gradcheck draws its cotangent u from default_rng(0), and with x = u the
    # wrong g.T @ x equals the right x.T @ g (both x.T x)
    r = np.random.default_rng(1)
    with pytest.raises(GradcheckError, match="analytic .* numeric"):
        gradcheck(lambda x, w: _TransposedGradient.apply(x, w), [r.standard_normal((3, 3)),
                                                                 r.standard_normal((3, 3))])


@pytest.mark.parametrize("error", [1e-5, -1e-5])
def test_default_tolerance_catches_a_gradient_wrong_by_one_part_in_100_000(error):
    """float64 central differences are good to ~1e-9 here: the default tolerance must not
    let a gradient that is 1e-5 off pass (the old rtol 1e-5 on a scale of sum |g v| did)."""
    r = np.random.default_rng(1)     # not gradcheck's own seed 0 (see above)
    x, w = r.standard_normal((8, 16)), r.standard_normal((16, 12))
    fn = _matmul_with_wrong_weight_gradient(0.0)
    assert gradcheck(lambda a, b: fn.apply(a, b), [x, w])
    wrong = _matmul_with_wrong_weight_gradient(error)
    with pytest.raises(GradcheckError, match="analytic .* numeric"):
        gradcheck(lambda a, b: wrong.apply(a, b), [x, w])


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
