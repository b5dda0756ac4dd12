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
"""
import math
import threading

import numpy as np

from ..autograd import Function
from ..checks import as_tensor, check_float, check_ndim, check_same, check_shape, pair


def output_size(size, kernel, stride, padding):
    """Number of window positions along one axis (torch's floor formula)."""
    return (size + 2 * padding - kernel) // stride + 1


_work = threading.local()


def work_buffer(xp, slot, shape, dtype, zero=False):
    """A reusable array for a temporary that never leaves the op that asks for it.

    On the CPU a fresh multi-megabyte array is paid for again in page faults at first touch,
    which costs about as much as the copies around it; so each thread keeps one buffer per
    (slot, dtype), grown to the largest request. Callers must not keep the result past their
    own return. cupy has its own memory pool, so on the GPU this is a plain allocation."""
    if xp is not np:
        return xp.zeros(shape, dtype=dtype) if zero else xp.empty(shape, dtype=dtype)
    buffers = _work.__dict__.setdefault("buffers", {})
    size, key = math.prod(shape), (slot, np.dtype(dtype))
    if key not in buffers or buffers[key].size < size:
        buffers[key] = np.empty(size, dtype=dtype)
    out = buffers[key][:size].reshape(shape)
    if zero:
        out.fill(0)
    return out


# ---- pointwise route: 1x1 kernel, padding 0 ---------------------------------------------
# A 1x1 conv is a matrix product per image: Y_n = W X_n with X_n (C, H W). Batched matmul
# on the NCHW data needs no transpose in or out; a stride just subsamples x first.

def _pointwise_forward(ctx, x, w, stride, padding):
    sh, sw = stride
    xs = x[:, :, ::sh, ::sw] if (sh, sw) != (1, 1) else x
    n, c, ho, wo = xs.shape
    x3 = ctx.xp.ascontiguousarray(xs).reshape(n, c, ho * wo)
    ctx.save(x3 if ctx.needs_input_grad[1] else None, w)  # x is needed only for dW
    return (w.reshape(w.shape[0], c) @ x3).reshape(n, w.shape[0], ho, wo)


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
    return dx, dw


# ---- shifted route: stride 1 -------------------------------------------------------------
# Lay the padded input out channel-major and flat, xq[c, q] with q = (n Hq + r) Wq + col.
# With stride 1, the window offset (i, j) is a shift by i Wq + j in q, so for every q
#     y[o, q] = sum_{c, i, j} W[o, c, i, j] xq[c, q + i Wq + j],
# a "wide" output on the flat grid whose rows >= Ho and columns >= Wo are garbage (windows
# wrapping past an edge) and are cropped. Rows are only Wq = W + pw long: a window running
# off the right edge reads the next row's left padding, which is zero as its own right
# padding would be; images likewise share their top/bottom padding rows. For a 'same' 3x3
# conv that leaves one garbage row and no garbage column per image.
# Stacking the kw column shifts of xq as rows X[(c, j), t] = xq[c, t + j] (kw copies of the
# input, in long contiguous runs, instead of the kh kw of im2col), one GEMM gives every
# row-offset term at once, and kh - 1 shifted adds finish the sum:
#     Z = Wst X  with  Wst[(i, o), (c, j)] = W[o, c, i, j],    y[o, q] = sum_i Z[(i, o), q + i Wq].
# Large temporaries live in work buffers (see work_buffer); the one copy at the end crops
# the garbage and transposes to NCHW.

def _flat_grid(x_shape, kernel, padding):
    """(Hq, Wq, Ho, Wo): pitches of the flat layout (room for the shared padding and for
    every output position) and the output size."""
    (h, w), (kh, kw), (ph, pw) = x_shape[2:], kernel, padding
    ho, wo = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    return max(h + ph, ho), max(w + pw, wo), ho, wo


def _shifted_rows(xp, a, offsets, length, slot=None):
    """Rows (r, k) = a[r, offsets[k] : offsets[k] + length]; no copy when there is one offset.
    The result is a new array, or a work buffer when `slot` is given."""
    if len(offsets) == 1:
        return a[:, offsets[0]:offsets[0] + length]
    shape = (a.shape[0], len(offsets), length)
    out = xp.empty(shape, dtype=a.dtype) if slot is None else work_buffer(xp, slot, shape, a.dtype)
    for k, off in enumerate(offsets):
        out[:, k] = a[:, off:off + length]
    return out.reshape(-1, length)


def _sum_of_shifted_blocks(z, offsets, length, layout):
    """layout(sum_k z[k, :, offsets[k] : offsets[k] + length]) as a new C-contiguous array.
    z is a work buffer, so the sum accumulates in place in its first block (contiguous adds
    run faster than adds through the cropped view); `layout` views a (rows, length) block of
    the flat grid as the wanted (N, C, H, W), and the final copy makes it so."""
    total = z[0, :, offsets[0]:offsets[0] + length]
    for k in range(1, len(offsets)):
        total += z[k, :, offsets[k]:offsets[k] + length]
    return layout(total).copy()


def _shifted_forward(ctx, x, w, stride, padding):
    xp = ctx.xp
    (n, c, h, wd), (o, _, kh, kw), (ph, pw) = x.shape, w.shape, padding
    hq, wq, ho, wo = _flat_grid(x.shape, (kh, kw), padding)
    p = n * hq * wq
    span = p + (kh - 1) * wq                     # columns read by the kh row shifts
    # X (C kw, span) is saved for dW: kw times the input's memory, but rebuilding it in
    # backward from a saved xq costs ~8% of the conv's time. With kw = 1, X is xq itself,
    # which then cannot live in a work buffer.
    xq = (work_buffer(xp, "padded", (c, span + kw - 1), x.dtype, zero=True) if kw > 1
          else xp.zeros((c, span), dtype=x.dtype))
    xq[:, :p].reshape(c, n, hq, wq)[:, :, ph:ph + h, pw:pw + wd] = x.transpose(1, 0, 2, 3)
    cols = _shifted_rows(xp, xq, range(kw), span)
    ctx.save(cols if ctx.needs_input_grad[1] else None, w)
    z = work_buffer(xp, "products", (kh * o, span), x.dtype)
    xp.matmul(w.transpose(2, 0, 1, 3).reshape(kh * o, c * kw), cols, out=z)
    z = z.reshape(kh, o, span)

    def to_nchw(block):  # crop the garbage rows and columns
        return block.reshape(o, n, hq, wq)[:, :, :ho, :wo].transpose(1, 0, 2, 3)
    return _sum_of_shifted_blocks(z, [i * wq for i in range(kh)], p, to_nchw)


def _shifted_backward(ctx, gy):
    # With g[o, q] = dy on the wide grid (zero at garbage positions) and
    # Gs[(o, i), t] = g[o, t - i Wq]  (kh row shifts of g):
    #   dW[o, c, i, j] = sum_q g[o, q] xq[c, q + i Wq + j] = sum_t Gs[(o, i), t] X[(c, j), t]
    #                    -> one GEMM  Gs X^T,
    #   dxq[c, q] = sum_{o, i, j} W[o, c, i, j] g[o, q - i Wq - j] = sum_j D[(j, c), q - j]
    #                    with D = Wc Gs,  Wc[(j, c), (o, i)] = W[o, c, i, j]:
    #                    one GEMM and kw - 1 shifted adds.
    xp, (cols, w) = ctx.xp, ctx.saved
    (n, c, h, wd), (o, _, kh, kw), (ph, pw) = ctx.x_shape, w.shape, ctx.padding
    hq, wq, ho, wo = _flat_grid(ctx.x_shape, (kh, kw), ctx.padding)
    p = n * hq * wq
    span = p + (kh - 1) * wq
    start = (kw - 1) + (kh - 1) * wq             # zeros before g absorb the negative shifts
    g = work_buffer(xp, "padded", (o, start + p + (kh - 1) * wq), gy.dtype, zero=True)
    g[:, start:start + p].reshape(o, n, hq, wq)[:, :, :ho, :wo] = gy.transpose(1, 0, 2, 3)
    gs = _shifted_rows(xp, g, [(kh - 1 - i) * wq for i in range(kh)], span + kw - 1, "shifts")
    dw = dx = None
    if ctx.needs_input_grad[1]:
        dw = (gs[:, kw - 1:] @ cols.T).reshape(o, kh, c, kw).transpose(0, 2, 1, 3)
    if ctx.needs_input_grad[0]:
        d = work_buffer(xp, "products", (kw * c, gs.shape[1]), gy.dtype)
        xp.matmul(w.transpose(3, 1, 0, 2).reshape(kw * c, o * kh), gs, out=d)
        d = d.reshape(kw, c, -1)

        def interior(block):  # drop the gradient that landed on padding
            return block.reshape(c, n, hq, wq)[:, :, ph:ph + h, pw:pw + wd].transpose(1, 0, 2, 3)
        dx = _sum_of_shifted_blocks(d, [kw - 1 - j for j in range(kw)], p, interior)
    return dx, dw


# ---- strided route: im2col on a phase grid ------------------------------------------------
# With stride s, the inputs seen at kernel offset (i, j) by all windows form a strided view,
# and numpy copies strided views with short rows slowly. Splitting the padded input once into
# its s_h s_w phases (PhaseGrid below) makes each of those views one contiguous slice, so
# im2col and col2im become kh kw plain slice copies and adds.

class PhaseGrid:
    """Flat layout in which each kernel offset of a strided window sweep reads one slice.

    Input x (R, P, H, W): R rows (channels for a conv, 1 for pooling) of P planes. The padded
    planes are split by position modulo the stride into s_h s_w phases, each flattened:
        phase[a, b][r, (p, u, v)] = xpad[r, p, s_h u + a, s_w v + b],   u < Hq, v < Wq.
    Outputs live on the same (p, h, w) grid with flat index m, so that
        xpad[r, p, s_h h + i, s_w w + j] = phase[i mod s_h, j mod s_w][r, m + (i//s_h) Wq + j//s_w].
    Cells with h >= Ho or w >= Wo are garbage (their windows wrap past an edge) and are cropped.
    Within one offset no input element is read twice, so col2im is a plain slice add.
    """

    def __init__(self, planes, hw, kernel, stride, padding):
        (h, w), (kh, kw), (sh, sw), (ph, pw) = hw, kernel, stride, padding
        self.hw, self.kernel, self.stride, self.padding = hw, kernel, stride, padding
        self.out_hw = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
        self.grid = (planes, -(-(h + 2 * ph) // sh), -(-(w + 2 * pw) // sw))   # P, Hq, Wq
        self.size = math.prod(self.grid)
        # room after the grid for the reads of the last cells at the largest offset
        self.length = self.size + ((kh - 1) // sh) * self.grid[2] + (kw - 1) // sw

    def offsets(self):
        """(k, phase (a, b), slice of that phase) for each kernel offset k = (i, j), row-major."""
        (kh, kw), (sh, sw) = self.kernel, self.stride
        for i in range(kh):
            for j in range(kw):
                start = (i // sh) * self.grid[2] + j // sw
                yield i * kw + j, (i % sh, j % sw), slice(start, start + self.size)

    def _entries(self, a, b):
        """(index into a phase grid, index into x) of the inputs that phase (a, b) holds."""
        picks = []
        for size, pad, s, phase in zip(self.hw, self.padding, self.stride, (a, b)):
            first = (phase - pad) % s            # first input index u with u + pad = phase mod s
            count = len(range(first, size, s))
            start = (first + pad) // s
            picks.append((slice(start, start + count), slice(first, size, s)))
        (grid_rows, x_rows), (grid_cols, x_cols) = picks
        return (Ellipsis, grid_rows, grid_cols), (Ellipsis, x_rows, x_cols)

    def _phase_grids(self, phases):
        for a in range(self.stride[0]):
            for b in range(self.stride[1]):
                yield (a, b), phases[a, b, :, :self.size].reshape((-1,) + self.grid)

    def split(self, xp, x, fill, slot=None):
        """The phases of x (R, P, H, W) padded with `fill`: an (s_h, s_w, R, length) array,
        new or (with `slot`) a work buffer."""
        shape = self.stride + (x.shape[0], self.length)
        phases = xp.empty(shape, dtype=x.dtype) if slot is None else \
            work_buffer(xp, slot, shape, x.dtype)
        phases[..., self.size:] = fill
        for (a, b), grid in self._phase_grids(phases):
            in_grid, in_x = self._entries(a, b)
            _, rows, cols = in_grid
            # fill only around the data: filling everything first would cost a full pass
            grid[:, :, :rows.start] = fill
            grid[:, :, rows.stop:] = fill
            grid[:, :, rows, :cols.start] = fill
            grid[:, :, rows, cols.stop:] = fill
            grid[in_grid] = x[in_x]
        return phases

    def merge(self, phases, out):
        """Inverse of `split` for gradients: write the input entries of the phases to `out`
        (R, P, H, W), which may be a transposed view."""
        for (a, b), grid in self._phase_grids(phases):
            in_grid, in_x = self._entries(a, b)
            out[in_x] = grid[in_grid]
        return out

    def crop(self, cells):
        """View (..., P, Ho, Wo) of the valid cells of a (..., size) grid array."""
        ho, wo = self.out_hw
        return cells.reshape(cells.shape[:-1] + self.grid)[..., :ho, :wo]

    def widen(self, xp, y, slot=None):
        """(..., size) grid array holding y (..., P, Ho, Wo), zero on the garbage cells."""
        shape = y.shape[:-3] + (self.size,)
        cells = xp.zeros(shape, dtype=y.dtype) if slot is None else \
            work_buffer(xp, slot, shape, y.dtype, zero=True)
        self.crop(cells)[...] = y
        return cells


def _strided_forward(ctx, x, w, stride, padding):
    xp = ctx.xp
    (n, c, h, wd), (o, _, kh, kw) = x.shape, w.shape
    ctx.grid = grid = PhaseGrid(n, (h, wd), (kh, kw), stride, padding)
    phases = grid.split(xp, x.transpose(1, 0, 2, 3), 0, slot="padded")    # (sh, sw, C, length)
    cols = xp.empty((c, kh * kw, grid.size), dtype=x.dtype)
    for k, (a, b), cells in grid.offsets():
        cols[:, k] = phases[a, b, :, cells]
    cols = cols.reshape(c * kh * kw, grid.size)
    ctx.save(cols if ctx.needs_input_grad[1] else None, w)
    return grid.crop(w.reshape(o, -1) @ cols).transpose(1, 0, 2, 3)


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
    return dx, dw


# ---- the ops ---------------------------------------------------------------------------------

def _route(kernel, stride, padding):
    """(forward, backward) of the fastest route for this geometry. A route's forward returns
    the (N, O, Ho, Wo) result without bias, either a fresh array or a view of one."""
    if kernel == (1, 1) and padding == (0, 0):
        return _pointwise_forward, _pointwise_backward
    if stride == (1, 1):
        return _shifted_forward, _shifted_backward
    return _strided_forward, _strided_backward


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding):
        ctx.stride, ctx.padding, ctx.x_shape = stride, padding, x.shape
        route_forward, ctx.route_backward = _route(w.shape[2:], stride, padding)
        y = route_forward(ctx, x, w, stride, padding)
        if y.flags.c_contiguous:  # already laid out as NCHW: add the bias in place
            if b is not None:
                y += b.reshape(-1, 1, 1)
            return y
        # A view: the bias add doubles as the copy that makes the output contiguous NCHW.
        if b is None:
            return ctx.xp.ascontiguousarray(y)
        return ctx.xp.add(y, b.reshape(-1, 1, 1), out=ctx.xp.empty(y.shape, dtype=y.dtype))

    @staticmethod
    def backward(ctx, gy):
        dx, dw = ctx.route_backward(ctx, gy)
        db = gy.sum(axis=(0, 2, 3)) if ctx.needs_input_grad[2] else None
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


def hyper_pair(value, name, minimum):
    """An int or pair of ints, each >= minimum (1 for strides and kernels, 0 for paddings)."""
    result = pair(value, name)
    if min(result) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name}: expected {kind} ints, got {value!r}")
    return result


def check_window_fits(name, kernel, size, padding, shape):
    """Raise unless a kernel fits in the padded input along every axis (output >= 1)."""
    padded = tuple(s + 2 * p for s, p in zip(size, padding))
    if any(k > s for k, s in zip(kernel, padded)):
        raise ValueError(f"{name}: kernel size {tuple(kernel)} is larger than the padded input "
                         f"{padded} (input {tuple(shape)} with padding {tuple(padding)})")


def _conv_operands(op, input, weight, bias, ndim, x_layout, w_layout):
    x = check_float(as_tensor(input, f"{op}: input"), f"{op}: input")
    w = check_float(as_tensor(weight, f"{op}: weight"), f"{op}: weight")
    check_ndim(x, f"{op}: input", ndim, x_layout)
    check_ndim(w, f"{op}: weight", ndim, w_layout)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: weight: expects {w.shape[1]} input channels (shape "
                         f"{tuple(w.shape)}), but input has {x.shape[1]} (shape {tuple(x.shape)})")
    b = None
    if bias is not None:
        b = check_shape(as_tensor(bias, f"{op}: bias"), f"{op}: bias", (w.shape[0],),
                        "(out_channels,)")
    check_same(f"{op}: input", x, **{f"{op}: weight": w, f"{op}: bias": b})
    return x, w, b


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
    x, w, b = _conv_operands("conv2d", input, weight, bias, 4, "(N, C, H, W)",
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
    x, w, b = _conv_operands("conv1d", input, weight, bias, 3, "(N, C, L)",
                             "(out_channels, in_channels, K)")
    stride = _single(stride, "conv1d: stride", 1)
    padding = _single(padding, "conv1d: padding", 0)
    check_window_fits("conv1d: weight", w.shape[2:], x.shape[2:], (padding,), x.shape)
    return Conv1d.apply(x, w, b, stride=stride, padding=padding)
