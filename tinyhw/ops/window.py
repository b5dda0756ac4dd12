"""Shared helpers of the windowed ops (conv, pooling): output sizes, argument checks, reusable
work buffers, the PhaseGrid layout that turns strided window sweeps into slice arithmetic
(pooling) and the chunked flat grids of conv's shifted route (FlatGrid)."""
import math
import threading

import numpy as np

from ..checks import as_tensor, check_float, check_ndim, check_same, check_shape, pair


def output_size(size, kernel, stride, padding):
    """Number of window positions along one axis (torch's floor formula)."""
    return (size + 2 * padding - kernel) // stride + 1


_work = threading.local()


def work_buffer(xp, slot, shape, dtype, zero=False):
    """A reusable array for a temporary that never leaves the op that asks for it.

    On the CPU a fresh multi-megabyte array is paid for again in page faults at first touch,
    which costs about as much as the copies around it; so each thread keeps one buffer per
    (slot, dtype), grown to the largest request. Callers must not keep the result past their
    own return. cupy has its own memory pool, so on the GPU this is a plain allocation."""
    if xp is not np:
        return xp.zeros(shape, dtype=dtype) if zero else xp.empty(shape, dtype=dtype)
    buffers = _work.__dict__.setdefault("buffers", {})
    size, key = math.prod(shape), (slot, np.dtype(dtype))
    if key not in buffers or buffers[key].size < size:
        buffers[key] = np.empty(size, dtype=dtype)
    out = buffers[key][:size].reshape(shape)
    if zero:
        out.fill(0)
    return out


