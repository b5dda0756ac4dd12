"""`Optimizer`: parameter groups, per-parameter state, and their (de)serialisation.

An optimizer holds `param_groups`, a list of dicts each with a "params" list and
its hyperparameters ("lr", ...); schedulers change `group["lr"]` between steps.
`state[p]` holds per-parameter buffers (e.g. SGD's momentum buffer) keyed by the
Parameter object. `state_dict()` replaces Parameters by their position across
groups (0, 1, ...), as torch does, so a state saved from one model loads into a
freshly built copy of it.
"""
import copy

import numpy as np

from ..backend import device_of, is_cupy_array, to_device
from ..tensor import Tensor


class Optimizer:
    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Tensors or "
                            "of dicts, got a single Tensor")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a group {"params": [...], overrides}; hyperparameters not given take the defaults."""
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: expected Tensors as params, got "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{type(self).__name__}: can only optimise leaf tensors")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        group["params"] = params
        self.param_groups.append(group)

    def zero_grad(self):
        """Set every parameter's gradient to None (torch's default set_to_none=True)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        raise NotImplementedError

    # ---- state -----------------------------------------------------------
    def _all_params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self):
        """{"state": {index: {name: array}}, "param_groups": [{hyperparameters, "params": [i]}]}.

        Arrays are the live buffers (not copies); serialize.save copies them to disk.
        """
        index = {id(p): i for i, p in enumerate(self._all_params())}
        groups, start = [], 0
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = list(range(start, start + len(g["params"])))
            start += len(g["params"])
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and per-parameter buffers saved by `state_dict()`.

        Group and parameter counts must match; buffers are copied onto each
        parameter's device and dtype. State keys may be ints or their string form
        (JSON turns dict keys into strings).
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state has {len(groups)} "
                             f"parameter groups, the optimizer {len(self.param_groups)}")
        for k, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"{type(self).__name__}.load_state_dict: group {k} has "
                                 f"{len(saved['params'])} parameters in the state, "
                                 f"{len(own['params'])} in the optimizer")
        params = self._all_params()
        self.state = {}
        for key, entries in state_dict["state"].items():
            p = params[int(key)]
            self.state[p] = {name: _like(value, p) for name, value in entries.items()}
        for saved, own in zip(groups, self.param_groups):
            own.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for k, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {k}")
            lines += [f"    {key}: {value}" for key, value in sorted(g.items()) if key != "params"]
        return "\n".join(lines) + "\n)"


def _like(value, p):
    """A copy of an array buffer on p's device with p's dtype; other values unchanged."""
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, np.ndarray) or is_cupy_array(value):
        if tuple(value.shape) != tuple(p.shape):
            raise ValueError(f"optimizer state buffer has shape {tuple(value.shape)}, its "
                             f"parameter {tuple(p.shape)}")
        return to_device(value, device_of(p.data)).astype(p.dtype, copy=True)
    return copy.deepcopy(value)
