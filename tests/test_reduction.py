"""tinyhw.ops.reduction: sum, mean, max over axes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw.functional as F
from tinyhw import Tensor
from tinyhw.gradcheck import gradcheck
from tests.strategies import arrays, distinct, shapes


@st.composite
def array_and_dims(draw, values=arrays):
    a = draw(values(shapes()))
    dims = draw(st.one_of(st.none(), st.integers(-a.ndim, a.ndim - 1),
                          st.lists(st.integers(0, a.ndim - 1), min_size=1, unique=True).map(tuple)))
    return a, dims, draw(st.booleans())


@given(array_and_dims())
def test_sum(adk):
    a, dims, keep = adk
    np.testing.assert_allclose(F.sum(Tensor(a), dims, keep).data, a.sum(axis=dims, keepdims=keep))
    gradcheck(lambda t: F.sum(t, dims, keep), [a])


@given(array_and_dims())
def test_mean(adk):
    a, dims, keep = adk
    np.testing.assert_allclose(F.mean(Tensor(a), dims, keep).data, a.mean(axis=dims, keepdims=keep))
    gradcheck(lambda t: F.mean(t, dims, keep), [a])


@given(array_and_dims(distinct))
def test_max_without_ties(adk):
    a, dims, keep = adk
    np.testing.assert_allclose(F.max(Tensor(a), dims, keep).data, a.max(axis=dims, keepdims=keep))
    gradcheck(lambda t: F.max(t, dims, keep), [a])


def test_max_ties_share_the_gradient():
    x = Tensor(np.array([1.0, 3.0, 3.0, 0.0]), requires_grad=True)
    F.max(x).backward()
    np.testing.assert_allclose(x.grad, [0.0, 0.5, 0.5, 0.0])


def test_tensor_methods_use_torch_names():
    x = Tensor(np.arange(6.0).reshape(2, 3))
    assert x.sum(dim=1, keepdim=True).shape == (2, 1)
    assert x.mean(0).tolist() == [1.5, 2.5, 3.5]
    assert x.max().item() == 5.0


def test_errors():
    with pytest.raises(ValueError, match="sum: dim: 3 is out of range"):
        F.sum(Tensor(np.ones((2, 2))), 3)
    with pytest.raises(TypeError, match="mean: input: expected a floating-point"):
        F.mean(Tensor(np.arange(3)))
    with pytest.raises(ValueError, match="max: input is empty"):
        F.max(Tensor(np.ones((0, 2))))


def test_max_along_one_dim_gives_the_gradient_to_the_first_maximum_like_torch():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]]), requires_grad=True)
    F.max(x, dim=1).backward(np.array([10.0, 20.0]))
    np.testing.assert_allclose(x.grad, [[0, 10, 0], [20, 0, 0]])


def test_max_along_one_dim_matches_torch():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).standard_normal((3, 4, 5))
    g = np.random.default_rng(1).standard_normal((3, 5))
    x = Tensor(a, requires_grad=True)
    F.max(x, dim=1).backward(g)
    t = torch.tensor(a, requires_grad=True)
    t.max(dim=1).values.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad, t.grad.numpy())


def test_max_of_a_vector_along_dim_0_gives_the_whole_gradient_to_one_maximum():
    """A 1-D x with dim=0 is a max along one dim: the first arg-max gets dy (as torch's
    x.max(dim=0)), where the max over all elements (dim=None) shares it among ties."""
    x = Tensor(np.array([1.0, 3.0, 3.0, 0.0]), requires_grad=True)
    F.max(x, dim=0).backward(np.array(5.0))
    np.testing.assert_array_equal(x.grad, [0.0, 5.0, 0.0, 0.0])
    x.grad = None
    F.max(x, dim=0, keepdim=True).backward(np.array([5.0]))
    np.testing.assert_array_equal(x.grad, [0.0, 5.0, 0.0, 0.0])


@given(distinct(st.tuples(st.integers(1, 7))), st.booleans())
def test_max_of_a_vector_along_dim_0_gradcheck(a, keep):
    np.testing.assert_array_equal(F.max(Tensor(a), 0, keep).data, a.max(axis=0, keepdims=keep))
    gradcheck(lambda t: F.max(t, 0, keep), [a])


def test_max_of_a_vector_along_dim_0_matches_torch_on_ties():
    torch = pytest.importorskip("torch")
    a = np.array([1.0, 3.0, 3.0, 0.0, 3.0])
    x = Tensor(a, requires_grad=True)
    F.max(x, dim=0).backward(np.array(5.0))
    t = torch.tensor(a, requires_grad=True)
    t.max(dim=0).values.backward(torch.tensor(5.0, dtype=torch.float64))
    np.testing.assert_array_equal(x.grad, t.grad.numpy())
