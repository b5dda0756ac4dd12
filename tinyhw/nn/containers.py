"""Containers: `Sequential` (chains modules) and `ModuleList` (holds them, indexable)."""
from collections import OrderedDict

from .module import Module


def _index(i, n, owner):
    if not -n <= i < n:
        raise IndexError(f"{owner}: index {i} is out of range for {n} modules")
    return i % n


class ModuleList(Module):
    """A list of modules registered as children named "0", "1", ...; no forward of its own."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        values = list(self._modules.values())
        if isinstance(i, slice):
            return type(self)(values[i])
        return values[_index(i, len(values), type(self).__name__)]

    def __setitem__(self, i, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: expected a Module, "
                            f"got {type(module).__name__}")
        key = list(self._modules)[_index(i, len(self), type(self).__name__)]
        self._modules[key] = module  # direct assignment keeps the key's position

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self


class Sequential(ModuleList):
    """Modules applied in order: Sequential(a, b)(x) == b(a(x)).

    Also accepts a single OrderedDict name -> module, whose names are kept.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            self.extend(modules)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(OrderedDict(list(self._modules.items())[i]))
        return super().__getitem__(i)

    def forward(self, input):
        for module in self:
            input = module(input)
        return input
