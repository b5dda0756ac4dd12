"""batch_norm's "jit" route: compiled loops (jit.py) for NumPy float32 and float64 data, the
formulas of ops/norm.py with the same interface as norm_rows.py.

The data are taken as contiguous (N, C, L) arrays. Per channel, the statistics are two
passes over that channel's N rows (the sum, then the sum of (x - mu)^2: exact, without the
cancellation of E[x^2] - mu^2, and nearly free because the channel's N L values are still in
cache for the second pass), one channel per parallel iteration, accumulated in float64.
The maps y = (x - mu) s + beta and dx = k1 dy - (k2 (x - mu) + k3) are one fused pass each,
row by row in parallel, with coefficients in the data dtype. Centring before scaling keeps
the centred form's accuracy when |mu| >> std, so this route has no one-pass variant.
"""
import numpy as np

from . import jit
from .jit import prange


def runs_on(xp, dtype):
    """Whether the route can run: Numba installed, NumPy arrays of float32 or float64."""
    return jit.available and xp is np and dtype in (np.float32, np.float64)


def _channel_stats(x, mean, var):
    n, c, length = x.shape
    for ch in prange(c):
        total = 0.0
        for i in range(n):
            for k in range(length):
                total += x[i, ch, k]
        mu = total / (n * length)
        squares = 0.0
        for i in range(n):
            for k in range(length):
                d = x[i, ch, k] - mu
                squares += d * d
        mean[ch], var[ch] = mu, squares / (n * length)


def _channel_sums(dy, x, centre, sum_dy, sum_dy_xc):
    n, c, length = dy.shape
    for ch in prange(c):
        total, products = 0.0, 0.0
        m = centre[ch]
        for i in range(n):
            for k in range(length):
                g = dy[i, ch, k]
                total += g
                products += g * (x[i, ch, k] - m)
        sum_dy[ch], sum_dy_xc[ch] = total, products


def _centred_affine(x, centre, scale, shift, out):
    """out = (x - centre) scale + shift per channel (coefficients in x's dtype)."""
    n, c, length = x.shape
    for row in prange(n * c):
        i, ch = row // c, row % c
        m, s, t = centre[ch], scale[ch], shift[ch]
        for k in range(length):
            out[i, ch, k] = (x[i, ch, k] - m) * s + t


def _dx(dy, x, centre, k1, k2, k3, out):
    """out = k1 dy - (k2 (x - centre) + k3) per channel (coefficients in x's dtype)."""
    n, c, length = x.shape
    for row in prange(n * c):
        i, ch = row // c, row % c
        m, a, b, d = centre[ch], k1[ch], k2[ch], k3[ch]
        for k in range(length):
            out[i, ch, k] = a * dy[i, ch, k] - (b * (x[i, ch, k] - m) + d)


_channel_stats = jit.parallel(_channel_stats)
_channel_sums = jit.parallel(_channel_sums)
_centred_affine = jit.parallel(_centred_affine)
_dx = jit.parallel(_dx)


def _rows(a):
    """(N, C, *S) contiguous -> its (N, C, L) view."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _coefficient(v, dtype):
    return np.ascontiguousarray(v, dtype=dtype)


def train_forward(x, gamma, beta, eps, always_centred=False):
    """y, mu, var (float64) and True (the form is always centred), for contiguous x (N, C, *S)."""
    c = x.shape[1]
    mean, var = np.empty(c), np.empty(c)
    _channel_stats(_rows(x), mean, var)
    scale = gamma / np.sqrt(var + eps)
    shift = np.zeros(c) if beta is None else beta
    y = np.empty(x.shape, x.dtype)
    _centred_affine(_rows(x), _coefficient(mean, x.dtype), _coefficient(scale, x.dtype),
                    _coefficient(shift, x.dtype), _rows(y))
    return y, mean, var, True


def train_backward_sums(dy, x, mean, centred=True):
    """sum dy and sum dy (x - mu) per channel (float64), for contiguous (N, C, *S) arrays."""
    return eval_sums(dy, x, mean)


def train_dx(dy, x, mean, coefficients, centred=True):
    """dx = k1 dy - k2 (x - mu) - k3 per channel, for coefficients (k1, k2, k3)."""
    dx = np.empty(dy.shape, dy.dtype)
    _dx(_rows(dy), _rows(x), _coefficient(mean, x.dtype),
        *(_coefficient(k, dy.dtype) for k in coefficients), _rows(dx))
    return dx


def affine(x, scale, shift):
    """x * scale + shift per channel (shift may be None), for contiguous x (N, C, *S)."""
    c = x.shape[1]
    y = np.empty(x.shape, x.dtype)
    _centred_affine(_rows(x), np.zeros(c, x.dtype), _coefficient(scale, x.dtype),
                    _coefficient(np.zeros(c) if shift is None else shift, x.dtype), _rows(y))
    return y


def eval_sums(dy, x, centre):
    """sum dy and sum dy (x - centre) per channel (float64), centred before multiplying."""
    c = dy.shape[1]
    sum_dy, sum_dy_xc = np.empty(c), np.empty(c)
    _channel_sums(_rows(dy), _rows(x), np.ascontiguousarray(centre, dtype=np.float64), sum_dy,
                  sum_dy_xc)
    return sum_dy, sum_dy_xc
