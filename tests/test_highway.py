"""tinyhw.ops.highway.highway: gradient checks, closed forms for the six variants, errors."""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyhw import Tensor
from tinyhw.functional import HIGHWAY_GATES, HIGHWAY_VARIANTS as VARIANTS, highway
from tinyhw.gradcheck import gradcheck

from .strategies import arrays, gate_values, shapes

USES_T = {v for v, (uses_t, _) in HIGHWAY_GATES.items() if uses_t}
USES_C = {v for v, (_, uses_c) in HIGHWAY_GATES.items() if uses_c}

# y as a function of H, x, T, C; and (dH, dx, dT, dC) for a cotangent dy, per variant.
CLOSED_FORMS = {
    "plain": (lambda H, x, T, C: H,
              lambda dy, H, x, T, C: (dy, None, None, None)),
    "residual": (lambda H, x, T, C: H + x,
                 lambda dy, H, x, T, C: (dy, dy, None, None)),
    "t_only": (lambda H, x, T, C: H * T + x,
               lambda dy, H, x, T, C: (dy * T, dy, dy * H, None)),
    "c_only": (lambda H, x, T, C: H + x * C,
               lambda dy, H, x, T, C: (dy, dy * C, None, dy * x)),
    "coupled": (lambda H, x, T, C: H * T + x * (1 - T),
                lambda dy, H, x, T, C: (dy * T, dy * (1 - T), dy * (H - x), None)),
    "full": (lambda H, x, T, C: H * T + x * C,
             lambda dy, H, x, T, C: (dy * T, dy * C, dy * H, dy * x)),
}


@st.composite
def highway_inputs(draw, variant):
    """(h, x, t, c) of one drawn shape, with None for the gates `variant` does not use."""
    shape = draw(shapes(max_dims=3))
    t = draw(gate_values(shape)) if variant in USES_T else None
    c = draw(gate_values(shape)) if variant in USES_C else None
    return draw(arrays(shape)), draw(arrays(shape)), t, c


def _call(variant):
    return lambda h, x, t, c: highway(h, x, t, c, variant=variant)


def _random(rng, variant, shape=(2, 3, 4)):
    h, x = rng.standard_normal(shape), rng.standard_normal(shape)
    t = rng.uniform(0.05, 0.95, shape) if variant in USES_T else None
    c = rng.uniform(0.05, 0.95, shape) if variant in USES_C else None
    return h, x, t, c


