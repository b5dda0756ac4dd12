"""Array-module selection: numpy on the CPU, cupy on the GPU.

The device belongs to the data. Every op asks `get_array_module(*arrays)` which
module its inputs live in and uses that module (`xp`) for all of its work, so
the same code runs on both. cupy is imported lazily and is optional: importing
tinyhw never imports it, and a machine with cupy installed but no usable GPU
simply reports `gpu_available() == False`.
"""
import ctypes
import ctypes.util

import numpy as np

DEFAULT_DTYPE = np.float32
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

_cupy = None          # the cupy module once it has been imported successfully
_cupyx = None         # and its companion cupyx (scatter_add, for CuPy without ufunc.at)
_cupy_checked = False  # whether we already tried (so a failed import is not retried)


def _import_cupy():
    """Return the cupy module, or None when it is not installed or not usable.

    Imported here, not at the top of the file (tests/test_imports.py lists the few imports
    inside functions that tinyhw allows): cupy is optional, and importing it costs seconds and
    initialises CUDA, so it happens on first use of a GPU array or of `gpu_available()`, never
    on `import tinyhw`."""
    global _cupy, _cupyx, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy  # noqa: F401  (optional dependency)
            import cupyx
            _cupy, _cupyx = cupy, cupyx
        except Exception:  # ImportError, or a broken CUDA install raising at import
            _cupy = _cupyx = None
    return _cupy


def import_cupyx():
    """The cupyx module (imported with cupy by `_import_cupy`), or None without cupy."""
    _import_cupy()
    return _cupyx


def gpu_available():
    """True when cupy imports and can see at least one CUDA device."""
    cupy = _import_cupy()
    if cupy is None:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:
        return False


def is_cupy_array(a):
    # Checked by module name so that numpy-only machines never import cupy.
    return type(a).__module__.split(".")[0] == "cupy"


def get_array_module(*arrays):
    """cupy when any argument is a cupy array, else numpy."""
    for a in arrays:
        if a is not None and is_cupy_array(a):
            return _import_cupy()
    return np


def device_of(a):
    return "gpu" if is_cupy_array(a) else "cpu"


def normalize_device(device):
    """Map the accepted spellings ('cpu', 'gpu', 'cuda', 'auto') to 'cpu' or 'gpu'."""
    if device in ("cpu", "gpu"):
        return device
    if device == "cuda":
        return "gpu"
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    raise ValueError(f"device: expected 'cpu', 'gpu', 'cuda' or 'auto', got {device!r}")


def to_device(a, device):
    """Move an array to 'cpu' (numpy) or 'gpu' (cupy); a no-op when already there."""
    device = normalize_device(device)
    if device == "cpu":
        return a.get() if is_cupy_array(a) else a
    if not gpu_available():
        raise RuntimeError("device 'gpu' requested but no usable GPU (cupy missing or no CUDA device)")
    return _import_cupy().asarray(a)


def keep_freed_memory():
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS.

    NumPy allocates every large temporary afresh; by default glibc serves blocks above
    128 KiB with mmap and unmaps them on free, so each new activation-sized array costs
    page faults (timings in bench/NOTES.md). Raising the mmap and trim thresholds makes the
    heap recycle those blocks. Call it from entry points (training, benchmarks), not on
    import: it changes the process's allocator.
    A no-op returning False where glibc's mallopt is unavailable.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = mallopt(m_mmap_threshold, 32 * 1024 * 1024)          # glibc's maximum on 64-bit
    ok &= mallopt(m_trim_threshold, 1024 * 1024 * 1024)
    return bool(ok)
