"""tinyhw.ops.loss: cross_entropy (fused) and nll_loss."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw.functional as F
from tinyhw import Tensor
from tinyhw.gradcheck import gradcheck
from tests.strategies import arrays


@st.composite
def logits_and_targets(draw):
    n, c = draw(st.integers(1, 6)), draw(st.integers(1, 7))
    x = draw(arrays((n, c), -4, 4))
    t = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    return x, t, draw(st.sampled_from(["mean", "sum", "none"]))


def _reference_nll(x, t):
    m = x.max(1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(1, keepdims=True))
    return -logp[np.arange(len(t)), t]


def _reduce(losses, reduction):
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]


@given(logits_and_targets())
def test_cross_entropy(xtr):
    x, t, red = xtr
    y = F.cross_entropy(Tensor(x), Tensor(t), red).data
    np.testing.assert_allclose(y, _reduce(_reference_nll(x, t), red), rtol=1e-12)
    gradcheck(lambda z: F.cross_entropy(z, Tensor(t), red), [x])


@given(logits_and_targets())
def test_nll_loss_of_log_softmax_equals_cross_entropy(xtr):
    x, t, red = xtr
    a = F.nll_loss(F.log_softmax(Tensor(x)), Tensor(t), red).data
    b = F.cross_entropy(Tensor(x), Tensor(t), red).data
    np.testing.assert_allclose(a, b, rtol=1e-12)
    gradcheck(lambda z: F.nll_loss(z, Tensor(t), red), [x])


def test_cross_entropy_is_stable_and_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.array([[1e4, 0.0, -1e4], [3.0, 2.0, 1.0]], np.float32)
    t = np.array([1, 0])
    ours = F.cross_entropy(Tensor(x), Tensor(t)).item()
    theirs = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(t)).item()
    assert np.isfinite(ours) and ours == pytest.approx(theirs, rel=1e-6)


def test_errors():
    x = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"cross_entropy: target contains 4, outside .* \[0, 3\]"):
        F.cross_entropy(x, Tensor(np.array([0, 1, 4])))
    with pytest.raises(ValueError, match=r"cross_entropy: target contains -1"):
        F.cross_entropy(x, Tensor(np.array([0, -1, 2])))
    with pytest.raises(TypeError, match="cross_entropy: target: expected an integer tensor"):
        F.cross_entropy(x, Tensor(np.zeros(3)))
    with pytest.raises(ValueError, match="cross_entropy: target has 2 entries, input has 3 rows"):
        F.cross_entropy(x, Tensor(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"cross_entropy: input: expected a 2-D tensor \(N, C\)"):
        F.cross_entropy(Tensor(np.zeros(4)), Tensor(np.array([0])))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.cross_entropy(x, Tensor(np.array([0, 1, 2])), "avg")
