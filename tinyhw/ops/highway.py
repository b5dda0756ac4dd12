"""The fused output combination of a highway layer, for all six variants.

A highway layer computes a transform H = H(x), a transform gate T = T(x) and a
carry gate C = C(x) (gates in (0, 1), usually sigmoids) and combines them with
its input x. Greff et al. (2017) compare these combinations:

    plain      y = H                        dH = dy
    residual   y = H + x                    dH = dy,      dx = dy
    t_only     y = H T + x                  dH = dy T,    dx = dy,           dT = dy H
    c_only     y = H + x C                  dH = dy,      dx = dy C,         dC = dy x
    coupled    y = H T + x (1 - T)          dH = dy T,    dx = dy (1 - T),   dT = dy (H - x)
    full       y = H T + x C                dH = dy T,    dx = dy C,         dT = dy H,  dC = dy x

Each gradient follows from dL = <dy, dy/dH dH + ...> of an elementwise product:
the derivative of a product u v with respect to u is v. For `coupled`,
y = x + T (H - x), so dT = dy (H - x) and dx = dy (1 - T) = dy - dH.

All four arrays have one shape (any shape); every product is elementwise. The
combination is one Function per call, so the graph holds one node per layer
instead of three or four, and backward keeps only what its formulas read.
"""
from ..autograd import Function
from ..checks import as_tensor, check_float, check_same, check_shape

# Which gates each variant reads: (transform gate T, carry gate C). The one table of them:
# tinyhw.nn.Highway builds the gates it says, and the tests draw inputs from it.
GATES = {
    "plain": (False, False),
    "residual": (False, False),
    "t_only": (True, False),
    "c_only": (False, True),
    "coupled": (True, False),
    "full": (True, True),
}
VARIANTS = tuple(GATES)


def _forward(ctx, h, x, t, c, variant):
    """y for `variant`; saves what that variant's backward reads."""
    xp = ctx.xp
    if variant == "plain":
        return xp.array(h, copy=True)        # a fresh array: the output never aliases an input
    if variant == "residual":
        return h + x
    if variant == "t_only":
        ctx.save(h, t)
        y = h * t
        y += x
        return y
    if variant == "c_only":
        ctx.save(x, c)
        y = x * c
        y += h
        return y
    if variant == "coupled":
        diff = h - x                         # y = x + T (H - x); backward reads T and H - x
        ctx.save(t, diff)
        y = diff * t
        y += x
        return y
    ctx.save(h, x, t, c)                     # full
    y = h * t
    y += x * c
    return y


def _backward(ctx, gy, variant):
    """(dH, dx, dT, dC) for `variant`; None where the input needs no gradient or is unused."""
    need_h, need_x, need_t, need_c = ctx.needs_input_grad
    if variant == "plain":
        return gy, None, None, None
    if variant == "residual":
        return gy, gy, None, None
    if variant == "t_only":
        h, t = ctx.saved
        return (gy * t if need_h else None), gy, (gy * h if need_t else None), None
    if variant == "c_only":
        x, c = ctx.saved
        return gy, (gy * c if need_x else None), None, (gy * x if need_c else None)
    if variant == "coupled":
        t, diff = ctx.saved
        dh = gy * t
        return ((dh if need_h else None), (gy - dh if need_x else None),
                (gy * diff if need_t else None), None)
    h, x, t, c = ctx.saved                   # full
    return ((gy * t if need_h else None), (gy * c if need_x else None),
            (gy * h if need_t else None), (gy * x if need_c else None))


class Highway(Function):
    """Inputs (H, x, T, C), T and C None where the variant has no such gate; param `variant`."""

    @staticmethod
    def forward(ctx, h, x, t, c, variant):
        ctx.variant = variant
        return _forward(ctx, h, x, t, c, variant)

    @staticmethod
    def backward(ctx, gy):
        return _backward(ctx, gy, ctx.variant)


def highway(h, x, t=None, c=None, variant="coupled"):
    """Combine a highway layer's transform, input and gates: y = H T + x C in its six forms.

    Parameters
    ----------
    h : Tensor (*)
        The transform H(x).
    x : Tensor (*)
        The layer input (carried). May be None for `variant="plain"`, which ignores it.
    t : Tensor (*) or None
        The transform gate T(x); required by t_only, coupled and full, else must be None.
    c : Tensor (*) or None
        The carry gate C(x); required by c_only and full, else must be None.
    variant : str
        One of VARIANTS:
        plain y = H;  residual y = H + x;  t_only y = H T + x;  c_only y = H + x C;
        coupled y = H T + x (1 - T);  full y = H T + x C.

    Returns
    -------
    y : Tensor (*), the shape of h.

    Backward (see the module docstring for all six): for coupled, y = x + T (H - x) gives
    dH = dy T,  dx = dy (1 - T),  dT = dy (H - x); for full, dH = dy T, dx = dy C,
    dT = dy H, dC = dy x. Products are elementwise; all inputs share one shape.
    """
    if variant not in VARIANTS:
        raise ValueError(f"highway: variant: expected one of {', '.join(VARIANTS)}; "
                         f"got {variant!r}")
    h = check_float(as_tensor(h, "highway: h"), "highway: h")
    if x is None and variant != "plain":
        raise ValueError(f"highway: x: variant {variant!r} needs the input x, got None")
    x = _same_shape(x, "x", h)
    uses_t, uses_c = GATES[variant]
    t = _gate(t, "t", "transform gate", uses_t, variant, h)
    c = _gate(c, "c", "carry gate", uses_c, variant, h)
    check_same("highway: h", h, **{"highway: x": x, "highway: t": t, "highway: c": c})
    return Highway.apply(h, x, t, c, variant=variant)


def _same_shape(value, name, h):
    """None, or `value` as a float Tensor of h's shape."""
    if value is None:
        return None
    value = check_float(as_tensor(value, f"highway: {name}"), f"highway: {name}")
    return check_shape(value, f"highway: {name}", h.shape, "(the shape of h)")


def _gate(value, name, what, used, variant, h):
    if used and value is None:
        raise ValueError(f"highway: {name}: variant {variant!r} needs the {what} {name}, got None")
    if not used and value is not None:
        raise ValueError(f"highway: {name}: variant {variant!r} does not use the {what} {name}; "
                         f"pass {name}=None")
    return _same_shape(value, name, h)
