"""Every op, forward and backward, on cupy must equal the same op on numpy.

Skipped as a whole when no GPU is usable (cupy missing, or no CUDA device), which is
always the case in CI. Run on a GPU machine with `python -m pytest tests/test_gpu.py`.
"""
import numpy as np
import pytest

import tinyhw
import tinyhw.functional as F
from tinyhw import Tensor
from tinyhw.backend import to_device
from tinyhw.ops import fast

pytestmark = pytest.mark.skipif(not tinyhw.gpu_available(),
                                reason="no usable GPU (cupy missing or no CUDA device)")


def _normal(*shape):
    return lambda r: r.standard_normal(shape)


def _ints(high, *shape):
    return lambda r: r.integers(0, high, shape)


def _positive(*shape):
    return lambda r: r.uniform(0.5, 2.0, shape)


def _distinct(*shape):
    def make(r):
        values = np.arange(int(np.prod(shape)), dtype=np.float64)
        r.shuffle(values)
        return (values / values.size).reshape(shape)
    return make


def _bn(training):
    def fn(x, w, b):
        c = x.shape[1]
        xp = tinyhw.backend.get_array_module(x.data)
        rm = Tensor(xp.linspace(-1, 1, c).astype(x.dtype))
        rv = Tensor(xp.linspace(0.5, 2, c).astype(x.dtype))
        y = F.batch_norm(x, rm, rv, w, b, training=training)
        return y, rm, rv   # the running statistics must agree too
    return fn


# name -> (function of Tensors, input makers). Integer inputs are passed as constants.
CASES = {
    "add": (F.add, [_normal(3, 4), _normal(4)]),
    "sub": (F.sub, [_normal(3, 1), _normal(3, 4)]),
    "mul": (F.mul, [_normal(2, 3), _normal(2, 3)]),
    "div": (F.div, [_normal(2, 3), _positive(3)]),
    "neg": (F.neg, [_normal(5)]),
    "pow": (lambda x: F.pow(x, 3), [_normal(4)]),
    "pow_tensor": (F.pow, [_positive(4), _normal(4)]),
    "exp": (F.exp, [_normal(4)]),
    "log": (F.log, [_positive(4)]),
    "relu": (F.relu, [_normal(3, 4)]),
    "sigmoid": (F.sigmoid, [_normal(3, 4)]),
    "tanh": (F.tanh, [_normal(3, 4)]),
    "softmax": (lambda x: F.softmax(x, 1), [_normal(3, 5)]),
    "log_softmax": (lambda x: F.log_softmax(x, 0), [_normal(3, 5)]),
    "sum": (lambda x: F.sum(x, (0, 2)), [_normal(2, 3, 4)]),
    "mean": (lambda x: F.mean(x, 1, True), [_normal(2, 3, 4)]),
    "max": (lambda x: F.max(x, 1), [_distinct(3, 5)]),
    "max_all": (F.max, [_distinct(3, 5)]),
    "max_vector": (lambda x: F.max(x, 0), [_distinct(6)]),
    "cast": (lambda x: F.cast(x, np.float32), [_normal(3, 4)]),
    "reshape": (lambda x: F.reshape(x, 4, 3), [_normal(2, 6)]),
    "flatten": (lambda x: F.flatten(x, 1), [_normal(2, 3, 4)]),
    "permute": (lambda x: F.permute(x, 2, 0, 1), [_normal(2, 3, 4)]),
    "transpose": (lambda x: F.transpose(x, 0, 2), [_normal(2, 3, 4)]),
    "squeeze": (lambda x: F.squeeze(x, 1), [_normal(3, 1, 4)]),
    "unsqueeze": (lambda x: F.unsqueeze(x, 1), [_normal(3, 4)]),
    "getitem": (lambda x, i: x[Tensor(i.data)], [_normal(5, 3), _ints(5, 7)]),
    "slice": (lambda x: x[1:, ::2], [_normal(4, 5)]),
    "cat": (lambda a, b: F.cat([a, b], 1), [_normal(2, 3), _normal(2, 2)]),
    "concatenate": (lambda a, b: F.concatenate([a, b], 0), [_normal(2, 3), _normal(1, 3)]),
    "stack": (lambda a, b: F.stack([a, b], 0), [_normal(2, 3), _normal(2, 3)]),
    "split": (lambda x: F.split(x, [1, 3], 1), [_normal(2, 4)]),
    "matmul": (F.matmul, [_normal(2, 3, 4), _normal(4, 5)]),
    "linear": (F.linear, [_normal(6, 4), _normal(3, 4), _normal(3)]),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=1),
               [_normal(2, 3, 6, 6), _normal(4, 3, 3, 3), _normal(4)]),
    "conv2d_strided": (lambda x, w: F.conv2d(x, w, stride=2, padding=(1, 0)),
                       [_normal(2, 3, 7, 6), _normal(4, 3, 3, 2)]),
    "conv2d_1x1": (lambda x, w: F.conv2d(x, w, stride=2), [_normal(2, 3, 6, 6), _normal(5, 3, 1, 1)]),
    "conv1d": (lambda x, w, b: F.conv1d(x, w, b), [_normal(4, 3, 9), _normal(5, 3, 4), _normal(5)]),
    "conv1d_max_over_time": (lambda x, w1, w2, b2: F.conv1d_max_over_time(x, [w1, w2], [None, b2]),
                             [_normal(4, 3, 9), _normal(5, 3, 4), _normal(2, 3, 2), _normal(2)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1), [_distinct(2, 3, 7, 7)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2), [_normal(2, 3, 6, 6)]),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, 1), [_normal(2, 3, 5, 5)]),
    "batch_norm_train": (_bn(True), [_normal(4, 3, 5, 5), _normal(3), _normal(3)]),
    "batch_norm_eval": (_bn(False), [_normal(4, 3), _normal(3), _normal(3)]),
    # The random masks of dropout differ between devices: p = 1 (every unit dropped) is the one
    # deterministic route here; test_gpu_dropout_masks_output_and_gradient_alike checks masks.
    "dropout_all": (lambda x: F.dropout(x, 1.0), [_normal(3, 4)]),
    "embedding": (lambda i, w: F.embedding(Tensor(i.data), w, padding_idx=0),
                  [_ints(6, 3, 4), _normal(6, 5)]),
    "cross_entropy": (lambda x, t: F.cross_entropy(x, Tensor(t.data)), [_normal(5, 7), _ints(7, 5)]),
    "nll_loss": (lambda x, t: F.nll_loss(x, Tensor(t.data), "sum"), [_normal(5, 7), _ints(7, 5)]),
    "lstm": (F.lstm, [_normal(4, 3, 5), _normal(3, 6), _normal(3, 6), _normal(24, 5),
                      _normal(24, 6), _normal(24), _normal(24)]),
}


