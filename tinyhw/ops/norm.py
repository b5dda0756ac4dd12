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

Speed on NumPy (measured). A numpy ufunc runs 2-5x slower when an operand is a
non-contiguous view or a per-channel broadcast ((C, 1, 1) against (N, C, H, W)): it goes
through the buffered iterator instead of one contiguous loop. So the CPU path ("rows")
works on x as contiguous (N, C, L) rows and never broadcasts per channel:
- statistics: per-row sums sum_l x and sum_l x^2 (sum dy and sum dy x in the backward),
  einsums over the (N C, L) rows in the data dtype, both sums of a block of rows while it
  is in L2 cache; the N rows of a channel are then added in float64. The variance is
  E[x^2] - mu^2, which loses about (mu^2 / var) ulps of the row sums, so a channel with
  |mu| > 4 std (rare after a conv) switches the whole call to the centred two-pass form
  (sums of (x - mu)^2 in the forward, x - mu in the backward).
- per-channel affine maps (y = s x + t, dx = k1 dy - (k2 x + k3)): each coefficient is
  repeated into one (C L,) vector, and (N, C L) rows times a (C L,) vector broadcast only
  over N, which numpy runs as contiguous loops; block by block (~256 KB), so that the
  second op of a block finds it in L2.
This reads x twice in the forward (statistics, output) and x and dy twice in the backward,
as torch does. Python threads do not help (the ops are memory-bound and the GIL hand-offs
cost more). CuPy arrays and float16 data (whose sums need a wider accumulator) take the
vectorised path, a direct transcription of the formulas above. The rows kernels are in
`norm_rows.py`.
"""
import numbers

import numpy as np

from ..autograd import Function
from ..checks import as_tensor, check_float, check_ndim, check_same, check_shape
from .norm_rows import (_affine_rows, _channel_sums, _repeated, _rows, _train_backward_rows,
                        _train_forward_rows)


def _channels_first(a):
    """(N, C, *S) -> a (C, N, L) view, L = prod(S) (1 for (N, C) input)."""
    n, c = a.shape[:2]
    return a.reshape(n, c, -1).transpose(1, 0, 2)


def _use_rows(xp, x):
    """The contiguous-rows path (NumPy, float32/float64); else the vectorised one."""
    return xp is np and x.dtype in (np.float32, np.float64)


def _per_channel(xp, v, dtype):
    """A (C,) statistic reshaped to broadcast against (C, N, L), in the data dtype
    (never float64 against float32 data: that would upcast the whole array)."""
    return v.astype(dtype, copy=False)[:, None, None]


def _train_forward_vectorized(xp, x_cf, gamma, beta, eps, y_cf):
    channels, n, length = x_cf.shape
    acc = np.promote_types(x_cf.dtype, np.float32)  # float16 sums overflow
    mean = x_cf.sum(axis=(1, 2), dtype=acc) / (n * length)
    centred = x_cf - _per_channel(xp, mean, x_cf.dtype)
    var = _channel_dots(xp, centred, centred, acc) / (n * length)
    _affine_cf(xp, centred, gamma / xp.sqrt(var + eps), beta, y_cf)
    return mean, var


def _channel_dots(xp, a, b, acc):
    """sum over (N, L) of a * b, per channel, for (C, N, L) arrays."""
    if a.dtype == acc:
        return xp.einsum("cnl,cnl->c", a, b)
    return (a.astype(acc) * b).sum(axis=(1, 2))


# ---- training backward ---------------------------------------------------------


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
def _affine(xp, src, scale, shift, out, rows):
    """out = src * scale + shift per channel (shift may be None), on (N, C, *S) arrays
    (contiguous ones on the rows path)."""
    if rows:
        n, c, length = _rows(src).shape
        _affine_rows(xp, src.reshape(n, -1), out.reshape(n, -1),
                     _repeated(xp, scale, length, src.dtype),
                     None if shift is None else _repeated(xp, shift, length, src.dtype))
        return
    _affine_cf(xp, _channels_first(src), scale, shift, _channels_first(out))


def _affine_cf(xp, src_cf, scale, shift, out_cf):
    """_affine on (C, N, L) views, broadcasting per channel (the vectorised path)."""
    xp.multiply(src_cf, _per_channel(xp, scale, src_cf.dtype), out=out_cf)
    if shift is not None:
        out_cf += _per_channel(xp, shift, src_cf.dtype)


def _eval_backward_sums(xp, dy, x, running_mean, inv_std, need_sum_dy_xhat, rows):
    """sum dy and sum dy * x_hat per channel, x_hat from the running statistics.
    Centred before multiplying: sum(dy x) - mu sum(dy) would cancel badly when |mu| >> std."""
    if rows:
        sum_dy, sum_dy_xc = _channel_sums(xp, _rows(dy), _rows(x), centre=running_mean)
        return sum_dy, (sum_dy_xc * inv_std if need_sum_dy_xhat else None)
    dy_cf, x_cf = _channels_first(dy), _channels_first(x)
    acc = np.promote_types(dy.dtype, np.float32)
    sum_dy = dy_cf.sum(axis=(1, 2), dtype=acc)
    if not need_sum_dy_xhat:
        return sum_dy, None
    x_centred = x_cf - _per_channel(xp, running_mean, x.dtype)
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
        ctx.rows, ctx.training = _use_rows(xp, x), training
        if ctx.rows:
            x = xp.ascontiguousarray(x)
        gamma = xp.ones(x.shape[1], x.dtype) if weight is None else weight
        y = xp.empty(x.shape, x.dtype)
        if training:
            if ctx.rows:
                mean, var, ctx.centred = _train_forward_rows(_rows(x), gamma, bias, eps, _rows(y))
            else:
                mean, var = _train_forward_vectorized(xp, _channels_first(x), gamma, bias, eps,
                                                      _channels_first(y))
            inv_std = 1.0 / xp.sqrt(var + eps)
            _update_running(running_mean, running_var, mean, var, momentum, x.size // x.shape[1])
            ctx.save(x, mean, gamma, inv_std)
        else:
            inv_std = 1.0 / xp.sqrt(running_var + eps)
            scale = gamma * inv_std
            shift = -running_mean * scale if bias is None else bias - running_mean * scale
            _affine(xp, x, scale, shift, y, ctx.rows)
            ctx.save(x, gamma, inv_std, running_mean)
        return y

    @staticmethod
    def backward(ctx, gy):
        xp = ctx.xp
        need_x, need_weight, need_bias = ctx.needs_input_grad
        if ctx.rows:
            gy = xp.ascontiguousarray(gy)
        dx = xp.empty(gy.shape, gy.dtype) if need_x else None
        if ctx.training:
            x, mean, gamma, inv_std = ctx.saved
            if ctx.rows:
                sum_dy, sum_dy_xc = _train_backward_rows(
                    _rows(gy), _rows(x), mean, gamma, inv_std, None if dx is None else _rows(dx),
                    ctx.centred)
            else:
                sum_dy, sum_dy_xc = _train_backward_vectorized(
                    xp, _channels_first(gy), _channels_first(x), mean, gamma, inv_std,
                    None if dx is None else _channels_first(dx))
            sum_dy_xhat = sum_dy_xc * inv_std
        else:
            x, gamma, inv_std, running_mean = ctx.saved
            if need_x:
                _affine(xp, gy, gamma * inv_std, None, dx, ctx.rows)
            sum_dy, sum_dy_xhat = _eval_backward_sums(xp, gy, x, running_mean, inv_std,
                                                      need_weight, ctx.rows)
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
