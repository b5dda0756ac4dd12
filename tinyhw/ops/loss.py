"""Classification losses: cross_entropy (fused log-softmax + negative log-likelihood) and nll_loss.

cross_entropy, for logits x (N, C) and integer targets t (N,):
    loss_n = -log softmax(x_n)[t_n] = log sum_j e^{x_nj} - x_{n t_n}
computed as lse(z) - z_{n t_n} with z = x - max_j x_nj, so no exp overflows.
With p = softmax(x_n) and the one-hot vector e_t:
    d loss_n / d x_n = p - e_t
and the reduction scales it: 'mean' by dL/N, 'sum' by dL, 'none' row-wise by dL_n.
Fusing the two halves keeps exp(z) from the forward pass for the backward one
and never materialises a (N, C) log-probability gradient.

nll_loss, for log-probabilities y (N, C): loss_n = -y_{n t_n}; dy = -e_t (scaled).
"""
from ..autograd import Function
from ..checks import as_tensor, check_float, check_int, check_ndim

REDUCTIONS = ("mean", "sum", "none")


def _row_scale(xp, g, n, reduction, dtype):
    """The factor multiplying each row's gradient: shape (N, 1)."""
    if reduction == "none":
        return g.reshape(n, 1).astype(dtype, copy=False)
    scale = g / n if reduction == "mean" else g
    return xp.full((n, 1), scale, dtype=dtype)


def _reduce(losses, reduction):
    if reduction == "none":
        return losses
    total = losses.sum()
    return total / losses.shape[0] if reduction == "mean" else total


class CrossEntropy(Function):
    @staticmethod
    def forward(ctx, x, target, reduction):
        xp = ctx.xp
        rows = xp.arange(x.shape[0])
        z = x - x.max(axis=1, keepdims=True)
        z_target = z[rows, target]
        e = xp.exp(z, out=z)  # z itself is no longer needed: reuse its memory
        sum_e = e.sum(axis=1)
        ctx.save(e, sum_e, target)
        ctx.reduction = reduction
        return _reduce(xp.log(sum_e) - z_target, reduction)

    @staticmethod
    def backward(ctx, g):
        e, sum_e, target = ctx.saved
        xp = ctx.xp
        n = e.shape[0]
        scale = _row_scale(xp, g, n, ctx.reduction, e.dtype)
        gx = e * (scale / sum_e.reshape(n, 1))          # scale * softmax
        gx[xp.arange(n), target] -= scale[:, 0]        # minus scale * one-hot
        return gx, None


class NLLLoss(Function):
    @staticmethod
    def forward(ctx, logp, target, reduction):
        xp = ctx.xp
        ctx.save(target)
        ctx.meta = (logp.shape, logp.dtype, reduction)
        return _reduce(-logp[xp.arange(logp.shape[0]), target], reduction)

    @staticmethod
    def backward(ctx, g):
        (target,) = ctx.saved
        shape, dtype, reduction = ctx.meta
        xp = ctx.xp
        scale = _row_scale(xp, g, shape[0], reduction, dtype)
        gx = xp.zeros(shape, dtype)
        gx[xp.arange(shape[0]), target] = -scale[:, 0]
        return gx, None


def _validate(op, input, target, reduction):
    x = check_ndim(check_float(as_tensor(input, f"{op}: input"), f"{op}: input"),
                   f"{op}: input", 2, "(N, C)")
    t = check_ndim(check_int(as_tensor(target, f"{op}: target"), f"{op}: target"),
                   f"{op}: target", 1, "(N,)")
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"{op}: target has {t.shape[0]} entries, input has {x.shape[0]} rows "
                         f"(input {tuple(x.shape)}, target {tuple(t.shape)})")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if t.requires_grad:
        raise TypeError(f"{op}: target must not require grad")
    if t.device != x.device:
        raise ValueError(f"{op}: target is on {t.device!r}, input on {x.device!r}")
    if t.size:
        low, high = int(t.data.min()), int(t.data.max())
        if low < 0 or high >= x.shape[1]:
            bad = low if low < 0 else high
            raise ValueError(f"{op}: target contains {bad}, outside the valid class range "
                             f"[0, {x.shape[1] - 1}]")
    return x, t


def cross_entropy(input, target, reduction="mean"):
    """Softmax cross-entropy between logits and integer class targets.

    Parameters
    ----------
    input : Tensor (N, C), float logits
    target : Tensor (N,), integer classes in [0, C)
    reduction : 'mean' (default), 'sum' or 'none' (returns (N,))
    """
    x, t = _validate("cross_entropy", input, target, reduction)
    return CrossEntropy.apply(x, t, reduction=reduction)


def nll_loss(input, target, reduction="mean"):
    """Negative log-likelihood of integer targets under log-probabilities `input` (N, C)."""
    x, t = _validate("nll_loss", input, target, reduction)
    return NLLLoss.apply(x, t, reduction=reduction)
