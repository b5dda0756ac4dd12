"""Matrix products: matmul and linear.

matmul: Y = A B over the last two dims, batch dims broadcast (NumPy rules;
a 1-D operand is a row vector on the left, a column vector on the right).
From dL = <dY, dA B + A dB>:
    dA = dY B^T,    dB = A^T dY      (batch dims then summed by the engine)

linear: y = x W^T + b, x (*, in), W (out, in), b (out,), y (*, out). With x
flattened to X (M, in) and dY (M, out):
    dX = dY W,    dW = dY^T X,    db = sum over rows of dY
so a linear layer is three GEMMs, whatever the leading dims.
"""
from ..autograd import Function
from ..checks import as_tensor, check_float, check_ndim, check_same, check_shape


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, gy):
        a, b = ctx.saved
        xp = ctx.xp
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1:
            gy = xp.expand_dims(gy, -2)
        if b.ndim == 1:
            gy = xp.expand_dims(gy, -1)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = gy @ xp.swapaxes(b2, -1, -2)
            if a.ndim == 1:
                ga = ga[..., 0, :]
        if ctx.needs_input_grad[1]:
            gb = xp.swapaxes(a2, -1, -2) @ gy
            if b.ndim == 1:
                gb = gb[..., 0]
        return ga, gb


class Linear(Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1])
        y = x2 @ weight.T
        if bias is not None:
            y += bias
        ctx.save(x2, weight)
        ctx.lead_shape = x.shape[:-1]
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, gy):
        x2, weight = ctx.saved
        g2 = gy.reshape(-1, gy.shape[-1])
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = (g2 @ weight).reshape(ctx.lead_shape + (weight.shape[1],)) if need_x else None
        gw = g2.T @ x2 if need_w else None
        gb = g2.sum(axis=0) if need_b else None
        return gx, gw, gb


def matmul(input, other):
    """Matrix product with NumPy/torch semantics (batched, broadcasting)."""
    a = check_float(as_tensor(input, "matmul: input"), "matmul: input")
    b = check_float(as_tensor(other, "matmul: other"), "matmul: other")
    check_same("matmul: input", a, **{"matmul: other": b})
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: operands must be at least 1-D, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: inner dims differ: input {tuple(a.shape)} has {k_a}, "
                         f"other {tuple(b.shape)} has {k_b}")
    return MatMul.apply(a, b)


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias.

    Parameters
    ----------
    input : Tensor (*, in_features)
    weight : Tensor (out_features, in_features)
    bias : Tensor (out_features,) or None
    """
    x = check_float(as_tensor(input, "linear: input"), "linear: input")
    w = check_ndim(check_float(as_tensor(weight, "linear: weight"), "linear: weight"),
                   "linear: weight", 2, "(out_features, in_features)")
    check_ndim(x, "linear: input", range(1, 10), "(*, in_features)")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {tuple(x.shape)}), "
                         f"weight expects {w.shape[1]} (shape {tuple(w.shape)})")
    b = None
    if bias is not None:
        b = check_shape(as_tensor(bias, "linear: bias"), "linear: bias", (w.shape[0],),
                        "(out_features,)")
    check_same("linear: input", x, **{"linear: weight": w, "linear: bias": b})
    return Linear.apply(x, w, b)
