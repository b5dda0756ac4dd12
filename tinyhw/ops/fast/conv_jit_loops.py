"""The sequential loops of conv2d's jit route (conv_jit.py), one chunk of m images at a time:
the copies that build X and Gs, the sums that finish y from Z and dx from D.

Every array here is a chunk's flat layout: rows of X or Z or D, each R Wo cells long, with
image k's Hq rows starting at row k P (P, the pitch, <= Hq: at stride 1 consecutive images
share their ph zero rows of padding, so fewer garbage rows enter the GEMMs). Indices are
taken on views that start at the first cell they touch, so that they count up from 0: the
compiler then drops its negative-index checks and vectorises the inner loops.
"""
import numpy as np

from . import jit


def chunk_extent(chunk, m, n, pitch, hq, wo):
    """(first image, images, cells per row of X) of chunk number `chunk` of n images taken m
    at a time: the last image's Hq rows end (count - 1) P + Hq rows in."""
    first = chunk * m
    count = min(m, n - first)
    return first, count, ((count - 1) * pitch + hq) * wo


def _copy(dst, src, count):
    for t in range(count):
        dst[t] = src[t]


def _zero(dst, count):
    for t in range(count):
        dst[t] = 0


def valid_range(offset, stride, count, size):
    """[lo, hi): the t < count whose cell stride t + offset lies inside [0, size)."""
    lo = max(0, -(offset // stride))
    return lo, max(lo, min(count, (size - 1 - offset) // stride + 1))


def fill_columns(x, first, m, sh, sw, ph, pw, kw, pitch, hq, wo, out):
    """out (A kw C, R Wo): X[(a, j, c), (k P + u) Wo + w] = xpad[first + k, c, s_h u + a,
    s_w w + j] for u < Hq, w < Wo (any stride). One (Hq, Wo) block per row of X and image:
    the input cells it reads are one strided 2-D view, the rest of the block is padding.
    (A view per block rather than per row of Wo cells: at 16 cells a row, building the views
    cost more than the copies, bench/NOTES.md.)"""
    c, h, wd = x.shape[1], x.shape[2], x.shape[3]
    for row in range(out.shape[0]):
        ch, aj = row % c, row // c
        a, j = aj // kw, aj % kw
        u_lo, u_hi = valid_range(a - ph, sh, hq, h)
        w_lo, w_hi = valid_range(j - pw, sw, wo, wd)
        for k in range(m):
            block = out[row, k * pitch * wo:(k * pitch + hq) * wo]
            _zero(block, u_lo * wo)
            _zero(block[u_hi * wo:], (hq - u_hi) * wo)
            inside = block[u_lo * wo:u_hi * wo].reshape((u_hi - u_lo, wo))
            left, mid, right = inside[:, :w_lo], inside[:, w_lo:w_hi], inside[:, w_hi:]
            src = x[first + k, ch, sh * u_lo + a - ph::sh, sw * w_lo + j - pw::sw]
            for u in range(u_hi - u_lo):
                for w in range(w_lo):
                    left[u, w] = 0
                for w in range(w_hi - w_lo):
                    mid[u, w] = src[u, w]
                for w in range(wo - w_hi):
                    right[u, w] = 0


def same_columns(sh, sw, ph, pw, wo, wd):
    """Whether the plane copies and sums below apply: stride 1 with Wo = W (2 pw = kw - 1) and
    a padding row where pw > 0 (the sums' reads past a plane's ends then stay inside it)."""
    return sh == 1 and sw == 1 and wo == wd and (pw == 0 or ph >= 1)


# Under same_columns a row of X is the input plane shifted by (j - pw) - ph W cells, so one
# long copy per plane builds it (and one long sum per plane gives dx). The cells that wrap onto
# a neighbouring row, columns w with w + j - pw outside [0, W), must read as zero: in X (no
# input is there) and in D (no input receives them). `wrap_masks` marks the others, and the
# copy and the sum select through the mask in the same pass (zeroing the columns afterwards,
# a few cells per row, cost more than the plane copy itself on 8x8 images, bench/NOTES.md).

def wrap_masks(kw, pw, hq, wo):
    """(kw, Hq Wo) uint8: masks[j, t] = 1 where column w = t mod Wo has w + j - pw in [0, Wo),
    i.e. where X's row of column shift j holds an input cell (NumPy, once per call)."""
    w = np.arange(hq * wo) % wo
    return np.stack([(w + j - pw >= 0) & (w + j - pw < wo) for j in range(kw)]).astype(np.uint8)


def _copy_masked(dst, src, mask, count):
    zero = dst.dtype.type(0)
    for t in range(count):
        dst[t] = src[t] if mask[t] else zero


def _add_masked(dst, src, mask, count):
    zero = dst.dtype.type(0)
    for t in range(count):
        dst[t] += src[t] if mask[t] else zero


def fill_columns_same(x, first, m, ph, pw, kw, pitch, hq, wo, masks, out):
    """fill_columns under same_columns."""
    c, h = x.shape[1], x.shape[2]
    for row in range(out.shape[0]):
        ch, j = row % c, row // c
        shift = j - pw - ph * wo                  # X cell t copies input cell t + shift
        lo, hi = max(0, -shift), min(hq * wo, h * wo - shift)
        for k in range(m):
            dst = out[row, k * pitch * wo:]
            _zero(dst, lo)
            _copy_masked(dst[lo:], x[first + k, ch].reshape(h * wo)[lo + shift:], masks[j, lo:],
                         hi - lo)
            _zero(dst[hi:], hq * wo - hi)


def sum_row_taps(z, shifts, first, m, pitch, bias, y):
    """y[first + k, o, h, :] = bias[o] + sum_b z[b, o, (k P + h + shifts[b]) Wo + :Wo] for z
    (B, O, R Wo): block b holds one phase's row tap ii = shifts[b]. Z's rows are Wo cells long,
    as y's are, so the Ho rows of a plane are one run of Ho Wo cells in both."""
    ho, wo = y.shape[2], y.shape[3]
    cells = ho * wo
    for k in range(m):
        for o in range(y.shape[1]):
            out = y[first + k, o].reshape(cells)
            b = bias[o]
            for t in range(cells):
                out[t] = b
            for block in range(z.shape[0]):
                src = z[block, o, (k * pitch + shifts[block]) * wo:]
                for t in range(cells):
                    out[t] += src[t]


def fill_row_shifts(dy, first, m, pitch, out):
    """out (RT, O, R Wo): out[ii, o, (k P + h + ii) Wo + :Wo] = dy[first + k, o, h], zero
    elsewhere (with P >= Ho each cell has at most one such (k, h)); a plane per (ii, o, k)."""
    ho, wo = dy.shape[2], dy.shape[3]
    cells = ho * wo
    for ii in range(out.shape[0]):
        for o in range(out.shape[1]):
            line = out[ii, o]
            _zero(line, line.shape[0])
            for k in range(m):
                _copy(line[(k * pitch + ii) * wo:], dy[first + k, o].reshape(cells), cells)


def gather_inputs(d, first, m, sh, sw, ph, pw, kw, pitch, hq, wo, dx):
    """dx[first + k, c, r - ph, col - pw] = sum over j with col = s_w w + j of
    d[(r mod s_h, j, c), (k P + r div s_h) Wo + w], for d (A kw C, R Wo) (any stride): per
    plane of dx, each (a, j)'s block of d added into the strided 2-D view of the cells it
    copied (as fill_columns), j in order."""
    c, h, wd = dx.shape[1], dx.shape[2], dx.shape[3]
    phases = d.shape[0] // (kw * c)
    for k in range(m):
        for ch in range(c):
            plane = dx[first + k, ch]
            _zero(plane.reshape(h * wd), h * wd)
            for a in range(phases):
                u_lo, u_hi = valid_range(a - ph, sh, hq, h)
                for j in range(kw):
                    w_lo, w_hi = valid_range(j - pw, sw, wo, wd)
                    block = d[(a * kw + j) * c + ch, (k * pitch + u_lo) * wo:
                              (k * pitch + u_hi) * wo].reshape((u_hi - u_lo, wo))
                    src = block[:, w_lo:w_hi]
                    dst = plane[sh * u_lo + a - ph::sh, sw * w_lo + j - pw::sw]
                    for u in range(u_hi - u_lo):
                        for w in range(w_hi - w_lo):
                            dst[u, w] += src[u, w]


def gather_inputs_same(d, first, m, ph, pw, kw, pitch, hq, wo, masks, dx):
    """gather_inputs under same_columns (d's wrapped columns are masked out)."""
    c, h = dx.shape[1], dx.shape[2]
    for k in range(m):
        for ch in range(c):
            out = dx[first + k, ch].reshape(h * wo)
            for j in range(kw):
                start = ph * wo + pw - j              # X cell start + t is input cell t
                src = d[j * c + ch, k * pitch * wo + start:]
                if j == 0:
                    _copy_masked(out, src, masks[j, start:], h * wo)
                else:
                    _add_masked(out, src, masks[j, start:], h * wo)


def columns(x, first, m, sh, sw, ph, pw, kw, pitch, hq, wo, masks, out):
    """fill_columns, by the plane copies where they apply: masks (wrap_masks) are given there
    and empty elsewhere."""
    if masks.shape[1]:
        fill_columns_same(x, first, m, ph, pw, kw, pitch, hq, wo, masks, out)
    else:
        fill_columns(x, first, m, sh, sw, ph, pw, kw, pitch, hq, wo, out)


def inputs(d, first, m, sh, sw, ph, pw, kw, pitch, hq, wo, masks, dx):
    """gather_inputs, by the plane sums where they apply (where masks are given)."""
    if masks.shape[1]:
        gather_inputs_same(d, first, m, ph, pw, kw, pitch, hq, wo, masks, dx)
    else:
        gather_inputs(d, first, m, sh, sw, ph, pw, kw, pitch, hq, wo, dx)


# compiled in dependency order (a loop is compiled on its first call, resolving the names it
# calls then)
chunk_extent = jit.compiled(chunk_extent)
_copy, _zero = jit.compiled(_copy), jit.compiled(_zero)
valid_range = jit.compiled(valid_range)
fill_columns = jit.compiled(fill_columns)
_copy_masked, _add_masked = jit.compiled(_copy_masked), jit.compiled(_add_masked)
fill_columns_same = jit.compiled(fill_columns_same)
sum_row_taps, fill_row_shifts = jit.compiled(sum_row_taps), jit.compiled(fill_row_shifts)
gather_inputs = jit.compiled(gather_inputs)
gather_inputs_same = jit.compiled(gather_inputs_same)
columns, inputs = jit.compiled(columns), jit.compiled(inputs)
