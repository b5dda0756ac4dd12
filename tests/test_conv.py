"""conv2d and conv1d: the reference route against the definition and finite differences,
every fast route against the reference, torch cross-checks, argument errors.

Routes are forced with `tinyhw.ops.fast.use` (see tinyhw/ops/conv.py). With
conv_chunk_bytes=1 the shifted and jit routes take one image per chunk, so the small shapes
that Hypothesis draws run through several chunks too. The jit route's tests skip without
Numba (tests/routes.py).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw
from tinyhw.gradcheck import gradcheck
from tinyhw.ops import conv, fast
from tinyhw.ops.conv import conv1d, conv2d
from tinyhw.ops.fast import conv_jit, flat_grid, jit
from tests.routes import JIT_ROUTES, jit_test, needs_jit, params
from tests.strategies import arrays, conv1d_geometry, conv2d_geometry

FAST_ROUTES = [r for r in conv.ROUTES if r != "reference"]
NUMPY_ROUTES = [r for r in FAST_ROUTES if r not in JIT_ROUTES]   # drawn by Hypothesis below
TOLERANCE = {np.float64: 1e-11, np.float32: 1e-5}   # relative, to the result's largest entry


def conv2d_loop(x, w, b, stride, padding):
    """The definition, one output element at a time."""
    (n, c, h, wd), (o, _, kh, kw), (sh, sw), (ph, pw) = x.shape, w.shape, stride, padding
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    y = np.zeros((n, o, ho, wo))
    for i in range(n):
        for k in range(o):
            for r in range(ho):
                for q in range(wo):
                    patch = xp[i, :, r * sh:r * sh + kh, q * sw:q * sw + kw]
                    y[i, k, r, q] = (patch * w[k]).sum() + (0.0 if b is None else b[k])
    return y


def conv1d_loop(x, w, b, stride, padding):
    y = conv2d_loop(x[:, :, None, :], w[:, :, None, :], b, (1, stride), (0, padding))
    return y[:, :, 0, :]


def leaf(a):
    return tinyhw.Tensor(a, requires_grad=True)


def pair_of(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def pointwise_applies(w_shape, padding):
    return all(k == 1 for k in w_shape[2:]) and all(p == 0 for p in np.atleast_1d(padding))


def run(op, route, x, w, b, stride, padding, dy, needs=(True, True, True), chunk_bytes=None):
    """op's output and the gradients of (x, w, b) (None where not needed) on a forced route."""
    leaves = [None if a is None else tinyhw.Tensor(a, requires_grad=n)
              for a, n in zip((x, w, b), needs)]
    with fast.use(**{op.__name__: route}, conv_chunk_bytes=chunk_bytes):
        y = op(*leaves, stride=stride, padding=padding)
        if y.requires_grad:
            y.backward(dy)
    return [y.numpy()] + [None if t is None else t.grad for t in leaves]


def assert_same(got, want, dtype):
    """Equal up to the order of floating-point sums."""
    for g, r in zip(got, want):
        if r is None:
            assert g is None
            continue
        assert g.dtype == r.dtype == dtype
        tol = TOLERANCE[dtype]
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * max(1.0, np.abs(r).max()))


# ---- the reference ---------------------------------------------------------------------------

@given(geometry=conv2d_geometry(), with_bias=st.booleans(), data=st.data())
def test_conv2d_reference_gradcheck_and_loop(geometry, with_bias, data):
    x = data.draw(arrays(geometry["x_shape"]))
    w = data.draw(arrays(geometry["w_shape"]))
    b = data.draw(arrays((geometry["w_shape"][0],))) if with_bias else None
    stride, padding = geometry["stride"], geometry["padding"]
    with fast.use("reference"):
        y = conv2d(x, w, b, stride=stride, padding=padding)
        np.testing.assert_allclose(y.numpy(), conv2d_loop(x, w, b, stride, padding), atol=1e-12)
        assert gradcheck(lambda x, w, b: conv2d(x, w, b, stride=stride, padding=padding),
                         [x, w, b])


def test_conv2d_reference_full_gradcheck():
    r = np.random.default_rng(7)
    x, w, b = r.standard_normal((2, 2, 3, 3)), r.standard_normal((2, 2, 2, 2)), r.standard_normal(2)
    with fast.use("reference"):
        assert gradcheck(lambda x, w, b: conv2d(x, w, b, stride=(2, 1), padding=1), [x, w, b],
                         mode="full")


