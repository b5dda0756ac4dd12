"""Compiled CPU loops for the "jit" routes, through Numba (the optional extra `fast`:
`pip install -e ".[fast]"`).

Why compile at all: NumPy runs every elementwise pass on one core, and each pass reads and
writes whole arrays, while BLAS and torch's kernels use every core. A loop compiled by Numba
can fuse a chain of passes into one (batch norm's centring, scaling and shifting) and split
its outer loop over the cores (`prange`). The loops compute the formulas of the op's own
file, like the NumPy fast routes beside them; without Numba those routes run instead.

Determinism: a `prange` loop here only ever splits independent outputs (channels, rows)
between threads, and every sum runs inside one iteration, so results do not depend on the
thread count. Reductions may be reassociated (`fastmath={"reassoc"}`, so that they vectorise):
the order is fixed by the compiled code, not by the run.

Threads: `set_threads(n)` (train/threads.py calls it beside the BLAS count) sets how many
threads the parallel loops use in the calling thread; the default is the core count, or
NUMBA_NUM_THREADS.
"""
import os

try:
    if os.environ.get("TINYHW_NO_JIT", "") not in ("", "0"):
        raise ImportError("TINYHW_NO_JIT is set")
    import numba
except ImportError:   # the NumPy routes run instead
    numba = None

available = numba is not None
INSTALL_HINT = 'needs Numba: pip install -e ".[fast]" (or pip install numba)'


def parallel(fn):
    """fn compiled as a parallel loop (its `prange`s split over threads), cached on disk so
    that a new process does not compile again; None without Numba."""
    if numba is None:
        return None
    return numba.njit(parallel=True, cache=True, fastmath={"reassoc"}, nogil=True)(fn)


def prange(*args):
    """numba.prange inside compiled loops (plain range when run as Python)."""
    return range(*args)


if numba is not None:
    prange = numba.prange   # noqa: F811  (the compiler recognises numba.prange itself)


def threads():
    """Threads the parallel loops use in this thread (1 without Numba)."""
    return numba.get_num_threads() if numba is not None else 1


def set_threads(n):
    """Use n threads (at most Numba's pool size) in the parallel loops of this thread."""
    if numba is not None:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
