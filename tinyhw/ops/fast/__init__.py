"""Routes that exist only for speed, kept apart from the maths.

Each op's own file (`ops/conv.py`, `ops/norm.py`) holds the derivation and a short reference
implementation that follows it line by line. The files here compute the same formulas faster:

  conv2d, conv1d   pointwise            conv_pointwise.py: 1x1 kernel, no padding, a batched
                                        matmul on x itself
                   shifted,             conv_shifted.py, flat_grid.py: GEMMs on a few contiguous
                   shifted-per-offset   shifts of the flat padded input instead of im2col, in
                                        chunks of images that fit in L2
                   jit                  conv_jit.py (+ conv_jit_loops.py, conv_jit_pointwise.py,
                                        conv_jit_weights.py):
                                        the shifted GEMMs with the copies and adds as compiled
                                        loops, the chunks of a batch split between the cores
                                        (Numba, the `fast` extra; jit.py)
  batch_norm       rows, rows-centred   norm_rows.py: contiguous (N, C L) rows, one-pass
                                        statistics, block by block in L2
                   jit                  norm_jit.py: two-pass statistics per channel and one
                                        fused pass for y and for dx, compiled, on every core
  relu             jit                  relu_jit.py: the forward and backward as compiled
                                        loops on every core, for conv nets' feature maps
  conv1d_max_over_time  columns         char_cnn.py: one im2col of the widest window, a GEMM
                                        per group of widths, the max over time as a reduction
                                        over a time-major layout (Kim et al.'s char CNN)

`buffers.py` holds the reusable work buffers they (and pooling) write their temporaries into.

Which route runs. Each op lists its routes in `ROUTES` and picks one per call with its
`choose_route(...)`, a plain function of shapes, dtype and array module documented in the op's
docstring (e.g. `tinyhw.ops.conv.choose_route`; relu, one of several ops in activation.py,
has `RELU_ROUTES` and `choose_relu_route`). `use(...)` overrides that choice inside a
`with` block, for the current thread:

    from tinyhw.ops import fast
    with fast.use("reference"):                  # every op on its reference implementation
        y = F.conv2d(x, w, padding=1)
    with fast.use(conv2d="shifted", batch_norm="rows-centred"):   # one route per op
        ...

A forced route that cannot run the call (pointwise on a 3x3 kernel, rows on a CuPy array)
raises ValueError. `use` also sets the block sizes of the fast routes, so that tests reach
several chunks on tiny shapes: `conv_chunk_bytes` (default `flat_grid.CHUNK_BYTES`) and
`bn_block_bytes` (default `norm_rows.BLOCK_BYTES`), and the layout of the jit conv's X
(`conv_jit_layout`), so that tests reach both on any shape. Every route computes the same
numbers up to the order of floating-point sums; tests/test_conv.py and tests/test_norm.py hold
each equal to the reference.
"""
import contextlib
import threading

_routes = {}                  # op name -> its route names, registered by the op modules
CONV_JIT_LAYOUTS = ("row-taps", "im2col")   # the layouts of X on conv2d's jit route (conv_jit)
_local = threading.local()    # .routes {op: route}, .default route, .sizes {name: bytes}


def register(op, routes):
    """Declare the routes of op (called once by the op's module)."""
    _routes[op] = tuple(routes)


def routes_of(op):
    """The route names of op, e.g. routes_of("conv2d")."""
    return _routes[op]


def _current(name, empty):
    return getattr(_local, name, empty)


def forced_route(op):
    """The route forced for op by an enclosing `use`, or None (then the op's rule decides)."""
    return _current("routes", {}).get(op, _current("default", None))


def forced_layout():
    """The layout of X forced on conv2d's jit route by an enclosing `use` (one of
    CONV_JIT_LAYOUTS), or None (then the call's sizes decide)."""
    return _current("layout", None)


def size(name, default):
    """A block size of a fast route: the value set by an enclosing `use`, else `default`."""
    return _current("sizes", {}).get(name, default)


def _checked(default, routes, sizes, conv_jit_layout):
    for op, route in routes.items():
        if op not in _routes:
            raise ValueError(f"fast.use: unknown op {op!r}; ops with routes: {sorted(_routes)}")
        if route not in _routes[op]:
            raise ValueError(f"fast.use: {op} has no route {route!r}; its routes: {_routes[op]}")
    if default is not None and any(default not in r for r in _routes.values()):
        raise ValueError(f"fast.use: {default!r} is not a route of every op; name the op, "
                         f"e.g. use(conv2d={default!r})")
    for name, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"fast.use: {name}: expected a positive int, got {value!r}")
    if conv_jit_layout is not None and conv_jit_layout not in CONV_JIT_LAYOUTS:
        raise ValueError(f"fast.use: conv_jit_layout: expected one of {CONV_JIT_LAYOUTS}, "
                         f"got {conv_jit_layout!r}")


@contextlib.contextmanager
def use(default=None, *, conv_chunk_bytes=None, bn_block_bytes=None, conv_jit_layout=None,
        **routes):
    """Force routes (and block sizes) inside a `with` block, in this thread.

    Parameters
    ----------
    default : str or None
        A route every op has, i.e. "reference": run all ops on their reference.
    **routes : str
        op=route for single ops, e.g. conv2d="shifted", batch_norm="rows" (names in each op's
        ROUTES; `routes_of(op)` lists them).
    conv_chunk_bytes, bn_block_bytes : int or None
        Block sizes of the fast routes (None keeps the outer or default value).
    conv_jit_layout : str or None
        The layout of X on conv2d's jit route, "row-taps" or "im2col", whatever the sizes
        (None keeps the outer choice, or lets the sizes decide; conv_jit.py).
    """
    sizes = {"conv_chunk_bytes": conv_chunk_bytes, "bn_block_bytes": bn_block_bytes}
    _checked(default, routes, sizes, conv_jit_layout)
    saved = (_current("routes", {}), _current("default", None), _current("sizes", {}),
             _current("layout", None))
    outer = {} if default is not None else saved[0]   # a new default overrides outer routes
    _local.routes = {**outer, **routes}
    _local.default = default if default is not None else saved[1]
    _local.sizes = {**saved[2], **{k: v for k, v in sizes.items() if v is not None}}
    _local.layout = conv_jit_layout or saved[3]
    try:
        yield
    finally:
        _local.routes, _local.default, _local.sizes, _local.layout = saved
