"""The loss gradients the iterative-inference analysis needs, computed without cancellation.

The cross-entropy of one example with logits z (C,) and target t is
    L = log sum_j e^{z_j} - z_t,   dL/dz_j = p_j - [j = t],   p = softmax(z).
The engine's backward (tinyhw.ops.loss) forms p - e_t in the logits' dtype. For an example
classified with margin m (z_t ahead of the others by m), p_t = 1 - eps with eps = sum_{j != t} p_j
<= (C - 1) e^{-m}. p_t - 1 cancels: its relative error is ~2^-24 / eps in float32, and once
eps < 2^-24 (m > 16.6 with one close competitor, m > 18.8 with nine) p_t rounds to 1 and the target
entry becomes exactly 0 instead of -eps. The gradient is then sum_{j != t} p_j e_j, which points
away from every wrong class but no longer towards the right one: its direction is wrong (in a
trained CIFAR net, by a cosine of 0.3-0.4 for such images), and a per-image cosine built on it is
biased. Since the p_j sum to one, the target entry is exactly
    dL/dz_t = p_t - 1 = -sum_{j != t} p_j,
a sum of small positive terms, with no cancellation. `cross_entropy_gradient` computes every entry
this way, in float64, and returns it in the logits' dtype: every entry then has float32's relative
precision, and the backward pass through the net, linear in this cotangent, keeps the direction.
(Only a margin beyond ~87 underflows e^{-m} in float32 itself; such an image's gradient is zero and
its cosine is counted as undefined.)

`backward_from_logits` starts a backward pass from logits with that gradient of the summed loss.
`cosines` and `norm_ratios` are the per-image quantities of Jastrzebski et al. (2017), over the
flattened (channels x positions, or features) axes, and `summary` their statistics over images;
`per_sample` and DEFINITIONS are the iterative analysis's (train/analysis/iterative.py, derived
there), shared by its conv-net and char-LM paths.
"""
import contextlib

import numpy as np

import tinyhw
from tinyhw.backend import to_device


def cross_entropy_gradient(logits, target):
    """d(sum_n L_n)/d logits for logits (N, C) (an array of any float dtype) and integer targets
    (N,): softmax - one-hot, with each target entry as minus the sum of the other probabilities.
    Returned in the logits' dtype, on their device."""
    xp = tinyhw.get_array_module(logits)
    z = logits.astype(np.float64)
    rows, target = xp.arange(z.shape[0]), xp.asarray(target)
    e = xp.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    p[rows, target] = 0.0
    p[rows, target] = -p.sum(axis=1)
    return p.astype(logits.dtype)


def backward_from_logits(logits, target):
    """Backward pass of the summed cross-entropy from `logits` (a Tensor in a graph) with the
    cancellation-free gradient above; `target` a numpy int array."""
    logits.backward(cross_entropy_gradient(logits.data, to_device(target, logits.device)))


def cpu64(array):
    """An array of either device as a float64 numpy array."""
    return np.asarray(to_device(array, "cpu"), dtype=np.float64)


def _flat_norms(a):
    return np.linalg.norm(a.reshape(a.shape[0], -1), axis=1)


def cosines(f, g):
    """Per image n: cos(f_n, -g_n) over all its other axes; NaN where either is zero.
    f, g: float64 arrays of the same shape (N, ...)."""
    n = f.shape[0]
    dot = -(f.reshape(n, -1) * g.reshape(n, -1)).sum(axis=1)
    denominator = _flat_norms(f) * _flat_norms(g)
    ok = denominator > 0
    return np.where(ok, dot / np.where(ok, denominator, 1.0), np.nan)


def norm_ratios(f, h):
    """Per image n: ||f_n|| / ||h_n||; NaN where h_n = 0."""
    norm_h = _flat_norms(h)
    ok = norm_h > 0
    return np.where(ok, _flat_norms(f) / np.where(ok, norm_h, 1.0), np.nan)


def summary(values):
    """mean, std, 5th and 95th percentiles of the finite values, and how many were not."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"mean": None, "std": None, "p5": None, "p95": None, "count": 0,
                "undefined": int(values.size)}
    return {"mean": float(finite.mean()), "std": float(finite.std()),
            "p5": float(np.percentile(finite, 5)), "p95": float(np.percentile(finite, 95)),
            "count": int(finite.size), "undefined": int(values.size - finite.size)}


def saturated(logits, target):
    """Per example: True where the engine's float backward (p - e_t in the logits' dtype) gives
    the target entry exactly 0: p_t rounds to 1 there, the case this module exists for."""
    xp = tinyhw.get_array_module(logits)
    rows, target = xp.arange(logits.shape[0]), xp.asarray(target)
    e = xp.exp(logits - logits.max(axis=1, keepdims=True))
    p_target = e[rows, target] / e.sum(axis=1)
    return np.asarray(to_device(p_target - 1 == 0, "cpu"))


# ---- the iterative analysis's quantities (image nets and the char-LM alike) ----------------
HEADLINE = "cos_rest_of_net"
DEFINITIONS = {
    "cos_rest_of_net": "cos(F(h), -dL_rest/du) at u = shortcut(h): L_rest is the loss of the net "
                       "with this block removed (the blocks after it and the head), the first-"
                       "order term of Jastrzebski et al.'s expansion L(h + F(h)) ~ L(h) + "
                       "F(h).dL/dh; the headline",
    "cos_through_block": "cos(F(h), -dL/dh) with dL/dh the full net's gradient at the block's "
                         "input, through the block; null where the block changes the shape",
    "norm_ratio": "||F(h)|| / ||h||, h the block's input",
    "F": "F(h) = block(h) - shortcut(h); L the cross-entropy, its logit gradient computed "
         "without cancellation; per example (an image, or a word of the char-LM), then "
         "summarised over the examples",
}


@contextlib.contextmanager
def frozen(model):
    """No parameter gradients are needed: turn requires_grad off, and restore it after."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad = False
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad = flag


def per_sample(h, f, g_through, g_rest):
    """Per image: {cos_rest_of_net, cos_through_block (None where the shapes differ),
    norm_ratio}."""
    return {"cos_rest_of_net": cosines(f, g_rest),
            "cos_through_block": cosines(f, g_through) if f.shape == g_through.shape else None,
            "norm_ratio": norm_ratios(f, h)}
