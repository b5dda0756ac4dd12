"""tinyhw: a small deep-learning engine on NumPy (CPU) and CuPy (GPU), written to
reproduce "Highway and Residual Networks learn Unrolled Iterative Estimation".

    import tinyhw
    import tinyhw.functional as F
    x = tinyhw.tensor([[1.0, -2.0]], requires_grad=True)
    F.relu(x).sum().backward()
"""
from . import random
from .autograd import Function, enable_grad, is_grad_enabled, no_grad
from .backend import get_array_module, gpu_available
from .random import manual_seed
from .tensor import Tensor, tensor
from . import tensor_ops  # noqa: F401  (attaches Tensor's operators and op methods)
from . import functional, init, nn, optim, serialize

__all__ = ["Tensor", "tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled",
           "get_array_module", "gpu_available", "manual_seed", "random", "functional", "init",
           "nn", "optim", "serialize"]
__version__ = "0.1.0"
