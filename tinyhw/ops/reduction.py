"""Reductions over axes: sum, mean, max.

With `dim=None` the reduction runs over every element. Backward re-expands the
reduced gradient to the input's shape:
    sum:  dx = broadcast(dy)
    mean: dx = broadcast(dy) / n,  n the number of elements reduced
    max over several dims (or all): dx = broadcast(dy) * [x == max] / (number of
          maxima), so ties share the gradient equally (as torch's x.max() and amax);
    max over one dim: the gradient goes to the arg-max of each slice (the first one on a
          tie, as torch's x.max(dim)), scattered back with put_along_axis: no mask or
          division over the whole input, which matters for the char-CNN's max over time.
"""
from ..autograd import Function
from ..checks import as_tensor, normalize_dim


def _axes(dim, ndim, op):
    if dim is None:
        return tuple(range(ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    axes = tuple(sorted({normalize_dim(d, ndim, f"{op}: dim") for d in dims}))
    return axes


def _expand(xp, g, axes, keepdim, shape):
    """Broadcast a reduced gradient back to `shape`."""
    if not keepdim:
        g = xp.expand_dims(g, axes)
    return xp.broadcast_to(g, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.meta = (axes, keepdim, x.shape)
        return x.sum(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, gy):
        axes, keepdim, shape = ctx.meta
        return _expand(ctx.xp, gy, axes, keepdim, shape)


class Mean(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.meta = (axes, keepdim, x.shape)
        ctx.count = 1
        for a in axes:
            ctx.count *= x.shape[a]
        return x.mean(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, gy):
        axes, keepdim, shape = ctx.meta
        return _expand(ctx.xp, gy / ctx.count, axes, keepdim, shape)


class MaxAlongDim(Function):
    @staticmethod
    def forward(ctx, x, axis, keepdim):
        xp = ctx.xp
        index = xp.expand_dims(x.argmax(axis=axis), axis)
        ctx.save(index)
        ctx.meta = (axis, keepdim, x.shape, x.dtype)
        y = xp.take_along_axis(x, index, axis=axis)
        return y if keepdim else y.squeeze(axis=axis)

    @staticmethod
    def backward(ctx, gy):
        (index,) = ctx.saved
        axis, keepdim, shape, dtype = ctx.meta
        xp = ctx.xp
        gx = xp.zeros(shape, dtype)
        xp.put_along_axis(gx, index, gy if keepdim else xp.expand_dims(gy, axis), axis=axis)
        return gx


class Max(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        y = x.max(axis=axes, keepdims=True)
        ctx.save(x, y)
        ctx.meta = (axes, keepdim, x.shape)
        return y if keepdim else y.squeeze(axis=axes)

    @staticmethod
    def backward(ctx, gy):
        x, y = ctx.saved
        axes, keepdim, shape = ctx.meta
        mask = x == y
        share = mask / mask.sum(axis=axes, keepdims=True)
        return _expand(ctx.xp, gy, axes, keepdim, shape) * share


def sum(input, dim=None, keepdim=False):
    """Sum over `dim` (an int, a tuple of ints, or None for all)."""
    x = as_tensor(input, "sum: input")
    return Sum.apply(x, axes=_axes(dim, x.ndim, "sum"), keepdim=keepdim)


def mean(input, dim=None, keepdim=False):
    """Mean over `dim` (an int, a tuple of ints, or None for all)."""
    x = as_tensor(input, "mean: input")
    if x.dtype.kind != "f":
        raise TypeError(f"mean: input: expected a floating-point tensor, got dtype {x.dtype}")
    return Mean.apply(x, axes=_axes(dim, x.ndim, "mean"), keepdim=keepdim)


def max(input, dim=None, keepdim=False):
    """Maximum values over `dim` (values only). Over one dim the arg-max gets the gradient
    (the first on a tie); over several dims or all, tied maxima share it equally."""
    x = as_tensor(input, "max: input")
    if x.size == 0:
        raise ValueError("max: input is empty")
    axes = _axes(dim, x.ndim, "max")
    if dim is not None and len(axes) == 1 and x.ndim > 0:   # also a 1-D x with dim=0, as torch
        return MaxAlongDim.apply(x, axis=axes[0], keepdim=keepdim)
    return Max.apply(x, axes=axes, keepdim=keepdim)