@given(geometry=conv1d_geometry(), with_bias=st.booleans(), data=st.data())
def test_conv1d_reference_gradcheck_and_loop(geometry, with_bias, data):
    x = data.draw(arrays(geometry["x_shape"]))
    w = data.draw(arrays(geometry["w_shape"]))
    b = data.draw(arrays((geometry["w_shape"][0],))) if with_bias else None
    stride, padding = geometry["stride"], geometry["padding"]
    with fast.use(conv1d="reference"):
        y = conv1d(x, w, b, stride=stride, padding=padding)
        np.testing.assert_allclose(y.numpy(), conv1d_loop(x, w, b, stride, padding), atol=1e-12)
        assert gradcheck(lambda x, w, b: conv1d(x, w, b, stride=stride, padding=padding),
                         [x, w, b])


# ---- every route equals the reference ---------------------------------------------------------

@st.composite
def route_case(draw, geometry, routes=NUMPY_ROUTES):
    """A geometry, one of `routes` that can run it, the dtype, which of (x, w, b) need a
    gradient (b drawn as absent too), the chunk budget of the shifted routes, and the arrays."""
    g = draw(geometry)
    routes = [r for r in routes if r != "pointwise" or pointwise_applies(g["w_shape"],
                                                                           g["padding"])]
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    with_bias = draw(st.booleans())
    needs = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(any))
    x, w = draw(arrays(g["x_shape"])), draw(arrays(g["w_shape"]))
    b = draw(arrays((g["w_shape"][0],))) if with_bias else None
    return dict(route=draw(st.sampled_from(routes)), dtype=dtype, needs=needs,
                chunk_bytes=draw(st.sampled_from([1, 600, None])),
                arrays=[None if a is None else a.astype(dtype) for a in (x, w, b)],
                stride=g["stride"], padding=g["padding"], seed=draw(st.integers(0, 2**32 - 1)))


def check_route_against_reference(op, case):
    x, w, b = case["arrays"]
    stride, padding, dtype = case["stride"], case["padding"], case["dtype"]
    with fast.use(**{op.__name__: "reference"}):
        y_shape = op(x, w, b, stride=stride, padding=padding).shape
    dy = np.random.default_rng(case["seed"]).uniform(-1, 1, y_shape).astype(dtype)
    want = run(op, "reference", x, w, b, stride, padding, dy, case["needs"])
    got = run(op, case["route"], x, w, b, stride, padding, dy, case["needs"],
              case["chunk_bytes"])
    assert_same(got, want, dtype)


@given(route_case(st.one_of(conv2d_geometry(), conv2d_geometry(max_kernel=1, max_padding=0))))
def test_conv2d_routes_match_reference(case):
    check_route_against_reference(conv2d, case)


@given(route_case(st.one_of(conv1d_geometry(), conv1d_geometry(max_kernel=1, max_padding=0))))
def test_conv1d_routes_match_reference(case):
    check_route_against_reference(conv1d, case)


@jit_test
@given(route_case(st.one_of(conv2d_geometry(), conv2d_geometry(max_kernel=1, max_padding=0)),
                  routes=JIT_ROUTES))
def test_conv2d_jit_route_matches_reference(case):
    check_route_against_reference(conv2d, case)


@jit_test
@given(route_case(st.one_of(conv1d_geometry(), conv1d_geometry(max_kernel=1, max_padding=0)),
                  routes=JIT_ROUTES))
def test_conv1d_jit_route_matches_reference(case):
    check_route_against_reference(conv1d, case)


@jit_test
@pytest.mark.parametrize("layout", fast.CONV_JIT_LAYOUTS)
@given(case=route_case(conv2d_geometry(), routes=JIT_ROUTES))
def test_conv2d_jit_layouts_match_reference(layout, case):
    """Both layouts of X (row taps per stride phase, and one block per kernel row) on every
    geometry, whichever the route would take for its sizes."""
    with fast.use(conv_jit_layout=layout):
        check_route_against_reference(conv2d, case)


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, layout", [
    ((8, 3, 224, 224), (64, 3, 7, 7), 2, 3, "im2col"),    # resnet50's first conv
    ((128, 3, 32, 32), (16, 3, 3, 3), 1, 1, "row-taps"),  # fewer rows, but stride 1
    ((128, 3, 32, 32), (16, 3, 3, 3), 2, 1, "im2col"),
    ((128, 16, 32, 32), (16, 16, 3, 3), 1, 1, "row-taps"),
    ((128, 16, 32, 32), (32, 16, 3, 3), 2, 1, "row-taps"),
    ((8, 128, 56, 56), (128, 128, 3, 3), 2, 1, "row-taps"),
    ((4, 8, 1, 50), (16, 8, 1, 5), 1, 2, "row-taps"),      # conv1d: the same rows either way
])
def test_jit_layout_choice(x_shape, w_shape, stride, padding, layout):
    """im2col at strides above 1 where Z's rows would outnumber X's many times over (few
    channels, many filters); row taps elsewhere, and at stride 1 (their plane copies); and
    whichever fast.use forces."""
    def geometry():
        return conv_jit._Geometry(x_shape, w_shape,
                                  (stride, stride) if w_shape[2] > 1 else (1, stride),
                                  (padding, padding) if w_shape[2] > 1 else (0, padding), 4)
    assert geometry().layout == layout
    for forced in fast.CONV_JIT_LAYOUTS:
        with fast.use(conv_jit_layout=forced):
            assert geometry().layout == forced


