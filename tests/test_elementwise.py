"""tinyhw.ops.elementwise: + - * / neg pow exp log cast."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw.functional as F
from tinyhw import Tensor
from tinyhw.gradcheck import gradcheck
from tinyhw.ops.elementwise import Cast
from tests.strategies import arrays, broadcastable_pair, shapes

BINARY = {
    "add": (F.add, np.add),
    "sub": (F.sub, np.subtract),
    "mul": (F.mul, np.multiply),
    "div": (F.div, np.divide),
}


@st.composite
def broadcast_operands(draw):
    (sa, sb), _ = draw(broadcastable_pair())
    a = draw(arrays(sa))
    b = draw(arrays(sb, 0.5, 2.0)) * draw(st.sampled_from([-1.0, 1.0]))  # |b| >= 0.5 for div
    return a, b


@given(st.sampled_from(sorted(BINARY)), broadcast_operands())
def test_binary_ops_gradcheck_with_broadcasting(name, operands):
    op, _ = BINARY[name]
    gradcheck(op, list(operands))


@given(st.sampled_from(sorted(BINARY)), broadcast_operands())
def test_binary_ops_match_numpy(name, operands):
    op, reference = BINARY[name]
    a, b = operands
    np.testing.assert_allclose(op(Tensor(a), Tensor(b)).data, reference(a, b), rtol=1e-12)


@given(arrays(shapes()), st.floats(-3, 3))
def test_python_scalars_on_either_side(a, s):
    x = Tensor(a)
    np.testing.assert_allclose((x + s).data, a + s)
    np.testing.assert_allclose((s - x).data, s - a)
    np.testing.assert_allclose((x * s).data, a * s)
    gradcheck(lambda t: 2.5 / (t * t + 1.0) - t * s, [a])


@given(arrays(shapes(), 0.2, 2.0), st.sampled_from([2, 3, 0.5, -1.5]))
def test_pow_by_constant(a, p):
    np.testing.assert_allclose(F.pow(Tensor(a), p).data, a ** p)
    gradcheck(lambda t: t ** p, [a])


@given(arrays(shapes(max_dims=2), 0.2, 2.0), st.data())
def test_pow_by_tensor_differentiates_base_and_exponent(a, data):
    b = data.draw(arrays(a.shape, -2.0, 2.0))      # one exponent per element
    np.testing.assert_allclose(F.pow(Tensor(a), Tensor(b)).data, a ** b)
    gradcheck(F.pow, [a, b])


@given(arrays(shapes()))
def test_exp_neg_gradcheck_and_values(a):
    np.testing.assert_allclose(F.exp(Tensor(a)).data, np.exp(a))
    np.testing.assert_array_equal(F.neg(Tensor(a)).data, -a)
    gradcheck(lambda t: F.neg(F.exp(t)), [a])


@given(arrays(shapes(), 0.1, 3.0))
def test_log_gradcheck_and_values(a):
    np.testing.assert_allclose(F.log(Tensor(a)).data, np.log(a))
    gradcheck(F.log, [a])


def test_cast_is_differentiable_between_floats():
    x = Tensor(np.array([1.5, 2.5]), requires_grad=True)
    y = F.cast(x, np.float32)
    assert y.dtype == np.float32
    (y * y).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad, [3.0, 5.0])


@given(arrays(shapes()))
def test_cast_gradcheck(a):
    """Cast's backward (dy converted back to x's dtype) in float64: the op itself, cast to the
    same dtype (F.cast would return x unchanged, so Cast.apply is called directly), times x so
    the gradient depends on x."""
    gradcheck(lambda t: Cast.apply(t, dtype=np.dtype(np.float64)) * t, [a])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        F.add(Tensor(np.ones((2, 3))), Tensor(np.ones(4)))
    with pytest.raises(TypeError, match="mul: b: expected a Tensor, got str"):
        F.mul(Tensor(np.ones(2)), "x")
    with pytest.raises(TypeError, match="exp: x: expected a floating-point tensor"):
        F.exp(Tensor(np.arange(3)))
    with pytest.raises(TypeError, match="cannot differentiate a cast"):
        F.cast(Tensor(np.ones(2), requires_grad=True), np.int64)