class PhaseGrid:
    """Flat layout in which each kernel offset of a strided window sweep reads one slice.

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
        for size, pad, s, phase in zip(self.hw, self.padding, self.stride, (a, b)):
            first = (phase - pad) % s            # first input index u with u + pad = phase mod s
            count = len(range(first, size, s))
            start = (first + pad) // s
            picks.append((slice(start, start + count), slice(first, size, s)))
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


# ---- flat grids of conv's shifted route (see conv.py) ---------------------------------------

# Bytes of the largest per-chunk array of the shifted route. Each temporary then stays in a
# core's L2 cache (2 MiB here) between the copies, the GEMM and the adds that use it; larger
# chunks spill to L3 and run slower, smaller ones pay more per-call overhead.
CHUNK_BYTES = 1 << 20


def images_per_chunk(n, bytes_per_image):
    """How many of n images one chunk of the shifted route holds (at least one)."""
    return max(1, min(n, CHUNK_BYTES // bytes_per_image))


class AxisPhase:
    """Phase a of one axis (kernel k, stride s, padding p, input size n): the cells
    u = first_cell .. end_cell - 1 of the phase hold inputs first_input, first_input + s, ...,
    and `taps` kernel offsets i = s ii + a (ii < taps) read it."""

    def __init__(self, a, k, s, p, n):
        self.taps = (k - 1 - a) // s + 1
        self.first_cell = -((a - p) // s)                   # ceil((p - a) / s)
        self.end_cell = -((a - p - n) // s)                 # ceil((p + n - a) / s)
        self.first_input = s * self.first_cell + a - p


def _pitch(phases, outputs):
    """Cells per plane along one axis: room for every phase's data and every output, and
    reads of valid outputs past the plane's end must land on the next plane's (row's)
    leading zero cells of the same phase."""
    return max([outputs] + [max(q.end_cell, outputs + q.taps - 1 - q.first_cell) for q in phases])


class FlatGrid:
    """Flat layout of conv's shifted route, processed in chunks of whole images.

    The padded input is split by position modulo the stride into phases
        phase[a, b][., u, v] = xpad[., s_h u + a, s_w v + b]
    (at stride 1 the one phase is the padded input), so that kernel offset
    (i, j) = (s_h ii + a, s_w jj + b) of output (h, w) reads cell (h + ii, w + jj) of phase
    (a, b). A chunk of m images with R rows (channels) keeps a phase as an
    (R, m Hq Wq + tail) array: image k's plane at columns [k Hq Wq, (k+1) Hq Wq), Hq rows of
    pitch Wq, so a kernel offset is a flat shift by ii Wq + jj. Outputs live on the same
    planes; cells outside Ho x Wo are garbage. Planes are as small as allowed: a valid
    output reading past its plane's last row (or row's last column) lands on the next
    plane's (row's) leading padding, zero like its own trailing padding would be.
    rows_per_image (the largest temporary's rows per image) and itemsize set the chunk size
    m; on the GPU (any xp but numpy) the whole batch is one chunk.
    """

    def __init__(self, xp, x_shape, kernel, stride, padding, rows_per_image, itemsize):
        (n, _, h, w), (kh, kw), (sh, sw), (ph, pw) = x_shape, kernel, stride, padding
        self.ho, self.wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        self.stride = stride
        self.row_phases = [AxisPhase(a, kh, sh, ph, h) for a in range(min(sh, kh))]
        self.col_phases = [AxisPhase(b, kw, sw, pw, w) for b in range(min(sw, kw))]
        self.hq, self.wq = _pitch(self.row_phases, self.ho), _pitch(self.col_phases, self.wo)
        self.cell = self.hq * self.wq
        per_image = rows_per_image * self.cell * itemsize
        self.images = n if xp is not np else images_per_chunk(n, per_image)
        self.size = self.images * self.cell

    def chunks(self, n):
        """(start, stop) of the images of each chunk."""
        return [(s, min(s + self.images, n)) for s in range(0, n, self.images)]

    def phases(self):
        """(a, b, row phase, column phase) of every phase some kernel offset reads."""
        return [(a, b, rp, cp) for a, rp in enumerate(self.row_phases)
                for b, cp in enumerate(self.col_phases)]

    def inputs(self, x, rp, cp):
        """The inputs of x (k, R, H, W) that phase (rp, cp) holds: a strided view."""
        (sh, sw) = self.stride
        return x[:, :, rp.first_input::sh, cp.first_input::sw]

    def write(self, flat, offset, corner, value):
        """Write value (k, R, a, b) (k <= m images, NCHW) at rows/columns from `corner` of the
        first k planes of flat[:, offset:]; the planes of images k..m-1 are zeroed (a short
        last chunk), the rest of `flat` is left alone (callers zero it once per call)."""
        k, _, a, b = value.shape
        if k < self.images:
            flat[:, offset + k * self.cell:offset + self.size] = 0
        planes = flat[:, offset:offset + self.size].reshape(-1, self.images, self.hq, self.wq)
        r, c = corner
        planes[:, :k, r:r + a, c:c + b] = value.transpose(1, 0, 2, 3)

    def view(self, flat, k, corner, size):
        """NCHW view (k, R, *size) of the first k planes of flat (R, >= m Hq Wq) from `corner`."""
        planes = flat[:, :self.size].reshape(-1, self.images, self.hq, self.wq)
        (r, c), (a, b) = corner, size
        return planes[:, :k, r:r + a, c:c + b].transpose(1, 0, 2, 3)


def sum_of_shifted_blocks(z, offsets, length, layout, out):
    """out[...] = layout(sum_k z[k, :, offsets[k] : offsets[k] + length]) for a contiguous work
    buffer z (K, R, L). The sum accumulates in place in z[0], each block added as one flat 1-D
    run: numpy runs a ufunc on 2-D strided views through its buffered iterator, ~5x slower
    than on contiguous runs. The flat add also sums cells past `length` across row ends:
    garbage that is never read. `layout` views a (R, length) block as out's shape, and the
    copy into out crops and transposes in one pass."""
    flat = z.reshape(z.shape[0], -1)
    n = flat.shape[1]
    for k in range(1, len(offsets)):
        shift = offsets[k] - offsets[0]
        if shift >= 0:
            flat[0, :n - shift] += flat[k, shift:]
        else:
            flat[0, -shift:] += flat[k, :n + shift]
    out[...] = layout(z[0, :, offsets[0]:offsets[0] + length])
    return out


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
