"""Batch normalisation (Ioffe & Szegedy, 2015), torch's `F.batch_norm`.

For input x of shape (N, C, *S) each channel c is normalised over its
m = N * prod(S) values (the batch and every spatial position):

    mu     = (1/m) sum x                  var = (1/m) sum (x - mu)^2   (biased)
    x_hat  = (x - mu) * r,                r = 1 / sqrt(var + eps)
    y      = gamma * x_hat + beta

In training mode mu and var come from the batch, and the running buffers are
updated in place, as torch does, with the *unbiased* batch variance:

    running_mean <- (1 - momentum) * running_mean + momentum * mu
    running_var  <- (1 - momentum) * running_var  + momentum * var * m / (m - 1)

In evaluation mode mu and var are the running buffers, constants, so y is a
per-channel affine function of x.

Backward, training mode (per channel, sums over the m values; dy = dL/dy):

    dbeta  = sum dy
    dgamma = sum dy * x_hat
    g      = gamma * dy                           (dL/dx_hat)
Every x_i moves x_hat_i directly and through mu and var:
    d mu / d x_i  = 1/m,    d var / d x_i = (2/m) (x_i - mu),
    d x_hat_j / d x_i = r [i = j] - r/m - (r/m) x_hat_j x_hat_i
so
    dx_i = sum_j g_j d x_hat_j / d x_i
         = (r/m) (m g_i - sum_j g_j - x_hat_i sum_j g_j x_hat_j).
With the centred values xc = x - mu = x_hat / r this is

    dx = k1 * dy - k2 * xc - k3,
    k1 = gamma r,   k2 = gamma r^3 (sum dy xc) / m,   k3 = gamma r (sum dy) / m

two channel reductions, then scalar-times-array ops. The forward saves x and mu,
not xc: a whole saved array costs more (write, memory, re-read) than re-forming
xc from x in the backward.
Backward, evaluation mode: y = a x + b with a = gamma r constant, so
dx = a dy, dgamma = sum dy x_hat, dbeta = sum dy.

Speed on NumPy (measured, (8, 64, 56, 56) float32). NumPy has no fast path for an
array times a vector broadcast per channel: it runs ~3x slower than an array
times a Python scalar. So when each channel holds enough values the CPU path
loops over channels: the channel's (N, L) slab is read from memory once, stays in
L2 through all of that channel's ops, and every op is array-op-scalar. This is
~1.7x faster than the vectorised form at that shape (and slower for small slabs,
or for (N, C) input whose slabs have no contiguous rows). Python threads do not
help (each op is a few microseconds, and the GIL hand-offs cost more), and
multi-threaded BLAS reductions were avoided: OpenBLAS worker threads spin after
each call and slow whatever else runs on the cores. CuPy arrays take the
vectorised path.
"""
import numbers

import numpy as np

from ..autograd import Function
from ..checks import as_tensor, check_float, check_ndim, check_same, check_shape

# The per-channel loop pays (measured crossover) once a channel's slab of N * L values
# is this large and its rows (L contiguous values) are long enough to run fast.
_LOOP_MIN_SLAB = 8192
_LOOP_MIN_ROW = 16


def _channels_first(a):
    """(N, C, *S) -> a (C, N, L) view, L = prod(S) (1 for (N, C) input)."""
    n, c = a.shape[:2]
    return a.reshape(n, c, -1).transpose(1, 0, 2)


def _use_loops(xp, x_cf):
    _, n, length = x_cf.shape
    return (xp is np and x_cf.dtype != np.float16 and length >= _LOOP_MIN_ROW
            and n * length >= _LOOP_MIN_SLAB)


def _per_channel(xp, v, dtype):
    """A (C,) statistic reshaped to broadcast against (C, N, L), in the data dtype
    (never float64 against float32 data: that would upcast the whole array)."""
    return v.astype(dtype, copy=False)[:, None, None]


