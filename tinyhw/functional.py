"""The public functional API, named and laid out as `torch.nn.functional`.

    import tinyhw.functional as F

Activations are NCHW for images, (T, B, D) for sequences; conv weights OIHW;
LSTM gates in i, f, g, o order. Every function here is documented (shapes,
formula, derivation of the backward) in the op module it comes from.
"""
from .ops.activation import log_softmax, relu, sigmoid, softmax, tanh
from .ops.elementwise import add, cast, div, exp, log, mul, neg, pow, sub
from .ops.linalg import linear, matmul
from .ops.loss import cross_entropy, nll_loss
from .ops.reduction import max, mean, sum
from .ops.shape import (cat, concatenate, flatten, getitem, permute, reshape, split, squeeze,
                        stack, transpose, unsqueeze)
