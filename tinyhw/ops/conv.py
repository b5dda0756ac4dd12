"""Convolutions: conv2d and conv1d (cross-correlation, as torch; groups = dilation = 1).

Forward, with x zero-padded by (ph, pw) to xp of size (Hp, Wp):
    y[n, o, h, w] = b[o] + sum_{c, i, j} W[o, c, i, j] xp[n, c, s_h h + i, s_w w + j]
    Ho = (H + 2 ph - kh) // s_h + 1,   Wo likewise.
From dL = sum dy dy/dtheta, each weight is used at every output position and each
input element feeds every output whose window covers it:
    dW[o, c, i, j] = sum_{n, h, w} dy[n, o, h, w] xp[n, c, s_h h + i, s_w w + j]
    dxp[n, c, s_h h + i, s_w w + j] += sum_o W[o, c, i, j] dy[n, o, h, w]   (for all h, w, i, j)
    db[o] = sum_{n, h, w} dy[n, o, h, w]
and dx is the interior of dxp (gradients that land on the padding are dropped).

All three are matrix products once the windows are laid out as columns (im2col):
with cols[(c, i, j), (n, h, w)] = xp[n, c, s_h h + i, s_w w + j] and W as (O, C kh kw),
    Y = W cols,   dW = dY cols^T,   dcols = W^T dY,   then dxp = col2im(dcols).
Two routes compute exactly this, chosen by geometry for speed (see each helper):
  pointwise  1x1 kernel, no padding: cols is x itself, no copy at all;
  shifted    any other (conv_shifted.py): no im2col; the GEMM's operand stacks a few contiguous shifts of the
             flat padded images (of each phase of the input, for a stride), and a few
             shifted adds finish the sum; the batch goes through in chunks that fit in L2.
(A Winograd F(2x2, 3x3) route was tried and measured slower on every shape on a 2-core CPU:
its 2.25x smaller GEMMs save less time than its single-threaded transform passes cost.
On CIFAR's small channel counts, the GEMMs, whose K = kw C or M = kh O is small, take about
two thirds of the time; the copies and adds around them the rest.)
"""
from ..autograd import Function
from .conv_shifted import shifted_backward, shifted_forward
from .window import check_window_fits, conv_operands, hyper_pair


# ---- pointwise route: 1x1 kernel, padding 0 ---------------------------------------------
# A 1x1 conv is a matrix product per image: Y_n = W X_n with X_n (C, H W). Batched matmul
# on the NCHW data needs no transpose in or out; a stride just subsamples x first.

def _pointwise_forward(ctx, x, w, b, stride, padding):
    sh, sw = stride
    xs = x[:, :, ::sh, ::sw] if (sh, sw) != (1, 1) else x
    n, c, ho, wo = xs.shape
    x3 = ctx.xp.ascontiguousarray(xs).reshape(n, c, ho * wo)
    ctx.save(x3 if ctx.needs_input_grad[1] else None, w)  # x is needed only for dW
    return _with_bias(ctx.xp, (w.reshape(w.shape[0], c) @ x3).reshape(n, w.shape[0], ho, wo), b)


def _pointwise_backward(ctx, gy):
    xp, (x3, w), x_shape = ctx.xp, ctx.saved, ctx.x_shape
    n, o = gy.shape[:2]
    g3 = gy.reshape(n, o, -1)
    w2 = w.reshape(o, -1)
    dw = dx = None
    if ctx.needs_input_grad[1]:  # dW = sum_n dY_n X_n^T
        dw = (g3 @ x3.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    if ctx.needs_input_grad[0]:
        dxs = xp.empty((n, x_shape[1]) + gy.shape[2:], dtype=gy.dtype)
        xp.matmul(w2.T, g3, out=dxs.reshape(n, x_shape[1], -1))  # dX_n = W^T dY_n
        if dxs.shape == x_shape:
            dx = dxs
        else:  # strided: the gradient lands on the sampled pixels only
            sh, sw = ctx.stride
            dx = xp.zeros(x_shape, dtype=gy.dtype)
            dx[:, :, ::sh, ::sw] = dxs
    return dx, dw, None


# ---- the ops ---------------------------------------------------------------------------------

def _route(x_shape, w_shape, stride, padding):
    """(forward, backward) of the fastest route for this geometry. A route's forward returns
    the (N, O, Ho, Wo) result with the bias added, as a new C-contiguous array; its backward
    returns (dx, dW, db), db None when the caller should sum dy itself."""
    if w_shape[2:] == (1, 1) and padding == (0, 0):
        return _pointwise_forward, _pointwise_backward
    return shifted_forward, shifted_backward


def _with_bias(xp, y, b):
    """y + b as a C-contiguous NCHW array: in place when y already is one; for a view, the
    bias add doubles as the copy that lays it out."""
    if y.flags.c_contiguous:
        if b is not None:
            y += b.reshape(-1, 1, 1)
        return y
    if b is None:
        return xp.ascontiguousarray(y)
    return xp.add(y, b.reshape(-1, 1, 1), out=xp.empty(y.shape, dtype=y.dtype))


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding):
        ctx.stride, ctx.padding, ctx.x_shape = stride, padding, x.shape
        route_forward, ctx.route_backward = _route(x.shape, w.shape, stride, padding)
        return route_forward(ctx, x, w, b, stride, padding)

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
        y = Conv2d.forward(ctx, x[:, :, None, :], w[:, :, None, :], b, (1, stride), (0, padding))
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
    db = dY summed over (N, Ho, Wo).
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
    Computed as conv2d with H = 1, so the backward is conv2d's.
    """
    x, w, b = conv_operands("conv1d", input, weight, bias, 3, "(N, C, L)",
                             "(out_channels, in_channels, K)")
    stride = _single(stride, "conv1d: stride", 1)
    padding = _single(padding, "conv1d: padding", 0)
    check_window_fits("conv1d: weight", w.shape[2:], x.shape[2:], (padding,), x.shape)
    return Conv1d.apply(x, w, b, stride=stride, padding=padding)
