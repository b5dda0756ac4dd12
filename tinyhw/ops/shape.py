"""Shape ops: reshape, transpose/permute, (un)squeeze, indexing, cat, stack, split, device moves.

None of these change values, only where they sit, so each backward puts the
gradient back where the value came from:
    reshape:   dx = reshape(dy, x.shape)
    permute:   dx = permute(dy, inverse permutation)
    x[index]:  dx = zeros(x.shape); dx[index] += dy   (scatter-add: repeated indices sum)
    cat:       dx_k = the k-th slice of dy along dim
    split:     dx = cat of the output gradients (zeros for unused outputs)
"""
import numpy as np

from ..autograd import Function
from ..backend import get_array_module, to_device as _move
from ..checks import as_tensor, check_same, normalize_dim
from ..tensor import Tensor


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, gy):
        return gy.reshape(ctx.in_shape)


class Permute(Function):
    @staticmethod
    def forward(ctx, x, dims):
        ctx.inverse = tuple(np.argsort(dims))
        return x.transpose(dims)

    @staticmethod
    def backward(ctx, gy):
        return gy.transpose(ctx.inverse)


def _plain_index(index, xp):
    """Unwrap Tensors inside an index; move index arrays to the data's device."""
    parts = index if isinstance(index, tuple) else (index,)
    out = []
    for p in parts:
        if isinstance(p, Tensor):
            p = p.data
        if isinstance(p, (list, np.ndarray)) or type(p).__module__.startswith("cupy"):
            p = xp.asarray(p)
        out.append(p)
    return tuple(out)


def _is_basic(index):
    return all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice))
               for p in index)


class GetItem(Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.meta = (x.shape, x.dtype, index)
        return x[index]

    @staticmethod
    def backward(ctx, gy):
        shape, dtype, index = ctx.meta
        gx = ctx.xp.zeros(shape, dtype)
        if _is_basic(index):
            gx[index] = gy  # basic indexing selects each element at most once
        else:
            ctx.xp.add.at(gx, index, gy)  # advanced indexing may repeat elements
        return gx


class Cat(Function):
    @staticmethod
    def forward(ctx, *arrays, dim):
        ctx.dim = dim
        ctx.bounds = np.cumsum([a.shape[dim] for a in arrays])[:-1]
        return ctx.xp.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, gy):
        return tuple(ctx.xp.split(gy, ctx.bounds, axis=ctx.dim))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, dim):
        ctx.dim = dim
        return ctx.xp.stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, gy):
        n = gy.shape[ctx.dim]
        return tuple(gy.take(i, axis=ctx.dim) for i in range(n))


class Split(Function):
    @staticmethod
    def forward(ctx, x, bounds, dim):
        ctx.dim = dim
        return tuple(ctx.xp.split(x, bounds, axis=dim))

    @staticmethod
    def backward(ctx, *grads):
        return ctx.xp.concatenate(grads, axis=ctx.dim)


class ToDevice(Function):
    @staticmethod
    def forward(ctx, x, device):
        ctx.source = "gpu" if type(x).__module__.startswith("cupy") else "cpu"
        return _move(x, device)

    @staticmethod
    def backward(ctx, gy):
        return _move(gy, ctx.source)


def reshape(input, *shape):
    """View with a new shape (one entry may be -1). `reshape(x, 2, 3)` or `reshape(x, (2, 3))`."""
    x = as_tensor(input, "reshape: input")
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        np.empty(x.shape, dtype=np.bool_).reshape(shape)  # validate without touching the data
    except (ValueError, TypeError):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {tuple(x.shape)} "
                         f"({x.size} elements) to {shape}") from None
    return Reshape.apply(x, shape=tuple(int(s) for s in shape))


def flatten(input, start_dim=0, end_dim=-1):
    """Merge dims start_dim..end_dim into one (as torch.flatten)."""
    x = as_tensor(input, "flatten: input")
    if x.ndim == 0:
        return reshape(x, 1)
    s = normalize_dim(start_dim, x.ndim, "flatten: start_dim")
    e = normalize_dim(end_dim, x.ndim, "flatten: end_dim")
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(x, x.shape[:s] + (-1,) + x.shape[e + 1:])


def permute(input, *dims):
    """Reorder the dims: output dim i is input dim dims[i]."""
    x = as_tensor(input, "permute: input")
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    dims = tuple(normalize_dim(d, x.ndim, "permute: dims") for d in dims)
    if sorted(dims) != list(range(x.ndim)):
        raise ValueError(f"permute: dims {dims} is not a permutation of 0..{x.ndim - 1}")
    return Permute.apply(x, dims=dims)


