"""`Parameter`: a Tensor that a Module owns and an optimizer updates."""
from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf Tensor with requires_grad=True by default.

    Assigning a Parameter to a Module attribute registers it, so that
    `parameters()`, `state_dict()` and optimizers find it.
    """

    __slots__ = ()  # Tensor uses __slots__; keep Parameters just as small

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
