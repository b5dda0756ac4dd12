"""Compiled CPU loops for the "jit" routes, through Numba (the optional extra `fast`:
`pip install -e ".[fast]"`).

Why compile at all: NumPy runs every elementwise pass on one core, and each pass reads and
writes whole arrays, while BLAS and torch's kernels use every core. A loop compiled by Numba
can fuse a chain of passes into one (batch norm's centring, scaling and shifting) and split
its outer loop over the cores (`prange`). The loops compute the formulas of the op's own
file, like the NumPy fast routes beside them; without Numba those routes run instead.

Determinism: a `prange` loop here only ever splits independent outputs (channels, rows,
chunks of images whose size does not depend on the thread count) between threads, and every
sum runs inside one iteration or over the chunks in their order, so results do not depend on
the thread count. Reductions may be reassociated (`fastmath={"reassoc"}`, so that they vectorise):
the order is fixed by the compiled code, not by the run.

Threads: `set_threads(n)` (train/threads.py calls it beside the BLAS count) sets how many
threads the parallel loops use in the calling thread; the default is the core count, or
NUMBA_NUM_THREADS. The threads of the compiled loops and those of a multi-threaded BLAS must
not alternate: OpenBLAS's idle threads spin for ~0.1 s after each call, on the cores the loops
need (measured: a conv whose compiled copies and 2-thread NumPy GEMMs alternated ran 8-30x
slower than either alone, bench/NOTES.md). So every GEMM of a jit route runs inside its
compiled loop (np.dot, which Numba runs on SciPy's BLAS, a library apart from NumPy's), on one
thread per caller (`prepare_blas`): each worker is already on its own core.

TINYHW_NO_JIT=1 hides Numba (the NumPy routes run, as without the extra).
"""
import contextlib
import hashlib
import importlib.util
import os

from threadpoolctl import ThreadpoolController


def _import_numba():
    """numba, or None when it or SciPy (whose BLAS np.dot calls in compiled loops) is not
    installed, or TINYHW_NO_JIT is set: the NumPy routes run then."""
    if os.environ.get("TINYHW_NO_JIT", "") not in ("", "0"):
        return None
    if importlib.util.find_spec("scipy") is None:
        return None
    try:
        import numba
    except ImportError:
        return None
    return numba


def _drop_stale_cache(folder=os.path.dirname(os.path.abspath(__file__))):
    """Numba keys a cached function on its own file only (a documented limit of its cache): a
    loop compiled into a caller in another file (conv_jit_loops' into conv_jit's) would stay
    in the caller's cache, old, after the loop's file changed. So the compiled loops of this
    folder are cached together: their cache in __pycache__ is dropped whenever any file here
    changed, by a digest of the files kept beside it. (Where __pycache__ cannot be written,
    Numba keeps its cache elsewhere and this does nothing.)"""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    cache = os.path.join(folder, "__pycache__")
    stamp = os.path.join(cache, "numba-sources.sha256")
    try:
        with open(stamp) as f:
            if f.read() == digest.hexdigest():
                return
    except OSError:
        pass
    try:
        os.makedirs(cache, exist_ok=True)
        for name in os.listdir(cache):
            if name.endswith((".nbi", ".nbc")):
                with contextlib.suppress(FileNotFoundError):   # another process was first
                    os.remove(os.path.join(cache, name))
        partial = f"{stamp}.{os.getpid()}"
        with open(partial, "w") as f:
            f.write(digest.hexdigest())
        os.replace(partial, stamp)
    except OSError:   # a read-only install
        pass


numba = _import_numba()
available = numba is not None
if available:
    _drop_stale_cache()
INSTALL_HINT = 'needs Numba and SciPy: pip install -e ".[fast]" (or pip install numba scipy)'


def compiled(fn):
    """fn compiled (a sequential loop, called from the parallel ones), or None without Numba."""
    if numba is None:
        return None
    return numba.njit(cache=True, fastmath={"reassoc"}, nogil=True)(fn)


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
        if _loop_blas is not None:   # a BLAS-wide limit may have raised it
            _loop_blas.limit(limits=1)


_loop_blas = None   # threadpoolctl's controller of the BLAS that np.dot calls in compiled loops


def prepare_blas():
    """Make the BLAS that compiled loops call (SciPy's, through scipy.linalg.cython_blas) run
    each call on its caller's thread; once per process (and again in set_threads)."""
    global _loop_blas
    if _loop_blas is not None:
        return
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library)
    package = os.path.dirname(os.path.abspath(scipy.__file__))
    places = (package + os.sep, package + ".libs" + os.sep)   # wheels keep it in scipy.libs/
    _loop_blas = ThreadpoolController().select(user_api="blas")
    _loop_blas.lib_controllers = [lib for lib in _loop_blas.lib_controllers
                                  if os.path.abspath(lib.filepath).startswith(places)]
    _loop_blas.limit(limits=1)   # none found: SciPy shares NumPy's BLAS, left as it is
