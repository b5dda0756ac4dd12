"""conv2d's "pointwise" route: a 1x1 kernel without padding (see ops/conv.py for the formulas).

A 1x1 conv is a matrix product per image: Y_n = W X_n with X_n (C, H W), so cols is x itself
and there is no copy at all. Batched matmul on the NCHW data needs no transpose in or out; a
stride just subsamples x first.
"""


def applies(w_shape, padding):
    """Whether a kernel of shape (O, C, kh, kw) with this padding pair is pointwise: 1x1, no
    padding."""
    return tuple(w_shape[2:]) == (1, 1) and tuple(padding) == (0, 0)


def forward(ctx, x, w, b, stride, padding):
    sh, sw = stride
    xs = x[:, :, ::sh, ::sw] if (sh, sw) != (1, 1) else x
    n, c, ho, wo = xs.shape
    x3 = ctx.xp.ascontiguousarray(xs).reshape(n, c, ho * wo)
    ctx.save(x3 if ctx.needs_input_grad[1] else None, w)  # x is needed only for dW
    y = (w.reshape(w.shape[0], c) @ x3).reshape(n, w.shape[0], ho, wo)   # a new contiguous array
    if b is not None:
        y += b.reshape(-1, 1, 1)
    return y


def backward(ctx, gy):
    xp, (x3, w), x_shape = ctx.xp, ctx.saved, ctx.x_shape
    n, o = gy.shape[:2]
    g3 = gy.reshape(n, o, -1)
    w2 = w.reshape(o, -1)
    dw = dx = None
    if ctx.needs_input_grad[1]:  # dW = sum_n dY_n X_n^T
        dw = (g3 @ x3.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    if ctx.needs_input_grad[0]:
        dxs = xp.empty((n, x_shape[1]) + gy.shape[2:], dtype=gy.dtype)
        xp.matmul(w2.T, g3, out=dxs.reshape(n, x_shape[1], -1))  # dX_n = W^T dY_n
        if dxs.shape == x_shape:
            dx = dxs
        else:  # strided: the gradient lands on the sampled pixels only
            sh, sw = ctx.stride
            dx = xp.zeros(x_shape, dtype=gy.dtype)
            dx[:, :, ::sh, ::sw] = dxs
    return dx, dw, None