# Fixed geometries that exercise every route (pointwise, also strided; shifted at stride 1 and
# on the phases of a stride, including a kernel shorter than the stride, whose skipped phases
# get no gradient), padding beyond kernel - 1 and asymmetric hyper-parameters.
GEOMETRIES = [
    dict(x_shape=(2, 3, 5, 4), w_shape=(4, 3, 1, 1), stride=1, padding=0),
    dict(x_shape=(2, 3, 5, 6), w_shape=(2, 3, 1, 1), stride=(2, 3), padding=0),
    dict(x_shape=(2, 3, 5, 5), w_shape=(4, 3, 3, 3), stride=1, padding=1),
    dict(x_shape=(1, 2, 3, 4), w_shape=(3, 2, 2, 3), stride=1, padding=(3, 4)),
    dict(x_shape=(2, 2, 6, 7), w_shape=(3, 2, 3, 2), stride=(2, 1), padding=(1, 0)),
    dict(x_shape=(1, 2, 4, 4), w_shape=(2, 2, 1, 1), stride=2, padding=1),
    dict(x_shape=(2, 1, 9, 8), w_shape=(2, 1, 7, 7), stride=3, padding=3),
    dict(x_shape=(2, 2, 7, 9), w_shape=(3, 2, 2, 1), stride=(3, 2), padding=(2, 1)),
]


@pytest.mark.parametrize("geometry, route", [
    pytest.param(g, r, marks=needs_jit if r in JIT_ROUTES else ())
    for g in GEOMETRIES for r in conv.ROUTES
    if r != "pointwise" or pointwise_applies(g["w_shape"], pair_of(g["padding"]))])
def test_conv2d_routes_match_torch(geometry, route, rng):
    torch = pytest.importorskip("torch")
    x, w = rng.standard_normal(geometry["x_shape"]), rng.standard_normal(geometry["w_shape"])
    b = rng.standard_normal(geometry["w_shape"][0])
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    t = torch.nn.functional.conv2d(*theirs, stride=geometry["stride"], padding=geometry["padding"])
    g = rng.standard_normal(t.shape)
    t.backward(torch.tensor(g))
    ours = run(conv2d, route, x, w, b, geometry["stride"], geometry["padding"], g)
    want = [t.detach().numpy()] + [a.grad.numpy() for a in theirs]
    for a, ta in zip(ours, want):
        np.testing.assert_allclose(a, ta, atol=1e-12)


@pytest.mark.parametrize("route", params(["shifted", "shifted-per-offset", "jit"]))
@pytest.mark.parametrize("needs", [(True, True, True), (True, False, False), (False, True, False),
                                   (False, False, True)])
def test_shifted_routes_in_chunks_match_reference(route, needs, rng, monkeypatch):
    """Chunks of one image, of two with a short last one (5 = 2 + 2 + 1: its planes past the
    last image must be zeroed), and the whole batch, every subset of gradients; 3x3 'same', an
    asymmetric kernel with padding beyond it, a 3x5 kernel with two wrapped columns on each
    side of a folded grid (at row stride 2), and the strided convs of a ResNet's stage changes
    (3x3 stride 2, 1x1 stride 2 with padding)."""
    by_budget = flat_grid.images_per_chunk
    two = {"force": False}
    monkeypatch.setattr(flat_grid, "images_per_chunk",
                        lambda n, b, budget=None: min(n, 2) if two["force"]
                        else by_budget(n, b, budget))
    for w_shape, stride, padding in [((4, 3, 3, 3), 1, 1), ((2, 3, 2, 3), 1, (3, 0)),
                                     ((2, 3, 3, 5), (2, 1), (1, 2)),
                                     ((4, 3, 3, 3), 2, 1), ((4, 3, 1, 1), 2, 1),
                                     ((2, 3, 3, 2), (2, 3), (0, 1))]:
        x = rng.standard_normal((5, 3, 6, 7))
        w, b = rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
        dy = rng.standard_normal(conv2d(x, w, stride=stride, padding=padding).shape)
        want = run(conv2d, "reference", x, w, b, stride, padding, dy, needs)
        for chunk_bytes, force_two in ((1, False), (None, True), (None, False)):
            two["force"] = force_two
            got = run(conv2d, route, x, w, b, stride, padding, dy, needs, chunk_bytes)
            assert_same(got, want, np.float64)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 0)])
