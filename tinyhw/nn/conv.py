"""Convolution layers: `Conv1d` (N, C, L) and `Conv2d` (N, C, H, W), torch's layout and init."""
import numpy as np

from ..checks import check_size, pair
from ..ops.conv import conv1d, conv2d
from .linear import empty_parameter, reset_weight_and_bias
from .module import Module


def _at_least(values, minimum, name):
    """Check each entry of the tuple `values` (a kernel size, stride or padding)."""
    for v in values:
        check_size(v, name, minimum)
    return values


class _ConvNd(Module):
    """Shared parts: weight (out, in, *kernel), optional bias (out,), torch's default init."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, bias):
        super().__init__()
        owner = type(self).__name__
        self.in_channels = check_size(in_channels, f"{owner}: in_channels")
        self.out_channels = check_size(out_channels, f"{owner}: out_channels")
        self.kernel_size = _at_least(kernel_size, 1, f"{owner}: kernel_size")
        self.stride = _at_least(stride, 1, f"{owner}: stride")
        self.padding = _at_least(padding, 0, f"{owner}: padding")
        self.weight = empty_parameter(self.out_channels, self.in_channels, *kernel_size)
        self.register_parameter("bias", empty_parameter(self.out_channels) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        reset_weight_and_bias(self.weight, self.bias)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if any(self.padding):
            text += f", padding={self.padding}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvNd):
    """2-D convolution (cross-correlation, as torch): (N, C_in, H, W) -> (N, C_out, H', W').

    kernel_size, stride, padding: an int or a pair (height, width).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        name = "Conv2d"
        super().__init__(in_channels, out_channels, pair(kernel_size, f"{name}: kernel_size"),
                         pair(stride, f"{name}: stride"), pair(padding, f"{name}: padding"), bias)

    def forward(self, input):
        return conv2d(input, self.weight, self.bias, stride=self.stride, padding=self.padding)


def _single(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise TypeError(f"{name}: expected an int or a 1-tuple, got {value!r}")
        value = value[0]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    return (int(value),)


class Conv1d(_ConvNd):
    """1-D convolution over time (Kim et al.'s character CNN): (N, C_in, L) -> (N, C_out, L')."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        name = "Conv1d"
        super().__init__(in_channels, out_channels, _single(kernel_size, f"{name}: kernel_size"),
                         _single(stride, f"{name}: stride"), _single(padding, f"{name}: padding"),
                         bias)

    def forward(self, input):
        return conv1d(input, self.weight, self.bias, stride=self.stride[0],
                      padding=self.padding[0])
