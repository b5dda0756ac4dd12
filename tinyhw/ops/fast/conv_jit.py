"""conv2d's "jit" route: the shifted route's GEMMs, with every copy and add around them one
compiled loop split over the cores (jit.py; NumPy arrays, Numba installed). Any kernel,
stride and padding; a 1x1 kernel without padding goes to conv_jit_pointwise.py unless its
weights outgrow the chunk budget (`_per_image`). See ops/conv.py for the formulas.

Layout, per chunk of m images (sized to stay in cache, as the shifted route's chunks). Split
the rows of the padded input by their phase modulo the row stride, a = r mod s_h (only the
A = min(s_h, kh) phases some kernel row reads), and stack its kw column shifts, taken at the
column stride:
    X[(a, j, c), (k, u, w)] = xpad[n, c, s_h u + a, s_w w + j]      u < Hq, w < Wo
with n the chunk's image k and Hq = Ho + RT - 1 rows, RT = ceil(kh / s_h) row taps (image k's
rows start at row k P, P <= Hq: at stride 1 consecutive images share their zero rows, see
conv_jit_loops.py). Kernel
row i = s_h ii + a of output row h reads row u = h + ii of phase a, so with
    Wst[(ii, o), (a, j, c)] = W[o, c, s_h ii + a, j]   (zero where s_h ii + a >= kh)
one GEMM per phase gives every term (Z = Wst X, Wst's rows of phase a against X's rows of
phase a, so that the kernel rows a phase lacks cost nothing), and shifted adds finish the sum:
    y[n, o, h, w] = b[o] + sum_ii Z[(ii, o), (k, h + ii, w)].
X holds kw / s_w copies of the input (3 for a 3x3 kernel at stride 1, 1.5 at stride 2).
Backward, with the row shifts of dy
    Gs[(ii, o), (k, u, w)] = dy[n, o, u - ii, w]     (zero where u - ii is not an output row)
the forward's transpose: dWst = sum over chunks of Gs X^T, D = Wst^T Gs = dL/dX, and each
input element gathers the entries of D that copied it: xpad[n, c, r, col] sits in X at phase
a = r mod s_h, row u = r div s_h, and at (j, w) for every j with col = s_w w + j.
The layouts Wst and Wst^T, and dW from the chunks' parts, are compiled copies too
(conv_jit_weights.py).

When the channels are few and the filters many (resnet50's first conv: 3 channels, 64 filters
of 7x7 at stride 2), Z's (RT O) rows per cell outgrow X's (A kw C) many times over (448
against 42 there) and the GEMMs, 21 deep, mostly write Z. Then the route takes every kernel
row as a block of X of its own ("im2col"): X[(i, j, c), (k, h, w)] = xpad[n, c, s_h h + i,
s_w w + j], Hq = P = Ho, and one GEMM with W laid out as (O, kh kw C) gives y (Z = y's rows,
one tap). `_Geometry` takes it at strides above 1 where its rows per image, max(X's, Z's) x P,
are fewer than the row taps' (resnet50's first conv, fwd+bwd: 0.72-0.76 the time).

Unlike the NumPy shifted route, the chunks of a batch are split between the cores: each worker
runs its chunks from start to end, the copies that build X and Gs from x and dy, the GEMMs
(np.dot: Numba calls SciPy's BLAS, kept at one thread per caller by jit.py) and the sums that
write y and dx from Z and D (conv_jit_loops.py), with its chunk in its own core's L2 cache,
as torch's oneDNN gives each core its own slice of the batch. The chunks do not depend on the
thread count, nor then does dW's order of sums.
"""
import numpy as np

from . import conv_jit_loops as loops
from . import conv_jit_pointwise, conv_jit_weights, conv_pointwise, flat_grid, forced_layout, jit
from .jit import prange
from ..window import output_size


def runs_on(xp):
    """Whether the route can run: Numba installed and NumPy arrays."""
    return jit.available and xp is np


# ---- the parallel loops over chunks --------------------------------------------------------
# Chunk t, t + workers, ... goes to worker t; the sizes (sh, sw, ph, pw, kw, P, Hq, Wo, m,
# workers) come from _Geometry.sizes, the masks of wrapped columns from _Geometry.masks (empty
# where the plane copies do not apply), the weight blocks from _Geometry.weights.