def _highway(variant):
    uses_t, uses_c = F.HIGHWAY_GATES[variant]
    return lambda h, x, t, c: F.highway(h, x, t if uses_t else None, c if uses_c else None,
                                        variant=variant)


CASES.update({
    f"highway_{v}": (_highway(v), [_normal(3, 4), _normal(3, 4), _positive(3, 4), _positive(3, 4)])
    for v in F.HIGHWAY_VARIANTS
})



def _on_route(route, fn):
    def run(*args):
        with fast.use(route):
            return fn(*args)
    return run


CASES.update({
    "conv2d_reference": (_on_route("reference",
                                   lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1)),
                         [_normal(2, 3, 7, 6), _normal(4, 3, 3, 2), _normal(4)]),
    "conv1d_reference": (_on_route("reference", lambda x, w, b: F.conv1d(x, w, b, padding=1)),
                         [_normal(4, 3, 9), _normal(5, 3, 4), _normal(5)]),
})


def _flatten(out):
    if isinstance(out, Tensor):
        return [out]
    return [t for o in out for t in _flatten(o)]


def _run(fn, arrays, device, dtype):
    """Forward and backward on `device`: (outputs, input gradients) as numpy arrays."""
    inputs = []
    for a in arrays:
        if a.dtype.kind == "f":
            inputs.append(Tensor(to_device(a.astype(dtype), device), requires_grad=True))
        else:
            inputs.append(Tensor(to_device(a, device)))
    outs = _flatten(fn(*inputs))
    r = np.random.default_rng(7)
    tracked = [(o, r.standard_normal(o.shape).astype(o.dtype)) for o in outs if o.requires_grad]
    tinyhw.autograd.backward([o for o, _ in tracked], [to_device(u, device) for _, u in tracked])
    grads = [t.grad for t in inputs if t.requires_grad]
    return [o.numpy() for o in outs], [None if g is None else to_device(g, "cpu") for g in grads]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-9), (np.float32, 2e-4)])
def test_gpu_matches_cpu(name, dtype, rtol):
    fn, makers = CASES[name]
    r = np.random.default_rng(0)
    arrays = [make(r) for make in makers]
    cpu_outs, cpu_grads = _run(fn, arrays, "cpu", dtype)
    gpu_outs, gpu_grads = _run(fn, arrays, "gpu", dtype)
    for a, b in zip(cpu_outs, gpu_outs):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol)
    for a, b in zip(cpu_grads, gpu_grads):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol)


def test_gpu_dropout_masks_output_and_gradient_alike():
    x = Tensor(to_device(np.ones((64, 64)), "gpu"), requires_grad=True)
    tinyhw.manual_seed(3)
    y = F.dropout(x, 0.25, training=True)
    y.backward(to_device(np.full((64, 64), 2.0), "gpu"))
    out, grad = y.numpy(), to_device(x.grad, "cpu")
    assert set(np.unique(out)) <= {0.0, 1 / 0.75}
    np.testing.assert_allclose(grad, 2.0 * out)
    assert 0.2 < (out == 0).mean() < 0.3


def test_gpu_tensor_round_trip_and_gradient_moves_back():
    x = tinyhw.tensor(np.arange(4.0), requires_grad=True)
    y = x.to("gpu")
    assert y.device == "gpu"
    (y * y).sum().backward()
    assert x.grad is not None and type(x.grad) is np.ndarray
    np.testing.assert_allclose(x.grad, 2 * np.arange(4.0))
