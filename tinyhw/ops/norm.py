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

two channel reductions, then scalar-times-array ops (`dx_coefficients`). The
forward saves x and mu, not xc: re-forming xc in the backward is cheaper than
keeping a whole extra array.
Backward, evaluation mode: y = a x + b with a = gamma r constant, so
dx = a dy, dgamma = sum dy x_hat, dbeta = sum dy.

Routes. The reference functions below transcribe these formulas on (N, C, *S)
arrays broadcasting per channel, on numpy or cupy, any float dtype (sums in at
least float32: float16 sums overflow). Every call runs on one of ROUTES, picked by
`choose_route` unless `tinyhw.ops.fast.use(batch_norm=...)` forces one:
  reference     the code below.
  rows          NumPy float32/float64: contiguous rows, one-pass statistics
                (E[x^2] - mu^2), the same dx from the same coefficients computed
                block by block; the centred two-pass form when some |mu| > 4 std
                (fast/norm_rows.py).
  rows-centred  the rows route, always with the two-pass statistics.
  jit           NumPy float32/float64 with Numba installed (the `fast` extra):
                compiled loops over the cores, two-pass statistics per channel and
                one fused pass for y and one for dx (fast/norm_jit.py).
"""
import numbers

import numpy as np

from ..autograd import Function
from ..checks import as_tensor, check_float, check_ndim, check_same, check_shape
from . import fast
from .fast import jit, norm_jit, norm_rows

ROUTES = ("reference", "rows", "rows-centred", "jit")
fast.register("batch_norm", ROUTES)


# ---- the reference route ----------------------------------------------------------

def _axes(x):
    """Every axis but the channel axis 1: the m values of a channel."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, x):
    """A (C,) vector shaped to broadcast against x (N, C, *S), in x's dtype (a float64
    statistic against float32 data would upcast the whole array)."""
    return v.astype(x.dtype, copy=False).reshape((1, -1) + (1,) * (x.ndim - 2))


def dx_coefficients(gamma, inv_std, sum_dy, sum_dy_xc, m):
    """(k1, k2, k3) per channel, with dx = k1 dy - k2 (x - mu) - k3 in training mode."""
    k1 = gamma * inv_std
    return k1, k1 * inv_std ** 2 * sum_dy_xc / m, k1 * sum_dy / m


def reference_train_forward(xp, x, gamma, beta, eps):
    """y, mu and var (biased) from the batch."""
    acc = np.promote_types(x.dtype, np.float32)
    mean = x.mean(axis=_axes(x), dtype=acc)
    xc = x - _per_channel(mean, x)
    var = (xc.astype(acc, copy=False) * xc).mean(axis=_axes(x))
    y = xc * _per_channel(gamma / xp.sqrt(var + eps), x)
    return (y if beta is None else y + _per_channel(beta, x)), mean, var


