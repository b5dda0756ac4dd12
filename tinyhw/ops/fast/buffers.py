"""Reusable work buffers for the temporaries of the fast routes and of pooling."""
import math
import threading

import numpy as np

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
