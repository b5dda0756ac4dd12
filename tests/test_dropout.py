"""dropout: gradient checks with a fixed mask, statistics, seeding, modes, argument errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw
from tinyhw.gradcheck import gradcheck
from tinyhw.ops.dropout import dropout
from tests.strategies import arrays, shapes


@given(arrays(shapes()), st.floats(0.0, 0.9), st.integers(0, 2**31 - 1))
def test_gradcheck(x, p, seed):
    def f(t):
        tinyhw.manual_seed(seed)  # the same mask on every call
        return dropout(t, p)

    assert gradcheck(f, [x])


@given(arrays(shapes()), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1), st.data())
def test_forward_and_backward_match_the_mask(x, p, seed, data):
    """y = x * m / (1 - p) and dx = dy * m / (1 - p), with m the kept units of this draw."""
    tinyhw.manual_seed(seed)
    u = tinyhw.random.uniform(np, x.shape, x.dtype)
    scaled_mask = (u >= p) / (1 - p)
    xt = tinyhw.Tensor(x, requires_grad=True)
    tinyhw.manual_seed(seed)
    y = dropout(xt, p)
    np.testing.assert_allclose(y.data, x * scaled_mask, rtol=1e-15)
    dy = data.draw(arrays(x.shape))
    y.backward(dy)
    np.testing.assert_allclose(xt.grad, dy * scaled_mask, rtol=1e-15)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_statistics(p):
    tinyhw.manual_seed(3)
    n = 200_000
    y = dropout(tinyhw.Tensor(np.ones(n, np.float32)), p).data
    dropped = np.mean(y == 0)
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(dropped - p) < 5 * sigma
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)  # kept units are scaled
    assert abs(y.mean() - 1.0) < 5 * sigma / (1 - p)  # the mean is preserved


def test_eval_mode_and_p_zero_are_the_identity(rng):
    x = tinyhw.Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x


def test_p_one_gives_zeros_and_zero_gradient(rng):
    x = tinyhw.Tensor(rng.normal(size=(3, 4)).astype(np.float32), requires_grad=True)
    y = dropout(x, 1.0)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.data, 0.0)
    y.backward(np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(x.grad, 0.0)


def test_same_seed_same_mask_and_fresh_masks_otherwise(rng):
    x = tinyhw.Tensor(rng.normal(size=(50, 40)).astype(np.float32))
    tinyhw.manual_seed(7)
    first, second = dropout(x, 0.5).data, dropout(x, 0.5).data
    tinyhw.manual_seed(7)
    again = dropout(x, 0.5).data
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first == 0, second == 0)


def test_keeps_dtype_and_mask_dtype(rng):
    for dtype in (np.float32, np.float64):
        x = tinyhw.Tensor(rng.normal(size=(4, 5)).astype(dtype), requires_grad=True)
        y = dropout(x, 0.3)
        assert y.dtype == dtype
        (mask,) = y._node.ctx.saved
        assert mask.dtype == dtype  # the scaled mask, ready for one multiply in backward


def test_matches_torch_statistically():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tinyhw.manual_seed(0)
    x = np.ones((300, 300), np.float32)
    ours = dropout(tinyhw.Tensor(x), 0.3).data
    theirs = torch.nn.functional.dropout(torch.tensor(x), 0.3).numpy()
    assert set(np.unique(ours)) == set(np.unique(theirs))  # {0, 1 / 0.7}
    assert abs(np.mean(ours == 0) - np.mean(theirs == 0)) < 0.01


def test_errors():
    x = tinyhw.Tensor(np.ones(3))
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="dropout: p: dropout probability has to be "
                                             "between 0 and 1"):
            dropout(x, p)
    for p in ("0.5", True, None):
        with pytest.raises(TypeError, match="dropout: p: expected a float in"):
            dropout(x, p)
    with pytest.raises(TypeError, match="dropout: input: expected a floating-point tensor"):
        dropout(tinyhw.Tensor(np.arange(3)), 0.5)
    with pytest.raises(TypeError, match="dropout: training: expected a bool"):
        dropout(x, 0.5, training="no")
    with pytest.raises(TypeError, match="dropout: input: expected a Tensor, got list"):
        dropout([1.0, 2.0], 0.5)