def test_default_chunks_match_reference(stride, padding, rng):
    """Images large enough that the default budget cuts a batch of 5 into chunks."""
    side = 40 if stride == 1 else 64
    x, w = rng.standard_normal((5, 8, side, side)), rng.standard_normal((8, 8, 3, 3))
    rows = 3 * 8 if stride == 1 else 6 * 8      # X's rows per image: column shifts x channels
    grid = flat_grid.FlatGrid(np, x.shape, (3, 3), (stride,) * 2, (padding,) * 2, rows, 8)
    assert 1 < grid.images < 5
    dy = rng.standard_normal(conv2d(x, w, stride=stride, padding=padding).shape)
    want = run(conv2d, "reference", x, w, None, stride, padding, dy)
    for route in ("shifted", "shifted-per-offset") + (JIT_ROUTES if jit.available else ()):
        assert_same(run(conv2d, route, x, w, None, stride, padding, dy), want, np.float64)


def test_folded_columns():
    """At column stride 1 with Wo <= W the shifted route folds the column padding: rows of W
    cells, the data `lead` = pw cells into the buffer, and for each column shift jj the output
    columns whose read wraps onto a neighbouring row (col + jj - pw outside [0, W))."""
    assert flat_grid.can_fold(3, 1, 1) and flat_grid.can_fold(5, 1, 2) and flat_grid.can_fold(2, 1, 0)
    assert not flat_grid.can_fold(3, 2, 1) and not flat_grid.can_fold(3, 1, 2)
    grid = flat_grid.FlatGrid(np, (4, 3, 6, 7), (3, 5), (1, 1), (1, 2), 15, 8, fold_columns=True)
    assert (grid.wq, grid.lead, grid.hq) == (7, 2, 7)
    assert grid.wrapped == {0: [0, 1], 1: [0], 2: [], 3: [6], 4: [5, 6]}
    rows = np.ones((2, 3 * 7))
    grid.zero_wrapped(rows, 4)
    assert (rows.reshape(2, 3, 7)[:, :, 5:] == 0).all() and (rows.reshape(2, 3, 7)[:, :, :5] == 1).all()
    unfolded = flat_grid.FlatGrid(np, (4, 3, 6, 7), (3, 5), (1, 1), (1, 2), 15, 8)
    assert (unfolded.wq, unfolded.lead, unfolded.wrapped) == (9, 0, {})
    with pytest.raises(ValueError, match=r"FlatGrid: cannot fold columns of kernel width 3, "
                                         r"stride 2, padding 1; expected stride 1"):
        flat_grid.FlatGrid(np, (4, 3, 6, 7), (3, 3), (1, 2), (1, 1), 9, 8, fold_columns=True)


def test_chunk_size_follows_the_budget():
    """CIFAR's first stage: 16 channels of 32x32 give several images per chunk, and no chunk
    is larger than the budget unless it holds a single image."""
    grid = flat_grid.FlatGrid(np, (128, 16, 32, 32), (3, 3), (1, 1), (1, 1), 48, 4)
    assert 1 < grid.images < 128 and 48 * grid.size * 4 <= flat_grid.CHUNK_BYTES
    big = flat_grid.FlatGrid(np, (8, 64, 56, 56), (3, 3), (1, 1), (1, 1), 192, 4)
    assert big.images == 1
    with fast.use(conv_chunk_bytes=1):
        assert flat_grid.FlatGrid(np, (128, 16, 32, 32), (3, 3), (1, 1), (1, 1), 48, 4).images == 1


# ---- which route runs ------------------------------------------------------------------------

def test_choose_route():
    compiled = "jit" if jit.available else "shifted"   # the compiled loops whenever Numba is there
    assert conv.choose_route((4, 3, 1, 1), (0, 0)) == ("jit" if jit.available else "pointwise")
    assert conv.choose_route((4, 3, 1, 1), (1, 1)) == compiled
    assert conv.choose_route((16, 16, 3, 3), (1, 1)) == compiled
    assert conv.choose_route((64, 64, 3, 3), (1, 1), np) == compiled
    assert conv.choose_route((64, 17, 1, 3), (0, 0)) == compiled


@pytest.mark.skipif(jit.available, reason="Numba is installed")
def test_jit_route_without_numba_names_the_extra(rng):
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    with fast.use(conv2d="jit"), pytest.raises(
            ValueError, match=r"conv2d: route 'jit' needs Numba and SciPy: pip install -e \"\.\[fast\]\""):
        conv2d(x, w)


