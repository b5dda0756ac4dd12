"""conv2d's "jit" route: the shifted route's GEMMs, with every copy and add around them one
compiled loop split over the cores (jit.py; NumPy arrays, Numba installed). Any kernel,
stride and padding; a 1x1 kernel without padding goes to conv_jit_pointwise.py. See
ops/conv.py for the formulas.

Layout, per chunk of m images (sized to stay in cache, as the shifted route's chunks). Split
the rows of the padded input by their phase modulo the row stride, a = r mod s_h (only the
A = min(s_h, kh) phases some kernel row reads), and stack its kw column shifts, taken at the
column stride:
    X[(a, j, c), (k, u, w)] = xpad[n, c, s_h u + a, s_w w + j]      u < Hq, w < Wo
with n the chunk's image k and Hq = Ho + RT - 1 rows, RT = ceil(kh / s_h) row taps. Kernel
row i = s_h ii + a of output row h reads row u = h + ii of phase a, so with
    Wst[(ii, o), (a, j, c)] = W[o, c, s_h ii + a, j]   (zero where s_h ii + a >= kh)
one GEMM Z = Wst X gives every term, and RT shifted adds finish the sum:
    y[n, o, h, w] = b[o] + sum_ii Z[(ii, o), (k, h + ii, w)].
X holds kw / s_w copies of the input (3 for a 3x3 kernel at stride 1, 1.5 at stride 2).
Backward, with the row shifts of dy
    Gs[(ii, o), (k, u, w)] = dy[n, o, u - ii, w]     (zero where u - ii is not an output row)
the forward's transpose: dWst = sum over chunks of Gs X^T, D = Wst^T Gs = dL/dX, and each
input element gathers the entries of D that copied it: xpad[n, c, r, col] sits in X at phase
a = r mod s_h, row u = r div s_h, and at (j, w) for every j with col = s_w w + j.

Unlike the NumPy shifted route, the compiled loops build X and Gs straight from x and dy and
write y and dx straight out of Z and D (no flat padded grid, no masks), each in one pass
whose outer loop (over rows of X, of Z, of dx) the cores share. Every output element is
written by one iteration, so the result does not depend on the thread count.
"""
import numpy as np

from . import jit
from .buffers import work_buffer
from . import conv_jit_pointwise, flat_grid
from .jit import prange
from ..window import output_size


def runs_on(xp):
    """Whether the route can run: Numba installed and NumPy arrays."""
    return jit.available and xp is np


# ---- the compiled loops ---------------------------------------------------------------------
# Each call splits the chunks between `workers` threads (chunk t, t + workers, ... to worker
# t); a worker runs its chunks from start to end: the copies, the GEMMs (np.dot: Numba calls
# SciPy's BLAS, kept at one thread per caller by jit.py) and the adds, on its own core with
# its own chunk in that core's L2. The loops below each chunk are plain sequential loops.

