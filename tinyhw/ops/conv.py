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
  shifted    any other: no im2col; the GEMM's operand stacks a few contiguous shifts of the
             flat padded images (of each phase of the input, for a stride), and a few
             shifted adds finish the sum; the batch goes through in chunks that fit in L2.
(A Winograd F(2x2, 3x3) route was tried and measured slower on every shape on a 2-core CPU:
its 2.25x smaller GEMMs save less time than its single-threaded transform passes cost.
On CIFAR's small channel counts, the GEMMs, whose K = kw C or M = kh O is small, take about
two thirds of the time; the copies and adds around them the rest.)
"""
from ..autograd import Function
from .window import (FlatGrid, check_window_fits, conv_operands, hyper_pair,
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


# ---- shifted route: any kernel and stride -------------------------------------------------
# Stride 1 first. Lay the padded input out channel-major and flat, xq[c, q] with
# q = (n Hq + r) Wq + col. The window offset (i, j) is then a shift by i Wq + j in q, so
#     y[o, q] = sum_{c, i, j} W[o, c, i, j] xq[c, q + i Wq + j],
# a "wide" output on the flat grid whose rows >= Ho and columns >= Wo are garbage (windows
# wrapping past an edge) and are cropped. Rows are only Wq = W + pw long: a window running
# off the right edge reads the next row's left padding, which is zero as its own right
# padding would be; images likewise share their top/bottom padding rows (FlatGrid).
# Stacking the kw column shifts of xq as rows X[(j, c), t] = xq[c, t + j] (kw copies of the
# input, in long contiguous runs, instead of the kh kw of im2col), one GEMM gives every
# row-offset term at once, and kh - 1 shifted adds finish the sum:
#     Z = Wst X  with  Wst[(i, o), (j, c)] = W[o, c, i, j],    y[o, q] = sum_i Z[(i, o), q + i Wq].
# Block j = 0 of X is xq itself (the input is written straight into it): kw - 1 copies.
# Stride s: split the padded input into its s_h s_w phases (FlatGrid), each laid out as
# above; offset (i, j) = (s_h ii + a, s_w jj + b) of output (h, w) reads phase (a, b) at cell
# (h + ii, w + jj). X stacks, per phase, its column shifts jj, and Z's rows are the row
# shifts ii: the same GEMM and adds, with Wst[(ii, o), (a, b, jj, c)] = W[o, c, s_h ii + a,
# s_w jj + b] and zeros where s_h ii + a >= kh (25% of Wst for 3x3 stride 2, cheaper than
# splitting the GEMM to skip them). For 3x3 stride 2 that is 2 copies besides writing the
# phases, where im2col makes 9.
# No window crosses from one image's plane into the next one's data, so the batch is cut
# into chunks of whole images, each a small conv of its own: its temporaries (X, Z) stay
# in L2 cache through the copies, the GEMM and the adds, and the crop writes the chunk
# straight into y. The padding cells of the work buffers are zeroed once per call; each
# chunk only writes its data cells. The backward rebuilds X chunk by chunk from x (cheaper
# than keeping the copies of the input from the forward).

# dW as one GEMM per block of X, on views of the phases (see _shifted_backward), up to this
# many input channels.
_PER_OFFSET_MAX_CHANNELS = 16


class _Layout:
    """Geometry of one call: the FlatGrid, its phases, X's blocks (one per phase and column
    shift jj, phase by phase) and the number of row shifts ii (Z's row blocks)."""

    def __init__(self, xp, x_shape, w_shape, stride, padding, itemsize):
        (o, c, kh, kw) = w_shape
        self.stride = stride
        self.row_taps = -(-kh // stride[0])       # row shifts ii (phase a = 0 has the most)
        self.col_taps = -(-kw // stride[1])       # column shifts jj (phase b = 0)
        phases = FlatGrid(xp, x_shape, (kh, kw), stride, padding, 1, itemsize).phases()
        self.blocks, self.first_block = [], []    # blocks (a, b, jj); each phase's jj = 0 block
        for a, b, _, cp in phases:
            self.first_block.append(len(self.blocks))
            self.blocks += [(a, b, jj) for jj in range(cp.taps)]
        rows = max(len(self.blocks) * c, self.row_taps * o)   # X's and Z's rows per column
        self.grid = FlatGrid(xp, x_shape, (kh, kw), stride, padding, rows, itemsize)
        self.span = self.grid.size + (self.row_taps - 1) * self.grid.wq   # columns Z covers

    def stacked_weights(self, xp, w):
        """Wst (row_taps O, blocks C): Wst[(ii, o), (block, c)] = W[o, c, s_h ii + a, s_w jj + b],
        zero where s_h ii + a >= kh."""
        (o, c, kh, _), (sh, sw) = w.shape, self.stride
        w_st = xp.zeros((self.row_taps, o, len(self.blocks), c), dtype=w.dtype)
        for k, (a, b, jj) in enumerate(self.blocks):
            for ii in range((kh - 1 - a) // sh + 1):
                w_st[ii, :, k] = w[:, :, sh * ii + a, sw * jj + b]
        return w_st.reshape(self.row_taps * o, -1)

    def weight_gradient(self, xp, dw_st, w_shape):
        """dW (O, C, kh, kw) from dWst (row_taps O, blocks C), the gradient of Wst."""
        (o, c, kh, _), (sh, sw) = w_shape, self.stride
        dw_st = dw_st.reshape(self.row_taps, o, len(self.blocks), c)
        dw = xp.empty(w_shape, dtype=dw_st.dtype)
        for k, (a, b, jj) in enumerate(self.blocks):
            for ii in range((kh - 1 - a) // sh + 1):
                dw[:, :, sh * ii + a, sw * jj + b] = dw_st[ii, :, k]
        return dw

    def write_phases(self, blocks, x):
        """Write the images x (k, C, H, W) into the jj = 0 block of each phase of X's blocks
        (n_blocks, C, columns)."""
        grid = self.grid
        for first, (_, _, rp, cp) in zip(self.first_block, grid.phases()):
            grid.write(blocks[first], 0, (rp.first_cell, cp.first_cell), grid.inputs(x, rp, cp))

    def write_columns(self, blocks, x):
        """All of X for the images x: the phases, then their column-shifted copies."""
        self.write_phases(blocks, x)
        for k, (_, _, jj) in enumerate(self.blocks):
            if jj:
                blocks[k, :, :self.span] = blocks[k - jj, :, jj:jj + self.span]


def _shifted_forward(ctx, x, w, b, stride, padding):
    xp = ctx.xp
    (n, c, _, _), (o, _, _, _) = x.shape, w.shape
    ctx.layout = layout = _Layout(xp, x.shape, w.shape, stride, padding, x.itemsize)
    grid, span = layout.grid, layout.span
    # A bias rides along in the GEMM as one more row of X (all ones) and one more column of
    # Wst (b for the block i = 0, zero for the others): no extra pass over the output.
    rows = len(layout.blocks) * c
    buf = work_buffer(xp, "columns", (rows + (b is not None), span + layout.col_taps - 1),
                      x.dtype, zero=True)
    blocks = buf[:rows].reshape(len(layout.blocks), c, -1)
    w_st = layout.stacked_weights(xp, w)
    if b is not None:
        buf[-1] = 1
        w_st = xp.concatenate([w_st, xp.zeros((w_st.shape[0], 1), dtype=w.dtype)], axis=1)
        w_st[:o, -1] = b
    z = work_buffer(xp, "products", (layout.row_taps, o, span), x.dtype)
    y = xp.empty((n, o, grid.ho, grid.wo), dtype=x.dtype)
    for first, stop in grid.chunks(n):
        layout.write_columns(blocks, x[first:stop])
        xp.matmul(w_st, buf[:, :span], out=z.reshape(-1, span))
        sum_of_shifted_blocks(z, [ii * grid.wq for ii in range(layout.row_taps)], grid.size,
                              lambda t: grid.view(t, stop - first, (0, 0), (grid.ho, grid.wo)),
                              y[first:stop])
    ctx.save(x if ctx.needs_input_grad[1] else None, w)
    return y


def _shifted_backward(ctx, gy):
    # With g[o, q] = dy on the wide grid (zero at garbage positions) and
    # Gs[(ii, o), t] = g[o, t - ii Wq]  (the row shifts of g):
    #   dWst = sum over chunks of  Gs X^T  (one GEMM per chunk), then dW from dWst,
    #   dX = Wst^T Gs, and each phase's gradient sums its column-shift blocks of dX:
    #       dphase(a, b)[c, q] = sum_jj dX[(a, b, jj, c), q - jj],
    #   whose data cells are dx's entries at that phase's positions.
    # g is written straight into the unshifted block of Gs, so only row_taps - 1 copies.
    xp, (x, w), layout = ctx.xp, ctx.saved, ctx.layout
    need_dx, need_dw, need_db = ctx.needs_input_grad
    (n, c, _, _), o = ctx.x_shape, w.shape[0]
    grid, span, taps = layout.grid, layout.span, layout.row_taps
    joff = layout.col_taps - 1                   # zero columns before g: room for jj shifts
    start = joff + (taps - 1) * grid.wq          # ... and for the row shifts
    length = span + joff                         # columns of each row shift of g
    gs = work_buffer(xp, "shifts", (taps, o, length + (taps - 1) * grid.wq), gy.dtype,
                     zero=True)
    g = gs[taps - 1]                             # Gs block ii: g moved ii rows
    gs_rows = gs.reshape(taps * o, -1)[:, :length]
    dx = db = None
    dw = _WeightGradient(xp, layout, x, w, gy.dtype) if need_dw else None
    if need_db:
        db = xp.zeros(o, dtype=gy.dtype)
        ones = xp.ones(g.shape[1], dtype=gy.dtype)
    if need_dx:  # inputs in no phase (kernel shorter than the stride) get no gradient
        skipped = len(grid.row_phases) < ctx.stride[0] or len(grid.col_phases) < ctx.stride[1]
        dx = (xp.zeros if skipped else xp.empty)(ctx.x_shape, dtype=gy.dtype)
        d = work_buffer(xp, "products", (len(layout.blocks), c, length), gy.dtype)
        w_c = layout.stacked_weights(xp, w).T
    for first, stop in grid.chunks(n):
        grid.write(g, start, (0, 0), gy[first:stop])
        for ii in range(taps - 1):
            shift = (taps - 1 - ii) * grid.wq
            gs[ii, :, :length] = g[:, shift:shift + length]
        if need_db:  # g is zero off the outputs: a product with ones sums it
            db += g @ ones
        if need_dw:
            dw.add_chunk(gs_rows[:, joff:joff + span], first, stop)
        if need_dx:
            xp.matmul(w_c, gs_rows, out=d.reshape(-1, length))
            _phase_gradients(layout, d, joff, dx[first:stop])
    return dx, (dw.result() if need_dw else None), db


class _WeightGradient:
    """dWst accumulated over the chunks (Gs X^T), then dW.

    Few channels: each block of X is a column shift of a phase, so dW can be one GEMM per
    block on views of the phases, with no copies; OpenBLAS also runs these (row_taps O, C)
    products faster than one (row_taps O, blocks C) product when C <= 16 (measured)."""

    def __init__(self, xp, layout, x, w, dtype):
        self.xp, self.layout, self.x, self.w_shape = xp, layout, x, w.shape
        c, n_blocks, rows = w.shape[1], len(layout.blocks), layout.row_taps * w.shape[0]
        self.per_offset = c <= _PER_OFFSET_MAX_CHANNELS
        self.buf = work_buffer(xp, "columns", (n_blocks * c, layout.span + layout.col_taps - 1),
                               x.dtype, zero=True)
        self.blocks = self.buf.reshape(n_blocks, c, -1)
        self.total = xp.zeros((n_blocks, rows, c) if self.per_offset else (rows, n_blocks * c),
                              dtype=dtype)
        self.part = xp.empty_like(self.total)

    def add_chunk(self, g_cols, first, stop):
        """Add Gs X^T of the images first..stop-1; g_cols is Gs over X's columns."""
        xp, layout, span, blocks = self.xp, self.layout, self.layout.span, self.blocks
        if self.per_offset:  # the phases only, and a GEMM per block on shifted views
            layout.write_phases(blocks, self.x[first:stop])
            for k, (_, _, jj) in enumerate(layout.blocks):
                xp.matmul(g_cols, blocks[k - jj, :, jj:jj + span].T, out=self.part[k])
        else:
            layout.write_columns(blocks, self.x[first:stop])
            xp.matmul(g_cols, self.buf[:, :span].T, out=self.part)
        self.total += self.part

    def result(self):
        total = self.total.transpose(1, 0, 2) if self.per_offset else self.total
        return self.layout.weight_gradient(self.xp, total, self.w_shape)


def _phase_gradients(layout, d, joff, dx):
    """Sum each phase's column-shift blocks of d (blocks, C, length) and write the data cells
    to dx (k, C, H, W), at that phase's positions."""
    grid = layout.grid
    for first, (_, _, rp, cp) in zip(layout.first_block, grid.phases()):
        target = grid.inputs(dx, rp, cp)
        sum_of_shifted_blocks(
            d[first:first + cp.taps], [joff - jj for jj in range(cp.taps)], grid.size,
            lambda t: grid.view(t, dx.shape[0], (rp.first_cell, cp.first_cell), target.shape[2:]),
            target)


# ---- the ops ---------------------------------------------------------------------------------

def _route(x_shape, w_shape, stride, padding):
    """(forward, backward) of the fastest route for this geometry. A route's forward returns
    the (N, O, Ho, Wo) result with the bias added, as a new C-contiguous array; its backward
    returns (dx, dW, db), db None when the caller should sum dy itself."""
    if w_shape[2:] == (1, 1) and padding == (0, 0):
        return _pointwise_forward, _pointwise_backward
    return _shifted_forward, _shifted_backward


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
