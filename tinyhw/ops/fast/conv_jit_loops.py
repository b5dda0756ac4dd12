"""The sequential loops of conv2d's jit route (conv_jit.py), one chunk of m images at a time:
the copies that build X and Gs, the sums that finish y from Z and dx from D.

Every array here is a chunk's flat layout: rows of X or Z or D, each R Wo cells long, with
image k's Hq rows starting at row k P (P, the pitch, <= Hq: at stride 1 consecutive images
share their ph zero rows of padding, so fewer garbage rows enter the GEMMs).

Offsets are unsigned. The loops address flat arrays as base + t, the base an np.uint64: Numba
checks a signed index for a negative value (wrapping it as Python does), and that check keeps
the compiler from vectorising the loop; an unsigned index has no such check. Slicing a view
that starts at the first cell instead (so that t counts up from 0, the earlier way) costs a
view per run of cells, more than the copy itself for the 8 to 64 cells of a row or plane of
small images (bench/NOTES.md: X of 64 channels at 8x8, 190 against 44 us a chunk). Every base
is the offset of a cell that exists (>= 0) before it is made unsigned, and every sum with an
unsigned value is of two unsigned values (NumPy's rules make int64 + uint64 a float).

The loops stay inline, one function per copy or sum, for the same reason: a helper called per
run of cells (and per run of padding around it) cost as much as the runs on small images
(X of the 16->32 stride-2 conv's chunk: 134 against 69 us).
"""
import numpy as np

from . import jit


def chunk_extent(chunk, m, n, pitch, hq, wo):
    """(first image, images, cells per row of X) of chunk number `chunk` of n images taken m
    at a time: the last image's Hq rows end (count - 1) P + Hq rows in."""
    first = chunk * m
    count = min(m, n - first)
    return first, count, ((count - 1) * pitch + hq) * wo


# ---- X, and dx from D, at any stride -----------------------------------------------------------

