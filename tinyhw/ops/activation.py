"""Activations: relu, sigmoid, tanh, softmax, log_softmax.

Each backward is written in terms of the saved output y where possible, so the
input need not be kept:
    relu:    y = max(x, 0)           dx = dy * [y > 0]
    sigmoid: y = 1 / (1 + e^-x)      dx = dy * y * (1 - y)
    tanh:    y = tanh x              dx = dy * (1 - y^2)
    softmax: y_i = e^x_i / sum_j e^x_j
             dx_i = y_i * (dy_i - sum_j dy_j y_j)
    log_softmax: y_i = x_i - log sum_j e^x_j
             dx_i = dy_i - softmax(x)_i * sum_j dy_j

relu routes. relu runs between the convolutions and batch norms of every image net, on the
largest arrays of a step, so it has a fast route beside the NumPy code of `ReLU`; every call
runs on one of RELU_ROUTES, picked by `choose_relu_route` unless
`tinyhw.ops.fast.use(relu=...)` forces one:
  reference  the two NumPy lines of `ReLU`: np.maximum(x, 0) and dy * (y > 0).
  jit        NumPy float32/float64 with Numba installed (the `fast` extra): the same two
             formulas as compiled loops over the cores (fast/relu_jit.py), equal bit for bit.
"""
from ..autograd import Function
from ..checks import as_tensor, check_float, normalize_dim
from . import fast
from .fast import jit, relu_jit

RELU_ROUTES = ("reference", "jit")
fast.register("relu", RELU_ROUTES)


def _float_input(x, op):
    return check_float(as_tensor(x, f"{op}: input"), f"{op}: input")


def choose_relu_route(xp, dtype, shape):
    """The route a relu call takes when none is forced: "jit" for the NumPy float32/float64
    feature maps (N, C, *S) of conv nets, of at least relu_jit.MIN_SIZE values, when Numba is
    installed; else "reference" (fast/relu_jit.py says why dense layers' relus stay there)."""
    return "jit" if relu_jit.applies(xp, dtype, shape) else "reference"


def _relu_route(xp, x):
    route = fast.forced_route("relu") or choose_relu_route(xp, x.dtype, x.shape)
    if route == "jit" and not relu_jit.runs_on(xp, x.dtype):
        if not jit.available:
            raise ValueError(f"relu: route 'jit' {jit.INSTALL_HINT}")
        raise ValueError(f"relu: route 'jit' runs on NumPy float32 and float64 arrays, "
                         f"got {xp.__name__} {x.dtype}")
    return route


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.route = _relu_route(ctx.xp, x)
        y = relu_jit.forward(x) if ctx.route == "jit" else ctx.xp.maximum(x, 0)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved
        if ctx.route == "jit":
            return relu_jit.backward(gy, y)
        return gy * (y > 0)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        # 0.5 * (1 + tanh(x / 2)) equals 1 / (1 + e^-x) and never overflows.
        y = ctx.xp.tanh(x * 0.5)
        y *= 0.5
        y += 0.5
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved
        return gy * y * (1 - y)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.tanh(x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved
        return gy * (1 - y * y)


def stable_log_softmax(xp, x, axis):
    """log_softmax computed as (x - max) - log(sum(exp(x - max))) so exp never overflows."""
    shifted = x - x.max(axis=axis, keepdims=True)
    shifted -= xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, dim):
        y = ctx.xp.exp(stable_log_softmax(ctx.xp, x, dim))
        ctx.save(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved
        return y * (gy - (gy * y).sum(axis=ctx.dim, keepdims=True))


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, dim):
        y = stable_log_softmax(ctx.xp, x, dim)
        ctx.save(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved
        return gy - ctx.xp.exp(y) * gy.sum(axis=ctx.dim, keepdims=True)


def relu(input):
    """max(input, 0), elementwise. Any shape."""
    return ReLU.apply(_float_input(input, "relu"))


def sigmoid(input):
    """1 / (1 + exp(-input)), elementwise. Any shape."""
    return Sigmoid.apply(_float_input(input, "sigmoid"))


def tanh(input):
    """tanh(input), elementwise. Any shape."""
    return Tanh.apply(_float_input(input, "tanh"))


def softmax(input, dim=-1):
    """exp(x) / sum(exp(x)) along `dim` (default last, unlike torch, which has no default)."""
    x = _float_input(input, "softmax")
    return Softmax.apply(x, dim=normalize_dim(dim, x.ndim, "softmax: dim"))


def log_softmax(input, dim=-1):
    """x - log(sum(exp(x))) along `dim`, computed stably."""
    x = _float_input(input, "log_softmax")
    return LogSoftmax.apply(x, dim=normalize_dim(dim, x.ndim, "log_softmax: dim"))
