"""tinyhw.ops.linalg: matmul and linear."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw.functional as F
from tinyhw import Tensor
from tinyhw.gradcheck import gradcheck
from tests.strategies import arrays


@st.composite
def matmul_operands(draw):
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    kind = draw(st.sampled_from(["mat", "vec-left", "vec-right", "batched", "broadcast"]))
    if kind == "mat":
        return draw(arrays((m, k))), draw(arrays((k, n)))
    if kind == "vec-left":
        return draw(arrays((k,))), draw(arrays(batch + (k, n)))
    if kind == "vec-right":
        return draw(arrays(batch + (m, k))), draw(arrays((k,)))
    if kind == "batched":
        return draw(arrays(batch + (m, k))), draw(arrays(batch + (k, n)))
    return draw(arrays(batch + (m, k))), draw(arrays((k, n)))  # weights shared over the batch


@given(matmul_operands())
def test_matmul(ab):
    a, b = ab
    np.testing.assert_allclose(F.matmul(Tensor(a), Tensor(b)).data, a @ b, rtol=1e-12)
    gradcheck(F.matmul, [a, b])


@st.composite
def linear_operands(draw):
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    i, o = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    bias = draw(arrays((o,))) if draw(st.booleans()) else None
    return draw(arrays(lead + (i,))), draw(arrays((o, i))), bias


@given(linear_operands())
def test_linear(xwb):
    x, w, b = xwb
    expected = x @ w.T + (0 if b is None else b)
    y = F.linear(Tensor(x), Tensor(w), None if b is None else Tensor(b))
    np.testing.assert_allclose(y.data, expected, rtol=1e-12)
    if b is None:
        gradcheck(F.linear, [x, w])
    else:
        gradcheck(F.linear, [x, w, b])


def test_linear_matches_torch():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(0)
    x, w, b = r.standard_normal((4, 3, 5)), r.standard_normal((2, 5)), r.standard_normal(2)
    np.testing.assert_allclose(
        F.linear(Tensor(x), Tensor(w), Tensor(b)).data,
        torch.nn.functional.linear(torch.tensor(x), torch.tensor(w), torch.tensor(b)).numpy(),
        rtol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match=r"matmul: inner dims differ: input \(2, 3\) has 3"):
        F.matmul(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 2))))
    with pytest.raises(ValueError, match="linear: input has 3 features"):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 2))))
    with pytest.raises(ValueError, match=r"linear: weight: expected a 2-D tensor \(out_features, in_features\)"):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones(3)))
    with pytest.raises(ValueError, match=r"linear: bias: expected shape \(4,\)"):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 3))), Tensor(np.ones(3)))
    with pytest.raises(TypeError, match="linear: weight: expected a floating-point"):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 3), dtype=np.int64)))
