"""conv2d and conv1d: gradient checks, a loop reference, torch cross-checks, argument errors.

The shifted route (every kernel but 1x1 without padding, any stride) cuts the batch into
chunks of images and computes dW either as one GEMM on stacked column shifts or as one GEMM
per column shift (few channels); the `variant(...)` context forces each combination, so the
Hypothesis strategies, which draw small shapes, reach all of them.
"""
import contextlib
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw
from tinyhw.gradcheck import gradcheck
from tinyhw.ops import conv_shifted
from tinyhw.ops import window
from tinyhw.ops.conv import conv1d, conv2d
from tests.strategies import arrays, conv1d_geometry, conv2d_geometry

# (images per chunk or None for the size-based default, dW per column offset?)
VARIANTS = [(None, True), (None, False), (1, True), (2, False)]


@contextlib.contextmanager
def variant(images, per_offset):
    """Force the shifted route's chunk size (None: by size) and its form of dW."""
    chunking = window.images_per_chunk if images is None else \
        (lambda n, bytes_per_image: min(n, images))
    with mock.patch.object(window, "images_per_chunk", chunking), \
            mock.patch.object(conv_shifted, "_PER_OFFSET_MAX_CHANNELS", 10**9 if per_offset else 0):
        yield


def conv2d_loop(x, w, b, stride, padding):
    """The definition, one output element at a time."""
    (n, c, h, wd), (o, _, kh, kw), (sh, sw), (ph, pw) = x.shape, w.shape, stride, padding
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    y = np.zeros((n, o, ho, wo))
    for i in range(n):
        for k in range(o):
            for r in range(ho):
                for q in range(wo):
                    patch = xp[i, :, r * sh:r * sh + kh, q * sw:q * sw + kw]
                    y[i, k, r, q] = (patch * w[k]).sum() + (0.0 if b is None else b[k])
    return y


def conv1d_loop(x, w, b, stride, padding):
    y = conv2d_loop(x[:, :, None, :], w[:, :, None, :], b, (1, stride), (0, padding))
    return y[:, :, 0, :]


def leaf(a):
    return tinyhw.Tensor(a, requires_grad=True)


