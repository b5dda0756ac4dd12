"""Dropout (Srivastava et al., 2014), in the "inverted" form torch uses.

Training: each element is kept with probability 1 - p and scaled by 1 / (1 - p),
so E[y] = x and evaluation needs no rescaling:

    m_i ~ Bernoulli(1 - p),    y_i = x_i * m_i / (1 - p)

Write s_i = m_i / (1 - p) (the scaled mask, 0 or 1 / (1 - p)). y is linear in x
with a diagonal Jacobian, so

    dL/dx_i = dL/dy_i * s_i

and the backward is a single multiply by the saved scaled mask. The mask is kept
in the input's dtype (one multiply in the backward, no cast) and is built in place
in the buffer of the uniform draws (compare, then scale), so besides the draw the
forward allocates only y.
"""
import numbers

import numpy as np

from .. import random as _random
from ..autograd import Function
from ..checks import as_tensor, check_float


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, p):
        xp = ctx.xp
        mask = _random.uniform(xp, x.shape, x.dtype)
        # u >= p has probability 1 - p. Written into the uniforms' own buffer:
        # the comparison's bools are cast to 0.0 / 1.0 of the input dtype.
        xp.greater_equal(mask, p, out=mask)
        mask *= 1.0 / (1.0 - p)
        ctx.save(mask)
        return x * mask

    @staticmethod
    def backward(ctx, gy):
        (mask,) = ctx.saved
        return gy * mask


class _Zeros(Function):
    """p == 1: every unit dropped. The output is zero and so is the gradient."""

    @staticmethod
    def forward(ctx, x):
        return ctx.xp.zeros_like(x)

    @staticmethod
    def backward(ctx, gy):
        return ctx.xp.zeros_like(gy)


def _check_p(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"dropout: p: expected a float in [0, 1], got {p!r}")
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects nan
        raise ValueError(f"dropout: p: dropout probability has to be between 0 and 1, got {p}")
    return p


def dropout(input, p=0.5, training=True):
    """Randomly zero elements of `input` with probability `p`, scaling the rest by 1 / (1 - p).

    Parameters
    ----------
    input : Tensor of any shape, floating point.
    p : float in [0, 1]
        Probability of an element being zeroed.
    training : bool
        When False (evaluation), or when p == 0, the input is returned unchanged
        (the same Tensor, no copy).

    Returns
    -------
    Tensor of the shape and dtype of `input`.

    Notes
    -----
    Forward: m ~ Bernoulli(1 - p) elementwise, y = x * m / (1 - p), so E[y] = x.
    Backward: y is elementwise linear in x, dx = dy * m / (1 - p) (the saved
    scaled mask). p == 1 gives y = 0 and dx = 0.
    The mask comes from `tinyhw.random.uniform`, so `tinyhw.manual_seed(k)` makes it
    repeatable; a mask is drawn on the device of the input.
    """
    x = check_float(as_tensor(input, "dropout: input"), "dropout: input")
    p = _check_p(p)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"dropout: training: expected a bool, got {training!r}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return _Zeros.apply(x)
    return Dropout.apply(x, p=p)
