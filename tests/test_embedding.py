"""embedding: gradient checks on the weight, a NumPy reference, torch cross-checks, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw
from tinyhw.gradcheck import gradcheck
from tinyhw.ops.embedding import embedding
from tests.strategies import arrays, indices


@st.composite
def embedding_case(draw):
    """Weight (V, D), indices into it, and a padding_idx (None, or in [-V, V))."""
    v, d = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    padding_idx = draw(st.one_of(st.none(), st.integers(-v, v - 1)))
    return dict(weight=draw(arrays((v, d))), idx=draw(indices(v)), padding_idx=padding_idx)


def reference_grad(idx, dy, num_embeddings, padding_idx):
    """Dense dL/dW: every output-gradient row added into its index's row (repeats sum)."""
    grad = np.zeros((num_embeddings, dy.shape[-1]))
    np.add.at(grad, idx.reshape(-1), dy.reshape(-1, dy.shape[-1]))
    if padding_idx is not None:
        grad[padding_idx] = 0.0
    return grad


@given(embedding_case())
def test_gradcheck(case):
    idx, weight, padding_idx = case["idx"], case["weight"], case["padding_idx"]
    if padding_idx is not None:
        # The padding row's zero gradient is a convention, not the derivative of the lookup:
        # check the true derivative on indices that avoid that row (whose gradient stays 0).
        idx = idx[idx != padding_idx % weight.shape[0]]
    # The indices are integers: gradcheck passes them through and differentiates the weight.
    assert gradcheck(lambda i, w: embedding(i, w, padding_idx), [idx, weight])


@given(embedding_case(), st.data())
def test_forward_and_backward_match_numpy(case, data):
    idx, weight, padding_idx = case["idx"], case["weight"], case["padding_idx"]
    w = tinyhw.Tensor(weight, requires_grad=True)
    y = embedding(tinyhw.Tensor(idx), w, padding_idx)
    assert y.shape == idx.shape + (weight.shape[1],)
    np.testing.assert_array_equal(y.data, weight[idx])
    dy = data.draw(arrays(y.shape))
    y.backward(dy)
    np.testing.assert_allclose(w.grad, reference_grad(idx, dy, weight.shape[0], padding_idx),
                               rtol=1e-12, atol=1e-12)


def test_repeated_indices_sum_and_padding_row_gets_zero():
    weight = tinyhw.Tensor(np.arange(8.0).reshape(4, 2), requires_grad=True)
    idx = np.array([[1, 1, 3], [1, 0, 3]])
    dy = np.arange(12.0).reshape(2, 3, 2)
    embedding(idx, weight, padding_idx=3).backward(dy)
    expected = np.zeros((4, 2))
    expected[1] = dy[0, 0] + dy[0, 1] + dy[1, 0]
    expected[0] = dy[1, 1]  # row 3 is the padding row: zero although it was used twice
    np.testing.assert_array_equal(weight.grad, expected)


def test_negative_padding_idx_counts_from_the_end():
    weight = tinyhw.Tensor(np.ones((5, 3)), requires_grad=True)
    embedding(np.array([4, 4, 1]), weight, padding_idx=-1).backward(np.ones((3, 3)))
    np.testing.assert_array_equal(weight.grad[4], 0.0)
    np.testing.assert_array_equal(weight.grad[1], 1.0)


def test_dtypes_and_small_integer_indices(rng):
    """uint8 indices (r * D would overflow in uint8) and a float32 weight kept float32."""
    weight = tinyhw.Tensor(rng.normal(size=(300, 7)).astype(np.float32), requires_grad=True)
    idx = rng.integers(0, 256, size=(9, 4)).astype(np.uint8)
    y = embedding(idx, weight)
    assert y.dtype == np.float32
    dy = rng.normal(size=y.shape).astype(np.float32)
    y.backward(dy)
    assert weight.grad.dtype == np.float32
    np.testing.assert_allclose(weight.grad, reference_grad(idx, dy, 300, None), rtol=1e-5,
                               atol=1e-6)


def test_empty_indices():
    weight = tinyhw.Tensor(np.ones((3, 2)), requires_grad=True)
    y = embedding(np.zeros((0, 4), np.int64), weight)
    assert y.shape == (0, 4, 2)
    y.backward(np.zeros((0, 4, 2)))
    np.testing.assert_array_equal(weight.grad, 0.0)


@pytest.mark.parametrize("padding_idx", [None, 2, -3])
def test_matches_torch(rng, padding_idx):
    torch = pytest.importorskip("torch")
    weight = rng.normal(size=(11, 5)).astype(np.float32)
    idx = rng.integers(0, 11, size=(6, 7))
    dy = rng.normal(size=(6, 7, 5)).astype(np.float32)
    w = tinyhw.Tensor(weight.copy(), requires_grad=True)
    y = embedding(idx, w, padding_idx)
    y.backward(dy)
    wt = torch.tensor(weight, requires_grad=True)
    yt = torch.nn.functional.embedding(torch.tensor(idx), wt, padding_idx)
    yt.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y.data, yt.detach().numpy())
    np.testing.assert_allclose(w.grad, wt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_errors():
    weight = tinyhw.Tensor(np.ones((4, 3)))
    with pytest.raises(IndexError, match=r"embedding: input: index 4 is out of range for a weight "
                                         r"with 4 rows \(valid indices are 0..3\)"):
        embedding(np.array([0, 4]), weight)
    with pytest.raises(IndexError, match="embedding: input: index -1 is out of range"):
        embedding(np.array([[-1, 2]]), weight)
    with pytest.raises(TypeError, match="embedding: input: expected an integer tensor"):
        embedding(np.array([0.0, 1.0]), weight)
    with pytest.raises(TypeError, match="embedding: weight: expected a floating-point tensor"):
        embedding(np.array([0, 1]), tinyhw.Tensor(np.ones((4, 3), np.int64)))
    with pytest.raises(ValueError, match=r"embedding: weight: expected a 2-D tensor "
                                         r"\(num_embeddings, embedding_dim\), got shape \(4,\)"):
        embedding(np.array([0, 1]), tinyhw.Tensor(np.ones(4)))
    with pytest.raises(ValueError, match="embedding: padding_idx: 4 is out of range for a weight "
                                         "with 4 rows"):
        embedding(np.array([0, 1]), weight, padding_idx=4)
    with pytest.raises(ValueError, match="embedding: padding_idx: -5 is out of range"):
        embedding(np.array([0, 1]), weight, padding_idx=-5)
    with pytest.raises(TypeError, match="embedding: padding_idx: expected an int or None"):
        embedding(np.array([0, 1]), weight, padding_idx=1.0)
    with pytest.raises(TypeError, match="embedding: input: expected a Tensor, got list"):
        embedding([0, 1], weight)
