"""relu's "jit" route: its forward and backward (ops/activation.py) as compiled loops (jit.py)
over the cores, for NumPy float32 and float64 arrays.

    forward   y  = 0 where x <= 0, else x        (-0 gives +0 and NaN stays NaN, as in
                                                  np.maximum(x, 0))
    backward  dx = dy * (1 where y > 0, else 0)  (dy * [y > 0], the reference's product)

Both are one pass over flat views, cut into blocks of BLOCK values that the cores share out.
No sum is formed, so the result is the reference's bit for bit on any thread count. NumPy's
own passes run on one core, and np.maximum's NaN-propagating loop is slow: on resnet20's
(128, 16, 32, 32) activations the forward took 0.9 ms against 0.2 here, the backward 1.3 ms
against 0.35 (bench/NOTES.md).

When it runs (`applies`): on the feature maps of conv nets, (N, C, *S) arrays, whose convs and
batch norms already run on their jit routes. A relu of (rows, features), between the linear
layers of a dense net such as the char-LM's highway layers, stays on NumPy: there the GEMMs
run on NumPy's multi-threaded BLAS, whose idle threads spin after each call on the core a
parallel loop needs, and the other way round (jit.py). Measured, alternating in one process:
resnet20's step 0.92-0.95x the time with this route, the LM-small step 1.13x (bench/NOTES.md).
"""
import numpy as np

from . import jit
from .jit import prange

BLOCK = 16384     # values per parallel iteration: 64 KiB of float32, a fixed cut of the data
MIN_SIZE = 32768  # below this a parallel region's start (~5-10 us) outweighs NumPy's pass


def applies(xp, dtype, shape):
    """Whether the route runs a call: Numba installed, a NumPy float32/float64 feature map
    (N, C, *S) of at least MIN_SIZE values."""
    return runs_on(xp, dtype) and len(shape) >= 3 and int(np.prod(shape)) >= MIN_SIZE


def runs_on(xp, dtype):
    """Whether the route can run at all: Numba installed, NumPy arrays of float32 or float64."""
    return jit.available and xp is np and dtype in (np.float32, np.float64)


def _forward(x, y):
    """y = 0 where x <= 0, else x, over flat views (each block's slices start at index 0, so the
    loop has no negative-index checks and vectorises)."""
    n = x.size
    zero = x.dtype.type(0)
    for block in prange((n + BLOCK - 1) // BLOCK):
        start = block * BLOCK
        xs, ys = x[start:start + BLOCK], y[start:start + BLOCK]
        for i in range(xs.size):
            v = xs[i]
            ys[i] = zero if v <= zero else v


def _backward(dy, y, dx):
    """dx = dy * 1 where y > 0, else dy * 0, over flat views (a product, not a select, so a
    NaN or infinite dy gives what the reference's product gives)."""
    n = dy.size
    zero, one = dy.dtype.type(0), dy.dtype.type(1)
    for block in prange((n + BLOCK - 1) // BLOCK):
        start = block * BLOCK
        gs, ys, out = dy[start:start + BLOCK], y[start:start + BLOCK], dx[start:start + BLOCK]
        for i in range(gs.size):
            out[i] = gs[i] * (one if ys[i] > zero else zero)


_forward = jit.parallel(_forward)
_backward = jit.parallel(_backward)


def forward(x):
    """relu(x) for a NumPy float array of any shape (contiguous or not)."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _forward(x.reshape(-1), y.reshape(-1))
    return y


def backward(dy, y):
    """dy * [y > 0] for arrays of one shape, y the forward's output."""
    dy = np.ascontiguousarray(dy, dtype=y.dtype)
    dx = np.empty_like(dy)
    _backward(dy.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx
