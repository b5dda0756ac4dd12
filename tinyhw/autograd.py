"""Reverse-mode automatic differentiation.

An op is a `Function` subclass with two static methods on raw arrays:

    forward(ctx, *arrays, **params) -> array or tuple of arrays
    backward(ctx, *grad_outputs)    -> one gradient (or None) per array input

`Function.apply(*inputs, **params)` unwraps Tensors, runs `forward`, wraps the
results in Tensors and, when grad mode is on and some input requires a
gradient, records a `Node` linking the outputs to the inputs.

`backward(outputs, grad_outputs)` walks the recorded graph without recursion:
nodes are taken from a heap ordered by generation (a node's generation is one
more than the largest generation among its inputs' nodes), so a node runs only
after every node that consumes its outputs has run and all of its output
gradients have been summed. The engine, not the op, sums gradients of reused
tensors, un-broadcasts (sums a gradient back to the shape of a broadcast input),
checks every returned gradient has its input's shape, frees each gradient as
soon as it has been consumed, and accumulates into the `.grad` of leaves.
"""
import contextlib
import heapq
import itertools
import threading

from .backend import get_array_module

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Within this block no graph is recorded (evaluation, optimizer updates)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


@contextlib.contextmanager
def enable_grad():
    previous = is_grad_enabled()
    _state.grad_enabled = True
    try:
        yield
    finally:
        _state.grad_enabled = previous


class Context:
    """Per-call scratch space shared by an op's forward and backward.

    `xp` is the array module of the inputs; `needs_input_grad[i]` says whether
    input i requires a gradient, so backward can skip work nobody will use.
    """

    def __init__(self, xp, needs_input_grad):
        self.xp = xp
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    def save(self, *arrays):
        self.saved = arrays


class Node:
    """One recorded application of a Function: what backward needs to run it."""

    __slots__ = ("fn", "ctx", "inputs", "generation", "out_meta", "retained")

    def __init__(self, fn, ctx, inputs, generation, out_meta):
        self.fn = fn
        self.ctx = ctx
        self.inputs = inputs          # tuple of Tensor-or-None, one per forward input
        self.generation = generation
        self.out_meta = out_meta      # (shape, dtype) per output, to build zero gradients
        self.retained = None          # {output index: Tensor} for retain_grad()


class Function:
    """Base class of every differentiable op (see the module docstring)."""

    @staticmethod
    def forward(ctx, *arrays, **params):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        from .tensor import Tensor

        arrays = tuple(None if t is None else t.data for t in inputs)
        needs = tuple(t is not None and t.requires_grad for t in inputs)
        record = is_grad_enabled() and any(needs)
        ctx = Context(get_array_module(*arrays), needs)
        raw = cls.forward(ctx, *arrays, **params)
        single = not isinstance(raw, tuple)
        raw_outputs = (raw,) if single else raw
        outputs = tuple(Tensor(a, requires_grad=record) for a in raw_outputs)
        if record:
            generation = 1 + max(
                (t._node.generation for t in inputs if t is not None and t._node is not None),
                default=0,
            )
            node = Node(cls, ctx, tuple(t if n else None for t, n in zip(inputs, needs)),
                        generation, tuple((a.shape, a.dtype) for a in raw_outputs))
            for index, out in enumerate(outputs):
                out._node = node
                out._index = index
        return outputs[0] if single else outputs


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
    """Back-propagate `grad_outputs` from `outputs` (Tensors) into the leaves' `.grad`."""
    from .tensor import Tensor

    counter = itertools.count()  # tie-breaker so the heap never compares Nodes
    pending = {}                 # node -> list of summed output gradients
    heap = []
    for out, grad in zip(outputs, grad_outputs):
        if not isinstance(out, Tensor) or not out.requires_grad:
            raise RuntimeError("backward: the output does not require grad (no graph was recorded)")
        grad = grad.data if isinstance(grad, Tensor) else grad
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
