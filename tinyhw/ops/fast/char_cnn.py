"""The "columns" route of conv1d_max_over_time (ops/char_cnn.py holds the formulas and the
reference route): one im2col of the widest window, a GEMM per group of widths, and the max over
time as one reduction over a time-major layout.

    cols[n, t, (k, c)] = x[n, c, t + k]   (zero for t + k >= L),  shape (N L, K C), K the widest
    kernel. A group of kernels stacks its weights side by side, zero-padded to the group's widest
    kernel K_g:  Ws[(k, c), (w, o)] = W_w[o, c, k] for k < K_w, else 0,   shape (K_g C, F_g).
    Z = cols[:, :K_g C] Ws        (N L, F_g), time-major: Z[(n, t), (w, o)] = z_w[n, o, t]
    (positions t >= L - K_w + 1 of kernel w read past the word: set to -inf before the max).
    y = max over t of Z (a reduction over the middle axis of (N, L, F_g): contiguous rows of F_g,
    no short rows), then + b.
The gradient goes to the first arg-max of each (n, o) (as the reference): the forward keeps the
mask A[n, t, (w, o)] = [t is that arg-max] (bool), found as Z == y and, where a slice ties,
cleared to its first hit. Backward: dZ = A * dy (broadcast over t),
    dWs = dZ^T cols[:, :K_g C]  (the blocks k < K_w are the dW_w),   dcols = dZ Ws^T,
    dx[n, c, t + k] += dcols[(n, t), (k, c)]   (col2im: one slab add per k).
Widths are grouped so that a GEMM is large enough to run fast but wastes few multiplications on
the zero blocks of Ws: `groups` in ops/char_cnn.py decides. Words are processed in chunks
(CHUNK_BYTES, BACKWARD_CHUNK_BYTES) so that Z and dZ stay in cache between the GEMMs and the
passes over them.
"""
import numpy as np

from . import size
from .buffers import work_buffer

# Bytes of a chunk's Z (N_chunk L F_g floats) in the forward: chunks of words small enough
# that Z stays in cache between the GEMM that writes it and the passes that read it (max,
# mask). Measured on the LM's char CNN (OpenBLAS's Haswell kernels; not re-tuned for its
# AVX-512 ones): 1-2 MiB (a core's L2 or two) runs fwd+bwd 20% faster than the whole batch
# at once; 512 KiB is slower again.
CHUNK_BYTES = 1 << 20
# The backward's chunks of dZ, read by two GEMMs (dWs, dcols) whose speed suffers more from
# small chunks than from dZ leaving L2: 4 MiB measured 15% faster than 1 MiB on the large
# config (the small one the same from 1 MiB to the whole batch).
BACKWARD_CHUNK_BYTES = 4 << 20


def columns(xp, x, kmax):
    """cols (N, L, K, C) with cols[n, t, k, c] = x[n, c, t + k], zero where t + k >= L. x is
    (N, C, L); reading it as (N, L, C) is a plain view when x is the transpose of a contiguous
    (N, L, C) array (an embedding's output), as in the character-aware LM."""
    n, c, length = x.shape
    xt = x.transpose(0, 2, 1)
    cols = xp.empty((n, length, kmax, c), dtype=x.dtype)
    for k in range(kmax):
        cols[:, :length - k, k] = xt[:, k:]
        cols[:, length - k:, k] = 0
    return cols


class Group:
    """Kernels whose outputs one GEMM computes: members (index, width, out_channels, offset of
    its features within the group), the group's widest kernel and its features."""

    def __init__(self, members, channels):
        self.members = []
        offset = 0
        for index, width, out in members:
            self.members.append((index, width, out, offset))
            offset += out
        self.features, self.channels = offset, channels
        self.kmax = max(width for _, width, _ in members)

    def stacked(self, xp, weights):
        """Ws (K_g C, F_g): Ws[(k, c), offset + o] = W[o, c, k] for k < width, else 0."""
        w0 = weights[self.members[0][0]]
        ws = xp.zeros((self.kmax, self.channels, self.features), dtype=w0.dtype)
        for index, width, out, offset in self.members:
            ws[:width, :, offset:offset + out] = weights[index].transpose(2, 1, 0)
        return ws.reshape(self.kmax * self.channels, self.features)

    def forward(self, xp, cols2, ws, n, length, out, keep_mask=True):
        """out (N, F_g) = max over time of Z; returns the first-arg-max mask A (N, L, F_g), or
        None without keep_mask (no backward will run)."""
        kc, f = ws.shape
        first = xp.empty((n, length, f), dtype=bool) if keep_mask else None
        z = None
        for a, b in _chunks(xp, n, length * f * cols2.itemsize):
            if z is None:
                z = work_buffer(xp, "conv_max_z", ((b - a) * length, f), cols2.dtype)
            zc = z[:(b - a) * length]
            xp.matmul(cols2[a * length:b * length, :kc], ws, out=zc)
            zc = zc.reshape(b - a, length, f)
            for _, width, o, offset in self.members:
                zc[:, length - width + 1:, offset:offset + o] = -xp.inf
            zc.max(axis=1, out=out[a:b])
            if keep_mask:
                xp.equal(zc, out[a:b, None, :], out=first[a:b])
        if keep_mask:
            _keep_first(xp, first)
        return first

    def backward(self, xp, first, cols2, ws, gy, need_x, need_w, dx_t):
        """dWs (F_g, K_g C) or None from this group's dy (N, F_g); adds the group's dx into
        dx_t (N, L, C) when need_x."""
        n, length, f = first.shape
        kc = ws.shape[0]
        dws = xp.zeros((f, kc), dtype=gy.dtype) if need_w else None
        chunks = _chunks(xp, n, length * f * gy.itemsize, BACKWARD_CHUNK_BYTES)
        words = chunks[0][1]
        dz = work_buffer(xp, "conv_max_dz", (words, length, f), gy.dtype)
        if need_w and len(chunks) > 1:
            part = work_buffer(xp, "conv_max_dws", (f, kc), gy.dtype)
        if need_x:
            dcols = work_buffer(xp, "conv_max_dcols", (words * length, kc), gy.dtype)
        for a, b in chunks:
            m = b - a
            xp.multiply(first[a:b], gy[a:b, None, :], out=dz[:m])
            dz2 = dz[:m].reshape(m * length, f)
            if need_w:
                xp.matmul(dz2.T, cols2[a * length:b * length, :kc],
                          out=dws if len(chunks) == 1 else part)
                if len(chunks) > 1:
                    dws += part
            if need_x:
                xp.matmul(dz2, ws.T, out=dcols[:m * length])
                col2im(xp, dcols[:m * length], dx_t[a:b], self.kmax)
        return dws

    def weight_gradients(self, dws, grads):
        """Write each member's dW (O, C, K_w) from dWs into grads[index]."""
        dws = dws.reshape(self.features, self.kmax, self.channels)
        for index, width, out, offset in self.members:
            grads[index] = dws[offset:offset + out, :width].transpose(0, 2, 1).copy()


