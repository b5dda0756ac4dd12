"""`Tensor`: an n-d array (numpy or cupy) plus what autodiff needs.

Attributes
----------
data : numpy.ndarray or cupy.ndarray
    The values. Ops read and write raw arrays; a Tensor only wraps one.
grad : array or None
    For leaves (and tensors that called `retain_grad()`): the accumulated
    gradient, an array of the same shape, dtype and device as `data`.
requires_grad : bool
    Whether ops on this tensor are recorded for backward.

This module is the Tensor core: data, gradient, flags, backward, detach and conversions.
The operators (`+`, `@`, indexing, ...) and the methods that are ops (`sum`, `reshape`, `to`,
`astype`, ...) are attached to Tensor in one place, `tensor_ops.py`, once the ops exist: the
ops import this module, so it cannot import them.
"""
import numpy as np

from . import graph
from .backend import DEFAULT_DTYPE, device_of, get_array_module, is_cupy_array, to_device


# What the ops compute on: floats, integers (labels, indices) and bools (masks). Complex numbers
# would need conjugated gradients that no op implements; strings, objects, dates and records
# have no arithmetic at all, and would fail deep inside some op instead of here.
DATA_KINDS = {"f": "float", "i": "integer", "u": "unsigned integer", "b": "bool"}
UNSUPPORTED_KINDS = {"c": "complex", "U": "strings", "S": "bytes", "O": "Python objects",
                     "V": "records", "M": "datetimes", "m": "timedeltas"}


def _as_array(data, dtype=None):
    if isinstance(data, np.generic):  # a NumPy scalar (e.g. from .sum()) keeps its dtype
        data = np.asarray(data)
    if isinstance(data, np.ndarray) or is_cupy_array(data):
        array = data if dtype is None else data.astype(dtype, copy=False)
    else:
        try:
            array = np.asarray(data, dtype=dtype)
        except (TypeError, ValueError) as e:   # ragged lists, unparsable strings, bad dtypes
            raise TypeError(f"Tensor: data of type {type(data).__name__} is not a numeric "
                            f"array ({e})") from None
        if dtype is None and array.dtype == np.float64:
            array = array.astype(DEFAULT_DTYPE)  # Python floats become the default dtype, as torch
    if array.dtype.kind not in DATA_KINDS:
        what = UNSUPPORTED_KINDS.get(array.dtype.kind, "unsupported")
        raise TypeError(f"Tensor: data of dtype {array.dtype} ({what}) is not supported: "
                        "expected a float, integer or bool array")
    return array


def _check_requires_grad(flag, dtype):
    """Only float tensors can require gradients: a gradient is a small change of the values, and
    integers and bools have none (torch refuses them the same way)."""
    if flag and dtype.kind != "f":
        raise TypeError(f"Tensor: requires_grad=True needs floating-point data (float16, float32 "
                        f"or float64), got dtype {dtype}; convert the data with "
                        ".astype(np.float32) first")
    return bool(flag)


class Tensor:
    __slots__ = ("data", "grad", "_requires_grad", "_node", "_index", "__weakref__")
    __array_priority__ = 1000  # so `ndarray + Tensor` calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            raise TypeError("Tensor(data): data is already a Tensor; use .detach() or .data")
        self.data = _as_array(data, dtype)
        self.grad = None
        self._requires_grad = _check_requires_grad(requires_grad, self.data.dtype)
        self._node = None   # the autograd Node that produced this tensor (None for leaves)
        self._index = 0     # which output of that node this tensor is

    # ---- basic properties -------------------------------------------------
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):  # checked on assignment too: `t.requires_grad = True`
        self._requires_grad = _check_requires_grad(flag, self.data.dtype)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def device(self):
        return device_of(self.data)

    @property
    def is_leaf(self):
        return self._node is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.numpy()!r}, device={self.device!r}{grad})"

    # ---- autodiff ---------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Back-propagate from this tensor. `grad` defaults to 1 for a single-element tensor."""
        if grad is None:
            if self.size != 1:
                raise ValueError(f"backward: grad can be omitted only for a single-element "
                                 f"tensor, this one has shape {self.shape}")
            grad = get_array_module(self.data).ones_like(self.data)
        if isinstance(grad, Tensor):
            grad = grad.data
        graph.backward((self,), (grad,), retain_graph=retain_graph)

    def detach(self):
        """A new leaf sharing the same data, cut from the graph."""
        return Tensor(self.data)

    def retain_grad(self):
        """Keep this non-leaf tensor's gradient in `.grad` after backward."""
        if self._node is not None:
            if self._node.retained is None:
                self._node.retained = {}
            self._node.retained[self._index] = self

    def requires_grad_(self, flag=True):
        if self._node is not None and not flag:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor; use .detach()")
        self.requires_grad = flag
        return self

    # ---- conversion -------------------------------------------------------
    def numpy(self):
        """The values as a numpy array (copied from the GPU when needed)."""
        return to_device(self.data, "cpu")

    def item(self):
        if self.size != 1:
            raise ValueError(f"item: expected a single-element tensor, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()


def tensor(data, dtype=None, device="cpu", requires_grad=False):
    """Build a leaf Tensor from array-like `data` on `device` ('cpu', 'gpu' or 'auto')."""
    array = to_device(_as_array(data, dtype), device)
    return Tensor(array, requires_grad=requires_grad)
