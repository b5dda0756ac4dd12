"""Reverse-mode automatic differentiation.

An op is a `Function` subclass with two static methods on raw arrays:

    forward(ctx, *arrays, **params) -> array or tuple of arrays
    backward(ctx, *grad_outputs)    -> one gradient (or None) per array input

`Function.apply(*inputs, **params)` unwraps Tensors, runs `forward`, wraps the
results in Tensors and, when grad mode is on and some input requires a
gradient, records a `Node` linking the outputs to the inputs.

`backward(outputs, grad_outputs)` back-propagates through the recorded graph; the
walk itself (iterative, in reverse order of generation; the engine, not the op, sums,
un-broadcasts, shape-checks, frees and accumulates gradients) is in `graph.py`.

Imports form a tree: backend <- graph <- tensor (the Tensor core) <- autograd <- checks
<- ops/* <- tensor_ops (Tensor's operators, attached in one place) <- functional, nn.
"""
import contextlib
import threading

from . import graph
from .backend import get_array_module
from .graph import Node, unbroadcast  # noqa: F401  (unbroadcast: part of this module's API)
from .tensor import Tensor

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
            node = Node(cls, ctx, tuple(graph.input_ref(t) if n else None
                                        for t, n in zip(inputs, needs)),
                        generation, tuple((a.shape, a.dtype) for a in raw_outputs))
            for index, out in enumerate(outputs):
                out._node = node
                out._index = index
        return outputs[0] if single else outputs


def backward(outputs, grad_outputs, retain_graph=False):
    """Back-propagate `grad_outputs` (arrays or Tensors) from `outputs` (Tensors) into the
    leaves' `.grad`; the walk itself is `graph.backward`."""
    for out in outputs:
        if not isinstance(out, Tensor):
            raise RuntimeError("backward: the output does not require grad (no graph was recorded)")
    grads = [g.data if isinstance(g, Tensor) else g for g in grad_outputs]
    graph.backward(outputs, grads, retain_graph=retain_graph)
