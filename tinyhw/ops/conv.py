"""Convolutions: conv2d and conv1d (cross-correlation, as torch; groups = dilation = 1).

Forward, with x zero-padded by (ph, pw) to xpad of size (Hp, Wp):
    y[n, o, h, w] = b[o] + sum_{c, i, j} W[o, c, i, j] xpad[n, c, s_h h + i, s_w w + j]
    Ho = (H + 2 ph - kh) // s_h + 1,   Wo likewise.
From dL = sum dy dy/dtheta, each weight is used at every output position and each
input element feeds every output whose window covers it:
    dW[o, c, i, j] = sum_{n, h, w} dy[n, o, h, w] xpad[n, c, s_h h + i, s_w w + j]
    dxpad[n, c, s_h h + i, s_w w + j] += sum_o W[o, c, i, j] dy[n, o, h, w]   (for all h, w, i, j)
    db[o] = sum_{n, h, w} dy[n, o, h, w]
and dx is the interior of dxpad (gradients that land on the padding are dropped).

Windows. Call the patch that output (h, w) reads
    win[n, c, h, w, i, j] = xpad[n, c, s_h h + i, s_w w + j]          shape (N, C, Ho, Wo, kh, kw).
It is a view of xpad, not a copy: a step in h moves s_h rows of xpad, a step in i one row
(`windows` below sets those strides). The three formulas are then three contractions,
    y    = sum_{c, i, j} win W + b         einsum("nchwij,ocij->nohw", win, W)
    dW   = sum_{n, h, w} dy win            einsum("nohw,nchwij->ocij", dy, win)
    dwin = sum_o dy W                      einsum("nohw,ocij->nchwij", dy, W)
(the backward is the forward's transpose), and dxpad adds every window's gradient dwin back
where the window was read. For one kernel offset (i, j) the elements read by all windows
are the strided slice xpad[:, :, i + s_h h, j + s_w w] (h < Ho, w < Wo), each once, so the
scatter is one slice add per offset. That is the reference route below.
Laid out as a matrix, cols[(c, i, j), (n, h, w)] = win[n, c, h, w, i, j] (im2col), the same
formulas are GEMMs: Y = W cols, dW = dY cols^T, dcols = W^T dY, and dxpad = col2im(dcols).

Routes. Every call runs on one of ROUTES; `choose_route` picks it (the rule is in its
docstring) unless `tinyhw.ops.fast.use(...)` forces one, e.g. `with fast.use("reference"):`.
  reference           the windows view and the einsums below; any geometry, any device.
  pointwise           1x1 kernel without padding: Y_n = W X_n, x itself is cols
                      (fast/conv_pointwise.py).
  shifted             any kernel: no im2col; GEMMs on a few contiguous shifts of the flat
                      padded images (per stride phase), finished by shifted adds, in chunks
                      of images that fit in L2 (fast/conv_shifted.py, fast/flat_grid.py); at
                      column stride 1 the column padding is folded into masks.
  shifted-per-offset  the same on padded columns, with dW as one GEMM per column shift; never
                      chosen (see choose_route), kept as the unfolded layout's route.
  jit                 NumPy arrays with Numba installed (the `fast` extra): the shifted GEMMs,
                      with the copies and adds around them compiled loops over the cores
                      (fast/conv_jit.py).
All compute the same sums, in different orders. conv1d is conv2d with H = 1 and runs on the
same routes (forced with `fast.use(conv1d=...)`).
"""
import functools

import numpy as np

from ..autograd import Function
from . import fast
from .fast import conv_jit, conv_pointwise, conv_shifted, jit
from .window import check_window_fits, conv_operands, hyper_pair, output_size

ROUTES = ("reference", "pointwise", "shifted", "shifted-per-offset", "jit")
fast.register("conv2d", ROUTES)
fast.register("conv1d", ROUTES)


# ---- the reference route ---------------------------------------------------------------------

