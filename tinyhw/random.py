"""The random streams that ops draw from (dropout masks, initialisers).

One numpy Generator for the CPU and, created on first use, one cupy
RandomState for the GPU. `manual_seed` resets both, so a run is repeatable for
a seed; `get_state`/`set_state` give the CPU stream's full state as a JSON-able
dict so that a checkpoint can resume bit-for-bit.
"""
import numpy as np

from .backend import _import_cupy

_cpu = np.random.default_rng(0)
_gpu = None
_seed = 0


def manual_seed(seed):
    """Seed every stream (CPU and, if used, GPU)."""
    global _cpu, _gpu, _seed
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _seed = int(seed)
    _cpu = np.random.default_rng(_seed)
    _gpu = None


def generator(xp=np):
    """The stream for array module `xp` (numpy Generator or cupy RandomState)."""
    global _gpu
    if xp is np:
        return _cpu
    if _gpu is None:
        _gpu = _import_cupy().random.RandomState(_seed)
    return _gpu


def uniform(xp, shape, dtype, low=0.0, high=1.0):
    """Uniform [low, high) samples of `dtype` on the device of module `xp`."""
    if xp is np and np.dtype(dtype) in (np.float32, np.float64):
        # Drawn directly in the target dtype: float32 draws are ~25% cheaper than float64 + cast.
        u = _cpu.random(shape, dtype=dtype)
        if (low, high) != (0.0, 1.0):
            u *= high - low
            u += low
        return u
    return generator(xp).uniform(low, high, size=shape).astype(dtype, copy=False)


def normal(xp, shape, dtype, mean=0.0, std=1.0):
    """Normal samples of `dtype` on the device of module `xp`."""
    return generator(xp).normal(mean, std, size=shape).astype(dtype, copy=False)


def get_state():
    """The CPU stream's state (a JSON-serialisable dict)."""
    return _cpu.bit_generator.state


def set_state(state):
    """Restore a state returned by `get_state`."""
    _cpu.bit_generator.state = state