def valid_range(offset, stride, count, size):
    """[lo, hi): the t < count whose cell stride t + offset lies inside [0, size)."""
    lo = max(0, -(offset // stride))
    return lo, max(lo, min(count, (size - 1 - offset) // stride + 1))


def fill_columns(x, first, m, sh, sw, ph, pw, kw, pitch, hq, wo, out):
    """out (A kw C, R Wo): X[(a, j, c), (k P + u) Wo + w] = xpad[first + k, c, s_h u + a,
    s_w w + j] for u < Hq, w < Wo (any stride; under im2col a runs over the kernel rows).
    Each (Hq, Wo) block is zeroed whole, then its rows of inputs copied in: the loops stay in
    this function, since a helper called per row of 8-16 cells (for the padding around it too)
    took twice the time (bench/NOTES.md)."""
    c, h, wd = x.shape[1], x.shape[2], x.shape[3]
    flat, flat_out, length = x.reshape(x.size), out.reshape(out.size), out.shape[1]
    step = np.uint64(sw)
    for row in range(out.shape[0]):
        ch, aj = row % c, row // c
        a, j = aj // kw, aj % kw
        u_lo, u_hi = valid_range(a - ph, sh, hq, h)
        w_lo, w_hi = valid_range(j - pw, sw, wo, wd)
        count = np.uint64(w_hi - w_lo)
        for k in range(m):
            block = row * length + k * pitch * wo
            at = np.uint64(block)
            for t in range(np.uint64(hq * wo)):
                flat_out[at + t] = 0
            plane = ((first + k) * c + ch) * h
            for u in range(u_lo, u_hi):
                at = np.uint64(block + u * wo + w_lo)
                source = np.uint64((plane + sh * u + a - ph) * wd + sw * w_lo + j - pw)
                for t in range(count):
                    flat_out[at + t] = flat[source + step * t]


def gather_inputs(d, first, m, sh, sw, ph, pw, kw, pitch, hq, wo, dx):
    """dx[first + k, c, r - ph, col - pw] = sum over j with col = s_w w + j of
    d[(r mod s_h, j, c), (k P + r div s_h) Wo + w], for d (A kw C, R Wo) (any stride): per
    plane of dx, each (a, j)'s rows of d added into the cells they copied, j in order (the
    loops inline, as in fill_columns)."""
    c, h, wd = dx.shape[1], dx.shape[2], dx.shape[3]
    flat, flat_d, length = dx.reshape(dx.size), d.reshape(d.size), d.shape[1]
    phases = d.shape[0] // (kw * c)
    step = np.uint64(sw)
    for k in range(m):
        for ch in range(c):
            plane = ((first + k) * c + ch) * h
            at = np.uint64(plane * wd)
            for t in range(np.uint64(h * wd)):
                flat[at + t] = 0
            for a in range(phases):
                u_lo, u_hi = valid_range(a - ph, sh, hq, h)
                for j in range(kw):
                    w_lo, w_hi = valid_range(j - pw, sw, wo, wd)
                    count = np.uint64(w_hi - w_lo)
                    line = ((a * kw + j) * c + ch) * length
                    for u in range(u_lo, u_hi):
                        at = np.uint64((plane + sh * u + a - ph) * wd + sw * w_lo + j - pw)
                        source = np.uint64(line + (k * pitch + u) * wo + w_lo)
                        for t in range(count):
                            flat[at + step * t] += flat_d[source + t]


# ---- X, and dx from D, by whole planes at stride 1 ---------------------------------------------

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


def fill_columns_same(x, first, m, ph, pw, kw, pitch, hq, wo, masks, out):
    """fill_columns under same_columns."""
    c, cells = x.shape[1], x.shape[2] * wo
    flat, flat_out, length = x.reshape(x.size), out.reshape(out.size), out.shape[1]
    zero = out.dtype.type(0)
    for row in range(out.shape[0]):
        ch, j = row % c, row // c
        shift = j - pw - ph * wo                  # X cell t copies input cell t + shift
        lo, hi = max(0, -shift), min(hq * wo, cells - shift)
        mask = masks[j]
        for k in range(m):
            block = row * length + k * pitch * wo
            at = np.uint64(block)
            for t in range(np.uint64(lo)):
                flat_out[at + t] = zero
            at, masked = np.uint64(block + lo), np.uint64(lo)
            source = np.uint64(((first + k) * c + ch) * cells + shift + lo)
            for t in range(np.uint64(hi - lo)):
                flat_out[at + t] = flat[source + t] if mask[masked + t] else zero
            at = np.uint64(block + hi)
            for t in range(np.uint64(hq * wo - hi)):
                flat_out[at + t] = zero


def gather_inputs_same(d, first, m, ph, pw, kw, pitch, hq, wo, masks, dx):
    """gather_inputs under same_columns (d's wrapped columns are masked out)."""
    c, cells = dx.shape[1], dx.shape[2] * wo
    flat, flat_d, length = dx.reshape(dx.size), d.reshape(d.size), d.shape[1]
    zero = dx.dtype.type(0)
    for k in range(m):
        for ch in range(c):
            at = np.uint64(((first + k) * c + ch) * cells)
            for j in range(kw):
                start = ph * wo + pw - j              # X cell start + t is input cell t
                source = np.uint64((j * c + ch) * length + k * pitch * wo + start)
                mask, masked = masks[j], np.uint64(start)
                if j == 0:
                    for t in range(np.uint64(cells)):
                        flat[at + t] = flat_d[source + t] if mask[masked + t] else zero
                else:
                    for t in range(np.uint64(cells)):
                        flat[at + t] += flat_d[source + t] if mask[masked + t] else zero


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


# ---- y from Z, and Gs from dy ------------------------------------------------------------------

def sum_row_taps(z, shifts, first, m, pitch, bias, y):
    """y[first + k, o, h, :] = bias[o] + sum_b z[b, o, (k P + h + shifts[b]) Wo + :Wo] for z
    (B, O, R Wo): block b holds one phase's row tap ii = shifts[b]. Z's rows are Wo cells long,
    as y's are, so the Ho rows of a plane are one run of Ho Wo cells in both."""
    blocks, o, length = z.shape
    cells, wo = y.shape[2] * y.shape[3], y.shape[3]
    flat_y, flat_z = y.reshape(y.size), z.reshape(z.size)
    for k in range(m):
        for oo in range(o):
            at = np.uint64(((first + k) * o + oo) * cells)
            b = bias[oo]
            source = np.uint64(oo * length + (k * pitch + shifts[0]) * wo)
            for t in range(np.uint64(cells)):
                flat_y[at + t] = flat_z[source + t] + b
            for block in range(1, blocks):
                source = np.uint64((block * o + oo) * length + (k * pitch + shifts[block]) * wo)
                for t in range(np.uint64(cells)):
                    flat_y[at + t] += flat_z[source + t]


def fill_row_shifts(dy, first, m, pitch, out):
    """out (RT, O, R Wo): out[ii, o, (k P + h + ii) Wo + :Wo] = dy[first + k, o, h], zero
    elsewhere (with P >= Ho each cell has at most one such (k, h)); a plane per (ii, o, k),
    and the gaps between the planes zeroed."""
    taps, o, length = out.shape
    cells, wo = dy.shape[2] * dy.shape[3], dy.shape[3]
    flat_out, flat_dy = out.reshape(out.size), dy.reshape(dy.size)
    for ii in range(taps):
        for oo in range(o):
            line = (ii * o + oo) * length
            done = 0                              # cells of the line written so far
            for k in range(m):
                start = (k * pitch + ii) * wo
                at = np.uint64(line + done)
                for t in range(np.uint64(start - done)):
                    flat_out[at + t] = 0
                at = np.uint64(line + start)
                source = np.uint64(((first + k) * o + oo) * cells)
                for t in range(np.uint64(cells)):
                    flat_out[at + t] = flat_dy[source + t]
                done = start + cells
            at = np.uint64(line + done)
            for t in range(np.uint64(length - done)):
                flat_out[at + t] = 0


# compiled in dependency order (a loop is compiled on its first call, resolving the names it
# calls then)
chunk_extent, valid_range = jit.compiled(chunk_extent), jit.compiled(valid_range)
fill_columns, gather_inputs = jit.compiled(fill_columns), jit.compiled(gather_inputs)
fill_columns_same = jit.compiled(fill_columns_same)
gather_inputs_same = jit.compiled(gather_inputs_same)
columns, inputs = jit.compiled(columns), jit.compiled(inputs)
sum_row_taps, fill_row_shifts = jit.compiled(sum_row_taps), jit.compiled(fill_row_shifts)
