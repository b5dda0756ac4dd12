"""In-place parameter initialisers, named and defined as `torch.nn.init`.

Each function overwrites `tensor.data` in place (the array object is kept, so
anything holding the tensor or its array sees the new values) and returns the
tensor. Random values come from `tinyhw.random` on the tensor's own device, so
`tinyhw.manual_seed(s)` makes every model built afterwards reproducible.

Fans of a weight of shape (out, in, *kernel), as torch computes them:
    fan_in  = in  * prod(kernel)
    fan_out = out * prod(kernel)
Variance-preserving scales (Glorot & Bengio 2010; He et al. 2015):
    xavier:  std = gain * sqrt(2 / (fan_in + fan_out))
    kaiming: std = gain / sqrt(fan),  fan = fan_in or fan_out (`mode`)
and a uniform(-b, b) has std b / sqrt(3), so uniform bounds are sqrt(3) * std.
"""
import math

from . import random
from .backend import get_array_module

_LINEAR_GAINS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                 "conv_transpose2d", "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity, param=None):
    """The gain that keeps activations' variance stable through `nonlinearity`.

    linear/conv/sigmoid 1, tanh 5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + slope^2))
    with slope `param` (default 0.01), selu 3/4 (as torch).
    """
    if nonlinearity in _LINEAR_GAINS:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel); needs at least 2 dims."""
    if tensor.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dims, got shape "
                         f"{tuple(tensor.shape)}")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode: expected 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _fill(tensor, values):
    # Assign into the existing array so views and references stay valid.
    tensor.data[...] = values
    return tensor


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with samples from U(a, b)."""
    xp = get_array_module(tensor.data)
    return _fill(tensor, random.uniform(xp, tensor.shape, tensor.dtype, a, b))


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with samples from N(mean, std^2)."""
    xp = get_array_module(tensor.data)
    return _fill(tensor, random.normal(xp, tensor.shape, tensor.dtype, mean, std))


def constant_(tensor, val):
    return _fill(tensor, val)


def zeros_(tensor):
    return _fill(tensor, 0)


def ones_(tensor):
    return _fill(tensor, 1)


def xavier_uniform_(tensor, gain=1.0):
    """U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-b, b) with b = sqrt(3) * gain / sqrt(fan); `a` is the leaky-ReLU slope.

    torch's Linear and Conv layers use a=sqrt(5), which gives b = 1 / sqrt(fan_in).
    """
    fan = _fan(tensor, mode)
    if fan == 0:
        return tensor  # an empty weight: nothing to fill (torch warns and returns)
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, std^2) with std = gain / sqrt(fan)."""
    fan = _fan(tensor, mode)
    if fan == 0:
        return tensor
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))