def windows(xp, x, kernel, stride, padding):
    """win[n, c, h, w, i, j] = xpad[n, c, s_h h + i, s_w w + j]: an (N, C, Ho, Wo, kh, kw)
    view of the zero-padded x (numpy or cupy)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    step_n, step_c, step_row, step_col = xpad.strides          # bytes per step along each axis
    return xp.lib.stride_tricks.as_strided(
        xpad, (n, c, ho, wo, kh, kw),
        (step_n, step_c, sh * step_row, sw * step_col, step_row, step_col))


def reference_forward(ctx, x, w, b, stride, padding):
    win = windows(ctx.xp, x, w.shape[2:], stride, padding)
    ctx.save(win, w)
    y = ctx.xp.einsum("nchwij,ocij->nohw", win, w)
    return y if b is None else y + b.reshape(-1, 1, 1)


def reference_backward(ctx, gy):
    xp, (win, w), (sh, sw), (ph, pw) = ctx.xp, ctx.saved, ctx.stride, ctx.padding
    (n, c, h, wd), (_, _, ho, wo, kh, kw) = ctx.x_shape, win.shape
    dw = xp.einsum("nohw,nchwij->ocij", gy, win)
    dwin = xp.einsum("nohw,ocij->nchwij", gy, w)
    dxpad = xp.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=gy.dtype)
    for i in range(kh):
        for j in range(kw):  # element (i, j) of every window: rows i + s_h h, columns j + s_w w
            dxpad[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw] += dwin[:, :, :, :, i, j]
    return dxpad[:, :, ph:ph + h, pw:pw + wd], dw, gy.sum(axis=(0, 2, 3))


# ---- which route runs ------------------------------------------------------------------------

def choose_route(w_shape, padding, xp=None):
    """The route a call takes when none is forced, from the kernel's shape (O, C, kh, kw), the
    padding pair and the array module (numpy when None): "jit" on NumPy when Numba is installed
    (every kernel: its 1x1 case keeps every GEMM of a conv net inside the compiled loops, whose
    threads must not alternate with the BLAS's, fast/jit.py); else "pointwise" for a 1x1 kernel
    without padding, and "shifted" for the others. "reference" is never
    chosen for speed. ("shifted-per-offset" was the rule's choice up to 16 input channels
    until "shifted" folded its column padding: a resnet20 step is now ~10% faster on
    "shifted" with OpenBLAS's SkylakeX kernels, ~3% slower with its Haswell ones;
    bench/NOTES.md.)"""
    if conv_jit.runs_on(np if xp is None else xp):
        return "jit"
    if conv_pointwise.applies(w_shape, padding):
        return "pointwise"
    return "shifted"


# (forward, backward) per route. A forward returns (N, O, Ho, Wo) with the bias added; a
# backward returns (dx, dW, db), db None when the caller should sum dy itself.
_ROUTE_FUNCTIONS = {
    "reference": (reference_forward, reference_backward),
    "pointwise": (conv_pointwise.forward, conv_pointwise.backward),
    "shifted": (functools.partial(conv_shifted.forward, per_offset=False), conv_shifted.backward),
    "shifted-per-offset": (functools.partial(conv_shifted.forward, per_offset=True),
                           conv_shifted.backward),
    "jit": (conv_jit.forward, conv_jit.backward),
}


def _route(op, w_shape, padding, xp):
    route = fast.forced_route(op) or choose_route(w_shape, padding, xp)
    if route == "pointwise" and not conv_pointwise.applies(w_shape, padding):
        raise ValueError(f"{op}: route 'pointwise' needs a 1x1 kernel without padding, got "
                         f"kernel {tuple(w_shape[2:])} with padding {tuple(padding)}")
    if route == "jit" and not conv_jit.runs_on(xp):
        raise ValueError(f"{op}: route 'jit' {jit.INSTALL_HINT}" if not jit.available else
                         f"{op}: route 'jit' runs on NumPy arrays only, got {xp.__name__}")
    return _ROUTE_FUNCTIONS[route]


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding, op="conv2d"):
        ctx.stride, ctx.padding, ctx.x_shape = stride, padding, x.shape
        route_forward, ctx.route_backward = _route(op, w.shape, padding, ctx.xp)
        return ctx.xp.ascontiguousarray(route_forward(ctx, x, w, b, stride, padding))

    @staticmethod
    def backward(ctx, gy):
        dx, dw, db = ctx.route_backward(ctx, gy)
        if db is None and ctx.needs_input_grad[2]:
            db = gy.sum(axis=(0, 2, 3))
        return (None if dx is None else ctx.xp.ascontiguousarray(dx)), dw, db


class Conv1d(Function):
    """conv1d is conv2d on (N, C, 1, L) inputs with (O, C, 1, K) kernels."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding):
        y = Conv2d.forward(ctx, x[:, :, None, :], w[:, :, None, :], b, (1, stride), (0, padding),
                           op="conv1d")
        return y[:, :, 0, :]

    @staticmethod
    def backward(ctx, gy):
        dx, dw, db = Conv2d.backward(ctx, gy[:, :, None, :])
        return _drop_height(dx), _drop_height(dw), db


def _drop_height(a):
    return None if a is None else a[:, :, 0, :]


def conv2d(input, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation over a batch of images (torch.nn.functional.conv2d, groups=1).

    Parameters
    ----------
    input : Tensor (N, C, H, W), float
    weight : Tensor (O, C, kH, kW), same dtype and device
    bias : Tensor (O,) or None
    stride : int or (sH, sW), positive
    padding : int or (pH, pW), non-negative; zeros added on both sides

    Returns
    -------
    Tensor (N, O, Ho, Wo) with Ho = (H + 2 pH - kH) // sH + 1, Wo likewise, and
    y[n, o, h, w] = b[o] + sum_{c, i, j} W[o, c, i, j] xpad[n, c, sH h + i, sW w + j].

    Backward (derived in the module docstring): dW = dY cols^T, dx = col2im(W^T dY),
    db = dY summed over (N, Ho, Wo). Runs on the route `choose_route` picks, or the one
    forced by `tinyhw.ops.fast.use(conv2d=...)`.
    """
    x, w, b = conv_operands("conv2d", input, weight, bias, 4, "(N, C, H, W)",
                             "(out_channels, in_channels, kH, kW)")
    stride = hyper_pair(stride, "conv2d: stride", 1)
    padding = hyper_pair(padding, "conv2d: padding", 0)
    check_window_fits("conv2d: weight", w.shape[2:], x.shape[2:], padding, x.shape)
    return Conv2d.apply(x, w, b, stride=stride, padding=padding)


def _single(value, name, minimum):
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    return hyper_pair(value, name, minimum)[0]


def conv1d(input, weight, bias=None, stride=1, padding=0):
    """1-D cross-correlation over a batch of sequences (torch.nn.functional.conv1d, groups=1).

    Parameters
    ----------
    input : Tensor (N, C, L), float
    weight : Tensor (O, C, K)
    bias : Tensor (O,) or None
    stride, padding : int (or a 1-tuple)

    Returns
    -------
    Tensor (N, O, Lo), Lo = (L + 2 padding - K) // stride + 1, with
    y[n, o, t] = b[o] + sum_{c, k} W[o, c, k] xpad[n, c, stride t + k].
    Computed as conv2d with H = 1, so the backward and the routes are conv2d's (forced with
    `tinyhw.ops.fast.use(conv1d=...)`).
    """
    x, w, b = conv_operands("conv1d", input, weight, bias, 3, "(N, C, L)",
                             "(out_channels, in_channels, K)")
    stride = _single(stride, "conv1d: stride", 1)
    padding = _single(padding, "conv1d: padding", 0)
    check_window_fits("conv1d: weight", w.shape[2:], x.shape[2:], (padding,), x.shape)
    return Conv1d.apply(x, w, b, stride=stride, padding=padding)
