"""Pooling over (N, C, H, W): max_pool2d, avg_pool2d, adaptive_avg_pool2d.

With kernel (kh, kw), stride s, padding p and Ho = (H + 2 p_h - kh) // s_h + 1 (Wo likewise),
each output looks at the window xp[n, c, s_h h + i, s_w w + j], 0 <= i < kh, 0 <= j < kw,
of the input padded with -inf (max) or 0 (average), as torch does.

max:  y = max_{i, j} xp[.., s_h h + i, s_w w + j]. y is piecewise linear in x with slope 1 on
      the (first) maximal element, so dy flows back to that element only:
      dxp[.., s_h h + i*, s_w w + j*] += dy[.., h, w],  (i*, j*) = first argmax of the window.
avg:  y = (1 / (kh kw)) sum_{i, j} xp[.., s_h h + i, s_w w + j]   (padding counted, torch's
      count_include_pad=True), so every window element receives dy / (kh kw).
Both are computed with a loop over the kh kw kernel offsets on window.py's PhaseGrid, where the
elements seen at offset (i, j) by all windows are one contiguous slice of one phase of the
input; within a slice no element repeats, so backward scatter-adds are plain slice adds.
Padding is -inf for max (it never wins) and 0 for average (it adds nothing, though the
divisor counts it).

adaptive average: output cell (a, b) of an (Oh, Ow) grid averages rows
      [floor(a H / Oh), ceil((a + 1) H / Oh)) and columns [floor(b W / Ow), ceil((b + 1) W / Ow)).
      A rectangle's average is a row average of column averages, so with the bin-averaging
      matrices A_h (Oh, H) and A_w (Ow, W):   y = A_h x A_w^T,   dx = A_h^T dy A_w.
"""
import numpy as np

from ..autograd import Function
from ..checks import as_tensor, check_float, check_ndim
from .fast.buffers import work_buffer
from .window import PhaseGrid, check_window_fits, hyper_pair


def _remember(ctx, x, kernel, stride, padding):
    """Keep what backward needs; return the PhaseGrid over the N C planes of x."""
    n, c, h, w = x.shape
    ctx.grid = PhaseGrid(n * c, (h, w), kernel, stride, padding)
    ctx.x_shape, ctx.dtype = x.shape, x.dtype
    return ctx.grid


def _planes(a):
    """(N, C, H, W) viewed as the (1, N C, H, W) layout PhaseGrid expects."""
    return a.reshape((1, a.shape[0] * a.shape[1]) + a.shape[2:])


def _pooled(xp, grid, cells, x_shape):
    """The (N, C, Ho, Wo) output from its grid cells."""
    return xp.ascontiguousarray(grid.crop(cells)).reshape(x_shape[:2] + grid.out_hw)


def _scatter(ctx, piece):
    """dx = sum over offsets k of the grid array piece(k), each added where it was read."""
    xp, grid = ctx.xp, ctx.grid
    d_phases = work_buffer(xp, "padded", grid.stride + (1, grid.length), ctx.dtype, zero=True)
    for k, (a, b), cells in grid.offsets():
        target = d_phases[a, b, 0, cells]
        target += piece(k)
    dx = xp.empty(ctx.x_shape, dtype=ctx.dtype)
    grid.merge(d_phases, _planes(dx))
    return dx


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        xp = ctx.xp
        grid = _remember(ctx, x, kernel, stride, padding)
        phases = grid.split(xp, _planes(x), -np.inf, slot="padded")
        y = xp.full(grid.size, -np.inf, dtype=x.dtype)
        # Index of the winning offset per output. Offsets come in increasing k and replace the
        # running winner only when strictly greater (the first maximum wins, as torch), so the
        # update where(better, k, arg) equals max(arg, k * better): arithmetic, no masked writes.
        index = np.uint8 if kernel[0] * kernel[1] <= 256 else np.int32
        arg = xp.zeros(grid.size, dtype=index)
        better, claim = xp.empty(grid.size, dtype=bool), xp.empty(grid.size, dtype=index)
        for k, (a, b), cells in grid.offsets():
            candidate = phases[a, b, 0, cells]
            xp.greater(candidate, y, out=better)
            xp.multiply(better, index(k), out=claim)
            xp.maximum(arg, claim, out=arg)
            xp.maximum(y, candidate, out=y)
        ctx.save(arg)
        return _pooled(xp, grid, y, x.shape)

    @staticmethod
    def backward(ctx, gy):
        (arg,) = ctx.saved
        g = ctx.grid.widen(ctx.xp, _planes(gy)[0])     # zero on the garbage cells
        return _scatter(ctx, lambda k: g * (arg == k))


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        xp = ctx.xp
        grid = _remember(ctx, x, kernel, stride, padding)
        phases = grid.split(xp, _planes(x), 0, slot="padded")
        y = xp.zeros(grid.size, dtype=x.dtype)
        for _, (a, b), cells in grid.offsets():
            y += phases[a, b, 0, cells]
        y /= kernel[0] * kernel[1]
        return _pooled(xp, grid, y, x.shape)

    @staticmethod
    def backward(ctx, gy):
        kh, kw = ctx.grid.kernel
        share = ctx.grid.widen(ctx.xp, _planes(gy)[0] / (kh * kw))
        return _scatter(ctx, lambda k: share)


