"""`Module`: the base of every layer, holding parameters, buffers and submodules.

Assigning an attribute registers it by type, as in torch:
    self.weight = Parameter(...)   -> a parameter (trained, saved)
    self.block = Linear(...)       -> a submodule (its parameters are ours, prefixed "block.")
    self.register_buffer("running_mean", Tensor(...))  -> a buffer (saved, not trained)
Names are ordered by registration, so `named_parameters()` and `state_dict()`
list a module's own entries first, then each child's, depth first (torch's order).
"""
from collections import OrderedDict

from ..backend import normalize_device, to_device
from ..tensor import Tensor
from .parameter import Parameter
from .state import load_state_dict as _load_state_dict


class Module:
    """Base class of layers and models: subclass, call super().__init__(), define forward."""

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these dicts to exist already.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- registration ----------------------------------------------------
    def _check_init(self, name):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() was called; "
                                 f"call super().__init__() first in {type(self).__name__}")

    def _forget(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        self.__dict__.pop(name, None)

    def __setattr__(self, name, value):
        if isinstance(value, (Parameter, Module)):
            self._check_init(name)
            self._forget(name)
            (self._parameters if isinstance(value, Parameter) else self._modules)[name] = value
        elif "_parameters" in self.__dict__ and name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r} "
                                "(expected a Parameter or None)")
            self._parameters[name] = None
        elif "_buffers" in self.__dict__ and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r} "
                                "(expected a Tensor or None)")
            self._buffers[name] = value
        elif "_modules" in self.__dict__ and name in self._modules and value is None:
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails, i.e. for registered entries.
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, "
                            f"got {type(param).__name__}")
        self._check_init(name)
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name, tensor):
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, "
                            f"got {type(tensor).__name__}")
        self._check_init(name)
        self._forget(name)
        self._buffers[name] = tensor

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module or None, "
                            f"got {type(module).__name__}")
        self._check_init(name)
        self._forget(name)
        self._modules[name] = module

    # ---- traversal -------------------------------------------------------
    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every descendant, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m)
                        for n, m in module._modules.items() if m is not None]
            stack.extend(reversed(children))  # reversed: pop children in registration order

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def _named_members(self, table):
        seen = set()
        for module_name, module in self.named_modules():
            for name, value in getattr(module, table).items():
                if value is None or id(value) in seen:
                    continue  # a shared tensor is listed once, under its first name
                seen.add(id(value))
                yield (f"{module_name}.{name}" if module_name else name), value

    def named_parameters(self):
        return self._named_members("_parameters")

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        return self._named_members("_buffers")

    def buffers(self):
        return (b for _, b in self.named_buffers())

    def apply(self, fn):
        """Call fn(module) on every descendant, children first, then self; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---- modes, gradients, devices, dtypes -------------------------------
    def train(self, mode=True):
        """Training mode (batch statistics in BatchNorm, active Dropout) on self and children."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        """Drop every parameter's gradient (grad = None), as torch's set_to_none default."""
        for p in self.parameters():
            p.grad = None

    def _convert(self, fn, floating_only):
        """Apply fn to the array of every parameter, buffer and gradient, keeping the Tensors."""
        tensors = list(self.parameters()) + list(self.buffers())
        for t in tensors:
            if floating_only and t.dtype.kind != "f":
                continue  # e.g. num_batches_tracked stays an integer
            t.data = fn(t.data)
            if t.grad is not None:
                t.grad = fn(t.grad)
        return self

    def to(self, device):
        """Move all parameters and buffers to 'cpu' or 'gpu' in place (same Parameter objects)."""
        device = normalize_device(device)
        return self._convert(lambda a: to_device(a, device), floating_only=False)

    def cpu(self):
        return self.to("cpu")

    def astype(self, dtype):
        """Convert floating parameters and buffers to `dtype` in place (integer buffers stay)."""
        return self._convert(lambda a: a.astype(dtype), floating_only=True)

    def double(self):
        return self.astype("float64")

    def float(self):
        return self.astype("float32")

    # ---- state -----------------------------------------------------------
    def state_dict(self):
        """OrderedDict name -> array (the live arrays, not copies) of parameters and buffers."""
        state = OrderedDict()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for table in (module._parameters, module._buffers):
                for name, t in table.items():
                    if t is not None:
                        state[prefix + name] = t.data
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from `state_dict` into this module's parameters and buffers, in place.

        Raises RuntimeError listing missing keys, unexpected keys (both only when
        `strict`) and shape mismatches (always). Returns (missing_keys, unexpected_keys).
        """
        targets = OrderedDict()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for table in (module._parameters, module._buffers):
                for name, t in table.items():
                    if t is not None:
                        targets[prefix + name] = t
        return _load_state_dict(type(self).__name__, targets, state_dict, strict)

    # ---- printing --------------------------------------------------------
    def extra_repr(self):
        """Constructor arguments shown inside the parentheses of repr()."""
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ")
                 for name, m in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        if self.extra_repr():  # with children, torch puts the arguments on a line of their own
            lines.insert(0, self.extra_repr())
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"
