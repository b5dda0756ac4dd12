"""conv2d's "jit" route for a 1x1 kernel without padding (conv_jit.py takes every other
kernel): per image, Y_n = W X_n with X_n (C, Ho Wo) the (strided) image itself, as the NumPy
"pointwise" route computes it; here the images are split between the cores, each worker
running its GEMMs (np.dot on SciPy's BLAS, one thread per caller: jit.py) on its own images.
Backward: dX_n = W^T dY_n, dW = sum_n dY_n X_n^T, accumulated per chunk of images whose size
does not depend on the thread count (so neither does the order of dW's sums).
"""
import numpy as np

from . import conv_jit_weights, flat_grid, jit
from .jit import prange


def _image(x, i, sh, sw, scratch):
    """X_i (C, Ho Wo): a view of x[i] at stride 1, else the strided pixels copied to scratch."""
    if sh == 1 and sw == 1:
        return x[i].reshape((x.shape[1], x.shape[2] * x.shape[3]))
    planes = scratch
    ho = (x.shape[2] - 1) // sh + 1
    wo = (x.shape[3] - 1) // sw + 1
    for c in range(x.shape[1]):
        for h in range(ho):
            for w in range(wo):
                planes[c, h * wo + w] = x[i, c, sh * h, sw * w]
    return planes


def _forward(x, w2, bias, sh, sw, workers, y):
    n, o, c = x.shape[0], y.shape[1], x.shape[1]
    length = y.shape[2] * y.shape[3]
    for t in prange(workers):
        scratch = np.empty((c, length), dtype=x.dtype)
        for i in range(t, n, workers):
            out = y[i].reshape((o, length))
            np.dot(w2, _image(x, i, sh, sw, scratch), out)
            for k in range(o):
                b = bias[k]
                for p in range(length):
                    out[k, p] += b


def _backward(x, dy, w2t, sh, sw, m, workers, dw_parts, dx):
    """dx (if it has images) and dW's part of each chunk of m images (if dw_parts has rows)."""
    n, o, c = dy.shape[0], dy.shape[1], w2t.shape[0]
    length = dy.shape[2] * dy.shape[3]
    chunks = (n + m - 1) // m
    for t in prange(workers):
        scratch = np.empty((c, length), dtype=dy.dtype)
        product = np.empty((o, c), dtype=dy.dtype)
        grad = np.empty((c, length), dtype=dy.dtype)
        for chunk in range(t, chunks, workers):
            for i in range(chunk * m, min(n, chunk * m + m)):
                g = dy[i].reshape((o, length))
                if dw_parts.shape[0]:
                    if i == chunk * m:   # the chunk's first image writes its part
                        np.dot(g, _image(x, i, sh, sw, scratch).T, dw_parts[chunk])
                    else:
                        np.dot(g, _image(x, i, sh, sw, scratch).T, product)
                        dw_parts[chunk] += product
                if dx.shape[0]:
                    np.dot(w2t, g, grad)
                    _scatter(grad, i, sh, sw, dx)


def _scatter(grad, i, sh, sw, dx):
    """dx[i] = grad (C, Ho Wo) at the strided pixels, zero at the others."""
    c, h, wd = dx.shape[1], dx.shape[2], dx.shape[3]
    wo = (wd - 1) // sw + 1
    for ch in range(c):
        for yy in range(h):
            for xx in range(wd):
                dx[i, ch, yy, xx] = 0
        for hh in range(0, h, sh):
            for ww in range(wo):
                dx[i, ch, hh, sw * ww] = grad[ch, (hh // sh) * wo + ww]


_image = jit.compiled(_image)
_scatter = jit.compiled(_scatter)
_forward = jit.parallel(_forward)
_backward = jit.parallel(_backward)


def forward(ctx, x, w, b, stride):
    x = np.ascontiguousarray(x)
    (n, c, h, wd), o, (sh, sw) = x.shape, w.shape[0], stride
    ho, wo = (h - 1) // sh + 1, (wd - 1) // sw + 1
    ctx.jit_images = flat_grid.even_chunks(n, max(c, o) * ho * wo * x.itemsize)[0]
    y = np.empty((n, o, ho, wo), dtype=x.dtype)
    bias = np.zeros(o, dtype=x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    _forward(x, np.ascontiguousarray(w.reshape(o, c)), bias, sh, sw, min(jit.threads(), n), y)
    ctx.save(x if ctx.needs_input_grad[1] else None, w)
    return y


def backward(ctx, gy):
    (x, w), m = ctx.saved, ctx.jit_images
    need_dx, need_dw, _ = ctx.needs_input_grad
    gy = np.ascontiguousarray(gy)
    (n, o), c = gy.shape[:2], w.shape[1]
    chunks = -(-n // m)
    dx = np.empty(ctx.x_shape if need_dx else (0, 1, 1, 1), dtype=gy.dtype)
    dw_parts = np.empty((chunks if need_dw else 0, o, c), dtype=gy.dtype)
    if x is None:
        x = np.empty((0, 1, 1, 1), dtype=gy.dtype)
    w2t = conv_jit_weights.phase_weights(w, 1, [1], transposed=True)[0]   # W^T: (C, O)
    _backward(x, gy, w2t, *ctx.stride, m,
              min(jit.threads(), chunks), dw_parts, dx)
    dw = (conv_jit_weights.weight_gradient(dw_parts.reshape(chunks, 1, o, c), 1, w.shape)
          if need_dw else None)
    return (dx if need_dx else None), dw, None
