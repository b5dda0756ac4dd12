"""tinyhw.ops.activation: relu, sigmoid, tanh, softmax, log_softmax."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw.functional as F
from tinyhw import Tensor
from tinyhw.gradcheck import gradcheck
from tests.strategies import arrays, away_from_zero, shapes


@given(away_from_zero(shapes()))
def test_relu(a):
    np.testing.assert_array_equal(F.relu(Tensor(a)).data, np.where(a > 0, a, 0.0))
    gradcheck(F.relu, [a])


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