def test_use_forces_a_route_only_inside_its_block(rng):
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    assert fast.forced_route("conv2d") is None
    with fast.use("reference"):
        assert fast.forced_route("conv2d") == fast.forced_route("batch_norm") == "reference"
        with fast.use(conv2d="shifted"):
            assert fast.forced_route("conv2d") == "shifted"
            assert fast.forced_route("conv1d") == "reference"
        with fast.use(conv2d="pointwise"):
            with pytest.raises(ValueError, match=r"conv2d: route 'pointwise' needs a 1x1 kernel "
                                                 r"without padding, got kernel \(3, 3\)"):
                conv2d(x, w)
    assert fast.forced_route("conv2d") is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(conv3d="reference"), r"fast.use: unknown op 'conv3d'"),
    (dict(conv2d="winograd"), r"fast.use: conv2d has no route 'winograd'; its routes: "
                              r"\('reference', 'pointwise', 'shifted', 'shifted-per-offset', 'jit'\)"),
    (dict(default="shifted"), r"fast.use: 'shifted' is not a route of every op"),
    (dict(conv_chunk_bytes=0), r"fast.use: conv_chunk_bytes: expected a positive int, got 0"),
    (dict(conv_jit_layout="winograd"), r"fast.use: conv_jit_layout: expected one of "
                                       r"\('row-taps', 'im2col'\), got 'winograd'"),
])
def test_use_rejects_unknown_routes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        with fast.use(**kwargs):
            pass


# ---- dtypes, layouts, partial gradients, shared buffers ---------------------------------------

@pytest.mark.parametrize("route", params(conv.ROUTES))
def test_conv2d_float32_keeps_dtype_and_layout(route, rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    cases = [(w[:, :, :1, :1], 1, 0), (w[:, :, :1, :1], 2, 0)] if route == "pointwise" \
        else [(w, 1, 1), (w, 2, 1), (w, 1, 0)]
    for kernel, stride, padding in cases:
        xt, wt = leaf(x), leaf(kernel)
        with fast.use(conv2d=route):
            y = conv2d(xt, wt, stride=stride, padding=padding)
            y.backward(np.ones(y.shape, np.float32))
        assert y.dtype == xt.grad.dtype == wt.grad.dtype == np.float32
        assert y.data.flags.c_contiguous and xt.grad.flags.c_contiguous


@pytest.mark.parametrize("needs", [(True, False), (False, True)])
def test_conv2d_gradient_of_one_operand_only(needs, rng):
    """Only the gradient asked for is computed, and it equals the one computed beside the
    other (the default route, against the reference route's pair)."""
    x, w = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3))
    for stride, padding in [(1, 1), (2, 0), (1, 0)]:
        dy = rng.standard_normal(conv2d(x, w, stride=stride, padding=padding).shape)
        both = leaf(x), leaf(w)
        with fast.use(conv2d="reference"):
            conv2d(*both, stride=stride, padding=padding).backward(dy)
        xt, wt = tinyhw.Tensor(x, requires_grad=needs[0]), tinyhw.Tensor(w, requires_grad=needs[1])
        conv2d(xt, wt, stride=stride, padding=padding).backward(dy)
        for t, want, needed in zip((xt, wt), both, needs):
            if needed:
                np.testing.assert_allclose(t.grad, want.grad, rtol=1e-12, atol=1e-12)
            else:
                assert t.grad is None


