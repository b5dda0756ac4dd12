"""Shared helpers of the windowed ops (conv, pooling): output sizes, argument checks, the split
of an axis into stride phases (AxisPhase), and the PhaseGrid layout that turns pooling's
strided window sweeps into slice arithmetic. (The flat grids of conv's fast shifted route,
built on the same AxisPhase, are in fast/flat_grid.py; its docstring says how they differ.)"""
import math

from ..checks import as_tensor, check_float, check_ndim, check_same, check_shape, pair
from .fast.buffers import work_buffer


def output_size(size, kernel, stride, padding):
    """Number of window positions along one axis (torch's floor formula)."""
    return (size + 2 * padding - kernel) // stride + 1


class AxisPhase:
    """Phase a of one axis (kernel k, stride s, padding p, input size n): the padded positions
    s u + a. Its cells u = first_cell .. end_cell - 1 hold the inputs first_input,
    first_input + s, ... (input i sits at padded position i + p), and `taps` kernel offsets
    i = s ii + a (ii < taps) read it."""

    def __init__(self, a, k, s, p, n):
        self.taps = (k - 1 - a) // s + 1
        self.first_cell = -((a - p) // s)                   # ceil((p - a) / s)
        self.end_cell = -((a - p - n) // s)                 # ceil((p + n - a) / s)
        self.first_input = s * self.first_cell + a - p


class PhaseGrid:
    """Flat layout in which each kernel offset of a strided window sweep reads one slice
    (pooling's; conv's shifted route uses fast/flat_grid.FlatGrid, whose docstring says why
    it lays its planes out differently).

    Input x (R, P, H, W): R rows (channels for a conv, 1 for pooling) of P planes. The padded
    planes are split by position modulo the stride into s_h s_w phases, each flattened:
        phase[a, b][r, (p, u, v)] = xpad[r, p, s_h u + a, s_w v + b],   u < Hq, v < Wq.
    Outputs live on the same (p, h, w) grid with flat index m, so that
        xpad[r, p, s_h h + i, s_w w + j] = phase[i mod s_h, j mod s_w][r, m + (i//s_h) Wq + j//s_w].
    Cells with h >= Ho or w >= Wo are garbage (their windows wrap past an edge) and are cropped.
    Within one offset no input element is read twice, so col2im is a plain slice add.
    """

    def __init__(self, planes, hw, kernel, stride, padding):
        (h, w), (kh, kw), (sh, sw), (ph, pw) = hw, kernel, stride, padding
        self.hw, self.kernel, self.stride, self.padding = hw, kernel, stride, padding
        self.out_hw = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
        self.grid = (planes, -(-(h + 2 * ph) // sh), -(-(w + 2 * pw) // sw))   # P, Hq, Wq
        self.size = math.prod(self.grid)
        # room after the grid for the reads of the last cells at the largest offset
        self.length = self.size + ((kh - 1) // sh) * self.grid[2] + (kw - 1) // sw

    def offsets(self):
        """(k, phase (a, b), slice of that phase) for each kernel offset k = (i, j), row-major."""
        (kh, kw), (sh, sw) = self.kernel, self.stride
        for i in range(kh):
            for j in range(kw):
                start = (i // sh) * self.grid[2] + j // sw
                yield i * kw + j, (i % sh, j % sw), slice(start, start + self.size)

    def _entries(self, a, b):
        """(index into a phase grid, index into x) of the inputs that phase (a, b) holds."""
        picks = []
        for n, k, s, p, phase in zip(self.hw, self.kernel, self.stride, self.padding, (a, b)):
            q = AxisPhase(phase, k, s, p, n)
            picks.append((slice(q.first_cell, q.end_cell), slice(q.first_input, n, s)))
        (grid_rows, x_rows), (grid_cols, x_cols) = picks
        return (Ellipsis, grid_rows, grid_cols), (Ellipsis, x_rows, x_cols)

    def _phase_grids(self, phases):
        for a in range(self.stride[0]):
            for b in range(self.stride[1]):
                yield (a, b), phases[a, b, :, :self.size].reshape((-1,) + self.grid)

    def split(self, xp, x, fill, slot=None):
        """The phases of x (R, P, H, W) padded with `fill`: an (s_h, s_w, R, length) array,
        new or (with `slot`) a work buffer."""
        shape = self.stride + (x.shape[0], self.length)
        phases = xp.empty(shape, dtype=x.dtype) if slot is None else \
            work_buffer(xp, slot, shape, x.dtype)
        phases[..., self.size:] = fill
        for (a, b), grid in self._phase_grids(phases):
            in_grid, in_x = self._entries(a, b)
            _, rows, cols = in_grid
            # fill only around the data: filling everything first would cost a full pass
            grid[:, :, :rows.start] = fill
            grid[:, :, rows.stop:] = fill
            grid[:, :, rows, :cols.start] = fill
            grid[:, :, rows, cols.stop:] = fill
            grid[in_grid] = x[in_x]
        return phases

    def merge(self, phases, out):
        """Inverse of `split` for gradients: write the input entries of the phases to `out`
        (R, P, H, W), which may be a transposed view."""
        for (a, b), grid in self._phase_grids(phases):
            in_grid, in_x = self._entries(a, b)
            out[in_x] = grid[in_grid]
        return out

    def crop(self, cells):
        """View (..., P, Ho, Wo) of the valid cells of a (..., size) grid array."""
        ho, wo = self.out_hw
        return cells.reshape(cells.shape[:-1] + self.grid)[..., :ho, :wo]

    def widen(self, xp, y, slot=None):
        """(..., size) grid array holding y (..., P, Ho, Wo), zero on the garbage cells."""
        shape = y.shape[:-3] + (self.size,)
        cells = xp.zeros(shape, dtype=y.dtype) if slot is None else \
            work_buffer(xp, slot, shape, y.dtype, zero=True)
        self.crop(cells)[...] = y
        return cells


def hyper_pair(value, name, minimum):
    """An int or pair of ints, each >= minimum (1 for strides and kernels, 0 for paddings)."""
    result = pair(value, name)
    if min(result) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name}: expected {kind} ints, got {value!r}")
    return result


def check_window_fits(name, kernel, size, padding, shape):
    """Raise unless a kernel fits in the padded input along every axis (output >= 1)."""
    padded = tuple(s + 2 * p for s, p in zip(size, padding))
    if any(k > s for k, s in zip(kernel, padded)):
        raise ValueError(f"{name}: kernel size {tuple(kernel)} is larger than the padded input "
                         f"{padded} (input {tuple(shape)} with padding {tuple(padding)})")


def conv_operands(op, input, weight, bias, ndim, x_layout, w_layout):
    """Checked (x, w, b) arrays-as-Tensors of a conv call (b may be None)."""
    x = check_float(as_tensor(input, f"{op}: input"), f"{op}: input")
    w = check_float(as_tensor(weight, f"{op}: weight"), f"{op}: weight")
    check_ndim(x, f"{op}: input", ndim, x_layout)
    check_ndim(w, f"{op}: weight", ndim, w_layout)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: weight: expects {w.shape[1]} input channels (shape "
                         f"{tuple(w.shape)}), but input has {x.shape[1]} (shape {tuple(x.shape)})")
    b = None
    if bias is not None:
        b = check_shape(as_tensor(bias, f"{op}: bias"), f"{op}: bias", (w.shape[0],),
                        "(out_channels,)")
    check_same(f"{op}: input", x, **{f"{op}: weight": w, f"{op}: bias": b})
    return x, w, b