def pair_of(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# Fixed geometries that exercise both routes (pointwise; shifted at stride 1 and on the phases
# of a stride, including a kernel shorter than the stride, whose skipped phases get no
# gradient), padding beyond kernel - 1 and asymmetric hyper-parameters.
ROUTES = [
    dict(x_shape=(2, 3, 5, 4), w_shape=(4, 3, 1, 1), stride=1, padding=0),         # pointwise
    dict(x_shape=(2, 3, 5, 6), w_shape=(2, 3, 1, 1), stride=(2, 3), padding=0),    # pointwise
    dict(x_shape=(2, 3, 5, 5), w_shape=(4, 3, 3, 3), stride=1, padding=1),         # shifted
    dict(x_shape=(1, 2, 3, 4), w_shape=(3, 2, 2, 3), stride=1, padding=(3, 4)),    # shifted
    dict(x_shape=(2, 2, 6, 7), w_shape=(3, 2, 3, 2), stride=(2, 1), padding=(1, 0)),  # phases
    dict(x_shape=(1, 2, 4, 4), w_shape=(2, 2, 1, 1), stride=2, padding=1),         # phases
    dict(x_shape=(2, 1, 9, 8), w_shape=(2, 1, 7, 7), stride=3, padding=3),         # phases
    dict(x_shape=(2, 2, 7, 9), w_shape=(3, 2, 2, 1), stride=(3, 2), padding=(2, 1)),  # phases
]


@given(geometry=conv2d_geometry(), with_bias=st.booleans(), form=st.sampled_from(VARIANTS),
       data=st.data())
def test_conv2d_gradcheck(geometry, with_bias, form, data):
    x = data.draw(arrays(geometry["x_shape"]))
    w = data.draw(arrays(geometry["w_shape"]))
    b = data.draw(arrays((geometry["w_shape"][0],))) if with_bias else None
    stride, padding = geometry["stride"], geometry["padding"]
    with variant(*form):
        assert gradcheck(lambda x, w, b: conv2d(x, w, b, stride=stride, padding=padding),
                         [x, w, b])


@given(geometry=conv2d_geometry(), form=st.sampled_from(VARIANTS), data=st.data())
def test_conv2d_matches_loop(geometry, form, data):
    x, w = data.draw(arrays(geometry["x_shape"])), data.draw(arrays(geometry["w_shape"]))
    b = data.draw(arrays((geometry["w_shape"][0],)))
    with variant(*form):
        y = conv2d(x, w, b, stride=geometry["stride"], padding=geometry["padding"])
    np.testing.assert_allclose(y.numpy(), conv2d_loop(x, w, b, geometry["stride"],
                                                      pair_of(geometry["padding"])), atol=1e-12)


@pytest.mark.parametrize("geometry", ROUTES)
def test_conv2d_routes_gradcheck_and_loop(geometry, rng):
    x, w = rng.standard_normal(geometry["x_shape"]), rng.standard_normal(geometry["w_shape"])
    b = rng.standard_normal(geometry["w_shape"][0])
    stride, padding = pair_of(geometry["stride"]), pair_of(geometry["padding"])
    y = conv2d(x, w, b, stride=stride, padding=padding)
    np.testing.assert_allclose(y.numpy(), conv2d_loop(x, w, b, stride, padding), atol=1e-12)
    assert gradcheck(lambda x, w, b: conv2d(x, w, b, stride=stride, padding=padding), [x, w, b],
                     n_directions=4)


def test_conv2d_full_gradcheck():
    r = np.random.default_rng(7)
    x, w, b = r.standard_normal((2, 2, 3, 3)), r.standard_normal((2, 2, 2, 2)), r.standard_normal(2)
    assert gradcheck(lambda x, w, b: conv2d(x, w, b, padding=1), [x, w, b], mode="full")


@pytest.mark.parametrize("geometry", ROUTES)
def test_conv2d_matches_torch(geometry, rng):
    torch = pytest.importorskip("torch")
    x, w = rng.standard_normal(geometry["x_shape"]), rng.standard_normal(geometry["w_shape"])
    b = rng.standard_normal(geometry["w_shape"][0])
    ours = [leaf(a) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    y = conv2d(*ours, stride=geometry["stride"], padding=geometry["padding"])
    t = torch.nn.functional.conv2d(*theirs, stride=geometry["stride"], padding=geometry["padding"])
    g = rng.standard_normal(y.shape)
    y.backward(g)
    t.backward(torch.tensor(g))
    np.testing.assert_allclose(y.numpy(), t.detach().numpy(), atol=1e-12)
    for a, ta in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, ta.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("form", VARIANTS)
@pytest.mark.parametrize("needs", [(True, True, True), (True, False, False), (False, True, False),
                                   (False, False, True)])
def test_shifted_route_chunks_match_torch(form, needs, rng):
    """Several chunks with a short last one (5 images, 2 per chunk), both forms of dW, every
    subset of gradients; 3x3 'same', an asymmetric kernel with padding beyond it, and the
    strided convs of a ResNet's stage changes (3x3 stride 2, 1x1 stride 2 with padding)."""
    torch = pytest.importorskip("torch")
    for w_shape, stride, padding in [((4, 3, 3, 3), 1, 1), ((2, 3, 2, 3), 1, (3, 0)),
                                     ((4, 3, 3, 3), 2, 1), ((4, 3, 1, 1), 2, 1),
                                     ((2, 3, 3, 2), (2, 3), (0, 1))]:
        x = rng.standard_normal((5, 3, 6, 7))
        w, b = rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
        ours = [tinyhw.Tensor(a, requires_grad=n) for a, n in zip((x, w, b), needs)]
        theirs = [torch.tensor(a, requires_grad=n) for a, n in zip((x, w, b), needs)]
        with variant(*form):
            y = conv2d(*ours, stride=stride, padding=padding)
            g = rng.standard_normal(y.shape)
            y.backward(g)
        t = torch.nn.functional.conv2d(*theirs, stride=stride, padding=padding)
        t.backward(torch.tensor(g))
        np.testing.assert_allclose(y.numpy(), t.detach().numpy(), atol=1e-12)
        for a, ta, n in zip(ours, theirs, needs):
            assert (a.grad is not None) == n
            if n:
                np.testing.assert_allclose(a.grad, ta.grad.numpy(), atol=1e-11)


def test_chunk_size_follows_the_budget():
    """CIFAR's first stage: 16 channels of 32x32 give several images per chunk, and no chunk
    is larger than the budget unless it holds a single image."""
    grid = window.FlatGrid(np, (128, 16, 32, 32), (3, 3), (1, 1), (1, 1), 48, 4)
    assert 1 < grid.images < 128 and 48 * grid.size * 4 <= window.CHUNK_BYTES
    big = window.FlatGrid(np, (8, 64, 56, 56), (3, 3), (1, 1), (1, 1), 192, 4)
    assert big.images == 1


def test_conv2d_float32_keeps_dtype_and_layout(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    for stride, padding in [(1, 1), (2, 1), (1, 0)]:
        xt, wt = leaf(x), leaf(w)
        y = conv2d(xt, wt, stride=stride, padding=padding)
        y.backward(np.ones(y.shape, np.float32))
        assert y.dtype == xt.grad.dtype == wt.grad.dtype == np.float32
        assert y.data.flags.c_contiguous and xt.grad.flags.c_contiguous


@pytest.mark.parametrize("needs", [(True, False), (False, True)])
def test_conv2d_gradient_of_one_operand_only(needs, rng):
    x, w = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3))
    for stride, padding in [(1, 1), (2, 0), (1, 0)]:
        xt, wt = tinyhw.Tensor(x, requires_grad=needs[0]), tinyhw.Tensor(w, requires_grad=needs[1])
        wide = conv2d(leaf(x), leaf(w), stride=stride, padding=padding)
        y = conv2d(xt, wt, stride=stride, padding=padding)
        y.sum().backward()
        assert (xt.grad is not None) == needs[0] and (wt.grad is not None) == needs[1]
        np.testing.assert_allclose(y.numpy(), wide.numpy())


@given(geometry=conv1d_geometry(), with_bias=st.booleans(), data=st.data())
def test_conv1d_gradcheck_and_loop(geometry, with_bias, data):
    x = data.draw(arrays(geometry["x_shape"]))
    w = data.draw(arrays(geometry["w_shape"]))
    b = data.draw(arrays((geometry["w_shape"][0],))) if with_bias else None
    stride, padding = geometry["stride"], geometry["padding"]
    y = conv1d(x, w, b, stride=stride, padding=padding)
    np.testing.assert_allclose(y.numpy(), conv1d_loop(x, w, b, stride, padding), atol=1e-12)
    assert gradcheck(lambda x, w, b: conv1d(x, w, b, stride=stride, padding=padding), [x, w, b])


@pytest.mark.parametrize("width", range(1, 8))
def test_conv1d_char_cnn_shapes_match_torch(width, rng):
    """Kim et al.'s character CNN: 15-dim embeddings, words of 21 characters, widths 1..7."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((20, 15, 21)).astype(np.float32)
    w = (rng.standard_normal((25 * width, 15, width)) * 0.1).astype(np.float32)
    b = rng.standard_normal(25 * width).astype(np.float32)
    ours = [leaf(a) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    y, t = conv1d(*ours), torch.nn.functional.conv1d(*theirs)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    t.backward(torch.tensor(g))
    assert y.shape == (20, 25 * width, 22 - width)
    np.testing.assert_allclose(y.numpy(), t.detach().numpy(), rtol=1e-4, atol=1e-4)
    for a, ta in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, ta.grad.numpy(), rtol=1e-4, atol=1e-3)


# ---- argument errors ------------------------------------------------------------------------

X4, W4 = np.zeros((2, 3, 5, 5)), np.zeros((4, 3, 3, 3))


@pytest.mark.parametrize("call, error, message", [
    (lambda: conv2d(np.zeros((3, 5, 5)), W4), ValueError,
     r"conv2d: input: expected a 4-D tensor \(N, C, H, W\), got shape \(3, 5, 5\)"),
    (lambda: conv2d(X4, np.zeros((4, 3, 3))), ValueError,
     r"conv2d: weight: expected a 4-D tensor \(out_channels, in_channels, kH, kW\)"),
    (lambda: conv2d(X4, np.zeros((4, 2, 3, 3))), ValueError,
     r"conv2d: weight: expects 2 input channels \(shape \(4, 2, 3, 3\)\), but input has 3"),
    (lambda: conv2d(X4.astype(np.int64), W4), TypeError,
     r"conv2d: input: expected a floating-point tensor .* got dtype int64"),
    (lambda: conv2d(X4, W4.astype(np.float32)), TypeError,
     r"conv2d: weight: dtype float32 differs from conv2d: input's dtype float64"),
    (lambda: conv2d(X4, W4, np.zeros(3)), ValueError,
     r"conv2d: bias: expected shape \(4,\) \(out_channels,\), got \(3,\)"),
    (lambda: conv2d(X4, W4, stride=0), ValueError,
     r"conv2d: stride: expected positive ints, got 0"),
    (lambda: conv2d(X4, W4, stride=(1, -2)), ValueError,
     r"conv2d: stride: expected positive ints, got \(1, -2\)"),
    (lambda: conv2d(X4, W4, stride=1.5), TypeError,
     r"conv2d: stride: expected an int or a pair of ints, got 1.5"),
    (lambda: conv2d(X4, W4, padding=-1), ValueError,
     r"conv2d: padding: expected non-negative ints, got -1"),
    (lambda: conv2d(X4, W4, padding=(1, 2, 3)), TypeError,
     r"conv2d: padding: expected an int or a pair of ints"),
    (lambda: conv2d(np.zeros((1, 3, 2, 5)), W4), ValueError,
     r"conv2d: weight: kernel size \(3, 3\) is larger than the padded input \(2, 5\)"),
    (lambda: conv2d([[1.0]], W4), TypeError, r"conv2d: input: expected a Tensor, got list"),
    (lambda: conv1d(np.zeros((2, 3, 5, 5)), np.zeros((4, 3, 3))), ValueError,
     r"conv1d: input: expected a 3-D tensor \(N, C, L\), got shape \(2, 3, 5, 5\)"),
    (lambda: conv1d(np.zeros((2, 3, 5)), np.zeros((4, 2, 3))), ValueError,
     r"conv1d: weight: expects 2 input channels"),
    (lambda: conv1d(np.zeros((2, 3, 2)), np.zeros((4, 3, 3))), ValueError,
     r"conv1d: weight: kernel size \(3,\) is larger than the padded input \(2,\)"),
    (lambda: conv1d(np.zeros((2, 3, 5)), np.zeros((4, 3, 3)), stride=0), ValueError,
     r"conv1d: stride: expected positive ints, got 0"),
])
def test_conv_argument_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_conv1d_accepts_one_tuples(rng):
    x, w = rng.standard_normal((2, 3, 7)), rng.standard_normal((4, 3, 3))
    np.testing.assert_array_equal(conv1d(x, w, stride=(2,), padding=(1,)).numpy(),
                                  conv1d(x, w, stride=2, padding=1).numpy())


@pytest.mark.parametrize("kernel", [(1, 1), (1, 3), (3, 1), (2, 2)])
def test_interleaved_convs_keep_their_saved_inputs(kernel, rng):
    """Work buffers are shared between calls: two forwards before either backward, with the
    larger conv first (so the smaller reuses its buffers), must still give exact gradients."""
    shapes = [((3, 4, 9, 9), (5, 4) + kernel), ((2, 2, 5, 4), (3, 2) + kernel)]
    for stride, padding in [(1, 0), (1, 1), (2, 1)]:
        ours, theirs = [], []
        for x_shape, w_shape in shapes:
            x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
            ours.append((leaf(x), leaf(w)))
            theirs.append((x, w))
        ys = [conv2d(x, w, stride=stride, padding=padding) for x, w in ours]
        gs = [rng.standard_normal(y.shape) for y in ys]
        for y, g in zip(ys, gs):
            y.backward(g)
        for (x, w), (xt, wt), y, g in zip(theirs, ours, ys, gs):
            np.testing.assert_allclose(y.numpy(), conv2d_loop(x, w, None, pair_of(stride),
                                                              pair_of(padding)), atol=1e-12)
            check = tinyhw.Tensor(x, requires_grad=True), tinyhw.Tensor(w, requires_grad=True)
            conv2d(*check, stride=stride, padding=padding).backward(g)
            np.testing.assert_allclose(xt.grad, check[0].grad, atol=1e-12)
            np.testing.assert_allclose(wt.grad, check[1].grad, atol=1e-12)


@pytest.mark.parametrize("kernel, padding", [((3, 3), 1), ((1, 3), (0, 1)), ((3, 1), 0)])
def test_shifted_route_bias_with_frozen_weight(kernel, padding, rng):
    """The shifted route adds the bias inside its GEMM; the GEMM's operands then live in
    work buffers when the weight needs no gradient."""
    x, w, b = rng.standard_normal((2, 3, 5, 6)), rng.standard_normal((4, 3) + kernel), \
        rng.standard_normal(4)
    xt, bt = leaf(x), leaf(b)
    y = conv2d(xt, tinyhw.Tensor(w), bt, padding=padding)
    np.testing.assert_allclose(y.numpy(), conv2d_loop(x, w, b, (1, 1), pair_of(padding)),
                               atol=1e-12)
    assert gradcheck(lambda x, b: conv2d(x, w, b, padding=padding), [x, b], n_directions=4)
