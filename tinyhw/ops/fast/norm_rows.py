"""batch_norm's "rows" and "rows-centred" routes: NumPy, float32 and float64 (see ops/norm.py
for the formulas and the reference that states them directly).

The same formulas, laid out so that every NumPy loop runs over contiguous memory (a ufunc on
a per-channel broadcast or a strided view goes through NumPy's slower buffered iterator):
- x is taken as contiguous (N, C L) rows, and a per-channel coefficient is repeated into one
  (C L,) vector that multiplies each image's row, broadcast only over N;
- per-channel sums: each row summed by einsum in the data dtype, the N rows of a channel
  then added in float64, block by block of whole rows (both sums of a block while it is in
  L2 cache);
- statistics in one pass: the sums of x and x^2 give var = E[x^2] - mu^2, and the backward
  uses sum(dy xc) = sum(dy x) - mu sum(dy) and dx = k1 dy - (k2 x + (k3 - k2 mu)), which is
  norm.py's dx = k1 dy - k2 (x - mu) - k3 (its coefficients come from norm.dx_coefficients)
  with x - mu expanded. The one-pass variance loses about mu^2 / var ulps of the row sums,
  so when some channel has mu^2 > ONE_PASS_MAX_MEAN_SQUARED_OVER_VAR var (|mu| > 4 std,
  rare after a conv) the whole call takes the centred two-pass form: sums of (x - mu)^2,
  and x - mu formed block by block. The "rows-centred" route always takes it;
- affine maps (y = s x + t, dx = k1 dy - (k2 x + k3')) block by block of about BLOCK_BYTES,
  so that the second op on a block finds it in L2.
"""
import numpy as np

from . import size

# The one-pass variance E[x^2] - mu^2 is used while every channel has mu^2 <= this * var.
ONE_PASS_MAX_MEAN_SQUARED_OVER_VAR = 16.0
# The rows route works in blocks of about this many bytes per array (an op on a block of x
# and its block of y touches twice this: more than the 1 MiB L2, so part runs from L3; yet
# 1 MiB measured 5-15% faster than 256 KiB on resnet20's shapes, by making fewer NumPy calls,
# bench/NOTES.md); an enclosing fast.use(bn_block_bytes=...) sets another size.
BLOCK_BYTES = 1 << 20


def runs_on(xp, dtype):
    """Whether the rows routes can run on arrays of this module and dtype (float16 sums
    need a wider accumulator than the row sums have)."""
    return xp is np and dtype in (np.float32, np.float64)


def train_forward(x, gamma, beta, eps, always_centred=False):
    """y, mu, var (float64) and whether the centred form was used, for contiguous x (N, C, *S)."""
    y = np.empty(x.shape, x.dtype)
    mean, var, centred = _train_forward_rows(_rows(x), gamma, beta, eps, _rows(y),
                                             always_centred)
    return y, mean, var, centred


def train_backward_sums(dy, x, mean, centred):
    """sum dy and sum dy (x - mu) per channel (float64), for contiguous (N, C, *S) arrays."""
    sum_dy, sum_dy_x = _channel_sums(np, _rows(dy), _rows(x), centre=mean if centred else None)
    return sum_dy, (sum_dy_x if centred else sum_dy_x - mean * sum_dy)


def train_dx(dy, x, mean, coefficients, centred):
    """dx = k1 dy - k2 (x - mu) - k3 per channel, for coefficients (k1, k2, k3)."""
    dx = np.empty(dy.shape, dy.dtype)
    _train_dx_rows(_rows(dy), _rows(x), mean, coefficients, _rows(dx), centred)
    return dx


def affine(x, scale, shift):
    """x * scale + shift per channel (shift may be None), for contiguous x (N, C, *S)."""
    y = np.empty(x.shape, x.dtype)
    n, c, length = _rows(x).shape
    _affine_rows(np, x.reshape(n, -1), y.reshape(n, -1), _repeated(np, scale, length, x.dtype),
                 None if shift is None else _repeated(np, shift, length, x.dtype))
    return y


def eval_sums(dy, x, running_mean):
    """sum dy and sum dy (x - running_mean) per channel (float64). Centred before
    multiplying: sum(dy x) - mu sum(dy) would cancel badly when |mu| >> std."""
    return _channel_sums(np, _rows(dy), _rows(x), centre=running_mean)


def _rows(a):
    """(N, C, *S) contiguous -> its (N, C, L) view."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _blocks(rows, width, itemsize, whole_rows=False):
    """(row slice, column slice) pairs covering a (rows, width) array in blocks of about
    BLOCK_BYTES, which stay in cache between the ops on one block: runs of whole rows
    where a row fits (always, with whole_rows), else pieces of one row, taken column block
    by column block so that the matching piece of a (width,) coefficient vector stays in
    cache too while every row passes."""
    block_bytes = size("bn_block_bytes", BLOCK_BYTES)
    if whole_rows or width * itemsize <= block_bytes:
        step = max(1, block_bytes // (width * itemsize))
        return [(slice(r, min(r + step, rows)), slice(0, width)) for r in range(0, rows, step)]
    step = max(1, block_bytes // itemsize)
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


def _train_forward_rows(x3, gamma, beta, eps, y3, always_centred):
    """Fills y3 from x3 (contiguous (N, C, L)); returns mean, var (float64) and whether the
    centred form was used (needed, or always_centred)."""
    xp, (n, c, length), dtype = np, x3.shape, x3.dtype
    m = n * length
    sum_x, sum_x2 = _channel_sums(xp, x3)
    mean = sum_x / m
    var = np.maximum(sum_x2 / m - mean * mean, 0.0)
    centred = always_centred or bool(
        np.any(mean * mean > ONE_PASS_MAX_MEAN_SQUARED_OVER_VAR * var))
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


def _train_dx_rows(dy3, x3, mean, coefficients, dx3, centred):
    """Fills dx3 from contiguous (N, C, L) arrays: dx = k1 dy - (k2 x + (k3 - k2 mu)) in the
    one-pass form, x used as is; when the forward needed the centred form,
    dx = k1 dy - (k2 (x - mu) + k3) with x - mu formed block by block."""
    xp, (n, _, length) = np, dy3.shape
    dtype, (k1, k2, k3) = dy3.dtype, coefficients
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
