"""Loading a state dict into a module's tensors, with errors that say what went wrong."""
from collections import namedtuple

import numpy as np

from ..backend import device_of, get_array_module, is_cupy_array, to_device
from ..tensor import Tensor

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _as_array(value, key):
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, np.ndarray) or is_cupy_array(value):
        return value
    if isinstance(value, (int, float, np.number)):
        return np.asarray(value)
    raise TypeError(f"load_state_dict: entry {key!r} is a {type(value).__name__}, "
                    "expected an array or a Tensor")


def load_state_dict(owner, targets, state_dict, strict):
    """Copy `state_dict[key]` into `targets[key].data` for every key, checking first.

    Nothing is written unless every check passes, so a failed load leaves the
    module exactly as it was. Values are cast to the target's dtype and moved
    to its device; the target arrays are overwritten in place, which keeps
    every Parameter (and the arrays optimizers may hold) the same object.
    """
    missing = [k for k in targets if k not in state_dict]
    unexpected = [k for k in state_dict if k not in targets]
    arrays = {k: _as_array(state_dict[k], k) for k in targets if k in state_dict}
    mismatched = [f"  {k}: expected shape {tuple(targets[k].shape)} (in the model), "
                  f"got {tuple(a.shape)} (in the state dict)"
                  for k, a in arrays.items() if tuple(a.shape) != tuple(targets[k].shape)]
    problems = []
    if strict and missing:
        problems.append("missing keys: " + ", ".join(missing))
    if strict and unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if mismatched:
        problems.append("shape mismatches:\n" + "\n".join(mismatched))
    if problems:
        raise RuntimeError(f"Error(s) in loading state_dict for {owner}:\n" + "\n".join(problems))
    for key, array in arrays.items():
        target = targets[key]
        array = to_device(array, device_of(target.data))
        xp = get_array_module(target.data)
        # copyto casts and copies, so the module never aliases the caller's arrays.
        xp.copyto(target.data, array.astype(target.dtype, copy=False), casting="unsafe")
    return IncompatibleKeys(missing, unexpected)
