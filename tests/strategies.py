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
