"""Dense layers and shape helpers: `Linear`, `Identity`, `Flatten`."""
import math

import numpy as np

from .. import init
from ..backend import DEFAULT_DTYPE
from ..checks import check_size
from ..ops.linalg import linear
from ..ops.shape import flatten
from .module import Module
from .parameter import Parameter


def empty_parameter(*shape):
    """A float32 Parameter of `shape` whose values an initialiser fills next."""
    return Parameter(np.empty(shape, dtype=DEFAULT_DTYPE))


def reset_weight_and_bias(weight, bias):
    """torch's default for Linear and Conv: kaiming_uniform(a=sqrt(5)) gives
    W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias gets the same bound."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init.calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound)


class Linear(Module):
    """y = x W^T + b.  x (*, in_features) -> y (*, out_features).

    weight (out_features, in_features), bias (out_features,).
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = check_size(in_features, "Linear: in_features")
        self.out_features = check_size(out_features, "Linear: out_features")
        self.weight = empty_parameter(self.out_features, self.in_features)
        self.register_parameter("bias", empty_parameter(self.out_features) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        reset_weight_and_bias(self.weight, self.bias)

    def forward(self, input):
        return linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Identity(Module):
    """Returns its input unchanged (a placeholder, e.g. for a shortcut without projection)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Flatten(Module):
    """Merges dims start_dim..end_dim: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input):
        return flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
