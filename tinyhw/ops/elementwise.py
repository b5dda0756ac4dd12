"""Elementwise arithmetic: + - * / neg pow exp log, and dtype casts.

Binary ops broadcast as NumPy does. Their backward returns the gradient at the
broadcast shape; the engine sums it back to each input's shape (unbroadcast).
A Python number on either side becomes a constant of the tensor's dtype.
"""
import numbers

import numpy as np

from ..autograd import Function
from ..backend import get_array_module
from ..checks import as_tensor, check_float, check_same
from ..tensor import Tensor


def _operands(a, b, op):
    """Turn (Tensor|array|number, Tensor|array|number) into two Tensors of one dtype and device."""
    if isinstance(a, numbers.Number) and not isinstance(b, numbers.Number):
        b = as_tensor(b, f"{op}: b")
        a = Tensor(get_array_module(b.data).asarray(a, dtype=b.dtype))
    elif isinstance(b, numbers.Number):
        a = as_tensor(a, f"{op}: a")
        b = Tensor(get_array_module(a.data).asarray(b, dtype=a.dtype))
    else:
        a, b = as_tensor(a, f"{op}: a"), as_tensor(b, f"{op}: b")
    check_same(f"{op}: a", a, **{f"{op}: b": b})
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be "
                         "broadcast together") from None
    return a, b


class Add(Function):
    """y = a + b;  da = dy, db = dy (each summed back to its shape by the engine)."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, gy):
        return gy, gy


class Sub(Function):
    """y = a - b;  da = dy, db = -dy."""

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, gy):
        return gy, (-gy if ctx.needs_input_grad[1] else None)


class Mul(Function):
    """y = a * b;  da = dy * b, db = dy * a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a, b)
        return a * b

    @staticmethod
    def backward(ctx, gy):
        a, b = ctx.saved
        ga = gy * b if ctx.needs_input_grad[0] else None
        gb = gy * a if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    """y = a / b;  da = dy / b, db = -dy * a / b^2 = -da * y."""

    @staticmethod
    def forward(ctx, a, b):
        y = a / b
        ctx.save(b, y)
        return y

    @staticmethod
    def backward(ctx, gy):
        b, y = ctx.saved
        ga = gy / b
        gb = -ga * y if ctx.needs_input_grad[1] else None
        return (ga if ctx.needs_input_grad[0] else None), gb


class Neg(Function):
    """y = -x;  dx = -dy."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, gy):
        return -gy


class PowScalar(Function):
    """y = x^p for a constant p;  dx = dy * p * x^(p-1)."""

    @staticmethod
    def forward(ctx, x, p):
        ctx.save(x)
        ctx.p = p
        return x ** p

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved
        return gy * (ctx.p * x ** (ctx.p - 1))


class Pow(Function):
    """y = a^b (both tensors);  da = dy * b * a^(b-1),  db = dy * y * log(a)  (a > 0 for db)."""

    @staticmethod
    def forward(ctx, a, b):
        y = a ** b
        ctx.save(a, b, y)
        return y

    @staticmethod
    def backward(ctx, gy):
        a, b, y = ctx.saved
        ga = gy * b * a ** (b - 1) if ctx.needs_input_grad[0] else None
        gb = gy * y * ctx.xp.log(a) if ctx.needs_input_grad[1] else None
        return ga, gb


class Exp(Function):
    """y = e^x;  dx = dy * y."""

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.exp(x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved
        return gy * y


class Log(Function):
    """y = ln x;  dx = dy / x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return ctx.xp.log(x)

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved
        return gy / x


class Cast(Function):
    """y = x converted to another float dtype;  dx = dy converted back."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, gy):
        return gy.astype(ctx.dtype)


def add(a, b):
    """Elementwise a + b with broadcasting."""
    return Add.apply(*_operands(a, b, "add"))


def sub(a, b):
    """Elementwise a - b with broadcasting."""
    return Sub.apply(*_operands(a, b, "sub"))


def mul(a, b):
    """Elementwise a * b with broadcasting."""
    return Mul.apply(*_operands(a, b, "mul"))


def div(a, b):
    """Elementwise a / b with broadcasting."""
    return Div.apply(*_operands(a, b, "div"))


def neg(x):
    return Neg.apply(as_tensor(x, "neg: x"))


def pow(x, exponent):
    """x ** exponent; a Python-number exponent is a constant, a Tensor one is differentiated too."""
    x = check_float(as_tensor(x, "pow: x"), "pow: x")
    if isinstance(exponent, numbers.Number):
        return PowScalar.apply(x, p=exponent)
    return Pow.apply(*_operands(x, exponent, "pow"))


def exp(x):
    return Exp.apply(check_float(as_tensor(x, "exp: x"), "exp: x"))


def log(x):
    return Log.apply(check_float(as_tensor(x, "log: x"), "log: x"))


def cast(x, dtype):
    """Convert a tensor to another dtype (differentiable between float dtypes)."""
    x = as_tensor(x, "cast: x")
    dtype = np.dtype(dtype)
    if dtype == x.dtype:
        return x
    if x.requires_grad and dtype.kind != "f":
        raise TypeError(f"cast: cannot differentiate a cast to {dtype}; detach first")
    return Cast.apply(x, dtype=dtype)