# ---- training forward: batch statistics, y = gamma x_hat + beta -------------------
def _train_forward_loops(x_cf, gamma, beta, eps, y_cf):
    """Per-channel loop (NumPy): fills y_cf, returns the per-channel mean and var (float64)."""
    channels, n, length = x_cf.shape
    m = n * length
    centred = np.empty((n, length), x_cf.dtype)  # scratch slab, reused by every channel
    flat = centred.reshape(-1)
    mean, var = np.empty(channels), np.empty(channels)
    shifts = [0.0] * channels if beta is None else beta.tolist()
    for c, (g, b) in enumerate(zip(gamma.tolist(), shifts)):
        xs, ys = x_cf[c], y_cf[c]
        mu = float(np.einsum("nl->", xs)) / m
        np.subtract(xs, mu, out=centred)
        v = float(np.dot(flat, flat)) / m  # two passes: no cancellation when |mu| >> std
        scale = g / (v + eps) ** 0.5
        if b == 0.0:
            np.multiply(centred, scale, out=ys)
        else:
            np.multiply(centred, scale, out=centred)
            np.add(centred, b, out=ys)
        mean[c], var[c] = mu, v
    return mean, var


def _train_forward_vectorized(xp, x_cf, gamma, beta, eps, y_cf):
    channels, n, length = x_cf.shape
    acc = np.promote_types(x_cf.dtype, np.float32)  # float16 sums overflow
    mean = x_cf.sum(axis=(1, 2), dtype=acc) / (n * length)
    centred = x_cf - _per_channel(xp, mean, x_cf.dtype)
    var = _channel_dots(xp, centred, centred, acc) / (n * length)
    _affine(xp, centred, gamma / xp.sqrt(var + eps), beta, y_cf)
    return mean, var


def _channel_dots(xp, a, b, acc):
    """sum over (N, L) of a * b, per channel, for (C, N, L) arrays."""
    if a.dtype == acc:
        return xp.einsum("cnl,cnl->c", a, b)
    return (a.astype(acc) * b).sum(axis=(1, 2))


# ---- training backward ---------------------------------------------------------
def _train_backward_loops(dy_cf, x_cf, mean, gamma, inv_std, dx_cf):
    """Per-channel loop (NumPy): fills dx_cf (unless None), returns sum dy, sum dy xc.

    With xc = x - mu, sum(dy xc) = sum(dy x) - mu sum(dy) and
    dx = k1 dy - k2 x - (k3 - k2 mu): x is used as is, so no pass re-centres it. The
    subtraction loses about |mu| / std float32 ulps (4e-6 relative at |mu| = 100 std).
    """
    channels, n, length = dy_cf.shape
    m = n * length
    sum_dy, sum_dy_xc = np.empty(channels), np.empty(channels)
    scratch = np.empty((n, length), dy_cf.dtype)  # one slab, reused by every channel
    for c, (mu, g, r) in enumerate(zip(mean.tolist(), gamma.tolist(), inv_std.tolist())):
        dys, xs = dy_cf[c], x_cf[c]
        s_dy = float(np.einsum("nl->", dys))
        s_dy_xc = float(np.einsum("nl,nl->", dys, xs)) - mu * s_dy
        sum_dy[c], sum_dy_xc[c] = s_dy, s_dy_xc
        if dx_cf is None:
            continue
        k1 = g * r
        k2, k3 = k1 * r * r * s_dy_xc / m, k1 * s_dy / m
        np.multiply(xs, k2, out=scratch)
        np.add(scratch, k3 - k2 * mu, out=scratch)
        np.multiply(dys, k1, out=dx_cf[c])
        np.subtract(dx_cf[c], scratch, out=dx_cf[c])
    return sum_dy, sum_dy_xc


def _train_backward_vectorized(xp, dy_cf, x_cf, mean, gamma, inv_std, dx_cf):
    _, n, length = dy_cf.shape
    m = n * length
    acc = np.promote_types(dy_cf.dtype, np.float32)
    centred = x_cf - _per_channel(xp, mean, x_cf.dtype)
    sum_dy = dy_cf.sum(axis=(1, 2), dtype=acc)
    sum_dy_xc = _channel_dots(xp, dy_cf, centred, acc)
    if dx_cf is not None:
        k1 = gamma * inv_std
        centred *= _per_channel(xp, k1 * inv_std ** 2 * sum_dy_xc / m, dy_cf.dtype)
        centred += _per_channel(xp, k1 * sum_dy / m, dy_cf.dtype)
        xp.multiply(dy_cf, _per_channel(xp, k1, dy_cf.dtype), out=dx_cf)
        dx_cf -= centred
    return sum_dy, sum_dy_xc