def transpose(input, dim0, dim1):
    """Swap two dims (as torch.transpose)."""
    x = as_tensor(input, "transpose: input")
    dims = list(range(x.ndim))
    a = normalize_dim(dim0, x.ndim, "transpose: dim0")
    b = normalize_dim(dim1, x.ndim, "transpose: dim1")
    dims[a], dims[b] = dims[b], dims[a]
    return Permute.apply(x, dims=tuple(dims))


def unsqueeze(input, dim):
    """Insert a dim of size 1 at `dim`."""
    x = as_tensor(input, "unsqueeze: input")
    d = normalize_dim(dim, x.ndim + 1, "unsqueeze: dim")
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def squeeze(input, dim=None):
    """Drop dims of size 1 (all of them, or only `dim`)."""
    x = as_tensor(input, "squeeze: input")
    if dim is None:
        return reshape(x, tuple(s for s in x.shape if s != 1))
    d = normalize_dim(dim, x.ndim, "squeeze: dim")
    if x.shape[d] != 1:
        return x
    return reshape(x, x.shape[:d] + x.shape[d + 1:])


def getitem(input, index):
    """`input[index]` with NumPy semantics (slices, ints, None, Ellipsis, integer/bool arrays)."""
    x = as_tensor(input, "getitem: input")
    plain = _plain_index(index, get_array_module(x.data))
    try:
        np.empty(x.shape, dtype=np.bool_)[tuple(p.get() if hasattr(p, "get") else p
                                                  for p in plain)]
    except IndexError as e:
        raise IndexError(f"getitem: index {index!r} is invalid for shape {tuple(x.shape)}: {e}") from None
    return GetItem.apply(x, index=plain)  # always a tuple: x[(i,)] is x[i] in NumPy


def _tensor_list(tensors, op):
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError(f"{op}: tensors: expected a non-empty list of Tensors, got {tensors!r}")
    ts = [as_tensor(t, f"{op}: tensors[{i}]") for i, t in enumerate(tensors)]
    check_same(f"{op}: tensors[0]", ts[0], **{f"{op}: tensors[{i}]": t for i, t in enumerate(ts)})
    return ts


def cat(tensors, dim=0):
    """Concatenate along an existing dim (torch.cat). All other dims must match."""
    ts = _tensor_list(tensors, "cat")
    d = normalize_dim(dim, ts[0].ndim, "cat: dim")
    for i, t in enumerate(ts):
        if t.ndim != ts[0].ndim or t.shape[:d] + t.shape[d + 1:] != ts[0].shape[:d] + ts[0].shape[d + 1:]:
            raise ValueError(f"cat: tensors[{i}] has shape {tuple(t.shape)}, which does not match "
                             f"tensors[0]'s {tuple(ts[0].shape)} outside dim {d}")
    return Cat.apply(*ts, dim=d)


concatenate = cat


def stack(tensors, dim=0):
    """Stack equal-shaped tensors along a new dim."""
    ts = _tensor_list(tensors, "stack")
    for i, t in enumerate(ts):
        if t.shape != ts[0].shape:
            raise ValueError(f"stack: tensors[{i}] has shape {tuple(t.shape)}, expected "
                             f"{tuple(ts[0].shape)} like tensors[0]")
    d = normalize_dim(dim, ts[0].ndim + 1, "stack: dim")
    return Stack.apply(*ts, dim=d)


def split(tensor, split_size_or_sections, dim=0):
    """Split into chunks (torch.split): an int gives equal chunks (the last may be smaller),
    a list gives the size of each chunk, which must add up to the size of `dim`."""
    x = as_tensor(tensor, "split: tensor")
    d = normalize_dim(dim, x.ndim, "split: dim")
    n = x.shape[d]
    if isinstance(split_size_or_sections, (int, np.integer)):
        if split_size_or_sections <= 0:
            raise ValueError(f"split: split_size must be positive, got {split_size_or_sections}")
        sizes = [split_size_or_sections] * (n // split_size_or_sections)
        if n % split_size_or_sections:
            sizes.append(n % split_size_or_sections)
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise ValueError(f"split: sections {sizes} must be non-negative and add up to {n}, "
                             f"the size of dim {d}")
    bounds = [int(b) for b in np.cumsum(sizes)[:-1]]
    out = Split.apply(x, bounds=bounds, dim=d)
    return out if isinstance(out, tuple) else (out,)


def to_device(input, device):
    """Move to 'cpu' or 'gpu'; the gradient flows back to the original device."""
    return ToDevice.apply(as_tensor(input, "to_device: input"), device=device)
