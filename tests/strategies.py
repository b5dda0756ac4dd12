"""Hypothesis strategies that draw only valid inputs for the ops.

Values are float64 (gradient checks are never run in float32) and kept away
from the kinks where a finite difference is meaningless (ReLU at 0, ties in a
max), by construction rather than by filtering.
"""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=5):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


@st.composite
def arrays(draw, shape, low=-2.0, high=2.0):
    """A float64 array of `shape` (a tuple or a strategy) drawn from a seeded generator.

    Drawing a seed and filling from numpy keeps examples fast and shrinkable, and the
    values are continuous, so exact ties and exact zeros have probability zero."""
    if not isinstance(shape, tuple):
        shape = draw(shape)
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).uniform(low, high, size=shape)


@st.composite
def away_from_zero(draw, shape, margin=0.1, high=2.0):
    """Values in [-high, -margin] U [margin, high]: no element sits at a kink at 0."""
    magnitude = draw(arrays(shape, margin, high))
    seed = draw(st.integers(0, 2**32 - 1))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=magnitude.shape)
    return magnitude * signs


@st.composite
def distinct(draw, shape, gap=0.05):
    """Values whose pairwise differences are all at least `gap` (no ties for max/max-pool):
    a shuffled, jittered arithmetic progression."""
    if not isinstance(shape, tuple):
        shape = draw(shape)
    n = int(np.prod(shape))
    seed = draw(st.integers(0, 2**32 - 1))
    r = np.random.default_rng(seed)
    values = np.arange(n) * 3 * gap + r.uniform(0, gap, size=n)
    r.shuffle(values)
    return (values - values.mean()).reshape(shape)


def broadcastable_pair(max_dims=3, max_side=4):
    """Two shapes that broadcast together in either direction."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=max_dims, max_side=max_side)


@st.composite
def lstm_inputs(draw, max_steps=5, max_batch=3, max_features=4):
    """Float64 arguments of `lstm` for small drawn T, B, D, H: a dict with input (T, B, D),
    h0, c0 (B, H), w_ih (4H, D), w_hh (4H, H) and b_ih, b_hh ((4H,) or None, drawn
    independently so every bias combination occurs)."""
    T = draw(st.integers(1, max_steps))
    B = draw(st.integers(1, max_batch))
    D = draw(st.integers(1, max_features))
    H = draw(st.integers(1, max_features))
    drawn = dict(input=draw(arrays((T, B, D))), h0=draw(arrays((B, H), -1.0, 1.0)),
                 c0=draw(arrays((B, H), -1.0, 1.0)), w_ih=draw(arrays((4 * H, D), -1.0, 1.0)),
                 w_hh=draw(arrays((4 * H, H), -1.0, 1.0)))
    for name in ("b_ih", "b_hh"):
        drawn[name] = draw(st.one_of(st.none(), arrays((4 * H,), -1.0, 1.0)))
    return drawn


@st.composite
def gate_values(draw, shape):
    """A float64 gate array of `shape` with values in (0, 1), as a sigmoid would give."""
    return draw(arrays(shape, 0.02, 0.98))


# ---- convolution and pooling geometry ---------------------------------------------------
# Sizes are drawn so that every kernel fits in the padded input (output >= 1): the input
# side is drawn after the kernel and padding, from at least kernel - 2 * padding.

def _fitting_sides(draw, kernel, padding, max_side):
    """Input sides, one per axis, each at least the kernel minus both paddings (and >= 1)."""
    return tuple(draw(st.integers(max(1, k - 2 * p), max(max_side, k)))
                 for k, p in zip(kernel, padding))


@st.composite
def conv2d_geometry(draw, max_batch=3, max_channels=3, max_side=7, max_kernel=4,
                    max_stride=3, max_padding=2):
    """Keyword arguments for a valid conv2d: x_shape (N, C, H, W), w_shape (O, C, kh, kw),
    stride and padding pairs."""
    n, c, o = (draw(st.integers(1, m)) for m in (max_batch, max_channels, max_channels))
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    padding = (draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding)))
    side = _fitting_sides(draw, kernel, padding, max_side)
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    return dict(x_shape=(n, c) + side, w_shape=(o, c) + kernel, stride=stride, padding=padding)


@st.composite
def conv1d_geometry(draw, max_batch=3, max_channels=3, max_length=9, max_kernel=5,
                    max_stride=3, max_padding=2):
    """Keyword arguments for a valid conv1d: x_shape (N, C, L), w_shape (O, C, K), stride and
    padding ints."""
    n, c, o = (draw(st.integers(1, m)) for m in (max_batch, max_channels, max_channels))
    k = draw(st.integers(1, max_kernel))
    p = draw(st.integers(0, max_padding))
    (length,) = _fitting_sides(draw, (k,), (p,), max_length)
    stride = draw(st.integers(1, max_stride))
    return dict(x_shape=(n, c, length), w_shape=(o, c, k), stride=stride, padding=p)


@st.composite
def pool2d_geometry(draw, max_batch=3, max_channels=3, max_side=7, max_kernel=4, max_stride=3):
    """Keyword arguments for a valid max/avg pool: x_shape, kernel_size, stride, padding pairs,
    with padding at most half the kernel (torch's rule)."""
    n, c = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels))
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    side = _fitting_sides(draw, kernel, padding, max_side)
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    return dict(x_shape=(n, c) + side, kernel_size=kernel, stride=stride, padding=padding)


# ---- batch norm and embedding ---------------------------------------------------------
@st.composite
def batch_norm_shapes(draw, max_batch=4, max_channels=3, max_side=4):
    """(N, C), (N, C, L) or (N, C, H, W) with N >= 2, so that every channel has more than
    one value and training-mode statistics exist."""
    rank = draw(st.sampled_from([2, 3, 4]))
    n, c = draw(st.integers(2, max_batch)), draw(st.integers(1, max_channels))
    return (n, c) + tuple(draw(st.integers(1, max_side)) for _ in range(rank - 2))


@st.composite
def indices(draw, num_embeddings, max_dims=3, max_side=5):
    """int64 indices in [0, num_embeddings) of a drawn shape (1..max_dims dims); with a small
    vocabulary, repeated indices (whose gradients must sum) are the rule."""
    shape = draw(shapes(min_dims=1, max_dims=max_dims, max_side=max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, num_embeddings, size=shape)
