"""tinyhw.ops.activation: relu, sigmoid, tanh, softmax, log_softmax."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw.functional as F
from tinyhw import Tensor
from tinyhw.gradcheck import gradcheck
from tinyhw.ops import activation, fast
from tinyhw.ops.fast import jit, relu_jit
from tests.routes import jit_test, params
from tests.strategies import arrays, away_from_zero, shapes


@pytest.mark.parametrize("route", params(activation.RELU_ROUTES))
@given(a=away_from_zero(shapes()))
def test_relu(route, a):
    with fast.use(relu=route):
        np.testing.assert_array_equal(F.relu(Tensor(a)).data, np.where(a > 0, a, 0.0))
        gradcheck(F.relu, [a])


def _relu_and_grad(x, dy):
    t = Tensor(x, requires_grad=True)
    y = F.relu(t)
    y.backward(dy)
    return y.data, t.grad


@jit_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shape=st.sampled_from([(3, 7, 1800), (2, 16384), (1, 1, 16384 * 2 + 5), (4, 3, 2, 2)]),
       seed=st.integers(0, 2**32 - 1))
def test_relu_jit_route_equals_the_reference_bit_for_bit(dtype, shape, seed):
    """Over several blocks of relu_jit.BLOCK values and a partial last one, with the values
    where the two formulas could part: signed zeros, NaN and infinities in x and in dy."""
    rng = np.random.default_rng(seed)
    specials = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-38, -1e-38])
    x, dy = (np.where(rng.random(shape) < 0.05, rng.choice(specials, shape),
                      rng.normal(size=shape)).astype(dtype) for _ in range(2))
    with np.errstate(invalid="ignore"):   # inf * 0 in both routes' backward
        for given_x, given_dy in [(x, dy), (x.T, dy.T), (x[..., ::2], dy[..., ::2])]:
            with fast.use(relu="jit"):
                y, dx = _relu_and_grad(given_x, given_dy)
            with fast.use(relu="reference"):
                y_ref, dx_ref = _relu_and_grad(given_x, given_dy)
            assert y.dtype == dx.dtype == dtype and y.shape == given_x.shape
            np.testing.assert_array_equal(y, y_ref)
            np.testing.assert_array_equal(np.signbit(y), np.signbit(y_ref))
            np.testing.assert_array_equal(dx, dx_ref)


def test_choose_relu_route():
    """The jit route takes the feature maps of conv nets; dense layers' relus, small arrays,
    float16 and arrays of other modules stay on the reference."""
    compiled = "jit" if jit.available else "reference"
    assert activation.choose_relu_route(np, np.dtype(np.float32), (128, 16, 32, 32)) == compiled
    assert activation.choose_relu_route(np, np.dtype(np.float64), (2, 4, relu_jit.MIN_SIZE)) \
        == compiled
    assert activation.choose_relu_route(np, np.dtype(np.float32), (700, 1100)) == "reference"
    assert activation.choose_relu_route(np, np.dtype(np.float32), (2, 4, 8, 8)) == "reference"
    assert activation.choose_relu_route(np, np.dtype(np.float16), (128, 16, 32, 32)) \
        == "reference"


@jit_test
def test_relu_jit_route_refuses_float16():
    with fast.use(relu="jit"), pytest.raises(
            ValueError, match="relu: route 'jit' runs on NumPy float32 and float64 arrays, "
                              "got numpy float16"):
        F.relu(Tensor(np.ones((2, 3), np.float16)))


@pytest.mark.skipif(jit.available, reason="Numba is installed")
def test_relu_jit_route_without_numba_names_the_extra():
    with fast.use(relu="jit"), pytest.raises(
            ValueError, match=r"relu: route 'jit' needs Numba and SciPy: pip install -e \"\.\[fast\]\""):
        F.relu(Tensor(np.ones((2, 3))))


@given(arrays(shapes(), -6, 6))
def test_sigmoid(a):
    np.testing.assert_allclose(F.sigmoid(Tensor(a)).data, 1 / (1 + np.exp(-a)), rtol=1e-12)
    gradcheck(F.sigmoid, [a])


def test_sigmoid_saturates_without_overflow():
    with np.errstate(all="raise"):
        y = F.sigmoid(Tensor(np.array([-1000.0, 0.0, 1000.0], np.float32))).data
    np.testing.assert_array_equal(y, [0.0, 0.5, 1.0])


@given(arrays(shapes(), -3, 3))
def test_tanh(a):
    np.testing.assert_allclose(F.tanh(Tensor(a)).data, np.tanh(a), rtol=1e-12)
    gradcheck(F.tanh, [a])


@st.composite
def array_and_dim(draw):
    a = draw(arrays(shapes(), -4, 4))
    return a, draw(st.integers(-a.ndim, a.ndim - 1))


def _reference_log_softmax(a, dim):
    m = a.max(axis=dim, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=dim, keepdims=True))


@given(array_and_dim())
def test_softmax(ad):
    a, dim = ad
    y = F.softmax(Tensor(a), dim).data
    np.testing.assert_allclose(y, np.exp(_reference_log_softmax(a, dim)), rtol=1e-12)
    np.testing.assert_allclose(y.sum(axis=dim), 1.0)
    gradcheck(lambda t: F.softmax(t, dim), [a])


@given(array_and_dim())
def test_log_softmax(ad):
    a, dim = ad
    np.testing.assert_allclose(F.log_softmax(Tensor(a), dim).data, _reference_log_softmax(a, dim),
                               rtol=1e-12, atol=1e-12)
    gradcheck(lambda t: F.log_softmax(t, dim), [a])


def test_log_softmax_is_stable_for_huge_logits():
    y = F.log_softmax(Tensor(np.array([[1e4, 0.0, -1e4]], np.float32))).data
    assert np.isfinite(y).all() and y[0, 0] == 0.0


def test_errors():
    with pytest.raises(TypeError, match="relu: input: expected a floating-point tensor"):
        F.relu(Tensor(np.arange(3)))
    with pytest.raises(ValueError, match="softmax: dim: 2 is out of range for a 2-D tensor"):
        F.softmax(Tensor(np.ones((2, 2))), 2)
