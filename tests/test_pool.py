"""max_pool2d, avg_pool2d, adaptive_avg_pool2d: gradient checks, loop references, torch
cross-checks, argument errors."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw
from tinyhw.gradcheck import gradcheck
from tinyhw.ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from tests.strategies import arrays, distinct, pool2d_geometry


def pool_loop(x, kernel_size, stride, padding, reduce, fill):
    """The definition: pad with `fill`, reduce each window (average divides by kh kw)."""
    (n, c, h, w), (kh, kw), (sh, sw), (ph, pw) = x.shape, kernel_size, stride, padding
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), fill)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, c, ho, wo))
    for r in range(ho):
        for q in range(wo):
            y[:, :, r, q] = reduce(xp[:, :, r * sh:r * sh + kh, q * sw:q * sw + kw], axis=(2, 3))
    return y


def adaptive_loop(x, out_h, out_w):
    h, w = x.shape[2:]
    y = np.zeros(x.shape[:2] + (out_h, out_w))
    for a in range(out_h):
        for b in range(out_w):
            rows = slice(a * h // out_h, math.ceil((a + 1) * h / out_h))
            cols = slice(b * w // out_w, math.ceil((b + 1) * w / out_w))
            y[:, :, a, b] = x[:, :, rows, cols].mean(axis=(2, 3))
    return y


def hyper(geometry):
    return {k: geometry[k] for k in ("kernel_size", "stride", "padding")}


# ---- max pooling --------------------------------------------------------------------------

@given(geometry=pool2d_geometry(), data=st.data())
def test_max_pool2d_gradcheck_and_loop(geometry, data):
    x = data.draw(distinct(geometry["x_shape"]))  # no ties: the max is differentiable
    np.testing.assert_array_equal(max_pool2d(x, **hyper(geometry)).numpy(),
                                  pool_loop(x, **hyper(geometry), reduce=np.max, fill=-np.inf))
    assert gradcheck(lambda x: max_pool2d(x, **hyper(geometry)), [x])


def test_max_pool2d_with_more_than_256_window_cells(rng):
    """A 17 x 17 window (289 cells) keeps its winners' offsets in int32, not uint8: value and
    gradient against the loop, the maximum placed at the window's last cell."""
    x = rng.standard_normal((1, 2, 19, 19))
    x[0, 0, 16, 16] = 10.0                              # offset 16 * 17 + 16 = 288 of window 0
    y = max_pool2d(tinyhw.Tensor(x, requires_grad=True), 17, stride=2)
    want = pool_loop(x, (17, 17), (2, 2), (0, 0), reduce=np.max, fill=-np.inf)
    np.testing.assert_array_equal(y.numpy(), want)
    assert gradcheck(lambda t: max_pool2d(t, 17, stride=2), [x])


def test_max_pool2d_stride_defaults_to_kernel(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    np.testing.assert_array_equal(max_pool2d(x, 2).numpy(), max_pool2d(x, 2, 2).numpy())
    assert max_pool2d(x, 3).shape == (2, 3, 2, 2)


def test_max_pool2d_ties_go_to_the_first_maximum():
    x = tinyhw.Tensor(np.zeros((1, 1, 3, 3)), requires_grad=True)
    max_pool2d(x, 2, stride=1).backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    # window (r, q) starts at (r, q); its first element in row-major order wins
    np.testing.assert_array_equal(x.grad[0, 0], [[1, 2, 0], [3, 4, 0], [0, 0, 0]])


# ---- average pooling ----------------------------------------------------------------------

@given(geometry=pool2d_geometry(), data=st.data())
def test_avg_pool2d_gradcheck_and_loop(geometry, data):
    x = data.draw(arrays(geometry["x_shape"]))
    np.testing.assert_allclose(avg_pool2d(x, **hyper(geometry)).numpy(),
                               pool_loop(x, **hyper(geometry), reduce=np.mean, fill=0.0),
                               atol=1e-12)
    assert gradcheck(lambda x: avg_pool2d(x, **hyper(geometry)), [x])


# ---- adaptive average pooling --------------------------------------------------------------

@st.composite
def adaptive_case(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    out = (draw(st.integers(1, h + 2)), draw(st.integers(1, w + 2)))  # larger than H too
    return draw(arrays((n, c, h, w))), out


@given(case=adaptive_case())
def test_adaptive_avg_pool2d_gradcheck_and_loop(case):
    x, out = case
    np.testing.assert_allclose(adaptive_avg_pool2d(x, out).numpy(), adaptive_loop(x, *out),
                               atol=1e-12)
    assert gradcheck(lambda x: adaptive_avg_pool2d(x, out), [x])


@given(x=arrays(st.tuples(*(st.integers(1, 4),) * 4)))
def test_global_average_pooling(x):
    y = adaptive_avg_pool2d(x, 1)
    np.testing.assert_allclose(y.numpy(), x.mean(axis=(2, 3), keepdims=True), atol=1e-12)
    assert gradcheck(lambda x: adaptive_avg_pool2d(x, (1, 1)), [x])


def test_adaptive_output_size_none_keeps_the_input_size(rng):
    x = rng.standard_normal((2, 3, 4, 6))
    np.testing.assert_allclose(adaptive_avg_pool2d(x, (None, 3)).numpy(), adaptive_loop(x, 4, 3))


# ---- torch cross-checks ---------------------------------------------------------------------

@pytest.mark.parametrize("op, kwargs", [
    ("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool2d", dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0))),
    ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("avg_pool2d", dict(kernel_size=(3, 2), stride=1, padding=(1, 1))),
    ("adaptive_avg_pool2d", dict(output_size=(3, 5))),
    ("adaptive_avg_pool2d", dict(output_size=1)),
])
def test_pool_matches_torch(op, kwargs, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 9, 8))
    ours, theirs = tinyhw.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y = {"max_pool2d": max_pool2d, "avg_pool2d": avg_pool2d,
         "adaptive_avg_pool2d": adaptive_avg_pool2d}[op](ours, **kwargs)
    t = getattr(torch.nn.functional, op)(theirs, **kwargs)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    t.backward(torch.tensor(g))
    np.testing.assert_allclose(y.numpy(), t.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), atol=1e-12)


