"""Check a backward pass against central finite differences, in float64.

For a function f of tensors x_1..x_n and a fixed random output cotangent u,
let L(x) = <f(x), u>. Backward with u as the output gradient gives
g_i = dL/dx_i. Then for any directions v_i,

    sum_i <g_i, v_i>  ~=  (L(x + eps v) - L(x - eps v)) / (2 eps)        (error O(eps^2))

`mode="directional"` (default, cheap) compares both sides for a few random
directions v; `mode="full"` perturbs every element of every input on its own
and reports the worst element. Cotangents are random normal, never all ones
(all-ones cotangents hide errors that cancel in a sum, e.g. a transposed
gradient of a symmetric reduction). Inputs must be float64: float32 rounding
(~1e-7) swamps the O(eps^2) truncation error the comparison relies on.
"""
import numpy as np

from . import autograd
from .backend import get_array_module, is_cupy_array, to_device
from .tensor import Tensor


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree."""


def _flatten(outputs):
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in _flatten(o)]
    if outputs is None:
        return []
    raise TypeError(f"gradcheck: fn must return Tensors (or nested tuples of them), got "
                    f"{type(outputs).__name__}")


def _prepare(inputs, wrt):
    """Split inputs into differentiable float64 arrays and constants."""
    arrays, diff = [], []
    for i, x in enumerate(inputs):
        a = x.data if isinstance(x, Tensor) else x
        is_array = isinstance(a, np.ndarray) or is_cupy_array(a)
        differentiable = is_array and a.dtype.kind == "f" and (wrt is None or i in wrt)
        if differentiable and a.dtype != np.float64:
            raise TypeError(f"gradcheck: inputs[{i}] has dtype {a.dtype}; gradient checks need "
                            "float64 (float32 rounding swamps the finite differences)")
        arrays.append(a)
        diff.append(differentiable)
    return arrays, diff


def _loss(fn, arrays, diff, cotangents):
    """<f(x), u> without recording a graph."""
    with autograd.no_grad():
        args = [Tensor(a) if d else a for a, d in zip(arrays, diff)]
        outs = _flatten(fn(*args))
    return sum(float((o.data * u).sum()) for o, u in zip(outs, cotangents))


def _random_like(rng, a):
    r = rng.standard_normal(a.shape)
    return to_device(r, "gpu") if is_cupy_array(a) else r


def gradcheck(fn, inputs, *, eps=1e-6, atol=1e-8, rtol=1e-7, mode="directional",
              n_directions=2, seed=0, wrt=None):
    """Compare autodiff gradients of `fn(*inputs)` with central differences.

    Parameters
    ----------
    fn : callable taking as many arguments as `inputs`, returning a Tensor or (nested)
        tuple of Tensors. It must be deterministic (seed any randomness inside it).
    inputs : sequence of arrays/Tensors. Float arrays are differentiated (all float64),
        everything else (integer targets, Python values) is passed through unchanged.
    wrt : optional set of input positions to differentiate (default: every float input).

    Returns True, or raises `GradcheckError` describing the disagreement.
    """
    if mode not in ("directional", "full"):
        raise ValueError(f"gradcheck: mode must be 'directional' or 'full', got {mode!r}")
    rng = np.random.default_rng(seed)
    arrays, diff = _prepare(inputs, wrt)
    leaves = [Tensor(a.copy(), requires_grad=True) if d else a for a, d in zip(arrays, diff)]
    outputs = [o for o in _flatten(fn(*leaves))]
    cotangents = [_random_like(rng, o.data) for o in outputs]
    tracked = [(o, u.astype(o.dtype)) for o, u in zip(outputs, cotangents) if o.requires_grad]
    if tracked:
        autograd.backward([o for o, _ in tracked], [u for _, u in tracked])
    grads = []
    for leaf, d in zip(leaves, diff):
        if d:
            xp = get_array_module(leaf.data)
            grads.append(xp.zeros_like(leaf.data) if leaf.grad is None else leaf.grad)
        else:
            grads.append(None)
    if mode == "directional":
        _check_directions(fn, arrays, diff, grads, cotangents, rng, eps, atol, rtol, n_directions)
    else:
        _check_every_element(fn, arrays, diff, grads, cotangents, eps, atol, rtol)
    return True


def _check_directions(fn, arrays, diff, grads, cotangents, rng, eps, atol, rtol, n_directions):
    for k in range(n_directions):
        directions = [_random_like(rng, a) if d else None for a, d in zip(arrays, diff)]
        analytic = sum(float((g * v).sum()) for g, v in zip(grads, directions) if v is not None)
        scale = sum(float(abs(g * v).sum()) for g, v in zip(grads, directions) if v is not None)
        plus = [a + eps * v if v is not None else a for a, v in zip(arrays, directions)]
        minus = [a - eps * v if v is not None else a for a, v in zip(arrays, directions)]
        numeric = (_loss(fn, plus, diff, cotangents) - _loss(fn, minus, diff, cotangents)) / (2 * eps)
        if abs(analytic - numeric) > atol + rtol * (scale + abs(numeric)):
            raise GradcheckError(
                f"directional derivative {k}: analytic {analytic:.10g}, numeric {numeric:.10g}, "
                f"difference {analytic - numeric:.3g} (tolerance {atol + rtol * (scale + abs(numeric)):.3g})")


def _check_every_element(fn, arrays, diff, grads, cotangents, eps, atol, rtol):
    worst = None  # (excess over tolerance, input position, index, analytic, numeric)
    for i, (a, d) in enumerate(zip(arrays, diff)):
        if not d:
            continue
        g = to_device(grads[i], "cpu")
        for index in np.ndindex(*a.shape):
            x = a.copy()
            x[index] += eps
            up = _loss(fn, arrays[:i] + [x] + arrays[i + 1:], diff, cotangents)
            x[index] -= 2 * eps
            down = _loss(fn, arrays[:i] + [x] + arrays[i + 1:], diff, cotangents)
            numeric = (up - down) / (2 * eps)
            analytic = float(g[index])
            excess = abs(analytic - numeric) - (atol + rtol * (abs(analytic) + abs(numeric)))
            if worst is None or excess > worst[0]:
                worst = (excess, i, index, analytic, numeric)
    if worst is not None and worst[0] > 0:
        _, i, index, analytic, numeric = worst
        raise GradcheckError(f"inputs[{i}]{list(index)}: analytic {analytic:.10g}, numeric "
                             f"{numeric:.10g}, difference {analytic - numeric:.3g}")