def _bin_matrix(size, bins):
    """(bins, size) matrix: row a averages [floor(a size / bins), ceil((a + 1) size / bins))."""
    a = np.zeros((bins, size))
    for b in range(bins):  # a few output cells; numpy on shapes only
        start, end = (b * size) // bins, -((-(b + 1) * size) // bins)
        a[b, start:end] = 1.0 / (end - start)
    return a


class AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, output_size):
        xp = ctx.xp
        ctx.x_shape = x.shape
        if output_size == (1, 1):  # global average pooling: a plain mean
            return x.mean(axis=(2, 3), keepdims=True)
        ctx.a_h = xp.asarray(_bin_matrix(x.shape[2], output_size[0]), dtype=x.dtype)
        ctx.a_w = xp.asarray(_bin_matrix(x.shape[3], output_size[1]), dtype=x.dtype)
        return ctx.a_h @ x @ ctx.a_w.T

    @staticmethod
    def backward(ctx, gy):
        n, c, h, w = ctx.x_shape
        if gy.shape[2:] == (1, 1):
            return ctx.xp.broadcast_to(gy / (h * w), ctx.x_shape).copy()
        return ctx.a_h.T @ gy @ ctx.a_w


def _pool_args(op, input, kernel_size, stride, padding):
    x = check_float(as_tensor(input, f"{op}: input"), f"{op}: input")
    check_ndim(x, f"{op}: input", 4, "(N, C, H, W)")
    kernel = hyper_pair(kernel_size, f"{op}: kernel_size", 1)
    stride = kernel if stride is None else hyper_pair(stride, f"{op}: stride", 1)
    padding = hyper_pair(padding, f"{op}: padding", 0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        # as torch: a window made only of padding would have no input to pool
        raise ValueError(f"{op}: padding: expected at most half the kernel size {kernel}, "
                         f"got {padding}")
    check_window_fits(f"{op}: kernel_size", kernel, x.shape[2:], padding, x.shape)
    return x, kernel, stride, padding


def max_pool2d(input, kernel_size, stride=None, padding=0):
    """Max over windows (torch.nn.functional.max_pool2d; ceil_mode=False, dilation=1).

    Parameters
    ----------
    input : Tensor (N, C, H, W), float
    kernel_size : int or (kh, kw)
    stride : int or (sh, sw); default kernel_size
    padding : int or (ph, pw), at most half the kernel; pads with -inf

    Returns
    -------
    Tensor (N, C, Ho, Wo), Ho = (H + 2 ph - kh) // sh + 1, Wo likewise;
    y = max over each window. Backward: dy goes to the first maximal element of its window.
    """
    x, kernel, stride, padding = _pool_args("max_pool2d", input, kernel_size, stride, padding)
    return MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)


def avg_pool2d(input, kernel_size, stride=None, padding=0):
    """Mean over windows (torch.nn.functional.avg_pool2d; count_include_pad=True).

    Same shapes and arguments as `max_pool2d`; pads with 0 and always divides by kh kw.
    Backward: every element of a window receives dy / (kh kw).
    """
    x, kernel, stride, padding = _pool_args("avg_pool2d", input, kernel_size, stride, padding)
    return AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)


def adaptive_avg_pool2d(input, output_size):
    """Average over an (Oh, Ow) grid of bins (torch.nn.functional.adaptive_avg_pool2d).

    Parameters
    ----------
    input : Tensor (N, C, H, W), float
    output_size : int or (Oh, Ow), positive; an entry None keeps that input size

    Returns
    -------
    Tensor (N, C, Oh, Ow); bin a spans [floor(a H / Oh), ceil((a + 1) H / Oh)) (rows, and
    columns likewise). y = A_h x A_w^T with bin-averaging matrices; dx = A_h^T dy A_w.
    output_size 1 is global average pooling: y = mean over (H, W), dx = dy / (H W).
    """
    op = "adaptive_avg_pool2d"
    x = check_float(as_tensor(input, f"{op}: input"), f"{op}: input")
    check_ndim(x, f"{op}: input", 4, "(N, C, H, W)")
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(s if s is not None else x.shape[2 + k]
                            for k, s in enumerate(output_size))
    size = hyper_pair(output_size, f"{op}: output_size", 1)
    return AdaptiveAvgPool2d.apply(x, output_size=size)
