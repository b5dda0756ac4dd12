"""Embedding lookup: rows of a weight matrix picked by integer indices.

With indices i of any shape S and weight W (V, D), the output is

    y[s, :] = W[i[s], :]        y has shape S + (D,)

y is linear in W: dy/dW[v, :] collects every position s with i[s] == v, so

    dL/dW[v, :] = sum over {s : i[s] = v} of dL/dy[s, :]

a scatter-add of the output-gradient rows into a dense (V, D) zero matrix, where
repeated indices sum. The row `padding_idx` (when given) gets a zero gradient, so
that row stays whatever it was initialised to (torch's convention). The indices
get no gradient.

The scatter runs on the flattened (V * D,) gradient with one index per element,
i[s] * D + d, where `add.at` has a fast 1-D path (timings of the alternatives in
bench/NOTES.md). CuPy runs the same code: `cupy.add.at` is an atomic-add kernel.
"""
import numpy as np

from ..autograd import Function
from ..backend import import_cupyx
from ..checks import as_tensor, check_float, check_int, check_ndim


class Embedding(Function):
    @staticmethod
    def forward(ctx, indices, weight, padding_idx):
        ctx.save(indices)
        ctx.weight_shape = weight.shape
        ctx.padding_idx = padding_idx
        return ctx.xp.take(weight, indices, axis=0)

    @staticmethod
    def backward(ctx, gy):
        (indices,) = ctx.saved
        grad_weight = _scatter_add_rows(ctx.xp, indices.reshape(-1), gy,
                                        ctx.weight_shape)
        if ctx.padding_idx is not None:
            grad_weight[ctx.padding_idx] = 0
        return None, grad_weight


def _scatter_add_rows(xp, rows, values, shape):
    """A zero array of `shape` (V, D) with values[k] added into row rows[k] (repeats sum)."""
    num_rows, dim = shape
    grad = xp.zeros(shape, values.dtype)  # owns its memory: the engine stores it as is
    # One flat index per element: row r, column d -> r * D + d (1-D fast path of add.at).
    rows = rows.astype(np.int64, copy=False)  # r * D overflows small integer types
    flat = (rows * dim)[:, None] + xp.arange(dim, dtype=np.int64)
    _add_at(xp, grad.reshape(-1), flat.reshape(-1), values.reshape(-1))
    return grad


def _add_at(xp, target, index, values):
    """target[index] += values with repeated indices summing (numpy.add.at semantics)."""
    if hasattr(xp.add, "at"):
        xp.add.at(target, index, values)
    else:  # CuPy < 12 has no ufunc.at; cupyx.scatter_add is the same operation
        import_cupyx().scatter_add(target, index, values)


def _check_indices(indices, num_embeddings):
    """Every index in [0, num_embeddings): a clear error instead of a wrong row or a crash."""
    if indices.size == 0:
        return
    low, high = int(indices.data.min()), int(indices.data.max())
    if low < 0 or high >= num_embeddings:
        bad = low if low < 0 else high
        raise IndexError(f"embedding: input: index {bad} is out of range for a weight with "
                         f"{num_embeddings} rows (valid indices are 0..{num_embeddings - 1})")


def _check_padding_idx(padding_idx, num_embeddings):
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
        raise TypeError(f"embedding: padding_idx: expected an int or None, got {padding_idx!r}")
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"embedding: padding_idx: {padding_idx} is out of range for a weight "
                         f"with {num_embeddings} rows")
    return int(padding_idx) % num_embeddings  # torch's convention: negative counts from the end


def embedding(input, weight, padding_idx=None):
    """Look up rows of `weight` for integer indices `input`.

    Parameters
    ----------
    input : integer Tensor of any shape S, values in [0, V)
    weight : Tensor (V, D), floating point (num_embeddings, embedding_dim)
    padding_idx : int or None
        The row whose gradient is always zero (negative values count from the end).

    Returns
    -------
    Tensor of shape S + (D,): output[s] = weight[input[s]].

    Notes
    -----
    Backward: output is linear in weight, so dL/dW[v] is the sum of dL/dy[s] over
    every position s where input[s] == v (repeated indices sum), and zero for
    v == padding_idx. `input` gets no gradient. Raises IndexError for an index
    outside [0, V).
    """
    indices = check_int(as_tensor(input, "embedding: input"), "embedding: input")
    w = check_float(as_tensor(weight, "embedding: weight"), "embedding: weight")
    check_ndim(w, "embedding: weight", 2, "(num_embeddings, embedding_dim)")
    if indices.device != w.device:
        raise ValueError(f"embedding: input: on device {indices.device!r}, but weight is on "
                         f"{w.device!r}; move both with .to(device)")
    num_embeddings = w.shape[0]
    padding_idx = _check_padding_idx(padding_idx, num_embeddings)
    _check_indices(indices, num_embeddings)
    return Embedding.apply(indices, w, padding_idx=padding_idx)
