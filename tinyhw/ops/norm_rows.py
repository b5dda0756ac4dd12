"""The NumPy ("rows") path of batch normalisation, explained in norm.py's docstring: x as
contiguous (N, C L) rows, per-channel coefficients repeated into (C L,) vectors, sums per
row by einsum and per channel in float64, everything block by block in L2 cache; one-pass
statistics unless some channel has mu^2 > 16 var, then the centred two-pass form.
"""
import numpy as np

# The one-pass variance E[x^2] - mu^2 is used while every channel has mu^2 <= this * var.
_ONE_PASS_MAX_MEAN_SQUARED_OVER_VAR = 16.0
# The rows path works in blocks of about this many bytes (they stay in L2 cache).
_CHUNK_BYTES = 256 * 1024


def _rows(a):
    """(N, C, *S) contiguous -> its (N, C, L) view."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _blocks(rows, width, itemsize, whole_rows=False):
    """(row slice, column slice) pairs covering a (rows, width) array in blocks of about
    _CHUNK_BYTES, which stay in L2 cache between the ops on one block: runs of whole rows
    where a row fits (always, with whole_rows), else pieces of one row, taken column block
    by column block so that the matching piece of a (width,) coefficient vector stays in
    L2 too while every row passes."""
    if whole_rows or width * itemsize <= _CHUNK_BYTES:
        step = max(1, _CHUNK_BYTES // (width * itemsize))
        return [(slice(r, min(r + step, rows)), slice(0, width)) for r in range(0, rows, step)]
    step = max(1, _CHUNK_BYTES // itemsize)
    return [(slice(r, r + 1), slice(u, min(u + step, width)))
            for u in range(0, width, step) for r in range(rows)]


def _repeated(xp, v, length, dtype):
    """A (C,) coefficient as the (C L,) vector that multiplies one image's (C L) row."""
    return xp.repeat(xp.asarray(v).astype(dtype), length)


def _channel_sums(xp, a3, b3=None, centre=None):
    """Per channel, as float64 (C,) arrays: sum over (N, L) of a, and of a b, for contiguous
    (N, C, L) arrays; b = a when b3 is None. With centre (C,), b - centre replaces b (and
    a too when b3 is None: the sum of squares of a - centre). One pass in blocks of whole
    rows: each row summed by einsum in the data dtype, the N rows of a channel in float64."""
    n, c, length = a3.shape
    a2 = a3.reshape(n * c, length)
    b2 = a2 if b3 is None else b3.reshape(n * c, length)
    sums, products = xp.empty(n * c, a3.dtype), xp.empty(n * c, a3.dtype)
    if centre is not None:  # one value per row, and a scratch block for b - centre
        centre_rows = xp.tile(xp.asarray(centre).astype(a3.dtype), n)[:, None]
        scratch = xp.empty(a2.shape, a3.dtype)
    for rows, _ in _blocks(n * c, length, a3.itemsize, whole_rows=True):
        a, b = a2[rows], b2[rows]
        xp.einsum("ij->i", a, out=sums[rows])
        if centre is not None:
            b = xp.subtract(b, centre_rows[rows], out=scratch[rows])
            a = b if b3 is None else a
        xp.einsum("ij,ij->i", a, b, out=products[rows])
    return tuple(s.reshape(n, c).sum(axis=0, dtype=np.float64) for s in (sums, products))


def _affine_block(xp, src, out, cols, scale_rep, shift_rep=None, centre_rep=None):
    """out = (src - centre) scale + shift on one block of (N, C L) rows whose columns are
    `cols` (shift and centre may be None)."""
    if centre_rep is None:
        xp.multiply(src, scale_rep[cols], out=out)
    else:
        xp.subtract(src, centre_rep[cols], out=out)
        out *= scale_rep[cols]
    if shift_rep is not None:
        out += shift_rep[cols]
    return out


def _affine_rows(xp, src2, out2, scale_rep, shift_rep=None, centre_rep=None):
    """_affine_block over all blocks of (N, C L) rows: per block, the later ops hit L2."""
    for rows, cols in _blocks(*src2.shape, src2.itemsize):
        _affine_block(xp, src2[rows, cols], out2[rows, cols], cols, scale_rep, shift_rep,
                      centre_rep)


def _train_forward_rows(x3, gamma, beta, eps, y3):
    """Fills y3 from x3 (contiguous (N, C, L)); returns mean, var (float64) and whether the
    centred form was needed."""
    xp, (n, c, length), dtype = np, x3.shape, x3.dtype
    m = n * length
    sum_x, sum_x2 = _channel_sums(xp, x3)
    mean = sum_x / m
    var = np.maximum(sum_x2 / m - mean * mean, 0.0)
    centred = bool(np.any(mean * mean > _ONE_PASS_MAX_MEAN_SQUARED_OVER_VAR * var))
    if centred:  # a second pass: var = mean of (x - mu)^2, without cancellation
        var = _channel_sums(xp, x3, centre=mean)[1] / m
    scale = gamma / np.sqrt(var + eps)
    shift = np.zeros(c) if beta is None else beta.astype(np.float64)
    if not centred:  # y = x s + (beta - mu s)
        shift = shift - mean * scale
    _affine_rows(xp, x3.reshape(n, -1), y3.reshape(n, -1), _repeated(xp, scale, length, dtype),
                 _repeated(xp, shift, length, dtype) if beta is not None or not centred else None,
                 _repeated(xp, mean, length, dtype) if centred else None)
    return mean, var, centred


def _train_backward_rows(dy3, x3, mean, gamma, inv_std, dx3, centred):
    """Fills dx3 (unless None) from contiguous (N, C, L) arrays; returns sum dy, sum dy xc.

    One-pass form (see _train_forward_rows): with xc = x - mu,
    sum(dy xc) = sum(dy x) - mu sum(dy) and dx = k1 dy - (k2 x + (k3 - k2 mu)), so x is used
    as is. When the forward needed the centred form, x - mu is formed block by block.
    """
    xp, (n, _, length) = np, dy3.shape
    m, dtype = n * length, dy3.dtype
    sum_dy, sum_dy_x = _channel_sums(xp, dy3, x3, centre=mean if centred else None)
    sum_dy_xc = sum_dy_x if centred else sum_dy_x - mean * sum_dy
    if dx3 is not None:
        k1 = gamma * inv_std
        k2, k3 = k1 * inv_std ** 2 * sum_dy_xc / m, k1 * sum_dy / m
        k1_rep, k2_rep = _repeated(xp, k1, length, dtype), _repeated(xp, k2, length, dtype)
        k3_rep = _repeated(xp, k3 if centred else k3 - k2 * mean, length, dtype)
        centre_rep = _repeated(xp, mean, length, dtype) if centred else None
        x2, dy2, dx2 = x3.reshape(n, -1), dy3.reshape(n, -1), dx3.reshape(n, -1)
        blocks = _blocks(n, x2.shape[1], x2.itemsize)
        rows, cols = blocks[0]
        scratch = xp.empty((rows.stop - rows.start, cols.stop - cols.start), dtype)
        for rows, cols in blocks:
            term = scratch[:rows.stop - rows.start, :cols.stop - cols.start]
            _affine_block(xp, x2[rows, cols], term, cols, k2_rep, k3_rep, centre_rep)
            out = xp.multiply(dy2[rows, cols], k1_rep[cols], out=dx2[rows, cols])
            out -= term
    return sum_dy, sum_dy_xc