def _fill_columns(x, first, sh, sw, ph, pw, kw, out):
    """out (A kw C, m, Hq, Wo) = X of the images first, first + 1, ... of x (N, C, H, W)."""
    rows, m, hq, wo = out.shape
    c, h, wd = x.shape[1], x.shape[2], x.shape[3]
    for row in range(rows):
        ch, aj = row % c, row // c
        a, j = aj // kw, aj % kw
        w_lo = max(0, -((j - pw) // sw))               # first w with s_w w + j - pw >= 0
        w_hi = max(w_lo, min(wo, (wd - 1 - (j - pw)) // sw + 1))   # past the last < W
        for k in range(m):
            for u in range(hq):
                dst = out[row, k, u]
                r = sh * u + a - ph
                if r < 0 or r >= h:
                    for w in range(wo):
                        dst[w] = 0
                    continue
                # views that start at the first copied cell: indices from 0 up let the
                # compiler drop its negative-index checks and vectorise the copy
                # (and contiguous ones at stride 1, which it also knows to be unit-stride)
                part, start = dst[w_lo:], sw * w_lo + j - pw
                for w in range(w_lo):
                    dst[w] = 0
                if sw == 1:
                    row_in = x[first + k, ch, r, start:]
                    for w in range(w_hi - w_lo):
                        part[w] = row_in[w]
                else:
                    strided = x[first + k, ch, r, start::sw]
                    for w in range(w_hi - w_lo):
                        part[w] = strided[w]
                for w in range(w_hi, wo):
                    dst[w] = 0


def _sum_row_taps(z, shifts, first, bias, y):
    """y[first + k, o, h, :] = bias[o] + sum_b z[b, o, k, h + shifts[b], :] for z (B, O, m,
    Hq, Wo): block b of Z holds the terms of one phase's row tap, shifts[b] = ii."""
    blocks, o_count, m = z.shape[0], z.shape[1], z.shape[2]
    wo = y.shape[3]
    for k in range(m):
        for o in range(o_count):
            b = bias[o]
            for h in range(y.shape[2]):
                out = y[first + k, o, h]
                for w in range(wo):
                    out[w] = b
                for block in range(blocks):
                    src = z[block, o, k, h + shifts[block]]
                    for w in range(wo):
                        out[w] += src[w]


def _fill_row_shifts(dy, first, out):
    """out (RT, O, m, Hq, Wo): out[ii, o, k, u] = dy[first + k, o, u - ii], zero where u - ii
    is not a row of dy."""
    taps, o_count, m, hq, wo = out.shape
    for ii in range(taps):
        for o in range(o_count):
            for k in range(m):
                for u in range(hq):
                    dst = out[ii, o, k, u]
                    if 0 <= u - ii < dy.shape[2]:
                        src = dy[first + k, o, u - ii]
                        for w in range(wo):
                            dst[w] = src[w]
                    else:
                        for w in range(wo):
                            dst[w] = 0


def _gather_inputs(d, first, sh, sw, ph, pw, kw, dx):
    """dx[first + k, c, r - ph, col - pw] = sum over j with col = s_w w + j of
    d[(r mod s_h, j, c), k, r div s_h, w], for d (A kw C, m, Hq, Wo) and dx (N, C, H, W)."""
    rows, m, hq, wo = d.shape
    c, h, wd = dx.shape[1], dx.shape[2], dx.shape[3]
    phases = rows // (kw * c)
    for k in range(m):
        for ch in range(c):
            for yy in range(h):
                out = dx[first + k, ch, yy]
                for xx in range(wd):
                    out[xx] = 0
                a, u = (yy + ph) % sh, (yy + ph) // sh
                if a >= phases or u >= hq:   # a row no kernel offset reads
                    continue
                for j in range(kw):
                    w_lo = max(0, -((j - pw) // sw))
                    w_hi = min(wo, (wd - 1 - (j - pw)) // sw + 1)
                    if w_lo >= w_hi:
                        continue
                    # views from the first cell, as in _fill_columns
                    src, start = d[(a * kw + j) * c + ch, k, u, w_lo:], sw * w_lo + j - pw
                    if sw == 1:
                        part = out[start:]
                        for w in range(w_hi - w_lo):
                            part[w] += src[w]
                    else:
                        strided = out[start::sw]
                        for w in range(w_hi - w_lo):
                            strided[w] += src[w]


# Stride 1 with Wo = W ("same" columns, 2 pw = kw - 1) and a padding row (when pw > 0: the
# sums' reads past a plane's ends then stay inside it): a row of X is then the input plane
# itself shifted by (j - pw) - ph W cells, so one long copy per plane does it (and one long
# sum per plane for dx), after which the cells that wrapped onto a neighbouring row are fixed:
# the columns w with w + j - pw outside [0, W), zeroed in X after the copy and in D before
# the sum (no input reads them there).

def _same_columns(sh, sw, ph, pw, wo, wd):
    """Whether the plane copies and sums apply (see above)."""
    return sh == 1 and sw == 1 and wo == wd and (pw == 0 or ph >= 1)


def _fill_columns_same(x, first, ph, pw, kw, out):
    """_fill_columns at stride 1 with Wo = W."""
    rows, m, hq, wo = out.shape
    c, h = x.shape[1], x.shape[2]
    for row in range(rows):
        ch, j = row % c, row // c
        shift = j - pw - ph * wo                  # X cell t copies input cell t + shift
        lo, hi = max(0, -shift), min(hq * wo, h * wo - shift)
        for k in range(m):
            dst = out[row, k].reshape(hq * wo)
            for t in range(lo):
                dst[t] = 0
            part, src = dst[lo:], x[first + k, ch].reshape(h * wo)[lo + shift:]
            for t in range(hi - lo):
                part[t] = src[t]
            for t in range(hi, hq * wo):
                dst[t] = 0
            _zero_wrapped(out[row, k], j - pw)


def _zero_wrapped(plane, shift):
    """Zero the columns w of plane (Hq, W) with w + shift outside [0, W)."""
    hq, wo = plane.shape
    for u in range(hq):
        for w in range(max(0, -shift)):
            plane[u, w] = 0
        for w in range(min(wo, wo - shift), wo):
            plane[u, w] = 0


def _gather_inputs_same(d, first, ph, pw, kw, dx):
    """_gather_inputs at stride 1 with Wo = W (d's wrapped columns are zeroed here)."""
    _, m, hq, wo = d.shape
    c, h = dx.shape[1], dx.shape[2]
    for k in range(m):
        for ch in range(c):
            out = dx[first + k, ch].reshape(h * wo)
            for j in range(kw):
                _zero_wrapped(d[j * c + ch, k], j - pw)
                src = d[j * c + ch, k].reshape(hq * wo)[ph * wo + pw - j:]
                if j == 0:
                    for t in range(h * wo):
                        out[t] = src[t]
                else:
                    for t in range(h * wo):
                        out[t] += src[t]


def _columns(x, first, sh, sw, ph, pw, kw, out):
    """_fill_columns, by the plane copies where they apply."""
    if _same_columns(sh, sw, ph, pw, out.shape[3], x.shape[3]):
        _fill_columns_same(x, first, ph, pw, kw, out)
    else:
        _fill_columns(x, first, sh, sw, ph, pw, kw, out)


def _forward_chunks(x, w_phases, shifts, bias, sh, sw, ph, pw, kw, hq, wo, m, workers, y):
    """y from x, w_phases[a] = Wst's block of phase a (its row taps ii: (taps_a O, kw C))."""
    n, o, block_rows = x.shape[0], y.shape[1], w_phases[0].shape[1]
    blocks, x_rows = len(shifts), len(w_phases) * block_rows
    chunks = (n + m - 1) // m
    for t in prange(workers):
        for chunk in range(t, chunks, workers):
            first = chunk * m
            count = min(m, n - first)
            cols = np.empty((x_rows, count * hq * wo), dtype=x.dtype)
            _columns(x, first, sh, sw, ph, pw, kw, cols.reshape((x_rows, count, hq, wo)))
            z = np.empty((blocks * o, count * hq * wo), dtype=x.dtype)
            row = 0
            for a in range(len(w_phases)):   # one GEMM per phase: no zero blocks of Wst
                taps = w_phases[a].shape[0]
                np.dot(w_phases[a], cols[a * block_rows:(a + 1) * block_rows],
                       z[row:row + taps])
                row += taps
            _sum_row_taps(z.reshape((blocks, o, count, hq, wo)), shifts, first, bias, y)


def _backward_chunks(x, dy, w_phases_t, sh, sw, ph, pw, kw, hq, wo, m, workers,
                     dw_parts, dx):
    """dW's part of every chunk into dw_parts (chunks, A, RT O, kw C) (if it has chunks; rows
    of taps a phase lacks are left alone) and dx (if it has images)."""
    n, o = dy.shape[0], dy.shape[1]
    block_rows = w_phases_t[0].shape[0]
    x_rows = len(w_phases_t) * block_rows
    row_taps = w_phases_t[0].shape[1] // o      # phase 0 has the most
    chunks = (n + m - 1) // m
    for t in prange(workers):
        for chunk in range(t, chunks, workers):
            first = chunk * m
            count = min(m, n - first)
            gs = np.empty((row_taps * o, count * hq * wo), dtype=dy.dtype)
            _fill_row_shifts(dy, first, gs.reshape((row_taps, o, count, hq, wo)))
            if dw_parts.shape[0]:
                cols = np.empty((x_rows, count * hq * wo), dtype=dy.dtype)
                _columns(x, first, sh, sw, ph, pw, kw, cols.reshape((x_rows, count, hq, wo)))
                for a in range(len(w_phases_t)):
                    taps = w_phases_t[a].shape[1]
                    np.dot(gs[:taps], cols[a * block_rows:(a + 1) * block_rows].T,
                           dw_parts[chunk, a][:taps])
            if dx.shape[0]:
                d = np.empty((x_rows, count * hq * wo), dtype=dy.dtype)
                for a in range(len(w_phases_t)):
                    taps = w_phases_t[a].shape[1]
                    np.dot(w_phases_t[a], gs[:taps], d[a * block_rows:(a + 1) * block_rows])
                d4 = d.reshape((x_rows, count, hq, wo))
                if _same_columns(sh, sw, ph, pw, wo, dx.shape[3]):
                    _gather_inputs_same(d4, first, ph, pw, kw, dx)
                else:
                    _gather_inputs(d4, first, sh, sw, ph, pw, kw, dx)


_fill_columns = jit.compiled(_fill_columns)
_sum_row_taps = jit.compiled(_sum_row_taps)
_fill_row_shifts = jit.compiled(_fill_row_shifts)
_gather_inputs = jit.compiled(_gather_inputs)
_zero_wrapped = jit.compiled(_zero_wrapped)
_same_columns = jit.compiled(_same_columns)
_fill_columns_same = jit.compiled(_fill_columns_same)
_gather_inputs_same = jit.compiled(_gather_inputs_same)
_columns = jit.compiled(_columns)
_forward_chunks = jit.parallel(_forward_chunks)
_backward_chunks = jit.parallel(_backward_chunks)


# ---- the route -------------------------------------------------------------------------------

class _Geometry:
    """Sizes of one call: phases A and their row taps, rows Hq, outputs (Ho, Wo), X's rows,
    the images per chunk and the threads that share the chunks."""

    def __init__(self, x_shape, w_shape, stride, padding, itemsize):
        (n, c, h, wd), (o, _, kh, kw) = x_shape, w_shape
        (sh, sw), (ph, pw) = stride, padding
        self.stride_rows = sh
        self.ho, self.wo = output_size(h, kh, sh, ph), output_size(wd, kw, sw, pw)
        # phase a serves kernel rows a, a + s_h, ...: its row taps ii with s_h ii + a < kh
        self.tap_counts = [(kh - 1 - a) // sh + 1 for a in range(min(sh, kh))]
        self.taps = self.tap_counts[0]
        self.hq = self.ho + self.taps - 1
        self.x_rows = len(self.tap_counts) * kw * c
        self.shifts = np.array([ii for t in self.tap_counts for ii in range(t)], dtype=np.int64)
        per_image = max(self.x_rows, len(self.shifts) * o) * self.hq * self.wo * itemsize
        # The chunks do not depend on the thread count, nor then does dW's order of sums.
        self.images = flat_grid.images_per_chunk(n, per_image)
        self.chunks = -(-n // self.images)
        self.workers = min(jit.threads(), self.chunks)
        self.sizes = (*stride, *padding, kw, self.hq, self.wo, self.images, self.workers)

    def phase_weights(self, w):
        """Wst's block of each phase a: (taps_a O, kw C), [(ii, o), (j, c)] = W[o, c, s_h ii + a, j]."""
        (o, c, _, kw), sh = w.shape, self.stride_rows
        return tuple(np.ascontiguousarray(
            w[:, :, a::sh][:, :, :taps].transpose(2, 0, 3, 1).reshape(taps * o, kw * c))
            for a, taps in enumerate(self.tap_counts))

    def weight_gradient(self, parts, w_shape):
        """dW (O, C, kh, kw) from the sum of dw_parts: (A, RT O, kw C), phase a's block in its
        first taps_a O rows."""
        (o, c, _, kw), sh = w_shape, self.stride_rows
        dw = np.empty(w_shape, dtype=parts.dtype)
        for a, taps in enumerate(self.tap_counts):
            dw[:, :, a::sh][:, :, :taps] = \
                parts[a, :taps * o].reshape(taps, o, kw, c).transpose(1, 3, 0, 2)
        return dw


def _pointwise(w_shape, padding):
    return tuple(w_shape[2:]) == (1, 1) and tuple(padding) == (0, 0)


def forward(ctx, x, w, b, stride, padding):
    jit.prepare_blas()
    if _pointwise(w.shape, padding):
        return conv_jit_pointwise.forward(ctx, x, w, b, stride)
    x = np.ascontiguousarray(x)
    g = ctx.jit_geometry = _Geometry(x.shape, w.shape, stride, padding, x.itemsize)
    o = w.shape[0]
    bias = np.zeros(o, dtype=x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    y = np.empty((x.shape[0], o, g.ho, g.wo), dtype=x.dtype)
    _forward_chunks(x, g.phase_weights(w), g.shifts, bias, *g.sizes, y)
    ctx.save(x if ctx.needs_input_grad[1] else None, w)
    return y


def backward(ctx, gy):
    jit.prepare_blas()
    if _pointwise(ctx.saved[1].shape, ctx.padding):
        return conv_jit_pointwise.backward(ctx, gy)
    (x, w), g = ctx.saved, ctx.jit_geometry
    need_dx, need_dw, _ = ctx.needs_input_grad
    gy = np.ascontiguousarray(gy)
    # empty stand-ins for what is not needed (the compiled loop checks their sizes)
    dx = np.empty(ctx.x_shape if need_dx else (0, 1, 1, 1), dtype=gy.dtype)
    dw_parts = np.zeros((g.chunks if need_dw else 0, len(g.tap_counts), g.taps * w.shape[0],
                         w.shape[3] * w.shape[1]), dtype=gy.dtype)
    if x is None:
        x = np.empty((0, 1, 1, 1), dtype=gy.dtype)
    w_phases_t = tuple(np.ascontiguousarray(p.T) for p in g.phase_weights(w))
    _backward_chunks(x, gy, w_phases_t, *g.sizes, dw_parts, dx)
    dw = g.weight_gradient(dw_parts.sum(axis=0), w.shape) if need_dw else None
    return (dx if need_dx else None), dw, None
