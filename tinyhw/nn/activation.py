"""Stateless layers as modules: `ReLU`, `Sigmoid`, `Tanh`, `Dropout`."""
from ..ops.activation import relu, sigmoid, tanh
from ..ops.dropout import dropout
from .module import Module


class ReLU(Module):
    def forward(self, input):
        return relu(input)


class Sigmoid(Module):
    def forward(self, input):
        return sigmoid(input)


class Tanh(Module):
    def forward(self, input):
        return tanh(input)


class Dropout(Module):
    """Zeroes each element with probability p and scales the rest by 1/(1-p), in training
    only; in eval mode it is the identity (inverted dropout, as torch)."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, input):
        return dropout(input, p=self.p, training=self.training)

    def extra_repr(self):
        return f"p={self.p}"
