"""Argument validation shared by the op wrappers.

Every public op validates its arguments before touching the data, so that bad
input fails with a `TypeError`/`ValueError` naming the argument, what was given
and what was expected, instead of a NumPy traceback from deep inside.
"""
import numpy as np

from .backend import FLOAT_DTYPES, device_of, is_cupy_array
from .tensor import Tensor


def as_tensor(x, name):
    """Accept a Tensor, or wrap a numpy/cupy array as a constant Tensor."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray) or is_cupy_array(x):
        return Tensor(x)
    raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")


def check_float(t, name):
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating-point tensor (float16, float32 or float64), "
                        f"got dtype {t.dtype}")
    return t


def check_int(t, name):
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer tensor (e.g. int64), got dtype {t.dtype}")
    return t


def check_ndim(t, name, ndims, layout=""):
    """`ndims` is an int or a tuple of allowed ranks; `layout` (e.g. '(N, C, H, W)') goes in the message."""
    allowed = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if t.ndim not in allowed:
        ranks = " or ".join(f"{n}-D" for n in allowed)
        where = f" {layout}" if layout else ""
        raise ValueError(f"{name}: expected a {ranks} tensor{where}, got shape {tuple(t.shape)}")
    return t


def check_shape(t, name, expected, layout=""):
    """Raise unless t.shape == expected (entries None match anything)."""
    expected = tuple(expected)
    ok = t.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, t.shape))
    if not ok:
        shown = tuple("*" if e is None else e for e in expected)
        where = f" {layout}" if layout else ""
        raise ValueError(f"{name}: expected shape {shown}{where}, got {tuple(t.shape)}")
    return t


def check_same(reference_name, reference, **others):
    """Raise unless every tensor in `others` has the device and dtype of `reference`."""
    for name, t in others.items():
        if t is None:
            continue
        if device_of(t.data) != device_of(reference.data):
            raise ValueError(f"{name}: on device {device_of(t.data)!r}, but {reference_name} is on "
                             f"{device_of(reference.data)!r}; move both with .to(device)")
        if t.dtype != reference.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from {reference_name}'s dtype "
                            f"{reference.dtype}; convert with .astype()")


def check_size(value, name, minimum=1):
    """A layer size (features, channels, kernel side...): an int >= `minimum`, returned as a
    Python int. Floats are refused rather than truncated: Linear(2.5, 3) is a mistake."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name}: must be {what}, got {value}")
    return int(value)


def pair(value, name):
    """An int or a pair of ints -> a pair of ints (torch's `_pair`)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")


def normalize_dim(dim, ndim, name="dim"):
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{name}: expected an int, got {dim!r}")
    if not -ndim <= dim < max(ndim, 1):
        raise ValueError(f"{name}: {dim} is out of range for a {ndim}-D tensor")
    return int(dim) % max(ndim, 1)