def _forward_chunks(x, w_phases, shifts, bias, sh, sw, ph, pw, kw, pitch, hq, wo, m, workers,
                    masks, y):
    """y from x, with w_phases[a] = the weights of X's block a: Wst_a (taps_a O, kw C) per
    phase, or under im2col the one block (O, kh kw C)."""
    n, o, block_rows = x.shape[0], y.shape[1], w_phases[0].shape[1]
    x_rows, blocks = len(w_phases) * block_rows, len(shifts)
    chunks = (n + m - 1) // m
    for t in prange(workers):
        for chunk in range(t, chunks, workers):
            first, count, length = loops.chunk_extent(chunk, m, n, pitch, hq, wo)
            cols = np.empty((x_rows, length), dtype=x.dtype)
            loops.columns(x, first, count, sh, sw, ph, pw, kw, pitch, hq, wo, masks, cols)
            z = np.empty((blocks * o, length), dtype=x.dtype)
            row = 0
            for a in range(len(w_phases)):
                taps = w_phases[a].shape[0]
                np.dot(w_phases[a], cols[a * block_rows:(a + 1) * block_rows], z[row:row + taps])
                row += taps
            loops.sum_row_taps(z.reshape((blocks, o, length)), shifts, first, count, pitch,
                               bias, y)


def _backward_chunks(x, dy, w_phases_t, sh, sw, ph, pw, kw, pitch, hq, wo, m, workers,
                     masks, dw_parts, dx):
    """dW's part of every chunk into dw_parts (chunks, A, RT O, kw C), or (chunks, 1, O, kh kw C)
    under im2col (if it has chunks; the rows of taps a phase lacks are left unwritten, and
    unread) and dx (if it has images)."""
    n, o = dy.shape[0], dy.shape[1]
    block_rows = w_phases_t[0].shape[0]
    x_rows, row_taps = len(w_phases_t) * block_rows, w_phases_t[0].shape[1] // o
    chunks = (n + m - 1) // m
    for t in prange(workers):
        for chunk in range(t, chunks, workers):
            first, count, length = loops.chunk_extent(chunk, m, n, pitch, hq, wo)
            gs = np.empty((row_taps * o, length), dtype=dy.dtype)
            loops.fill_row_shifts(dy, first, count, pitch, gs.reshape((row_taps, o, length)))
            if dw_parts.shape[0]:
                cols = np.empty((x_rows, length), dtype=dy.dtype)
                loops.columns(x, first, count, sh, sw, ph, pw, kw, pitch, hq, wo, masks, cols)
                for a in range(len(w_phases_t)):
                    taps = w_phases_t[a].shape[1]
                    np.dot(gs[:taps], cols[a * block_rows:(a + 1) * block_rows].T,
                           dw_parts[chunk, a][:taps])
            if dx.shape[0]:
                d = np.empty((x_rows, length), dtype=dy.dtype)
                for a in range(len(w_phases_t)):
                    taps = w_phases_t[a].shape[1]
                    np.dot(w_phases_t[a], gs[:taps], d[a * block_rows:(a + 1) * block_rows])
                loops.inputs(d, first, count, sh, sw, ph, pw, kw, pitch, hq, wo, masks, dx)


_forward_chunks = jit.parallel(_forward_chunks)
_backward_chunks = jit.parallel(_backward_chunks)


# ---- the route -------------------------------------------------------------------------------

