"""Parameterised layers, named and laid out as `torch.nn`.

    import tinyhw.nn as nn
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

Modules own parameters (and buffers such as BatchNorm's running statistics);
the computation itself is in the stateless ops of `tinyhw.ops` / `tinyhw.functional`.
"""
from .. import init
from .activation import Dropout, ReLU, Sigmoid, Tanh
from .containers import ModuleList, Sequential
from .conv import Conv1d, Conv2d
from .embedding import Embedding
from .highway import Highway
from .linear import Flatten, Identity, Linear
from .module import Module
from .normalization import BatchNorm1d, BatchNorm2d
from .parameter import Parameter
from .recurrent import LSTM

__all__ = ["Module", "Parameter", "ModuleList", "Sequential", "Linear", "Conv1d", "Conv2d",
           "BatchNorm1d", "BatchNorm2d", "Embedding", "LSTM", "Dropout", "ReLU", "Sigmoid",
           "Tanh", "Flatten", "Identity", "Highway", "init"]
