"""batch_norm: the reference route against NumPy closed forms and finite differences, every
fast route against the reference, torch cross-checks, argument errors.

Routes are forced with `tinyhw.ops.fast.use` (see tinyhw/ops/norm.py): "rows" (one-pass
statistics, or the centred form when some |mu| is large), "rows-centred" (always centred)
"jit" (compiled loops, with Numba: tests/routes.py) and "reference" (the route of CuPy and
float16). bn_block_bytes=64 cuts the tiny shapes that
Hypothesis draws into several blocks.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw
from tinyhw.gradcheck import gradcheck
from tinyhw.ops import fast, norm
from tinyhw.ops.fast import jit, norm_rows
from tinyhw.ops.norm import batch_norm
from tests.routes import jit_test, params
from tests.strategies import arrays, batch_norm_shapes

EPS = 1e-5
FAST_ROUTES = [r for r in norm.ROUTES if r != "reference"]
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}   # relative, to the result's largest entry


def closed_form(x, rm, rv, w, b, training, momentum=0.1, eps=EPS):
    """NumPy closed form: output and the updated running statistics (float64)."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    if training:
        mu, var = x.mean(axis=axes), x.var(axis=axes)
        rm = (1 - momentum) * rm + momentum * mu
        rv = (1 - momentum) * rv + momentum * var * m / (m - 1)
    else:
        mu, var = rm, rv
    y = (x - mu.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    y = y * (1.0 if w is None else w.reshape(shape)) + (0.0 if b is None else b.reshape(shape))
    return y, rm, rv


def closed_form_grads(x, dy, w, training, rm=None, rv=None, eps=EPS):
    """dx, dgamma, dbeta from the closed forms in the module docstring."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    mu, var = (x.mean(axis=axes), x.var(axis=axes)) if training else (rm, rv)
    r = 1 / np.sqrt(var + eps)
    x_hat = (x - mu.reshape(shape)) * r.reshape(shape)
    gamma = np.ones(x.shape[1]) if w is None else w
    g = dy * gamma.reshape(shape)
    if training:
        dx = r.reshape(shape) / m * (m * g - g.sum(axis=axes).reshape(shape)
                                     - x_hat * (g * x_hat).sum(axis=axes).reshape(shape))
    else:
        dx = g * r.reshape(shape)
    return dx, (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)


@st.composite
def bn_case(draw):
    """Input, optional weight and bias, positive running statistics and the mode."""
    shape = draw(batch_norm_shapes())
    c = shape[1]
    return dict(x=draw(arrays(shape)),
                w=draw(st.one_of(st.none(), arrays((c,), 0.5, 2.0))),
                b=draw(st.one_of(st.none(), arrays((c,)))),
                rm=draw(arrays((c,))), rv=draw(arrays((c,), 0.5, 2.0)),
                training=draw(st.booleans()))


def run(route, case, dy, needs=(True, True, True), momentum=0.1, block_bytes=None):
    """Output, updated running statistics and the gradients of (x, w, b) (None where not
    needed) on a forced route."""
    leaves = [None if a is None else tinyhw.Tensor(a, requires_grad=n)
              for a, n in zip((case["x"], case["w"], case["b"]), needs)]
    rm, rv = tinyhw.Tensor(case["rm"].copy()), tinyhw.Tensor(case["rv"].copy())
    with fast.use(batch_norm=route, bn_block_bytes=block_bytes):
        y = batch_norm(leaves[0], rm, rv, leaves[1], leaves[2], training=case["training"],
                       momentum=momentum)
        if y.requires_grad:
            y.backward(dy)
    return [y.data, rm.data, rv.data] + [None if t is None else t.grad for t in leaves]


@given(bn_case())
def test_reference_gradcheck(case):
    rm, rv, training = case["rm"], case["rv"], case["training"]

    def f(x, w, b):
        # Fresh copies: training updates the running statistics in place on every call.
        return batch_norm(x, tinyhw.Tensor(rm.copy()), tinyhw.Tensor(rv.copy()), w, b,
                          training=training)

    with fast.use(batch_norm="reference"):
        assert gradcheck(f, [case["x"], case["w"], case["b"]])


@given(bn_case(), st.floats(0.0, 1.0), st.data())
def test_reference_matches_closed_form(case, momentum, data):
    x, w, b, training = case["x"], case["w"], case["b"], case["training"]
    dy = data.draw(arrays(x.shape))
    case = dict(case, w=np.ones(x.shape[1]) if w is None else w,
                b=np.zeros(x.shape[1]) if b is None else b)
    y, rm, rv, dx, dw, db = run("reference", case, dy, momentum=momentum)
    y_ref, rm_ref, rv_ref = closed_form(x, case["rm"], case["rv"], w, b, training, momentum)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rm, rm_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rv, rv_ref, rtol=1e-12, atol=1e-12)
    grads = closed_form_grads(x, dy, w, training, case["rm"], case["rv"])
    for got, want in zip((dx, dw, db), grads):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)


@st.composite
def route_case(draw):
    """A bn_case in float64 or float32, shifted by a mean that the one-pass variance handles
    (0) or not (50: then "rows" falls back to the centred form), the block size,
    which of (x, w, b) need a gradient, and the momentum."""
    case, dtype = draw(bn_case()), draw(st.sampled_from([np.float64, np.float32]))
    case["x"] = case["x"] + draw(st.sampled_from([0.0, 50.0]))
    for name in ("x", "w", "b", "rm", "rv"):
        case[name] = None if case[name] is None else case[name].astype(dtype)
    return dict(case=case, dtype=dtype,
                block_bytes=draw(st.sampled_from([64, None])),
                needs=draw(st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(any)),
                momentum=draw(st.floats(0.0, 1.0)),
                dy=draw(arrays(case["x"].shape)).astype(dtype))


def condition(case):
    """1 + max |mu| / sqrt(var + eps) over the channels: rounding x to the data dtype costs
    x - mu, and so every result, about this many ulps."""
    x = case["x"].astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    mean, var = (x.mean(axis=axes), x.var(axis=axes)) if case["training"] else \
        (case["rm"].astype(np.float64), case["rv"].astype(np.float64))
    return 1.0 + np.max(np.abs(mean) / np.sqrt(var + EPS))


@pytest.mark.parametrize("route", params(FAST_ROUTES))
@given(drawn=route_case())
def test_routes_match_reference(route, drawn):
    """Output, running statistics and every gradient, in training and evaluation mode, equal
    up to the order of sums (relative to the largest entry, times the conditioning of x - mu)."""
    case, dtype, dy, needs, momentum = (drawn[k] for k in ("case", "dtype", "dy", "needs",
                                                           "momentum"))
    want = run("reference", case, dy, needs, momentum)
    got = run(route, case, dy, needs, momentum, drawn["block_bytes"])
    tol = TOLERANCE[dtype] * condition(case)
    for g, r in zip(got, want):
        if r is None:
            assert g is None
            continue
        assert g.dtype == r.dtype == dtype
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * max(1.0, np.abs(r).max()))


@pytest.mark.parametrize("route", params(norm.ROUTES))
def test_eval_mode_uses_running_stats_and_leaves_them_alone(rng, route):
    x = rng.normal(3.0, 2.0, size=(5, 4, 3, 3))
    rm, rv = rng.normal(size=4), rng.uniform(0.5, 2.0, size=4)
    rm_t, rv_t = tinyhw.Tensor(rm.copy()), tinyhw.Tensor(rv.copy())
    with fast.use(batch_norm=route):
        y = batch_norm(x, rm_t, rv_t, training=False)
    expected = (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + EPS)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12)
    np.testing.assert_array_equal(rm_t.data, rm)
    np.testing.assert_array_equal(rv_t.data, rv)


def test_training_output_is_normalised_and_stats_are_optional(rng):
    x = rng.normal(5.0, 3.0, size=(6, 3, 4, 4))
    y = batch_norm(x, None, None, training=True).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1.0 / (1.0 + EPS / x.var(axis=(0, 2, 3))))


def test_running_stats_update_under_no_grad(rng):
    x = rng.normal(size=(4, 2, 3))
    rm, rv = tinyhw.Tensor(np.zeros(2)), tinyhw.Tensor(np.ones(2))
    with tinyhw.no_grad():
        batch_norm(x, rm, rv, training=True, momentum=0.5)
    np.testing.assert_allclose(rm.data, 0.5 * x.mean(axis=(0, 2)))
    np.testing.assert_allclose(rv.data, 0.5 + 0.5 * x.var(axis=(0, 2), ddof=1))


@pytest.mark.parametrize("route", params(norm.ROUTES))
def test_only_parameter_gradients_when_input_is_constant(rng, route):
    x, dy = rng.normal(size=(3, 2, 5)), rng.normal(size=(3, 2, 5))
    w = tinyhw.Tensor(np.ones(2), requires_grad=True)
    b = tinyhw.Tensor(np.zeros(2), requires_grad=True)
    with fast.use(batch_norm=route):
        batch_norm(tinyhw.Tensor(x), None, None, w, b, training=True).backward(dy)
    _, dgamma, dbeta = closed_form_grads(x, dy, None, True)
    np.testing.assert_allclose(w.grad, dgamma, rtol=1e-10)
    np.testing.assert_allclose(b.grad, dbeta, rtol=1e-10)


def test_choose_route():
    compiled = "jit" if jit.available else "rows"   # the compiled loops whenever Numba is there
    assert norm.choose_route(np, np.dtype(np.float32)) == compiled
    assert norm.choose_route(np, np.dtype(np.float64)) == compiled
    assert norm.choose_route(np, np.dtype(np.float16)) == "reference"  # sums need float32


@pytest.mark.parametrize("route", params(FAST_ROUTES))
def test_fast_routes_refuse_float16(route):
    x = tinyhw.Tensor(np.ones((4, 3), np.float16))
    with fast.use(batch_norm=route), pytest.raises(
            ValueError, match=f"batch_norm: route '{route}' runs on NumPy float32 and "
                              "float64 arrays only, got numpy float16"):
        batch_norm(x, None, None, training=True)


@pytest.mark.skipif(jit.available, reason="Numba is installed")
def test_jit_route_without_numba_names_the_extra():
    x = tinyhw.Tensor(np.ones((4, 3)))
    with fast.use(batch_norm="jit"), pytest.raises(
            ValueError, match=r"batch_norm: route 'jit' needs Numba and SciPy: pip install -e \"\.\[fast\]\""):
        batch_norm(x, None, None, training=True)


@pytest.mark.parametrize("training", [True, False])
def test_float16_takes_the_reference_and_keeps_its_dtype(rng, training):
    x = rng.normal(1.0, 2.0, size=(8, 3, 4, 4))
    dy = rng.normal(size=x.shape)
    rm, rv = rng.normal(size=3), rng.uniform(0.5, 2.0, size=3)
    xt = tinyhw.Tensor(x.astype(np.float16), requires_grad=True)
    stats = [tinyhw.Tensor(a.astype(np.float16)) for a in (rm, rv)]
    y = batch_norm(xt, *stats, training=training)
    y.backward(dy.astype(np.float16))
    y_ref, _, _ = closed_form(x, rm, rv, None, None, training)
    dx_ref = closed_form_grads(x, dy, None, training, rm, rv)[0]
    assert y.dtype == xt.grad.dtype == np.float16
    np.testing.assert_allclose(y.data, y_ref, atol=1e-2 * np.abs(y_ref).max())
    np.testing.assert_allclose(xt.grad, dx_ref, atol=1e-2 * np.abs(dx_ref).max())


@pytest.mark.parametrize("mean, centred", [(0.5, False), (100.0, True)])
def test_one_pass_variance_only_when_well_conditioned(rng, mean, centred):
    x = mean + rng.normal(size=(4, 3, 6, 6))
    assert norm_rows.train_forward(x, np.ones(3), None, EPS)[3] == centred
    assert norm_rows.train_forward(x, np.ones(3), None, EPS, always_centred=True)[3]


@pytest.mark.parametrize("route", params(norm.ROUTES))
def test_non_contiguous_input_and_gradient(rng, route):
    """Strided inputs and gradients (the rows routes work on contiguous copies); every route
    returns C-contiguous results."""
    base = rng.normal(size=(6, 3, 8, 10))
    x, dy = base[::2, :, :, ::2], rng.normal(size=(6, 3, 10, 8)).transpose(0, 1, 3, 2)[::2]
    xt = tinyhw.Tensor(x, requires_grad=True)
    with fast.use(batch_norm=route):
        y = batch_norm(xt, None, None, training=True)
        y.backward(dy[:, :, :, ::2])
    y_ref, _, _ = closed_form(x, np.zeros(3), np.ones(3), None, None, True)
    np.testing.assert_allclose(y.data, y_ref, rtol=1e-10, atol=1e-10)
    dx_ref = closed_form_grads(x, dy[:, :, :, ::2], None, True)[0]
    np.testing.assert_allclose(xt.grad, dx_ref, rtol=1e-9, atol=1e-10)
    assert y.data.flags.c_contiguous and xt.grad.flags.c_contiguous


@jit_test
def test_jit_route_is_the_same_on_any_thread_count(rng):
    """Each channel's sums run in one thread: bit for bit the same on 1 and 2 threads."""
    case = dict(x=rng.normal(size=(6, 5, 7, 3)).astype(np.float32), w=None, b=None,
                rm=np.zeros(5, np.float32), rv=np.ones(5, np.float32), training=True)
    dy = rng.normal(size=case["x"].shape).astype(np.float32)
    before = jit.threads()
    results = []
    try:
        for threads in (1, 2):
            jit.set_threads(threads)
            results.append(run("jit", case, dy, needs=(True, False, False)))
    finally:
        jit.set_threads(before)
    for one, two in zip(*results):
        if one is not None:
            np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("route", params(["rows", "jit"]))
def test_float32_large_mean_is_accurate(rng, route):
    """With |mu| = 100 std the one-pass variance would cancel: the rows path must switch to
    the centred form (the jit route always centres) and stay float32-accurate."""
    x = (100.0 + rng.normal(size=(4, 3, 48, 48))).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    xt = tinyhw.Tensor(x, requires_grad=True)
    with fast.use(batch_norm=route):
        y = batch_norm(xt, None, None, training=True)
        y.backward(dy)
    y_ref, _, _ = closed_form(x.astype(np.float64), np.zeros(3), np.ones(3), None, None, True)
    dx_ref = closed_form_grads(x.astype(np.float64), dy.astype(np.float64), None, True)[0]
    assert y.dtype == xt.grad.dtype == np.float32
    np.testing.assert_allclose(y.data, y_ref, atol=2e-4)
    np.testing.assert_allclose(xt.grad, dx_ref, atol=2e-4 * np.abs(dx_ref).max())


@pytest.mark.parametrize("route", params(norm.ROUTES))
@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 7), (2, 3, 64, 64), (3, 2, 5, 5)])
@pytest.mark.parametrize("training", [True, False])
def test_matches_torch(rng, shape, training, route):
    torch = pytest.importorskip("torch")
    c = shape[1]
    x = rng.normal(1.0, 2.0, size=shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    w, b = rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    rm, rv = rng.normal(size=c).astype(np.float32), rng.uniform(0.5, 2, size=c).astype(np.float32)
    ours = [tinyhw.Tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    stats = [tinyhw.Tensor(rm.copy()), tinyhw.Tensor(rv.copy())]
    torch_stats = [torch.tensor(rm), torch.tensor(rv)]
    for _ in range(2):  # two steps: the running statistics compound
        with fast.use(batch_norm=route):
            y = batch_norm(ours[0], *stats, ours[1], ours[2], training=training, momentum=0.3)
        yt = torch.nn.functional.batch_norm(theirs[0], *torch_stats, theirs[1], theirs[2],
                                            training=training, momentum=0.3)
    y.backward(dy)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, t.grad.numpy(), rtol=1e-3, atol=1e-4)
    for a, t in zip(stats, torch_stats):
        np.testing.assert_allclose(a.data, t.numpy(), rtol=1e-5, atol=1e-6)


def test_errors():
    x = tinyhw.Tensor(np.ones((4, 3, 2, 2)))
    stats = dict(running_mean=tinyhw.Tensor(np.zeros(3)), running_var=tinyhw.Tensor(np.ones(3)))
    with pytest.raises(ValueError, match=r"batch_norm: input: expected a 2-D .* tensor "
                                         r"\(N, C, \*\), got shape \(4,\)"):
        batch_norm(tinyhw.Tensor(np.ones(4)), None, None, training=True)
    with pytest.raises(TypeError, match="batch_norm: input: expected a floating-point tensor"):
        batch_norm(tinyhw.Tensor(np.ones((4, 3), np.int64)), None, None, training=True)
    with pytest.raises(ValueError, match=r"batch_norm: weight: expected shape \(3,\) \(C,\) "
                                         r"with C = 3 .* got \(4,\)"):
        batch_norm(x, **stats, weight=tinyhw.Tensor(np.ones(4)))
    with pytest.raises(ValueError, match=r"batch_norm: bias: expected shape \(3,\)"):
        batch_norm(x, **stats, bias=tinyhw.Tensor(np.ones((3, 1))))
    with pytest.raises(ValueError, match=r"batch_norm: running_mean: expected shape \(3,\)"):
        batch_norm(x, tinyhw.Tensor(np.zeros(2)), stats["running_var"])
    with pytest.raises(ValueError, match=r"batch_norm: running_var: expected shape \(3,\)"):
        batch_norm(x, stats["running_mean"], tinyhw.Tensor(np.ones(5)))
    with pytest.raises(TypeError, match="batch_norm: weight: dtype float32 differs from"):
        batch_norm(x, **stats, weight=tinyhw.Tensor(np.ones(3, np.float32)))
    with pytest.raises(TypeError, match="batch_norm: running_mean: expected a floating-point"):
        batch_norm(x, tinyhw.Tensor(np.zeros(3, np.int64)), stats["running_var"])
    with pytest.raises(ValueError, match="batch_norm: running_mean and running_var must both"):
        batch_norm(x, stats["running_mean"], None, training=True)
    with pytest.raises(ValueError, match="required when training=False"):
        batch_norm(x, None, None)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training, "
                                         r"got input of shape \(1, 3\)"):
        batch_norm(tinyhw.Tensor(np.ones((1, 3))), None, None, training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        batch_norm(tinyhw.Tensor(np.ones((1, 3, 1, 1))), None, None, training=True)
    with pytest.raises(TypeError, match="batch_norm: training: expected a bool"):
        batch_norm(x, **stats, training="yes")
    with pytest.raises(TypeError, match="batch_norm: momentum: expected a float, got None"):
        batch_norm(x, **stats, training=True, momentum=None)
    with pytest.raises(ValueError, match="batch_norm: eps: expected a float >= 0.0, got -1"):
        batch_norm(x, **stats, eps=-1)
    # One value per channel is fine in evaluation mode.
    assert batch_norm(tinyhw.Tensor(np.ones((1, 3))), **stats).shape == (1, 3)
