"""The recorded graph and the reverse walk over it.

`Function.apply` (autograd.py) records one `Node` per op call that needs a gradient; each
output Tensor points to its node (`tensor._node`, `tensor._index`). `backward(outputs,
grad_outputs)` walks the graph without recursion: nodes are taken from a heap ordered by
generation (a node's generation is one more than the largest generation among its inputs'
nodes), so a node runs only after every node that consumes its outputs has run and all of its
output gradients have been summed. The walk, not the op, sums gradients of reused tensors,
un-broadcasts (sums a gradient back to the shape of a broadcast input), checks every returned
gradient has its input's shape, frees each gradient as soon as it has been consumed, and
accumulates into the `.grad` of leaves.

A node holds its leaf inputs (parameters: their `.grad` is written) but, for an input that
another op produced, only an `Edge`: that op's node, which output, and the shape. So the graph
itself keeps no activation alive: an array lives until backward only if some op saved it for
its own backward (`ctx.save`), as in torch, where the graph's edges point to functions, not
to tensors. (Holding the input Tensors kept every op output of the forward alive until the
whole graph was dropped, e.g. each batch norm's output beside the ReLU output saved after it:
resnet50's step peaked ~1.5 GB above its weights instead of ~1.1 GB.)

This module sits below `tensor.py`: it reads tensors only through their attributes
(`requires_grad`, `shape`, `dtype`, `grad`, `_node`, `_index`), so `Tensor.backward` can call
it and `autograd.py` can import `Tensor` at its top.
"""
import heapq
import itertools


class Node:
    """One recorded application of a Function: what backward needs to run it."""

    __slots__ = ("fn", "ctx", "inputs", "generation", "out_meta", "retained")

    def __init__(self, fn, ctx, inputs, generation, out_meta):
        self.fn = fn
        self.ctx = ctx
        self.inputs = inputs          # per forward input: a leaf Tensor, an Edge, or None
        self.generation = generation
        self.out_meta = out_meta      # (shape, dtype) per output, to build zero gradients
        self.retained = None          # {output index: Tensor} for retain_grad()


class Edge:
    """Where a node's input came from when another op produced it: that op's node, the output
    index and the shape, with the attribute names of a Tensor (`_node`, `_index`, `shape`) so
    the walk reads both alike. It holds no array (see the module docstring)."""

    __slots__ = ("_node", "_index", "shape")

    def __init__(self, tensor):
        self._node, self._index, self.shape = tensor._node, tensor._index, tensor.shape


def input_ref(tensor):
    """What a node keeps of one of its inputs: the Tensor itself for a leaf (its .grad is
    accumulated), an Edge for an op's output."""
    return tensor if tensor._node is None else Edge(tensor)


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting of an input of that shape."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        return grad  # cannot be un-broadcast; the shape check reports it
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _owned(grad, incoming):
    """A gradient safe to store in a leaf: not a view of, nor the same object as, another gradient."""
    if grad.base is not None or any(grad is g for g in incoming):
        return grad.copy()
    return grad


def backward(outputs, grad_outputs, retain_graph=False):
    """Back-propagate the arrays `grad_outputs` from the Tensors `outputs` into the leaves'
    `.grad` (callers unwrap Tensor gradients first: `autograd.backward`, `Tensor.backward`)."""
    counter = itertools.count()  # tie-breaker so the heap never compares Nodes
    pending = {}                 # node -> list of summed output gradients
    heap = []
    for out, grad in zip(outputs, grad_outputs):
        if not getattr(out, "requires_grad", False):
            raise RuntimeError("backward: the output does not require grad (no graph was recorded)")
        if grad.shape != out.shape:
            raise ValueError(f"backward: gradient has shape {grad.shape}, output has {out.shape}")
        if out._node is None:  # a leaf: its gradient is the seed itself
            _accumulate_leaf(out, grad, (grad,))
            continue
        _add_pending(pending, heap, counter, out._node, out._index, grad)

    while heap:
        _, _, node = heapq.heappop(heap)
        grads = pending.pop(node)
        if node.ctx is None:
            raise RuntimeError(
                f"backward through {node.fn.__name__} a second time: the graph was freed; "
                "pass retain_graph=True to the first backward")
        xp = node.ctx.xp
        grads = [xp.zeros(shape, dtype) if g is None else g
                 for g, (shape, dtype) in zip(grads, node.out_meta)]
        if node.retained:
            for index, tensor in node.retained.items():
                _accumulate_leaf(tensor, grads[index], grads)
        input_grads = node.fn.backward(node.ctx, *grads)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(node.inputs):
            raise RuntimeError(f"{node.fn.__name__}.backward returned {len(input_grads)} "
                               f"gradients for {len(node.inputs)} inputs")
        if not retain_graph:
            node.ctx = None
        stored = list(grads)  # arrays already handed out: a leaf must not share one
        for tensor, grad in zip(node.inputs, input_grads):
            if tensor is None or grad is None:
                continue
            grad = unbroadcast(grad, tensor.shape)
            if grad.shape != tensor.shape:
                raise RuntimeError(f"{node.fn.__name__}.backward gave a gradient of shape "
                                   f"{grad.shape} for an input of shape {tensor.shape}")
            if tensor._node is None:
                _accumulate_leaf(tensor, grad, stored)
                stored.append(grad)
            else:
                _add_pending(pending, heap, counter, tensor._node, tensor._index, grad)
        del grads, input_grads, stored  # free this node's gradients before the next node runs


def _add_pending(pending, heap, counter, node, index, grad):
    slots = pending.get(node)
    if slots is None:
        slots = pending[node] = [None] * len(node.out_meta)
        heapq.heappush(heap, (-node.generation, next(counter), node))
    slots[index] = grad if slots[index] is None else slots[index] + grad


def _accumulate_leaf(tensor, grad, incoming):
    if grad.dtype != tensor.dtype:
        grad = grad.astype(tensor.dtype)
    if tensor.grad is None:
        tensor.grad = _owned(grad, incoming)
    else:
        tensor.grad += grad  # in place: a leaf's .grad never shares memory (see _owned)
