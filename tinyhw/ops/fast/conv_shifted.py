"""conv2d's shifted routes, "shifted" and "shifted-per-offset" (see ops/conv.py for the
formulas: y = W cols, dW = dY cols^T, dcols = W^T dY; this file evaluates them without
building cols). Both run any kernel, stride and padding; conv.choose_route takes "shifted"
for every kernel but 1x1 without padding. They differ in the grid's columns and in how dW is
formed: "shifted" folds the column padding into masks where it can (flat_grid.FlatGrid) and
forms dW with one GEMM per chunk; "shifted-per-offset" keeps padded columns and forms dW
with one GEMM per column shift on views of the phases (_WeightGradient)."""
from .buffers import work_buffer
from .flat_grid import FlatGrid, axis_phases, can_fold, sum_of_shifted_blocks


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
# Measured and not taken (bench/NOTES.md has the figures): im2col per chunk into a reused
# buffer, one GEMM with K = kh kw C and no shifted adds, ran the forward 1.2-1.7x slower on
# CIFAR's 16-, 32- and 64-channel layers (its kh kw - 1 copies cost more than the adds saved,
# and the GEMM is no faster); the chunks split between two threads, each GEMM on a
# single-threaded BLAS, gained nothing steady on an idle machine (the GIL hand-offs between
# the many small NumPy calls of a chunk eat the second core).
# Folded columns (flat_grid.FlatGrid, at column stride 1): rows of W cells without padding,
# so the writes into the grid and the crops out of it move whole planes; the column shifts
# that wrapped onto a neighbouring row are zeroed in X after the copies, and in dX before its
# shifted sum. On resnet20 (batch 128) that made the step ~10% faster (bench/NOTES.md).


class _Layout:
    """Geometry of one call: the FlatGrid, its phases, X's blocks (one per phase and column
    shift jj, phase by phase) and the number of row shifts ii (Z's row blocks)."""

    def __init__(self, xp, x_shape, w_shape, stride, padding, itemsize, per_offset):
        (o, c, kh, kw), (h, w) = w_shape, x_shape[2:]
        self.stride, self.per_offset = stride, per_offset
        # per_offset's dW reads X's column shifts as views of the phases, which need real
        # zero padding: it keeps the padded columns.
        fold = not per_offset and can_fold(kw, stride[1], padding[1])
        self.row_taps = -(-kh // stride[0])       # row shifts ii (phase a = 0 has the most)
        self.col_taps = -(-kw // stride[1])       # column shifts jj (phase b = 0)
        # blocks (a, b, jj), phase by phase in FlatGrid.phases()'s order; each phase's jj = 0 block
        self.blocks, self.first_block = [], []
        col_phases = axis_phases(kw, stride[1], padding[1], w)
        for a in range(len(axis_phases(kh, stride[0], padding[0], h))):
            for b, cp in enumerate(col_phases):
                self.first_block.append(len(self.blocks))
                self.blocks += [(a, b, jj) for jj in range(cp.taps)]
        rows = max(len(self.blocks) * c, self.row_taps * o)   # X's and Z's rows per column
        self.grid = FlatGrid(xp, x_shape, (kh, kw), stride, padding, rows, itemsize, fold)
        # columns Z covers: the planes and their row shifts (and the folded grid's lead, so
        # that the backward's sums reach the last data cell)
        self.span = self.grid.size + (self.row_taps - 1) * self.grid.wq + self.grid.lead

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
            grid.write(blocks[first], grid.lead, grid.corner(rp, cp), grid.inputs(x, rp, cp))

    def write_columns(self, blocks, x):
        """All of X for the images x: the phases, then their column-shifted copies (then, on a
        folded grid, the reads that wrapped onto a neighbouring row zeroed)."""
        self.write_phases(blocks, x)
        for k, (_, _, jj) in enumerate(self.blocks):
            if jj:
                blocks[k, :, :self.span] = blocks[k - jj, :, jj:jj + self.span]
        for k, (_, _, jj) in enumerate(self.blocks):
            self.grid.zero_wrapped(blocks[k], jj)


def forward(ctx, x, w, b, stride, padding, per_offset):
    xp = ctx.xp
    (n, c, _, _), (o, _, _, _) = x.shape, w.shape
    ctx.layout = layout = _Layout(xp, x.shape, w.shape, stride, padding, x.itemsize, per_offset)
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


def backward(ctx, gy):
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

    per_offset (padded columns only): each block of X is a column shift of a phase, so dW can
    be one GEMM per block on views of the phases, with no copies; with OpenBLAS's Haswell
    kernels these (row_taps O, C) products ran faster than one (row_taps O, blocks C) product
    for C <= 16 (with its SkylakeX kernels they do not). Otherwise one GEMM on all of X,
    written out (with the wrapped reads of a folded grid zeroed)."""

    def __init__(self, xp, layout, x, w, dtype):
        self.xp, self.layout, self.x, self.w_shape = xp, layout, x, w.shape
        c, n_blocks, rows = w.shape[1], len(layout.blocks), layout.row_taps * w.shape[0]
        self.buf = work_buffer(xp, "columns", (n_blocks * c, layout.span + layout.col_taps - 1),
                               x.dtype, zero=True)
        self.blocks = self.buf.reshape(n_blocks, c, -1)
        per_offset = layout.per_offset
        self.total = xp.zeros((n_blocks, rows, c) if per_offset else (rows, n_blocks * c),
                              dtype=dtype)
        self.part = xp.empty_like(self.total)

    def add_chunk(self, g_cols, first, stop):
        """Add Gs X^T of the images first..stop-1; g_cols is Gs over X's columns."""
        xp, layout, span, blocks = self.xp, self.layout, self.layout.span, self.blocks
        if layout.per_offset:  # the phases only, and a GEMM per block on shifted views
            layout.write_phases(blocks, self.x[first:stop])
            for k, (_, _, jj) in enumerate(layout.blocks):
                xp.matmul(g_cols, blocks[k - jj, :, jj:jj + span].T, out=self.part[k])
        else:
            layout.write_columns(blocks, self.x[first:stop])
            xp.matmul(g_cols, self.buf[:, :span].T, out=self.part)
        self.total += self.part

    def result(self):
        total = self.total.transpose(1, 0, 2) if self.layout.per_offset else self.total
        return self.layout.weight_gradient(self.xp, total, self.w_shape)


def _phase_gradients(layout, d, joff, dx):
    """Sum each phase's column-shift blocks of d (blocks, C, length) and write the data cells
    to dx (k, C, H, W), at that phase's positions."""
    grid = layout.grid
    for k, (_, _, jj) in enumerate(layout.blocks):   # reads that wrapped fed no input
        grid.zero_wrapped(d[k, :, joff:], jj)
    for first, (_, _, rp, cp) in zip(layout.first_block, grid.phases()):
        target = grid.inputs(dx, rp, cp)
        sum_of_shifted_blocks(
            d[first:first + cp.taps], [joff - jj for jj in range(cp.taps)], grid.lead + grid.size,
            lambda t: grid.view(t[:, grid.lead:], dx.shape[0], grid.corner(rp, cp),
                                target.shape[2:]),
            target)
