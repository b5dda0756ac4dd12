"""The weight layouts of conv2d's jit route (conv_jit.py), as compiled loops over the cores.

Per stride phase a (rows a, a + s_h, ... of the kernel, taps_a of them) the forward's GEMMs take
    Wst_a[(ii, o), (j, c)] = W[o, c, s_h ii + a, j]            (taps_a O, kw C)
and the backward's dX GEMMs its transpose Wst_a^T (kw C, taps_a O). dW comes back from the
chunks' parts dWst (chunks, A, RT O, kw C), summed over the chunks and laid out as W again.

These are transposes of whole weight tensors, once per call. NumPy copies a transposed view
one element at a time with the strides of the view: resnet50's (1536, 1536) Wst^T of a
512-channel 3x3 conv took 7.7 ms, its 1x1 (512, 2048) transposes 3.4 ms, about 70 ms of a 2 s
training step in all (bench/NOTES.md). Here each output row is one parallel iteration, and
the sum over chunks runs in the chunks' order whatever the thread count.
"""
import numpy as np

from . import jit
from .jit import prange

O_BLOCK = 16   # filters per block of the transposing copy: 16 floats, one cache line per run


def _phase_block(w, sh, a, taps, out):
    """out (taps O, kw C) = Wst_a: out[ii O + o, j C + c] = w[o, c, s_h ii + a, j]."""
    o, c, kw = w.shape[0], w.shape[1], w.shape[3]
    for row in prange(taps * o):
        ii, oo = row // o, row % o
        line = out[row]
        for j in range(kw):
            for ch in range(c):
                line[j * c + ch] = w[oo, ch, sh * ii + a, j]


def _phase_block_t(w, sh, a, taps, out):
    """out (kw C, taps O) = Wst_a^T: out[j C + c, ii O + o] = w[o, c, s_h ii + a, j]. By blocks
    of O_BLOCK filters, whose weights stay in cache while every row of out takes its run of
    O_BLOCK values from them."""
    o, c, kw = w.shape[0], w.shape[1], w.shape[3]
    for block in prange((o + O_BLOCK - 1) // O_BLOCK):
        first = block * O_BLOCK
        count = min(O_BLOCK, o - first)
        for j in range(kw):
            for ch in range(c):
                line = out[j * c + ch]
                for ii in range(taps):
                    run = line[ii * o + first:]
                    for k in range(count):
                        run[k] = w[first + k, ch, sh * ii + a, j]


def _weight_from_parts(parts, sh, dw):
    """dw[o, c, i, j] = sum over chunks (in order) of parts[chunk, i mod s_h, (i div s_h) O + o,
    j C + c]; the rows of taps a phase lacks are never read. Per filter o the sum runs on
    contiguous rows in the parts' own (i, j C + c) order, then one copy lays it out as W."""
    o, c, kh, kw = dw.shape
    for oo in prange(o):
        total = np.empty((kh, kw * c), dtype=dw.dtype)
        for i in range(kh):
            sums = total[i]
            first = parts[0, i % sh, (i // sh) * o + oo]
            for k in range(kw * c):
                sums[k] = first[k]
            for chunk in range(1, parts.shape[0]):
                line = parts[chunk, i % sh, (i // sh) * o + oo]
                for k in range(kw * c):
                    sums[k] += line[k]
            for j in range(kw):
                for ch in range(c):
                    dw[oo, ch, i, j] = sums[j * c + ch]


_phase_block = jit.parallel(_phase_block)
_phase_block_t = jit.parallel(_phase_block_t)
_weight_from_parts = jit.parallel(_weight_from_parts)


def phase_weights(w, sh, tap_counts, transposed=False):
    """Wst_a for each phase a (or Wst_a^T with `transposed`), contiguous, from w (O, C, kh, kw)."""
    o, c, _, kw = w.shape
    blocks = []
    for a, taps in enumerate(tap_counts):
        if transposed:
            out = np.empty((kw * c, taps * o), dtype=w.dtype)
            _phase_block_t(w, sh, a, taps, out)
        else:
            out = np.empty((taps * o, kw * c), dtype=w.dtype)
            _phase_block(w, sh, a, taps, out)
        blocks.append(out)
    return tuple(blocks)


def weight_gradient(parts, sh, w_shape):
    """dW (O, C, kh, kw) from the chunks' parts (chunks, A, RT O, kw C); for a 1x1 kernel the
    parts are (chunks, 1, O, C)."""
    dw = np.empty(w_shape, dtype=parts.dtype)
    _weight_from_parts(parts, sh, dw)
    return dw

