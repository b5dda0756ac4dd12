"""conv1d_max_over_time (Kim et al.'s char CNN as one op): the reference route against the
definition and finite differences, the columns route against the reference (ties included),
torch cross-checks, argument errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw
import tinyhw.functional as F
from tinyhw.gradcheck import gradcheck
from tinyhw.ops import char_cnn, fast
from tests.strategies import arrays

ROUTES = char_cnn.ROUTES


def definition(x, weights, biases):
    """cat over kernels of max over t of the conv, one output element at a time."""
    n, c, length = x.shape
    blocks = []
    for w, b in zip(weights, biases):
        o, _, k = w.shape
        z = np.array([[[(x[i, :, t:t + k] * w[j]).sum() for t in range(length - k + 1)]
                       for j in range(o)] for i in range(n)])
        blocks.append(z.max(axis=2) + (0.0 if b is None else b))
    return np.concatenate(blocks, axis=1)


@st.composite
def geometry(draw, max_batch=3, max_channels=3, max_length=8, max_kernels=3):
    """x (N, C, L) and 1..max_kernels weights (O_k, C, K_k), K_k <= L, biases or None."""
    n, c = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels))
    length = draw(st.integers(1, max_length))
    shapes = [(draw(st.integers(1, 3)), c, draw(st.integers(1, length)))
              for _ in range(draw(st.integers(1, max_kernels)))]
    x = draw(arrays((n, c, length)))
    weights = [draw(arrays(s)) for s in shapes]
    biases = [draw(arrays((s[0],))) if draw(st.booleans()) else None for s in shapes]
    return x, weights, biases


@pytest.mark.parametrize("route", ROUTES)
@given(args=geometry())
def test_routes_match_the_definition_and_finite_differences(route, args):
    x, weights, biases = args
    present = [b for b in biases if b is not None]
    k = len(weights)

    def fn(x, *params):
        ws, it = list(params[:k]), iter(params[k:])
        bs = [next(it) if b is not None else None for b in biases]
        return F.conv1d_max_over_time(x, ws, bs)

    with fast.use(conv1d_max_over_time=route, conv_chunk_bytes=1):   # a chunk per word
        y = fn(x, *weights, *present)
        np.testing.assert_allclose(y.numpy(), definition(x, weights, biases), atol=1e-12)
        assert gradcheck(fn, [x, *weights, *present])


def _float32_case(rng, n=40, length=21, channels=15, widths=range(1, 8)):
    """Embeddings of words padded with a zero character (as the LM's): many windows read only
    padding, so their outputs tie exactly and the first must take the gradient."""
    x = rng.standard_normal((n, length, channels)).astype(np.float32)
    for i, used in enumerate(rng.integers(1, length, n)):
        x[i, used:] = 0
    weights = [(rng.standard_normal((3 * w, channels, w)) * 0.1).astype(np.float32) for w in widths]
    biases = [(rng.standard_normal(3 * w) * 0.1).astype(np.float32) for w in widths]
    return x, weights, biases


def _run(route, x_nlc, weights, biases, g, chunk_bytes=None):
    """Output and gradients of the op on a forced route, input given as the transpose of a
    contiguous (N, L, C) array as the LM passes it; chunk_bytes=1: one word per chunk."""
    e = tinyhw.Tensor(x_nlc, requires_grad=True)
    ws = [tinyhw.Tensor(w, requires_grad=True) for w in weights]
    bs = [tinyhw.Tensor(b, requires_grad=True) for b in biases]
    with fast.use(conv1d_max_over_time=route, conv_chunk_bytes=chunk_bytes):
        y = F.conv1d_max_over_time(e.transpose(1, 2), ws, bs)
        y.backward(g)
    return [y.numpy(), e.grad] + [w.grad for w in ws] + [b.grad for b in bs]


# None: the default budget (all 40 words in one chunk); 1 and 5000: one word per chunk;
# 16000: chunks of several words with a short last one in both width groups of the case
# (21 steps x 54 features x 4 bytes a word: chunks of 3, 40 = 13 x 3 + 1; 21 x 30 x 4: chunks
# of 6, 40 = 6 x 6 + 4), forward and backward
@pytest.mark.parametrize("chunk_bytes", [None, 1, 5000, 16000])
def test_columns_route_equals_the_reference_with_ties(chunk_bytes, rng):
    x, weights, biases = _float32_case(rng)
    g = rng.standard_normal((x.shape[0], sum(w.shape[0] for w in weights))).astype(np.float32)
    reference = _run("reference", x, weights, biases, g)
    for ours, theirs in zip(_run("columns", x, weights, biases, g, chunk_bytes), reference):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * np.abs(theirs).max())


def test_equals_the_composition_of_conv1d_and_max(rng):
    """The op is cat([max(conv1d(x, W_k, b_k), dim=2)], dim=1): same values, same gradients
    (the first arg-max on ties), up to the order of float32 sums."""
    x, weights, biases = _float32_case(rng)
    g = rng.standard_normal((x.shape[0], sum(w.shape[0] for w in weights))).astype(np.float32)
    e = tinyhw.Tensor(x, requires_grad=True)
    ws = [tinyhw.Tensor(w, requires_grad=True) for w in weights]
    bs = [tinyhw.Tensor(b, requires_grad=True) for b in biases]
    y = F.cat([F.max(F.conv1d(e.transpose(1, 2), w, b), dim=2) for w, b in zip(ws, bs)], dim=1)
    y.backward(g)
    composed = [y.numpy(), e.grad] + [w.grad for w in ws] + [b.grad for b in bs]
    for ours, theirs in zip(_run("columns", x, weights, biases, g), composed):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * np.abs(theirs).max())


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False),
                                   (False, False, True)])
@pytest.mark.parametrize("route", ROUTES)
def test_only_the_needed_gradients(route, needs, rng):
    x = rng.standard_normal((3, 2, 6))
    w, b = rng.standard_normal((4, 2, 3)), rng.standard_normal(4)
    leaves = [tinyhw.Tensor(a, requires_grad=n) for a, n in zip((x, w, b), needs)]
    with fast.use(conv1d_max_over_time=route):
        F.conv1d_max_over_time(leaves[0], [leaves[1]], [leaves[2]]).sum().backward()
    assert [t.grad is not None for t in leaves] == list(needs)


@pytest.mark.parametrize("route", ROUTES)
def test_no_grad_and_constant_inputs_give_the_same_values(route, rng):
    x, weights, biases = _float32_case(rng, n=6)
    x = x.transpose(0, 2, 1)
    with fast.use(conv1d_max_over_time=route):
        y = F.conv1d_max_over_time(x, weights, biases).numpy()
        tracked = [tinyhw.Tensor(w, requires_grad=True) for w in weights]
        with tinyhw.no_grad():
            y_no_grad = F.conv1d_max_over_time(x, tracked, biases)
    np.testing.assert_array_equal(y_no_grad.numpy(), y)
    assert not y_no_grad.requires_grad


def test_matches_torch_on_kims_large_char_cnn(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((30, 15, 21)).astype(np.float32)
    shapes = [(min(200, 50 * w), 15, w) for w in range(1, 8)]
    weights = [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in shapes]
    biases = [rng.standard_normal(s[0]).astype(np.float32) for s in shapes]
    ours = [tinyhw.Tensor(a, requires_grad=True) for a in (x, *weights, *biases)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, *weights, *biases)]
    y = F.conv1d_max_over_time(ours[0], ours[1:8], ours[8:])
    t = torch.cat([torch.nn.functional.conv1d(theirs[0], w, b).amax(dim=2)
                   for w, b in zip(theirs[1:8], theirs[8:])], dim=1)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    t.backward(torch.tensor(g))
    np.testing.assert_allclose(y.numpy(), t.detach().numpy(), rtol=1e-4, atol=1e-4)
    for a, ta in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, ta.grad.numpy(), rtol=1e-4, atol=1e-3)


def test_groups_split_the_widths_where_fewest_multiplies_are_wasted():
    small = char_cnn.groups(list(range(1, 7)), [25 * w for w in range(1, 7)], 15)
    assert [[m[1] for m in g.members] for g in small] == [[1, 2, 3, 4], [5, 6]]
    one = char_cnn.groups([3], [5], 2)
    assert [[m[1] for m in g.members] for g in one] == [[3]]


X, W = np.zeros((2, 3, 5)), np.zeros((4, 3, 2))


@pytest.mark.parametrize("args,match", [
    ((np.zeros((2, 3)), [W]), r"input: expected a 3-D tensor \(N, C, L\), got shape \(2, 3\)"),
    ((X, []), r"weights: expected a non-empty list"),
    ((X, W), r"weights: expected a non-empty list"),
    ((X, [np.zeros((4, 2, 2))]), r"weights\[0\]: expected shape \(O, 3, K\) with 1 <= K <= 5"),
    ((X, [np.zeros((4, 3, 6))]), r"weights\[0\]: expected shape .* got \(4, 3, 6\)"),
    ((X, [W], [np.zeros(4), np.zeros(4)]), r"biases: expected None or a list of 1"),
    ((X, [W], [np.zeros(3)]), r"biases\[0\]: expected shape \(4,\) \(O,\), got \(3,\)"),
])
def test_bad_arguments_are_one_line_errors(args, match):
    with pytest.raises(ValueError, match=match):
        F.conv1d_max_over_time(*args)


def test_mixed_dtypes_are_refused():
    with pytest.raises((TypeError, ValueError), match="weights\\[0\\]"):
        F.conv1d_max_over_time(X, [W.astype(np.float32)])
