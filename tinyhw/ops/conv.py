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
Three routes compute exactly this, chosen by geometry for speed (see each helper):
  pointwise  1x1 kernel, no padding: cols is x itself, no copy at all;
  shifted    stride 1: columns are contiguous shifts of a flat padded image (no im2col);
  strided    any stride: the column matrix, built from a phase split of the input.
(A Winograd F(2x2, 3x3) route was tried and measured slower on every shape on a 2-core CPU:
its 2.25x smaller GEMMs save less time than its single-threaded transform passes cost.)
"""
from ..autograd import Function
from .window import (PhaseGrid, check_window_fits, conv_operands, flat_grid, hyper_pair, place,
                     sum_of_shifted_blocks, work_buffer)


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


# ---- shifted route: stride 1 -------------------------------------------------------------
# Lay the padded input out channel-major and flat, xq[c, q] with q = (n Hq + r) Wq + col.
# With stride 1, the window offset (i, j) is a shift by i Wq + j in q, so for every q
#     y[o, q] = sum_{c, i, j} W[o, c, i, j] xq[c, q + i Wq + j],
# a "wide" output on the flat grid whose rows >= Ho and columns >= Wo are garbage (windows
# wrapping past an edge) and are cropped. Rows are only Wq = W + pw long: a window running
# off the right edge reads the next row's left padding, which is zero as its own right
# padding would be; images likewise share their top/bottom padding rows. For a 'same' 3x3
# conv that leaves one garbage row and no garbage column per image.
# Stacking the kw column shifts of xq as rows X[(j, c), t] = xq[c, t + j] (kw copies of the
# input, in long contiguous runs, instead of the kh kw of im2col), one GEMM gives every
# row-offset term at once, and kh - 1 shifted adds finish the sum:
#     Z = Wst X  with  Wst[(i, o), (j, c)] = W[o, c, i, j],    y[o, q] = sum_i Z[(i, o), q + i Wq].
# Block j = 0 of X is xq itself (the input is padded straight into it), so only kw - 1
# copies are made. Large temporaries live in work buffers (see work_buffer); the one copy at
# the end crops the garbage and transposes to NCHW.

def _shifted_forward(ctx, x, w, b, stride, padding):
    xp = ctx.xp
    (n, c, h, wd), (o, _, kh, kw), (ph, pw) = x.shape, w.shape, padding
    hq, wq, ho, wo = flat_grid(x.shape, (kh, kw), padding)
    p = n * hq * wq
    span = p + (kh - 1) * wq                     # columns read by the kh row shifts
    # X (kw C, span) is saved for dW: kw times the input's memory, but rebuilding it in
    # backward from a saved xq costs ~8% of the conv's time.
    # A bias rides along in the GEMM as one more row of X (all ones) and one more column of
    # Wst (b for the block i = 0, zero for the others): no extra pass over the output.
    keep, rows = ctx.needs_input_grad[1], kw * c + (b is not None)
    shape = (rows, span + kw - 1)
    buf = xp.empty(shape, dtype=x.dtype) if keep else work_buffer(xp, "padded", shape, x.dtype)
    blocks = buf[:kw * c].reshape(kw, c, -1)
    xq = blocks[0]
    place(xq, 0, (c, n, hq, wq), slice(ph, ph + h), slice(pw, pw + wd), x.transpose(1, 0, 2, 3))
    for j in range(1, kw):
        blocks[j, :, :span] = xq[:, j:j + span]
    w_st = w.transpose(2, 0, 3, 1).reshape(kh * o, kw * c)
    if b is not None:
        buf[-1] = 1
        w_st = xp.concatenate([w_st, xp.zeros((kh * o, 1), dtype=w.dtype)], axis=1)
        w_st[:o, -1] = b
    ctx.save(buf[:kw * c, :span] if keep else None, w)
    z = work_buffer(xp, "products", (kh, o, span), x.dtype)
    xp.matmul(w_st, buf[:, :span], out=z.reshape(kh * o, span))

    def to_nchw(block):  # crop the garbage rows and columns
        return block.reshape(o, n, hq, wq)[:, :, :ho, :wo].transpose(1, 0, 2, 3)
    return sum_of_shifted_blocks(z, [i * wq for i in range(kh)], p, to_nchw)


def _shifted_backward(ctx, gy):
    # With g[o, q] = dy on the wide grid (zero at garbage positions) and
    # Gs[(i, o), t] = g[o, t - i Wq]  (kh row shifts of g):
    #   dW[o, c, i, j] = sum_q g[o, q] xq[c, q + i Wq + j] = sum_t Gs[(i, o), t] X[(j, c), t]
    #                    -> one GEMM  Gs X^T,
    #   dxq[c, q] = sum_{o, i, j} W[o, c, i, j] g[o, q - i Wq - j] = sum_j D[(j, c), q - j]
    #                    with D = Wc Gs,  Wc[(j, c), (i, o)] = W[o, c, i, j]:
    #                    one GEMM and kw - 1 shifted adds.
    # g is written straight into the unshifted block of Gs, so only kh - 1 copies are made.
    xp, (cols, w) = ctx.xp, ctx.saved
    (n, c, h, wd), (o, _, kh, kw), (ph, pw) = ctx.x_shape, w.shape, ctx.padding
    hq, wq, ho, wo = flat_grid(ctx.x_shape, (kh, kw), ctx.padding)
    p = n * hq * wq
    span = p + (kh - 1) * wq
    start = (kw - 1) + (kh - 1) * wq             # zeros before g absorb the negative shifts
    length = span + kw - 1                       # columns of each row shift of g
    gs = work_buffer(xp, "shifts", (kh, o, length + (kh - 1) * wq), gy.dtype)
    g = gs[kh - 1]                               # Gs block i: g moved i rows
    place(g, start, (o, n, hq, wq), slice(0, ho), slice(0, wo), gy.transpose(1, 0, 2, 3))
    for i in range(kh - 1):
        shift = (kh - 1 - i) * wq
        gs[i, :, :length] = g[:, shift:shift + length]
    gs = gs.reshape(kh * o, -1)[:, :length]
    dw = dx = db = None
    if ctx.needs_input_grad[2]:  # g is zero off the outputs: a product with ones sums it
        db = g @ xp.ones(g.shape[1], dtype=g.dtype)
    if ctx.needs_input_grad[1]:
        dw = (gs[:, kw - 1:] @ cols.T).reshape(kh, o, kw, c).transpose(1, 3, 0, 2)
    if ctx.needs_input_grad[0]:
        d = work_buffer(xp, "products", (kw, c, length), gy.dtype)
        w_c = w.transpose(3, 1, 2, 0).reshape(kw * c, kh * o)
        xp.matmul(w_c, gs, out=d.reshape(kw * c, length))

        def interior(block):  # drop the gradient that landed on padding
            return block.reshape(c, n, hq, wq)[:, :, ph:ph + h, pw:pw + wd].transpose(1, 0, 2, 3)
        dx = sum_of_shifted_blocks(d, [kw - 1 - j for j in range(kw)], p, interior)
    return dx, dw, db


# ---- strided route: im2col on a phase grid ------------------------------------------------
# With stride s, the inputs seen at kernel offset (i, j) by all windows form a strided view,
# and numpy copies strided views with short rows slowly. Splitting the padded input once into
# its s_h s_w phases (PhaseGrid below) makes each of those views one contiguous slice, so
# im2col and col2im become kh kw plain slice copies and adds.

def _strided_forward(ctx, x, w, b, stride, padding):
    xp = ctx.xp
    (n, c, h, wd), (o, _, kh, kw) = x.shape, w.shape
    ctx.grid = grid = PhaseGrid(n, (h, wd), (kh, kw), stride, padding)
    phases = grid.split(xp, x.transpose(1, 0, 2, 3), 0, slot="padded")    # (sh, sw, C, length)
    cols = xp.empty((c, kh * kw, grid.size), dtype=x.dtype)
    for k, phase, cells in grid.offsets():
        cols[:, k] = phases[phase][:, cells]
    cols = cols.reshape(c * kh * kw, grid.size)
    ctx.save(cols if ctx.needs_input_grad[1] else None, w)
    return _with_bias(xp, grid.crop(w.reshape(o, -1) @ cols).transpose(1, 0, 2, 3), b)


def _strided_backward(ctx, gy):
    xp, (cols, w), grid = ctx.xp, ctx.saved, ctx.grid
    (o, c, kh, kw), sh, sw = w.shape, *ctx.stride
    g = grid.widen(xp, gy.transpose(1, 0, 2, 3), slot="products")         # (O, size)
    dw = (g @ cols.T).reshape(w.shape) if ctx.needs_input_grad[1] else None
    dx = None
    if ctx.needs_input_grad[0]:
        dcols = work_buffer(xp, "shifts", (c * kh * kw, grid.size), gy.dtype)
        xp.matmul(w.reshape(o, -1).T, g, out=dcols)
        dcols = dcols.reshape(c, kh * kw, grid.size)
        d_phases = work_buffer(xp, "padded", (sh, sw, c, grid.length), gy.dtype, zero=True)
        for k, (a, b), cells in grid.offsets():   # col2im
            target = d_phases[a, b, :, cells]
            target += dcols[:, k]
        dx = xp.empty(ctx.x_shape, dtype=gy.dtype)
        grid.merge(d_phases, dx.transpose(1, 0, 2, 3))
    return dx, dw, None


# ---- the ops ---------------------------------------------------------------------------------

def _route(x_shape, w_shape, stride, padding):
    """(forward, backward) of the fastest route for this geometry. A route's forward returns
    the (N, O, Ho, Wo) result with the bias added, as a new C-contiguous array; its backward
    returns (dx, dW, db), db None when the caller should sum dy itself."""
    kernel = w_shape[2:]
    if kernel == (1, 1) and padding == (0, 0):
        return _pointwise_forward, _pointwise_backward
    if stride == (1, 1):
        return _shifted_forward, _shifted_backward
    return _strided_forward, _strided_backward


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