def _chunks(xp, n, bytes_per_word, default=None):
    """(start, stop) of the chunks of words whose Z (or dZ) fits in `default` bytes
    (CHUNK_BYTES if None), or the conv_chunk_bytes of an enclosing fast.use; the whole batch
    at once on the GPU."""
    budget = size("conv_chunk_bytes", default or CHUNK_BYTES)
    words = n if xp is not np else max(1, min(n, budget // bytes_per_word))
    return [(a, min(a + words, n)) for a in range(0, n, words)]


def _keep_first(xp, hits):
    """Clear every hit but the first along axis 1 of the bool hits (N, L, F), in place: where
    several positions tie for the max, the first takes the gradient (the reference's rule)."""
    count = hits.view(xp.uint8).sum(axis=1, dtype=xp.uint8)
    n_tied, f_tied = xp.nonzero(count > 1)
    if n_tied.size:
        first = hits[n_tied, :, f_tied].argmax(axis=1)
        hits[n_tied, :, f_tied] = False
        hits[n_tied, first, f_tied] = True


def col2im(xp, dcols, dx_t, kmax):
    """dx_t (N, L, C) += col2im(dcols (N L, K_g C)):  dx[n, t + k, c] += dcols[(n, t), (k, c)]."""
    n, length, c = dx_t.shape
    d = dcols.reshape(n, length, kmax, c)
    for k in range(kmax):
        dx_t[:, k:] += d[:, :length - k, k]


def forward(ctx, x, weights, biases, groups, keep_mask=True):
    """y (N, sum O_k); saves what backward needs unless keep_mask is False (no gradient will
    be asked for: no_grad, or no input requires one)."""
    xp = ctx.xp
    n, c, length = x.shape
    cols = columns(xp, x, max(g.kmax for g in groups))
    cols2 = cols.reshape(n * length, -1)
    starts = _starts(weights)
    y = xp.empty((n, starts[-1]), dtype=x.dtype)
    stacked, masks = [], []
    for g in groups:
        ws = g.stacked(xp, weights)
        y_g = xp.empty((n, g.features), dtype=x.dtype)
        masks.append(g.forward(xp, cols2, ws, n, length, y_g, keep_mask))
        stacked.append(ws)
        for index, _, out, offset in g.members:     # kernel k's block of y, plus its bias
            block = y[:, starts[index]:starts[index] + out]
            if biases[index] is None:
                block[...] = y_g[:, offset:offset + out]
            else:
                xp.add(y_g[:, offset:offset + out], biases[index], out=block)
    if keep_mask:
        ctx.save(cols2, stacked, masks)
    ctx.starts = starts
    return y


def _starts(weights):
    """Column of y where each kernel's block starts, and the total (y's width) last."""
    starts = [0]
    for w in weights:
        starts.append(starts[-1] + w.shape[0])
    return starts


def backward(ctx, gy, groups, need_x, need_w, need_b, x_shape):
    """(dx (N, C, L) or None, [dW_k], [db_k]) for the kernels in their original order."""
    xp, (cols2, stacked, masks), starts = ctx.xp, ctx.saved, ctx.starts
    n, c, length = x_shape
    kernels = len(starts) - 1
    dws, dbs = [None] * kernels, [None] * kernels
    dx_t = xp.zeros((n, length, c), dtype=gy.dtype) if need_x else None
    for g, ws, first in zip(groups, stacked, masks):
        g_dy = xp.concatenate([gy[:, starts[index]:starts[index] + out]
                               for index, _, out, _ in g.members], axis=1)
        dws_g = g.backward(xp, first, cols2, ws, g_dy, need_x, need_w, dx_t)
        if need_w:
            g.weight_gradients(dws_g, dws)
        if need_b:
            sums = g_dy.sum(axis=0)
            for index, _, out, offset in g.members:
                dbs[index] = sums[offset:offset + out].copy()
    return (None if dx_t is None else dx_t.transpose(0, 2, 1)), dws, dbs
