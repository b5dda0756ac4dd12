"""`LSTM`: a stack of LSTM layers over whole sequences, laid out as torch.nn.LSTM.

Layer l maps x_t (its input at step t) and (h_{t-1}, c_{t-1}) to
    i, f, g, o = split(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)     (gate order i, f, g, o)
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(c_t)
and its outputs h_1..h_T are the next layer's inputs. The time loop and its
backward through time live in `tinyhw.ops.rnn.lstm`; this module owns the weights.
"""
import math

import numpy as np

from .. import init
from ..backend import get_array_module
from ..checks import as_tensor, check_size
from ..ops.dropout import dropout
from ..ops.rnn import lstm
from ..ops.shape import stack
from ..tensor import Tensor
from .linear import empty_parameter
from .module import Module


class LSTM(Module):
    """Multi-layer LSTM, sequence first.

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int
    bias : bool
        Whether each layer has the two biases b_ih and b_hh (as torch, both are kept).
    dropout : float
        Dropout on the outputs of every layer but the last, in training only (as torch).

    forward(input (T, B, input_size), hx=None or (h_0, c_0) each (num_layers, B, hidden_size))
    -> output (T, B, hidden_size), (h_n, c_n) each (num_layers, B, hidden_size).

    Parameters of layer k: weight_ih_l{k} (4H, D_k), weight_hh_l{k} (4H, H),
    bias_ih_l{k} and bias_hh_l{k} (4H,), all initialised U(-1/sqrt(H), 1/sqrt(H)).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, dropout=0.0):
        super().__init__()
        self.input_size = check_size(input_size, "LSTM: input_size")
        self.hidden_size = check_size(hidden_size, "LSTM: hidden_size")
        self.num_layers = check_size(num_layers, "LSTM: num_layers")
        if not isinstance(dropout, (int, float, np.floating)) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"LSTM: dropout must be in [0, 1], got {dropout}")
        self.bias = bool(bias)
        self.dropout = float(dropout)
        H = self.hidden_size
        for k in range(self.num_layers):
            d_in = self.input_size if k == 0 else H
            self.register_parameter(f"weight_ih_l{k}", empty_parameter(4 * H, d_in))
            self.register_parameter(f"weight_hh_l{k}", empty_parameter(4 * H, H))
            if self.bias:
                self.register_parameter(f"bias_ih_l{k}", empty_parameter(4 * H))
                self.register_parameter(f"bias_hh_l{k}", empty_parameter(4 * H))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def layer_parameters(self, k):
        """(w_ih, w_hh, b_ih, b_hh) of layer k; the biases are None when bias=False."""
        get = self._parameters.get
        return (get(f"weight_ih_l{k}"), get(f"weight_hh_l{k}"),
                get(f"bias_ih_l{k}"), get(f"bias_hh_l{k}"))

    def _initial_state(self, x, hx):
        L, B, H = self.num_layers, x.shape[1], self.hidden_size
        if hx is None:
            xp = get_array_module(x.data)
            return (Tensor(xp.zeros((L, B, H), dtype=x.dtype)),
                    Tensor(xp.zeros((L, B, H), dtype=x.dtype)))
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("LSTM: hx must be a pair (h_0, c_0)")
        h0, c0 = (as_tensor(t, f"LSTM: hx[{i}]") for i, t in enumerate(hx))
        for name, t in (("h_0", h0), ("c_0", c0)):
            if tuple(t.shape) != (L, B, H):
                raise ValueError(f"LSTM: {name} must have shape (num_layers, B, hidden_size) = "
                                 f"{(L, B, H)}, got {tuple(t.shape)}")
        return h0, c0

    def forward(self, input, hx=None):
        x = as_tensor(input, "LSTM: input")
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"LSTM: expected input of shape (T, B, {self.input_size}), "
                             f"got {tuple(x.shape)}")
        h0, c0 = self._initial_state(x, hx)
        h_n, c_n = [], []
        for k in range(self.num_layers):
            x, (h, c) = lstm(x, h0[k], c0[k], *self.layer_parameters(k))
            h_n.append(h)
            c_n.append(c)
            if self.training and self.dropout > 0 and k < self.num_layers - 1:
                x = dropout(x, p=self.dropout, training=True)
        return x, (stack(h_n, 0), stack(c_n, 0))

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.dropout:
            text += f", dropout={self.dropout}"
        return text
