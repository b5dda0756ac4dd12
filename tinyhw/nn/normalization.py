"""Batch normalisation layers (Ioffe & Szegedy 2015): `BatchNorm1d`, `BatchNorm2d`.

In training the batch's own mean and (biased) variance normalise the input and
the running estimates move towards them:
    running = (1 - momentum) * running + momentum * batch_stat
(the running variance uses the unbiased batch variance, as torch). In eval the
running estimates are used instead, so the output no longer depends on the batch.
"""
import numpy as np

from .. import init
from ..backend import DEFAULT_DTYPE
from ..checks import as_tensor, check_size
from ..ops.norm import batch_norm
from ..tensor import Tensor
from .linear import empty_parameter
from .module import Module


class _BatchNorm(Module):
    _ranks = ()       # accepted input ranks, set by subclasses
    _layout = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        owner = type(self).__name__
        num_features = check_size(num_features, f"{owner}: num_features")
        if not isinstance(eps, (int, float, np.floating)) or not eps > 0:
            raise ValueError(f"{owner}: eps must be a positive number, got {eps!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{type(self).__name__}: momentum must be in [0, 1] or None, "
                             f"got {momentum}")
        self.num_features = num_features
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.register_parameter("weight", empty_parameter(num_features) if affine else None)
        self.register_parameter("bias", empty_parameter(num_features) if affine else None)
        self.register_buffer("running_mean", Tensor(np.zeros(num_features, DEFAULT_DTYPE)))
        self.register_buffer("running_var", Tensor(np.ones(num_features, DEFAULT_DTYPE)))
        self.register_buffer("num_batches_tracked", Tensor(np.zeros((), np.int64)))
        self.reset_parameters()

    def reset_running_stats(self):
        init.zeros_(self.running_mean)
        init.ones_(self.running_var)
        init.zeros_(self.num_batches_tracked)

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, input):
        x = as_tensor(input, f"{type(self).__name__}: input")
        if x.ndim not in self._ranks:
            raise ValueError(f"{type(self).__name__}: expected a {self._layout} input, "
                             f"got shape {tuple(x.shape)}")
        momentum = self.momentum
        if self.training:
            self.num_batches_tracked.data += 1
            if momentum is None:  # torch: a cumulative average over all batches seen
                momentum = 1.0 / float(self.num_batches_tracked.item())
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                          training=self.training, momentum=0.0 if momentum is None else momentum,
                          eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}")


class BatchNorm1d(_BatchNorm):
    """Per-feature normalisation of (N, C) or (N, C, L) inputs, statistics over N (and L)."""
    _ranks = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Per-channel normalisation of (N, C, H, W) inputs, statistics over N, H and W."""
    _ranks = (4,)
    _layout = "(N, C, H, W)"