class _Geometry:
    """Sizes of one call: the layout, the blocks of X (one GEMM each: the phases, or under
    im2col one block of every kernel row) and their row taps, rows Hq and pitch P, outputs
    (Ho, Wo), X's rows, the images per chunk and the threads that share the chunks."""

    def __init__(self, x_shape, w_shape, stride, padding, itemsize):
        (n, c, h, wd), (o, _, kh, kw) = x_shape, w_shape
        (sh, sw), (ph, pw) = stride, padding
        self.stride_rows = sh
        self.ho, self.wo = output_size(h, kh, sh, ph), output_size(wd, kw, sw, pw)
        # phase a serves kernel rows a, a + s_h, ...: its row taps ii with s_h ii + a < kh
        tap_counts = [(kh - 1 - a) // sh + 1 for a in range(min(sh, kh))]
        hq = self.ho + tap_counts[0] - 1
        # At stride 1 an image's last min(ph, kh - 1) rows are zero padding, as are the next
        # image's first ones: they can be the same rows (and P >= Ho keeps outputs apart).
        pitch = hq - (min(ph, kh - 1) if sh == 1 else 0)
        taps_rows = max(len(tap_counts) * kw * c, sum(tap_counts) * o) * pitch
        im2col_rows = max(kh * kw * c, o) * self.ho
        # at stride 1 the row taps keep their plane copies (same_columns), faster than im2col's
        # strided ones even where im2col has fewer rows (resnet20's 3-channel conv: 1.5x)
        fewer = sh > 1 and im2col_rows < taps_rows
        # one of fast.CONV_JIT_LAYOUTS; fast.use(conv_jit_layout=...) forces either
        self.layout = forced_layout() or ("im2col" if fewer else "row-taps")
        if self.layout == "im2col":   # kernel row i: phase i with one tap, in one GEMM
            tap_counts, hq, pitch = [1] * kh, self.ho, self.ho
        self.tap_counts, self.taps, self.hq, self.pitch = tap_counts, tap_counts[0], hq, pitch
        self.x_rows = len(tap_counts) * kw * c
        self.shifts = (np.zeros(1, dtype=np.int64) if self.layout == "im2col" else
                       np.array([ii for t in tap_counts for ii in range(t)], dtype=np.int64))
        per_image = max(self.x_rows, len(self.shifts) * o) * self.pitch * self.wo * itemsize
        self.images, self.chunks = flat_grid.even_chunks(n, per_image, o * c * kh * kw * itemsize)
        self.workers = min(jit.threads(), self.chunks)
        self.sizes = (*stride, *padding, kw, self.pitch, self.hq, self.wo, self.images,
                      self.workers)
        plane_copies = loops.same_columns(sh, sw, ph, pw, self.wo, wd)
        self.masks = (loops.wrap_masks(kw, pw, self.hq, self.wo)
                      if plane_copies and self.layout == "row-taps"
                      else np.zeros((kw, 0), dtype=np.uint8))

    def weights(self, w, transposed=False):
        """The GEMMs' weight blocks, one per block of X: Wst_a (or Wst_a^T) per phase, or under
        im2col the kernel rows' side by side, W as (O, kh kw C) (or its transpose)."""
        blocks = conv_jit_weights.phase_weights(w, self.stride_rows, self.tap_counts, transposed)
        if self.layout == "im2col":
            return (np.concatenate(blocks, axis=0 if transposed else 1),)
        return blocks

    def part_shape(self, w_shape):
        """(blocks, rows, columns) of one chunk's part of dW: dWst_a per phase, or under im2col
        one (O, kh kw C)."""
        o, c, kh, kw = w_shape
        if self.layout == "im2col":
            return 1, o, kh * kw * c
        return len(self.tap_counts), self.taps * o, kw * c

    def weight_gradient(self, dw_parts, w_shape):
        """dW (O, C, kh, kw) from the chunks' parts: under im2col, part (O, (i, j, c)) is read
        as phase i's (O, (j, c)) (a view), with kernel row i its own phase."""
        if self.layout == "im2col":
            o, c, kh, kw = w_shape
            view = dw_parts.reshape((dw_parts.shape[0], o, kh, kw * c)).transpose(0, 2, 1, 3)
            return conv_jit_weights.weight_gradient(view, kh, w_shape)
        return conv_jit_weights.weight_gradient(dw_parts, self.stride_rows, w_shape)


def _per_image(w, padding):
    """Whether a 1x1 conv takes conv_jit_pointwise.py's per-image GEMMs: not with weights
    larger than the chunk budget, which each image's GEMM would pack again for its few
    columns (resnet50's 1x1s at 7x7, and 1024->2048 at stride 2: fwd+bwd 0.50-0.77 the time
    here, where the CIFAR nets' 1x1s are 1.2-1.4x faster per image; bench/NOTES.md)."""
    return (conv_pointwise.applies(w.shape, padding)
            and not flat_grid.weights_leave_cache(w.size * w.itemsize))


def forward(ctx, x, w, b, stride, padding):
    jit.prepare_blas()
    ctx.jit_per_image = _per_image(w, padding)
    if ctx.jit_per_image:
        return conv_jit_pointwise.forward(ctx, x, w, b, stride)
    x = np.ascontiguousarray(x)
    g = ctx.jit_geometry = _Geometry(x.shape, w.shape, stride, padding, x.itemsize)
    o = w.shape[0]
    bias = np.zeros(o, dtype=x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    y = np.empty((x.shape[0], o, g.ho, g.wo), dtype=x.dtype)
    _forward_chunks(x, g.weights(w), g.shifts, bias, *g.sizes, g.masks, y)
    ctx.save(x if ctx.needs_input_grad[1] else None, w)
    return y


def backward(ctx, gy):
    jit.prepare_blas()
    if ctx.jit_per_image:
        return conv_jit_pointwise.backward(ctx, gy)
    (x, w), g = ctx.saved, ctx.jit_geometry
    need_dx, need_dw, _ = ctx.needs_input_grad
    gy = np.ascontiguousarray(gy)
    # empty stand-ins for what is not needed (the compiled loop checks their sizes)
    dx = np.empty(ctx.x_shape if need_dx else (0, 1, 1, 1), dtype=gy.dtype)
    dw_parts = np.empty((g.chunks if need_dw else 0, *g.part_shape(w.shape)), dtype=gy.dtype)
    if x is None:
        x = np.empty((0, 1, 1, 1), dtype=gy.dtype)
    _backward_chunks(x, gy, g.weights(w, transposed=True), *g.sizes, g.masks, dw_parts, dx)
    dw = g.weight_gradient(dw_parts, w.shape) if need_dw else None
    return (dx if need_dx else None), dw, None
