"""Gradient-norm clipping over all parameters together (Kim et al. clip at norm 5)."""
import math

from ..backend import get_array_module
from ..tensor import Tensor


def clip_grad_norm_(parameters, max_norm):
    """Rescale gradients in place so that their global L2 norm is at most `max_norm`.

    The norm is taken over all gradients as one vector,
        total = sqrt(sum_p ||grad_p||^2),
    and when total > max_norm every gradient is multiplied by max_norm / (total + 1e-6),
    as torch does (the 1e-6 guards against dividing by a zero norm). Parameters
    without a gradient are skipped. Returns the norm before clipping, as a float.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    max_norm = float(max_norm)
    if max_norm < 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    # Each square-sum is one BLAS dot product on its device (no temporary array; float32
    # gradients accumulate in float32, as torch's norm does), summed on the host in float64.
    squares = 0.0
    for g in grads:
        flat = g.reshape(-1)
        squares += float(get_array_module(g).vdot(flat, flat))
    total = math.sqrt(squares)
    coefficient = max_norm / (total + 1e-6)
    if coefficient < 1:
        for g in grads:
            g *= coefficient
    return total