@pytest.mark.parametrize("width", range(1, 8))
def test_conv1d_char_cnn_shapes_match_torch(width, rng):
    """Kim et al.'s character CNN: 15-dim embeddings, words of 21 characters, widths 1..7."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((20, 15, 21)).astype(np.float32)
    w = (rng.standard_normal((25 * width, 15, width)) * 0.1).astype(np.float32)
    b = rng.standard_normal(25 * width).astype(np.float32)
    ours = [leaf(a) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    y, t = conv1d(*ours), torch.nn.functional.conv1d(*theirs)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    t.backward(torch.tensor(g))
    assert y.shape == (20, 25 * width, 22 - width)
    np.testing.assert_allclose(y.numpy(), t.detach().numpy(), rtol=1e-4, atol=1e-4)
    for a, ta in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, ta.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kernel", [(1, 1), (1, 3), (3, 1), (2, 2)])
def test_interleaved_convs_keep_their_saved_inputs(kernel, rng):
    """Work buffers are shared between calls: two forwards before either backward, with the
    larger conv first (so the smaller reuses its buffers), must still give exact gradients."""
    shapes = [((3, 4, 9, 9), (5, 4) + kernel), ((2, 2, 5, 4), (3, 2) + kernel)]
    for stride, padding in [(1, 0), (1, 1), (2, 1)]:
        ours, theirs = [], []
        for x_shape, w_shape in shapes:
            x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
            ours.append((leaf(x), leaf(w)))
            theirs.append((x, w))
        ys = [conv2d(x, w, stride=stride, padding=padding) for x, w in ours]
        gs = [rng.standard_normal(y.shape) for y in ys]
        for y, g in zip(ys, gs):
            y.backward(g)
        for (x, w), (xt, wt), y, g in zip(theirs, ours, ys, gs):
            np.testing.assert_allclose(y.numpy(), conv2d_loop(x, w, None, pair_of(stride),
                                                              pair_of(padding)), atol=1e-12)
            _, dx, dw, _ = run(conv2d, "reference", x, w, None, stride, padding, g)
            np.testing.assert_allclose(xt.grad, dx, atol=1e-12)
            np.testing.assert_allclose(wt.grad, dw, atol=1e-12)


@pytest.mark.parametrize("kernel, padding", [((3, 3), 1), ((1, 3), (0, 1)), ((3, 1), 0)])
def test_shifted_route_bias_with_frozen_weight(kernel, padding, rng):
    """The shifted route adds the bias inside its GEMM; the GEMM's operands then live in
    work buffers when the weight needs no gradient."""
    x, w, b = rng.standard_normal((2, 3, 5, 6)), rng.standard_normal((4, 3) + kernel), \
        rng.standard_normal(4)
    xt, bt = leaf(x), leaf(b)
    y = conv2d(xt, tinyhw.Tensor(w), bt, padding=padding)
    np.testing.assert_allclose(y.numpy(), conv2d_loop(x, w, b, (1, 1), pair_of(padding)),
                               atol=1e-12)
    assert gradcheck(lambda x, b: conv2d(x, w, b, padding=padding), [x, b], n_directions=4)


# ---- argument errors ------------------------------------------------------------------------

X4, W4 = np.zeros((2, 3, 5, 5)), np.zeros((4, 3, 3, 3))


@pytest.mark.parametrize("call, error, message", [
    (lambda: conv2d(np.zeros((3, 5, 5)), W4), ValueError,
     r"conv2d: input: expected a 4-D tensor \(N, C, H, W\), got shape \(3, 5, 5\)"),
    (lambda: conv2d(X4, np.zeros((4, 3, 3))), ValueError,
     r"conv2d: weight: expected a 4-D tensor \(out_channels, in_channels, kH, kW\)"),
    (lambda: conv2d(X4, np.zeros((4, 2, 3, 3))), ValueError,
     r"conv2d: weight: expects 2 input channels \(shape \(4, 2, 3, 3\)\), but input has 3"),
    (lambda: conv2d(X4.astype(np.int64), W4), TypeError,
     r"conv2d: input: expected a floating-point tensor .* got dtype int64"),
    (lambda: conv2d(X4, W4.astype(np.float32)), TypeError,
     r"conv2d: weight: dtype float32 differs from conv2d: input's dtype float64"),
    (lambda: conv2d(X4, W4, np.zeros(3)), ValueError,
     r"conv2d: bias: expected shape \(4,\) \(out_channels,\), got \(3,\)"),
    (lambda: conv2d(X4, W4, stride=0), ValueError,
     r"conv2d: stride: expected positive ints, got 0"),
    (lambda: conv2d(X4, W4, stride=(1, -2)), ValueError,
     r"conv2d: stride: expected positive ints, got \(1, -2\)"),
    (lambda: conv2d(X4, W4, stride=1.5), TypeError,
     r"conv2d: stride: expected an int or a pair of ints, got 1.5"),
    (lambda: conv2d(X4, W4, padding=-1), ValueError,
     r"conv2d: padding: expected non-negative ints, got -1"),
    (lambda: conv2d(X4, W4, padding=(1, 2, 3)), TypeError,
     r"conv2d: padding: expected an int or a pair of ints"),
    (lambda: conv2d(np.zeros((1, 3, 2, 5)), W4), ValueError,
     r"conv2d: weight: kernel size \(3, 3\) is larger than the padded input \(2, 5\)"),
    (lambda: conv2d([[1.0]], W4), TypeError, r"conv2d: input: expected a Tensor, got list"),
    (lambda: conv1d(np.zeros((2, 3, 5, 5)), np.zeros((4, 3, 3))), ValueError,
     r"conv1d: input: expected a 3-D tensor \(N, C, L\), got shape \(2, 3, 5, 5\)"),
    (lambda: conv1d(np.zeros((2, 3, 5)), np.zeros((4, 2, 3))), ValueError,
     r"conv1d: weight: expects 2 input channels"),
    (lambda: conv1d(np.zeros((2, 3, 2)), np.zeros((4, 3, 3))), ValueError,
     r"conv1d: weight: kernel size \(3,\) is larger than the padded input \(2,\)"),
    (lambda: conv1d(np.zeros((2, 3, 5)), np.zeros((4, 3, 3)), stride=0), ValueError,
     r"conv1d: stride: expected positive ints, got 0"),
])
def test_conv_argument_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_conv1d_accepts_one_tuples(rng):
    x, w = rng.standard_normal((2, 3, 7)), rng.standard_normal((4, 3, 3))
    np.testing.assert_array_equal(conv1d(x, w, stride=(2,), padding=(1,)).numpy(),
                                  conv1d(x, w, stride=2, padding=1).numpy())


@pytest.mark.parametrize("route", params(("shifted", "jit")))
@pytest.mark.parametrize("kernel, padding", [(3, 1), (5, 2)])
def test_wrapped_columns_do_not_spread_non_finite_inputs(route, kernel, padding, rng):
    """At stride 1 the fast routes copy whole planes, and the cells that wrap onto the next row
    must read as zero, not as the input there: an inf or NaN in the first or last column
    reaches exactly the outputs and input gradients the reference gives it. (Not dW: the
    GEMMs also run over rows of no output, where zeros of dy meet real inputs, 0 inf = NaN,
    a product the reference never forms; such an input has made the loss NaN anyway.)"""
    x = rng.standard_normal((3, 2, 6, 7))
    x[0, 1, 2, 0], x[1, 0, 4, 6], x[2, 1, 0, 6] = np.nan, np.inf, -np.inf
    w = rng.standard_normal((3, 2, kernel, kernel))
    dy = rng.standard_normal(conv2d(np.zeros_like(x), w, padding=padding).shape)
    dy[1, 2, 3, 0] = np.nan
    with np.errstate(invalid="ignore"):
        got = run(conv2d, route, x, w, None, 1, padding, dy)
        want = run(conv2d, "reference", x, w, None, 1, padding, dy)
    for g, r in zip(got[:2], want[:2]):
        np.testing.assert_array_equal(np.isfinite(g), np.isfinite(r))
        np.testing.assert_allclose(g[np.isfinite(r)], r[np.isfinite(r)], rtol=1e-10, atol=1e-10)


@jit_test
@pytest.mark.parametrize("shape, stride", [((37, 5, 5, 4), 3), ((20, 3, 3, 3), 2), ((40, 7, 1, 1), 1)])
def test_jit_weight_layouts(shape, stride, rng):
    """conv_jit_weights' compiled copies against their definitions: Wst_a[(ii, o), (j, c)] =
    W[o, c, s_h ii + a, j], its transpose (filters in blocks of O_BLOCK, here across blocks),
    and dW from chunk parts, summed over the chunks and laid out as W (a 1x1 kernel's too)."""
    from tinyhw.ops.fast import conv_jit_weights as weights
    o, c, kh, kw = shape
    w = rng.standard_normal(shape).astype(np.float32)
    tap_counts = [(kh - 1 - a) // stride + 1 for a in range(min(stride, kh))]
    for a, (block, block_t) in enumerate(zip(weights.phase_weights(w, stride, tap_counts),
                                             weights.phase_weights(w, stride, tap_counts, True))):
        taps = tap_counts[a]
        want = w[:, :, a::stride][:, :, :taps].transpose(2, 0, 3, 1).reshape(taps * o, kw * c)
        np.testing.assert_array_equal(block, want)
        np.testing.assert_array_equal(block_t, want.T)
    parts = rng.standard_normal((3, len(tap_counts), tap_counts[0] * o, kw * c))
    dw = weights.weight_gradient(parts, stride, shape)
    for i in range(kh):
        rows = parts[:, i % stride, (i // stride) * o:(i // stride + 1) * o]   # (3, O, kw C)
        want = rows.sum(axis=0).reshape(o, kw, c).transpose(0, 2, 1)
        np.testing.assert_allclose(dw[:, :, i], want, rtol=1e-12)
    pointwise = parts[:, :1, :o, :c]                  # a 1x1 kernel's parts: (3, 1, O, C)
    np.testing.assert_allclose(weights.weight_gradient(pointwise, 1, (o, c, 1, 1))[:, :, 0, 0],
                               pointwise.sum(axis=(0, 1)), rtol=1e-12)


@pytest.mark.parametrize("n, fit, expected", [
    (128, 10, (8, 16)),    # 13 chunks of 10 would leave one of two workers a chunk more
    (128, 5, (5, 26)),     # 28 chunks cannot be even: 5 images each still leave 26
    (128, 16, (16, 8)),    # 8 is a multiple of 4 already
    (7, 7, (2, 4)),        # a batch that fits one chunk is still shared out
    (3, 3, (1, 3)),        # no more chunks than images
    (1, 1, (1, 1)),
])
def test_even_chunks(n, fit, expected):
    """(images per chunk, chunks) of the jit routes, for a budget that fits `fit` images."""
    assert flat_grid.even_chunks(n, flat_grid.CHUNK_BYTES // fit) == expected


@pytest.mark.parametrize("n, per_image, weights, expected", [
    (8, 0.378, 9.0, (4, 2)),      # resnet50's 512-channel 3x3 at 7x7: 2 chunks of 4, not 4 of 2
    (8, 0.615, 2.25, (2, 4)),     # 256 channels at 14x14: 3 images fit, 3 chunks counted as 4
    (128, 0.378, 9.0, (22, 6)),   # a larger batch: 23 images fit the weights' bytes
    (8, 0.378, 1.0, (2, 4)),      # weights that fit the budget: the usual rule
    (128, 11.0, 576.0, (2, 64)),  # 4096 channels at 14x14: 32 MiB at most, 2 images a chunk
])
def test_even_chunks_for_weights_larger_than_the_budget(n, per_image, weights, expected):
    """Where the weights (MiB) outgrow CHUNK_BYTES, a chunk holds as many bytes of images
    (MiB each) as the weights, and the chunks are counted in 2s."""
    mib = flat_grid.CHUNK_BYTES
    assert flat_grid.even_chunks(n, int(per_image * mib), int(weights * mib)) == expected


@jit_test
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("w_shape, padding", [((320, 96, 3, 3), 1), ((1100, 256, 1, 1), 0)])
def test_jit_route_with_weights_larger_than_the_chunk_budget(w_shape, padding, stride, rng):
    """Weights over CHUNK_BYTES take even_chunks' other rule (here 5 images in chunks of 3 and
    2), and a 1x1 kernel the chunked GEMMs instead of per-image ones: the reference's numbers
    all the same."""
    x = rng.standard_normal((5, w_shape[1], 6, 6)).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.05).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    assert w.nbytes > flat_grid.CHUNK_BYTES
    assert not conv_jit._per_image(w, (padding, padding))
    dy = rng.standard_normal(conv2d(x, w, stride=stride, padding=padding).shape)
    dy = dy.astype(np.float32)
    assert_same(run(conv2d, "jit", x, w, b, stride, padding, dy),
                run(conv2d, "reference", x, w, b, stride, padding, dy), np.float32)


def assert_same_on_1_and_2_threads(x, w, b, stride, padding, dy):
    """The jit route's output and gradients, bit for bit the same on 1 and 2 threads."""
    before = jit.threads()
    results = []
    try:
        for threads in (1, 2):
            jit.set_threads(threads)
            results.append(run(conv2d, "jit", x, w, b, stride, padding, dy))
    finally:
        jit.set_threads(before)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@jit_test
@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (5, 1, 2)])
def test_jit_route_is_the_same_on_any_thread_count(kernel, stride, padding, rng):
    """The chunks, and so every sum's order, do not depend on the thread count: bit for bit the
    same output and gradients on 1 and 2 threads (a run's adaptive thread rule must not change
    its numbers). The default budget holds all 7 images in one chunk, cut into 4 chunks of 2 by
    flat_grid.CHUNK_MULTIPLE on any thread count; cut by the thread count, one thread would
    sum dW over one chunk and two over two."""
    x = rng.standard_normal((7, 3, 9, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    dy = rng.standard_normal(conv2d(x, w, stride=stride, padding=padding).shape)
    assert_same_on_1_and_2_threads(x, w, b, stride, padding, dy.astype(np.float32))


@jit_test
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, layout", [
    ((5, 3, 15, 15), (64, 3, 7, 7), 2, 3, "im2col"),
    ((5, 96, 6, 6), (320, 96, 3, 3), 1, 1, "row-taps"),      # weights over CHUNK_BYTES
    ((5, 256, 6, 6), (1100, 256, 1, 1), 2, 0, "row-taps"),   # the same, 1x1
])
def test_jit_layouts_and_heavy_weights_are_the_same_on_any_thread_count(
        x_shape, w_shape, stride, padding, layout, rng):
    """im2col's chunks and the chunks sized by heavy weights do not follow the thread count
    either: bit for bit the same on 1 and 2 threads."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.05).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    assert conv_jit._Geometry(x_shape, w_shape, (stride,) * 2, (padding,) * 2, 4).layout == layout
    dy = rng.standard_normal(conv2d(x, w, stride=stride, padding=padding).shape)
    assert_same_on_1_and_2_threads(x, w, b, stride, padding, dy.astype(np.float32))