def test_pools_keep_float32(rng):
    x = tinyhw.Tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32), requires_grad=True)
    for y in (max_pool2d(x, 3, 2, 1), avg_pool2d(x, 2), adaptive_avg_pool2d(x, (4, 5))):
        assert y.dtype == np.float32
        x.grad = None
        y.sum().backward()
        assert x.grad.dtype == np.float32


# ---- argument errors ------------------------------------------------------------------------

X4 = np.zeros((2, 3, 5, 5))


@pytest.mark.parametrize("pool", [max_pool2d, avg_pool2d])
@pytest.mark.parametrize("kwargs, error, message", [
    (dict(input=np.zeros((3, 5, 5)), kernel_size=2), ValueError,
     r"input: expected a 4-D tensor \(N, C, H, W\), got shape \(3, 5, 5\)"),
    (dict(input=X4.astype(np.int32), kernel_size=2), TypeError,
     r"input: expected a floating-point tensor .* got dtype int32"),
    (dict(input=X4, kernel_size=0), ValueError, r"kernel_size: expected positive ints, got 0"),
    (dict(input=X4, kernel_size=2.0), TypeError,
     r"kernel_size: expected an int or a pair of ints, got 2.0"),
    (dict(input=X4, kernel_size=2, stride=(1, 0)), ValueError,
     r"stride: expected positive ints, got \(1, 0\)"),
    (dict(input=X4, kernel_size=3, padding=-1), ValueError,
     r"padding: expected non-negative ints, got -1"),
    (dict(input=X4, kernel_size=3, padding=2), ValueError,
     r"padding: expected at most half the kernel size \(3, 3\), got \(2, 2\)"),
    (dict(input=X4, kernel_size=(6, 2)), ValueError,
     r"kernel_size: kernel size \(6, 2\) is larger than the padded input \(5, 5\)"),
])
def test_pool_argument_errors(pool, kwargs, error, message):
    with pytest.raises(error, match=f"{pool.__name__}: {message}"):
        pool(**kwargs)


@pytest.mark.parametrize("args, error, message", [
    ((np.zeros((5, 5)), 1), ValueError, r"input: expected a 4-D tensor"),
    ((X4.astype(np.int64), 1), TypeError, r"input: expected a floating-point tensor"),
    ((X4, 0), ValueError, r"output_size: expected positive ints, got 0"),
    ((X4, (2, -1)), ValueError, r"output_size: expected positive ints, got \(2, -1\)"),
    ((X4, "2"), TypeError, r"output_size: expected an int or a pair of ints, got '2'"),
])
def test_adaptive_argument_errors(args, error, message):
    with pytest.raises(error, match=f"adaptive_avg_pool2d: {message}"):
        adaptive_avg_pool2d(*args)


@pytest.mark.parametrize("pool", [max_pool2d, avg_pool2d])
def test_interleaved_pools_keep_their_state(pool, rng):
    """Work buffers are shared between calls: two forwards (the larger first) before either
    backward must still give the reference values and gradients."""
    xs = [rng.standard_normal((3, 4, 9, 8)), rng.standard_normal((2, 2, 5, 5))]
    leaves = [tinyhw.Tensor(x, requires_grad=True) for x in xs]
    ys = [pool(x, 3, 2, 1) for x in leaves]
    gs = [rng.standard_normal(y.shape) for y in ys]
    for y, g in zip(ys, gs):
        y.backward(g)
    reduce, fill = (np.max, -np.inf) if pool is max_pool2d else (np.mean, 0.0)
    for x, leaf, y, g in zip(xs, leaves, ys, gs):
        np.testing.assert_allclose(y.numpy(), pool_loop(x, (3, 3), (2, 2), (1, 1), reduce, fill))
        check = tinyhw.Tensor(x, requires_grad=True)
        pool(check, 3, 2, 1).backward(g)
        np.testing.assert_allclose(leaf.grad, check.grad, atol=1e-12)