def reference_train_backward(dy, x, mean, gamma, inv_std, need_dx):
    """dx (None unless need_dx), sum dy and sum dy (x - mu), per channel."""
    acc = np.promote_types(dy.dtype, np.float32)
    xc = x - _per_channel(mean, x)
    sum_dy = dy.sum(axis=_axes(dy), dtype=acc)
    sum_dy_xc = (dy.astype(acc, copy=False) * xc).sum(axis=_axes(dy))
    if not need_dx:
        return None, sum_dy, sum_dy_xc
    k1, k2, k3 = dx_coefficients(gamma, inv_std, sum_dy, sum_dy_xc, x.size // x.shape[1])
    dx = dy * _per_channel(k1, dy) - xc * _per_channel(k2, dy) - _per_channel(k3, dy)
    return dx, sum_dy, sum_dy_xc


def reference_eval_sums(dy, x, running_mean):
    """sum dy and sum dy (x - running_mean), per channel (centred before multiplying:
    sum(dy x) - mu sum(dy) would cancel badly when |mu| >> std)."""
    acc = np.promote_types(dy.dtype, np.float32)
    xc = x - _per_channel(running_mean, x)
    return dy.sum(axis=_axes(dy), dtype=acc), (dy.astype(acc, copy=False) * xc).sum(_axes(dy))


# ---- which route runs --------------------------------------------------------------

def choose_route(xp, dtype):
    """The route a call takes when none is forced: "jit" for NumPy float32 and float64 data
    when Numba is installed, else "rows" for them, else "reference" (CuPy arrays; float16,
    whose sums need a wider accumulator)."""
    if norm_jit.runs_on(xp, dtype):
        return "jit"
    return "rows" if norm_rows.runs_on(xp, dtype) else "reference"


def _route(xp, x):
    route = fast.forced_route("batch_norm") or choose_route(xp, x.dtype)
    if route == "jit" and not jit.available:
        raise ValueError(f"batch_norm: route 'jit' {jit.INSTALL_HINT}")
    if route != "reference" and not norm_rows.runs_on(xp, x.dtype):
        raise ValueError(f"batch_norm: route {route!r} runs on NumPy float32 and float64 "
                         f"arrays only, got {type(x).__module__} {x.dtype}")
    return route


def _fast_module(route):
    """The module of a fast route: norm_jit for "jit", norm_rows for the rows routes."""
    return norm_jit if route == "jit" else norm_rows


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
        ctx.route, ctx.training = _route(xp, x), training
        if ctx.route != "reference":  # the rows routes work on contiguous rows
            x = xp.ascontiguousarray(x)
        gamma = xp.ones(x.shape[1], x.dtype) if weight is None else weight
        if training:
            if ctx.route == "reference":
                y, mean, var = reference_train_forward(xp, x, gamma, bias, eps)
            else:
                y, mean, var, ctx.centred = _fast_module(ctx.route).train_forward(
                    x, gamma, bias, eps, always_centred=ctx.route == "rows-centred")
            inv_std = 1.0 / xp.sqrt(var + eps)
            _update_running(running_mean, running_var, mean, var, momentum, x.size // x.shape[1])
            ctx.save(x, mean, gamma, inv_std)
        else:
            inv_std = 1.0 / xp.sqrt(running_var + eps)
            scale = gamma * inv_std                     # y = scale x + shift
            shift = -running_mean * scale if bias is None else bias - running_mean * scale
            ctx.save(x, scale, inv_std, running_mean)
            y = x * _per_channel(scale, x) + _per_channel(shift, x) \
                if ctx.route == "reference" else _fast_module(ctx.route).affine(x, scale, shift)
        return xp.ascontiguousarray(y)   # (the reference's follows x's layout)

    @staticmethod
    def backward(ctx, gy):
        xp, reference = ctx.xp, ctx.route == "reference"
        routes = _fast_module(ctx.route)
        need_x, need_weight, need_bias = ctx.needs_input_grad
        if not reference:
            gy = xp.ascontiguousarray(gy)
        if ctx.training:
            x, mean, gamma, inv_std = ctx.saved
            if reference:
                dx, sum_dy, sum_dy_xc = reference_train_backward(gy, x, mean, gamma, inv_std,
                                                                 need_x)
            else:
                sum_dy, sum_dy_xc = routes.train_backward_sums(gy, x, mean, ctx.centred)
                dx = None
                if need_x:  # the reference's dx, computed block by block
                    k = dx_coefficients(gamma, inv_std, sum_dy, sum_dy_xc, x.size // x.shape[1])
                    dx = routes.train_dx(gy, x, mean, k, ctx.centred)
        else:  # dx = scale dy
            x, scale, inv_std, running_mean = ctx.saved
            dx = None
            if need_x:
                dx = gy * _per_channel(scale, gy) if reference else \
                    routes.affine(gy, scale, None)
            sum_dy, sum_dy_xc = (reference_eval_sums if reference else routes.eval_sums)(
                gy, x, running_mean)
        dgamma = (sum_dy_xc * inv_std).astype(gy.dtype) if need_weight else None
        dbeta = sum_dy.astype(gy.dtype) if need_bias else None
        return (None if dx is None else xp.ascontiguousarray(dx)), dgamma, dbeta


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
