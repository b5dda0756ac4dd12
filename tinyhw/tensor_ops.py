"""Tensor's operators and op methods, attached in this one place.

`tensor.py` holds the Tensor core and cannot import the ops (they import it), so the methods
that are ops are set here, once every op module exists; `tinyhw/__init__.py` imports this
module right after the Tensor core. Each method is the op itself (its docstring is the op's),
or a two-line wrapper where the argument order differs:

    t + u, t - u, t * u, t / u, -t, t ** p    tinyhw.ops.elementwise
    t @ u                                     tinyhw.ops.linalg.matmul
    t[index]                                  tinyhw.ops.shape.getitem
    t.exp() .log() .astype(dtype)             tinyhw.ops.elementwise
    t.relu() .sigmoid() .tanh()               tinyhw.ops.activation
    t.sum() .mean() .max()                    tinyhw.ops.reduction
    t.reshape() .view() .flatten() .transpose() .permute() .unsqueeze() .squeeze() .T
    t.to(device)                              tinyhw.ops.shape
"""
from .backend import normalize_device
from .ops import activation, elementwise, linalg, reduction, shape
from .tensor import Tensor


def _swapped(op):
    """The reflected operator: Python calls `u.__radd__(t)` for `t + u` when t is not a
    Tensor (a number or an ndarray), and the op must see the operands in their order."""
    def method(self, other):
        return op(other, self)
    method.__name__ = f"r{op.__name__}"
    method.__doc__ = f"other {op.__name__} self: see {op.__module__}.{op.__name__}."
    return method


def to(self, device):
    """Move to 'cpu' or 'gpu' (differentiable: the gradient moves back); the tensor itself when
    it is already there."""
    if normalize_device(device) == self.device:
        return self
    return shape.to_device(self, device)


def _reversed_dims(self):
    """The tensor with its dims in reverse order (as torch's .T)."""
    return shape.permute(self, *reversed(range(self.ndim)))


# ---- operators ---------------------------------------------------------------------------
Tensor.__add__ = elementwise.add
Tensor.__radd__ = _swapped(elementwise.add)
Tensor.__sub__ = elementwise.sub
Tensor.__rsub__ = _swapped(elementwise.sub)
Tensor.__mul__ = elementwise.mul
Tensor.__rmul__ = _swapped(elementwise.mul)
Tensor.__truediv__ = elementwise.div
Tensor.__rtruediv__ = _swapped(elementwise.div)
Tensor.__neg__ = elementwise.neg
Tensor.__pow__ = elementwise.pow
Tensor.__matmul__ = linalg.matmul
Tensor.__rmatmul__ = _swapped(linalg.matmul)
Tensor.__getitem__ = shape.getitem

# ---- methods -----------------------------------------------------------------------------
Tensor.exp = elementwise.exp
Tensor.log = elementwise.log
Tensor.astype = elementwise.cast
Tensor.relu = activation.relu
Tensor.sigmoid = activation.sigmoid
Tensor.tanh = activation.tanh
Tensor.sum = reduction.sum
Tensor.mean = reduction.mean
Tensor.max = reduction.max
Tensor.reshape = shape.reshape
Tensor.view = shape.reshape
Tensor.flatten = shape.flatten
Tensor.transpose = shape.transpose
Tensor.permute = shape.permute
Tensor.unsqueeze = shape.unsqueeze
Tensor.squeeze = shape.squeeze
Tensor.T = property(_reversed_dims)
Tensor.to = to
