"""The flat grids of conv2d's shifted route (conv_shifted.py): the padded input split into
its stride phases, each flattened so that a kernel offset is a shift of a flat index, and
processed in chunks of whole images that fit in L2 cache.

The split of an axis into phases is window.AxisPhase, shared with pooling's PhaseGrid. The
two grids differ in their planes, for speed: PhaseGrid gives every phase the same plane
(ceil((H + 2p) / s) rows), one per channel and image, all in one array; FlatGrid keeps only the
phases some kernel offset reads (a < min(s, k)), makes planes as small as the shifted reads
allow (`_pitch`: a read past a plane's end lands on the next plane's leading zeros) and lays
out chunks of images that fit in L2, which the GEMMs of conv need and pooling does not.

At stride 1 along the columns, FlatGrid can also fold the column padding away (see FlatGrid):
rows then hold the W inputs and nothing else, so every copy into or out of the grid moves
whole planes (H W contiguous values per image and channel) instead of rows of W."""
import numpy as np

from ..window import AxisPhase, output_size
from . import size

# Bytes of the largest per-chunk array of the shifted route. The temporaries of a chunk then
# stay in a core's L2 cache (1 MiB per core here: lscpu's "2 MiB (2 instances)") between the
# copies, the GEMM and the adds that use them; larger chunks spill to L3, smaller ones pay
# more per-call overhead. 512 KiB and 2 MiB measured no better on the CIFAR shapes.
CHUNK_BYTES = 1 << 20


def images_per_chunk(n, bytes_per_image, budget=None):
    """How many of n images one chunk of the shifted route holds (at least one); the budget
    is CHUNK_BYTES unless an enclosing fast.use(conv_chunk_bytes=...) sets another."""
    budget = size("conv_chunk_bytes", CHUNK_BYTES) if budget is None else budget
    return max(1, min(n, budget // bytes_per_image))


# The jit routes' chunk count is rounded up to a multiple of this (when the batch has the
# images), so that 1, 2 or 4 workers get equal shares: with 13 chunks of 10 images, one of two
# workers ran 7 while the other ran 6 (resnet20's 32-channel convs, bench/NOTES.md).
CHUNK_MULTIPLE = 4
HEAVY_CHUNK_MULTIPLE = 2   # for weights larger than CHUNK_BYTES (even_chunks)
# The largest budget weights can ask for: a chunk of a 4096-channel layer's batch would
# otherwise take gigabytes of scratch per worker (32 MiB: this machine's L3).
HEAVY_CHUNK_BYTES = 32 << 20


def weights_leave_cache(weight_bytes):
    """Whether a conv's weights (bytes) are larger than the chunk budget, CHUNK_BYTES: every
    chunk then streams them from L3 or memory, and packs them for BLAS, again."""
    return weight_bytes > CHUNK_BYTES


def even_chunks(n, bytes_per_image, weight_bytes=0):
    """(images per chunk, chunks) for the jit routes: as few chunks as the budget allows
    (images_per_chunk), their count rounded up towards a multiple of CHUNK_MULTIPLE, as even
    as whole images allow, so that the workers' shares differ by whole chunks only, and
    seldom at all. Neither depends on the thread count (nor then does the order of sums).

    Weights larger than CHUNK_BYTES (weight_bytes: a conv's weight matrix) leave L2 anyway,
    and every chunk streams and packs them again for a GEMM as wide as the chunk: the chunks
    then hold as many bytes as the weights (up to HEAVY_CHUNK_BYTES), their count rounded to
    a multiple of 2 only
    (resnet50's 512-channel 3x3 at 7x7, batch 8: 2 chunks of 4 images fwd+bwd in 42 ms against
    88 for 4 of 2; bench/NOTES.md). On 4 cores such a layer of a small batch keeps 2 of them
    busy: the count must not follow the thread count."""
    budget, multiple = size("conv_chunk_bytes", CHUNK_BYTES), CHUNK_MULTIPLE
    if weights_leave_cache(weight_bytes):
        budget = max(budget, min(weight_bytes, HEAVY_CHUNK_BYTES))
        multiple = HEAVY_CHUNK_MULTIPLE
    chunks = -(-n // images_per_chunk(n, bytes_per_image, budget))
    chunks = min(n, -(-chunks // multiple) * multiple)
    images = -(-n // chunks)
    return images, -(-n // images)


def can_fold(kw, sw, pw):
    """Whether FlatGrid can fold the column padding (kernel width kw, column stride sw,
    padding pw): stride 1 and no output column beyond the input's (Wo <= W)."""
    return sw == 1 and 2 * pw <= kw - 1


def axis_phases(k, s, p, n):
    """The phases of one axis (kernel k, stride s, padding p, n inputs) that some kernel offset
    reads: a < min(s, k)."""
    return [AxisPhase(a, k, s, p, n) for a in range(min(s, k))]


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

    Folded columns (fold_columns=True; only at column stride 1 with 2 pw <= kw - 1, i.e. Wo <=
    W, see `can_fold`). The pitch is Wq = W: no padding cells in a row, so a plane's data is
    one contiguous run of H W cells and writes and crops move whole planes (numpy copies short
    rows at several times memcpy's cost). The grid's data start `lead` = pw cells into its
    buffer, so a column shift jj still reads flat cell q + jj of the buffer, i.e. input column
    w + jj - pw of the same row for output cell q = (h, w). Where that column is outside
    [0, W) the read lands on the neighbouring row's last (first) inputs instead of on zero
    padding: the shifted copy must be zeroed at those output columns (`wrapped[jj]`,
    `zero_wrapped`), and so must the gradient of that copy before it is added back.
    """

    def __init__(self, xp, x_shape, kernel, stride, padding, rows_per_image, itemsize,
                 fold_columns=False):
        (n, _, h, w), (kh, kw), (sh, sw), (ph, pw) = x_shape, kernel, stride, padding
        self.ho, self.wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
        self.stride = stride
        self.row_phases, self.col_phases = axis_phases(kh, sh, ph, h), axis_phases(kw, sw, pw, w)
        self.hq, self.wq = _pitch(self.row_phases, self.ho), _pitch(self.col_phases, self.wo)
        self.folded = fold_columns
        self.lead, self.wrapped = 0, {}   # wrapped: column shift jj -> output columns to zero
        if fold_columns:
            if not can_fold(kw, sw, pw):
                raise ValueError(f"FlatGrid: cannot fold columns of kernel width {kw}, stride "
                                 f"{sw}, padding {pw}; expected stride 1 and 2 pw <= kw - 1")
            self.wq, self.lead = w, pw
            self.wrapped = {jj: [col for col in range(w) if not 0 <= col + jj - pw < w]
                            for jj in range(kw)}
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

    def corner(self, rp, cp):
        """(row, column) of phase (rp, cp)'s first data cell in its planes."""
        return rp.first_cell, (0 if self.folded else cp.first_cell)

    def zero_wrapped(self, rows, jj):
        """Zero, in column shift jj of a folded grid, the output columns whose read wrapped
        onto a neighbouring row: rows (R, L) is that shift with column 0 at output cell 0.
        Each column is one strided view over all rows, planes and channels (a cell past the
        grid's last row is zeroed too: no output reads it)."""
        for col in self.wrapped.get(jj, ()):
            rows[:, col::self.wq] = 0

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