# ---- evaluation mode: y = a x + b per channel ------------------------------------
def _affine(xp, src_cf, scale, shift, out_cf):
    """out = src * scale + shift per channel (shift may be None)."""
    if _use_loops(xp, src_cf):
        shifts = [None] * len(scale) if shift is None else shift.tolist()
        for c, (a, b) in enumerate(zip(scale.tolist(), shifts)):
            np.multiply(src_cf[c], a, out=out_cf[c])
            if b is not None:
                np.add(out_cf[c], b, out=out_cf[c])
        return
    xp.multiply(src_cf, _per_channel(xp, scale, src_cf.dtype), out=out_cf)
    if shift is not None:
        out_cf += _per_channel(xp, shift, src_cf.dtype)


def _eval_backward_sums(xp, dy_cf, x_cf, running_mean, inv_std, need_sum_dy_xhat):
    """sum dy and sum dy * x_hat per channel, x_hat from the running statistics."""
    acc = np.promote_types(dy_cf.dtype, np.float32)
    sum_dy = dy_cf.sum(axis=(1, 2), dtype=acc)
    if not need_sum_dy_xhat:
        return sum_dy, None
    # Centre before multiplying: sum(dy x) - mu sum(dy) would cancel badly when |mu| >> std.
    x_centred = x_cf - _per_channel(xp, running_mean, x_cf.dtype)
    return sum_dy, _channel_dots(xp, dy_cf, x_centred, acc) * inv_std


def _update_running(running_mean, running_var, mean, var, momentum, m):
    """torch's exponential moving averages, in place; the variance is the unbiased one."""
    if running_mean is None:
        return
    running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
    running_var[...] = (1.0 - momentum) * running_var + momentum * (var * (m / (m - 1)))


class BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, *, running_mean, running_var, training, momentum, eps):
        xp = ctx.xp
        gamma = xp.ones(x.shape[1], x.dtype) if weight is None else weight
        y = xp.empty(x.shape, x.dtype)
        x_cf, y_cf = _channels_first(x), _channels_first(y)
        ctx.training = training
        if training:
            loops = _use_loops(xp, x_cf)
            if loops:
                mean, var = _train_forward_loops(x_cf, gamma, bias, eps, y_cf)
            else:
                mean, var = _train_forward_vectorized(xp, x_cf, gamma, bias, eps, y_cf)
            inv_std = 1.0 / xp.sqrt(var + eps)
            _update_running(running_mean, running_var, mean, var, momentum, x.size // x.shape[1])
            ctx.loops = loops
            ctx.save(x_cf, mean, gamma, inv_std)
        else:
            inv_std = 1.0 / xp.sqrt(running_var + eps)
            scale = gamma * inv_std
            shift = -running_mean * scale if bias is None else bias - running_mean * scale
            _affine(xp, x_cf, scale, shift, y_cf)
            ctx.save(x_cf, gamma, inv_std, running_mean)
        return y

    @staticmethod
    def backward(ctx, gy):
        xp = ctx.xp
        need_x, need_weight, need_bias = ctx.needs_input_grad
        dy_cf = _channels_first(gy)
        dx = xp.empty(gy.shape, gy.dtype) if need_x else None
        dx_cf = None if dx is None else _channels_first(dx)
        if ctx.training:
            x_cf, mean, gamma, inv_std = ctx.saved
            if ctx.loops:
                sums = _train_backward_loops(dy_cf, x_cf, mean, gamma, inv_std, dx_cf)
            else:
                sums = _train_backward_vectorized(xp, dy_cf, x_cf, mean, gamma, inv_std, dx_cf)
            sum_dy, sum_dy_xc = sums
            sum_dy_xhat = sum_dy_xc * inv_std
        else:
            x_cf, gamma, inv_std, running_mean = ctx.saved
            if need_x:
                _affine(xp, dy_cf, gamma * inv_std, None, dx_cf)
            sum_dy, sum_dy_xhat = _eval_backward_sums(xp, dy_cf, x_cf, running_mean, inv_std,
                                                      need_weight)
        dgamma = sum_dy_xhat.astype(gy.dtype) if need_weight else None
        dbeta = sum_dy.astype(gy.dtype) if need_bias else None
        return dx, dgamma, dbeta


# ---- the public function -----------------------------------------------------------
_OP = "batch_norm"


def _channel_vector(t, name, channels, x):
    """None, or a float Tensor of shape (C,) on x's device with x's dtype."""
    if t is None:
        return None
    label = f"{_OP}: {name}"
    t = check_float(as_tensor(t, label), label)
    check_shape(t, label, (channels,), f"(C,) with C = {channels} channels of input "
                f"{tuple(x.shape)}")
    check_same(f"{_OP}: input", x, **{label: t})
    return t


def _real(value, name, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{_OP}: {name}: expected a float, got {value!r}")
    if minimum is not None and not value >= minimum:
        raise ValueError(f"{_OP}: {name}: expected a float >= {minimum}, got {value!r}")
    return float(value)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over the batch and spatial dims, per channel (dim 1).

    Parameters
    ----------
    input : Tensor (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W), floating point.
    running_mean, running_var : Tensor (C,) or None
        Buffers of the running statistics. Used for normalisation when
        `training` is False (then required); updated in place when `training` is
        True (may then be None): running = (1 - momentum) running + momentum batch_stat,
        with the unbiased batch variance for running_var.
    weight, bias : Tensor (C,) or None
        gamma and beta of y = gamma x_hat + beta (None: 1 and 0).
    training : bool
        Normalise with the batch statistics (True) or the running ones (False).
    momentum : float
        Weight of the new batch statistic in the running averages.
    eps : float
        Added to the variance before the square root.

    Returns
    -------
    Tensor of the shape of `input`: y = gamma (x - mu) / sqrt(var + eps) + beta.

    Notes
    -----
    mu and var (biased) are per channel over the N * prod(S) values. Backward in
    training mode is the closed form derived in the module docstring:
    dx = (gamma r / m) (m dy - sum dy - x_hat sum(dy x_hat)), dgamma = sum(dy x_hat),
    dbeta = sum(dy), r = 1 / sqrt(var + eps). In evaluation mode y is affine in x:
    dx = gamma r dy. Training needs more than one value per channel.
    """
    x = check_float(as_tensor(input, f"{_OP}: input"), f"{_OP}: input")
    check_ndim(x, f"{_OP}: input", (2, 3, 4, 5), "(N, C, *)")
    channels = x.shape[1]
    w = _channel_vector(weight, "weight", channels, x)
    b = _channel_vector(bias, "bias", channels, x)
    rm = _channel_vector(running_mean, "running_mean", channels, x)
    rv = _channel_vector(running_var, "running_var", channels, x)
    if (rm is None) != (rv is None):
        raise ValueError(f"{_OP}: running_mean and running_var must both be Tensors or both None")
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{_OP}: training: expected a bool, got {training!r}")
    if not training and rm is None:
        raise ValueError(f"{_OP}: running_mean and running_var are required when training=False")
    momentum = _real(momentum, "momentum")
    eps = _real(eps, "eps", minimum=0.0)
    values_per_channel = int(np.prod(x.shape)) // max(channels, 1)
    if training and values_per_channel <= 1:
        raise ValueError(f"{_OP}: Expected more than 1 value per channel when training, got input "
                         f"of shape {tuple(x.shape)}")
    return BatchNorm.apply(x, w, b, running_mean=None if rm is None else rm.data,
                           running_var=None if rv is None else rv.data,
                           training=bool(training), momentum=momentum, eps=eps)
