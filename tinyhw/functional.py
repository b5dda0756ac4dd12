"""The public functional API, named and laid out as `torch.nn.functional`.

    import tinyhw.functional as F

Activations are NCHW for images, (T, B, D) for sequences; conv weights OIHW;
LSTM gates in i, f, g, o order. Every function here is documented (shapes,
formula, derivation of the backward) in the op module it comes from.
"""
from .ops.activation import log_softmax, relu, sigmoid, softmax, tanh
from .ops.char_cnn import conv1d_max_over_time
from .ops.conv import conv1d, conv2d
from .ops.dropout import dropout
from .ops.elementwise import add, cast, div, exp, log, mul, neg, pow, sub
from .ops.embedding import embedding
from .ops.highway import GATES as HIGHWAY_GATES
from .ops.highway import VARIANTS as HIGHWAY_VARIANTS
from .ops.highway import highway
from .ops.linalg import linear, matmul
from .ops.loss import cross_entropy, nll_loss
from .ops.norm import batch_norm
from .ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .ops.reduction import max, mean, sum
from .ops.rnn import lstm
from .ops.shape import (cat, concatenate, flatten, getitem, permute, reshape, split, squeeze,
                        stack, transpose, unsqueeze)

__all__ = [
    "relu", "sigmoid", "tanh", "softmax", "log_softmax",
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "cast",
    "sum", "mean", "max",
    "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "getitem",
    "cat", "concatenate", "stack", "split",
    "matmul", "linear", "conv1d", "conv2d", "conv1d_max_over_time", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "batch_norm", "dropout", "embedding", "lstm",
    "highway", "HIGHWAY_VARIANTS", "HIGHWAY_GATES",
    "cross_entropy", "nll_loss",
]