# ---- gradient checks --------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@given(data=st.data())
def test_gradcheck(variant, data):
    gradcheck(_call(variant), data.draw(highway_inputs(variant)), n_directions=3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_every_element(rng, variant):
    gradcheck(_call(variant), _random(rng, variant, shape=(2, 3)), mode="full")


# ---- closed forms -------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_and_backward_closed_forms(rng, variant):
    forward, backward = CLOSED_FORMS[variant]
    arrays_ = _random(rng, variant)
    leaves = [None if a is None else Tensor(a.copy(), requires_grad=True) for a in arrays_]
    y = highway(*leaves, variant=variant)
    np.testing.assert_allclose(y.data, forward(*arrays_), rtol=1e-14, atol=1e-14)
    dy = rng.standard_normal(y.shape)
    y.backward(dy)
    for leaf, expected in zip(leaves, backward(dy, *arrays_)):
        if expected is None:
            assert leaf is None or leaf.grad is None
        else:
            np.testing.assert_allclose(leaf.grad, expected, rtol=1e-14, atol=1e-14)


def test_coupled_is_the_full_variant_with_c_equal_one_minus_t(rng):
    h, x, t, _ = _random(rng, "coupled")
    np.testing.assert_allclose(highway(h, x, t, variant="coupled").data,
                               highway(h, x, t, 1 - t, variant="full").data, atol=1e-14)


def test_default_variant_is_coupled(rng):
    h, x, t, _ = _random(rng, "coupled")
    np.testing.assert_array_equal(highway(h, x, t).data, highway(h, x, t, variant="coupled").data)


def test_float32_stays_float32(rng):
    h, x, t, c = (a.astype(np.float32) for a in _random(rng, "full"))
    assert highway(h, x, t, c, variant="full").dtype == np.float32


def test_plain_output_is_a_fresh_array_and_x_may_be_none(rng):
    h, x, _, _ = _random(rng, "plain")
    y = highway(h, None, variant="plain")
    np.testing.assert_array_equal(y.data, h)
    assert not np.shares_memory(y.data, h)
    np.testing.assert_array_equal(highway(h, x, variant="plain").data, h)


def test_gates_only_need_gradients_where_asked(rng):
    # Constant gates (plain arrays) still give the right dH and dx.
    h, x, t, c = _random(rng, "full")
    th, tx = Tensor(h, requires_grad=True), Tensor(x, requires_grad=True)
    y = highway(th, tx, t, c, variant="full")
    dy = rng.standard_normal(y.shape)
    y.backward(dy)
    np.testing.assert_allclose(th.grad, dy * t)
    np.testing.assert_allclose(tx.grad, dy * c)


# ---- argument errors ----------------------------------------------------------------------------
def test_unknown_variant_lists_the_six(rng):
    h, x, t, _ = _random(rng, "coupled")
    message = ("highway: variant: expected one of plain, residual, t_only, c_only, coupled, full; "
               "got 'gated'")
    with pytest.raises(ValueError, match=re.escape(message)):
        highway(h, x, t, variant="gated")


@pytest.mark.parametrize("variant", sorted(USES_T))
def test_missing_transform_gate(rng, variant):
    h, x, _, c = _random(rng, variant)
    message = f"highway: t: variant '{variant}' needs the transform gate t"
    with pytest.raises(ValueError, match=message):
        highway(h, x, None, c, variant=variant)


@pytest.mark.parametrize("variant", sorted(USES_C))
def test_missing_carry_gate(rng, variant):
    h, x, t, _ = _random(rng, variant)
    with pytest.raises(ValueError, match=f"highway: c: variant '{variant}' needs the carry gate c"):
        highway(h, x, t, None, variant=variant)


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - USES_T))
def test_unused_transform_gate(rng, variant):
    h, x, _, c = _random(rng, variant)
    with pytest.raises(ValueError, match=re.escape(f"highway: t: variant '{variant}' does not use "
                                                   "the transform gate t; pass t=None")):
        highway(h, x, np.full(h.shape, 0.5), c, variant=variant)


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - USES_C))
def test_unused_carry_gate(rng, variant):
    h, x, t, _ = _random(rng, variant)
    with pytest.raises(ValueError, match=re.escape(f"highway: c: variant '{variant}' does not use "
                                                   "the carry gate c; pass c=None")):
        highway(h, x, t, np.full(h.shape, 0.5), variant=variant)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "plain"])
def test_x_required(rng, variant):
    h, _, t, c = _random(rng, variant)
    with pytest.raises(ValueError, match=f"highway: x: variant '{variant}' needs the input x"):
        highway(h, None, t, c, variant=variant)


@pytest.mark.parametrize("position, name", [(1, "x"), (2, "t"), (3, "c")])
def test_shape_mismatch(rng, position, name):
    args = list(_random(rng, "full"))
    args[position] = args[position][..., :3]
    message = f"highway: {name}: expected shape (2, 3, 4) (the shape of h), got (2, 3, 3)"
    with pytest.raises(ValueError, match=re.escape(message)):
        highway(*args, variant="full")


@pytest.mark.parametrize("position, name", [(0, "h"), (1, "x"), (2, "t"), (3, "c")])
def test_integer_input(rng, position, name):
    args = list(_random(rng, "full"))
    args[position] = np.ones(args[position].shape, dtype=np.int64)
    with pytest.raises(TypeError, match=f"highway: {name}: expected a floating-point tensor"):
        highway(*args, variant="full")


def test_mixed_dtypes(rng):
    h, x, t, _ = _random(rng, "coupled")
    message = "highway: t: dtype float32 differs from highway: h's dtype"
    with pytest.raises(TypeError, match=message):
        highway(h, x, t.astype(np.float32), variant="coupled")


def test_not_a_tensor(rng):
    h, x, t, _ = _random(rng, "coupled")
    with pytest.raises(TypeError, match="highway: x: expected a Tensor, got list"):
        highway(h, x.tolist(), t, variant="coupled")


def test_mixed_devices(rng, monkeypatch):
    # No GPU needed: pretend c lives on the GPU by patching the device lookup the checks use.
    import tinyhw.checks as checks
    h, x, t, c = _random(rng, "full")
    monkeypatch.setattr(checks, "device_of", lambda a: "gpu" if a is c else "cpu")
    with pytest.raises(ValueError, match="highway: c: on device 'gpu', but highway: h is on 'cpu'"):
        highway(h, x, t, c, variant="full")
