"""Convolutions of several widths over a sequence, each followed by a max over time: the
character CNN of Kim et al. (2015) as one op.

For kernels k = 1..K with weights W_k (O_k, C, K_k) and biases b_k (O_k,), on x (N, C, L):

    z_k[n, o, t] = b_k[o] + sum_{c, j} W_k[o, c, j] x[n, c, t + j],   t < L_k = L - K_k + 1
    y_k[n, o]    = max_t z_k[n, o, t] = z_k[n, o, t*],   t* = t*_k[n, o] the first arg-max
    y            = [y_1 | y_2 | ... | y_K]                              (N, sum_k O_k)

which equals cat([max(conv1d(x, W_k, b_k), dim=2) for k], dim=1), computed without materialising
each (N, O_k, L_k) output apart and without an argmax over short rows.

Backward. Away from ties, y_k[n, o] depends on the window at t* only, so with dy = dL/dy:
    dz_k[n, o, t] = dy_k[n, o] [t = t*]                                (the max passes dy to t*)
and the conv's own backward (ops/conv.py) gives
    dW_k[o, c, j] = sum_{n, t} dz_k[n, o, t] x[n, c, t + j] = sum_n dy_k[n, o] x[n, c, t* + j]
    dx[n, c, t + j] += sum_o W_k[o, c, j] dz_k[n, o, t]
    db_k[o]       = sum_n dy_k[n, o].
On a tie the first arg-max takes the whole gradient, as max(dim) does (and torch's x.max(dim)).

Routes (tinyhw.ops.fast; forced with `fast.use(conv1d_max_over_time=...)`):
  reference  each kernel on a strided view of its windows and einsums, an argmax over t (below).
  columns    one im2col of the widest window, one GEMM per group of widths, the max as a
             reduction over a time-major layout (fast/char_cnn.py).
`choose_route` takes "columns" for every call (numpy or cupy); `groups` says how it groups widths.
"""
from ..autograd import Function, is_grad_enabled
from ..checks import as_tensor, check_float, check_ndim, check_same, check_shape
from . import fast
from .fast import char_cnn as columns_route

ROUTES = ("reference", "columns")
fast.register("conv1d_max_over_time", ROUTES)


# ---- the reference route ---------------------------------------------------------------------

def windows(xp, x, width):
    """win[n, c, t, j] = x[n, c, t + j]: an (N, C, L - width + 1, width) view of x (any strides)."""
    n, c, length = x.shape
    s_n, s_c, s_t = x.strides
    return xp.lib.stride_tricks.as_strided(x, (n, c, length - width + 1, width),
                                           (s_n, s_c, s_t, s_t))


def reference_forward(ctx, x, weights, biases):
    xp, outputs, saved = ctx.xp, [], []
    for w, b in zip(weights, biases):
        win = windows(xp, x, w.shape[2])
        z = xp.einsum("nctj,ocj->not", win, w)
        first = z.argmax(axis=2)[:, :, None]                  # t*, the first on ties
        y = xp.take_along_axis(z, first, axis=2)[:, :, 0]
        outputs.append(y if b is None else y + b)
        saved.append((win, first, z.shape))
    ctx.save(saved)
    return xp.concatenate(outputs, axis=1)


def reference_backward(ctx, gy, weights):
    xp, (saved,) = ctx.xp, ctx.saved
    dx = xp.zeros(ctx.x_shape, dtype=gy.dtype)
    dws, dbs, start = [], [], 0
    for w, (win, first, z_shape) in zip(weights, saved):
        dy = gy[:, start:start + w.shape[0]]
        start += w.shape[0]
        dz = xp.zeros(z_shape, dtype=gy.dtype)
        xp.put_along_axis(dz, first, dy[:, :, None], axis=2)
        dws.append(xp.einsum("not,nctj->ocj", dz, win))
        dwin = xp.einsum("not,ocj->nctj", dz, w)
        for j in range(w.shape[2]):                           # window element j sits at t + j
            dx[:, :, j:j + z_shape[2]] += dwin[:, :, :, j]
        dbs.append(dy.sum(axis=0))
    return dx, dws, dbs


# ---- which route runs ------------------------------------------------------------------------

def choose_route(xp):
    """"columns" on every device (numpy or cupy): it computes the same sums as the reference in
    a few large GEMMs. "reference" is never chosen for speed."""
    return "columns"


def groups(widths, out_channels, channels):
    """The columns route's grouping of the kernels (fast.char_cnn.Group): kernels sorted by
    width, split at most once into two runs of consecutive widths, where the GEMMs' multiplies
    per output position, sum over groups of (widest K_g) C (features F_g), are fewest. Each
    group's GEMM multiplies zeros where a kernel is narrower than the group's widest, so one
    group wastes most; more than two groups measured no faster (smaller GEMMs)."""
    order = sorted(range(len(widths)), key=lambda k: widths[k])

    def cost(run):
        return max(widths[k] for k in run) * sum(out_channels[k] for k in run)

    splits = [[order]] + [[order[:s], order[s:]] for s in range(1, len(order))]
    best = min(splits, key=lambda parts: sum(cost(p) for p in parts))
    return [columns_route.Group([(k, widths[k], out_channels[k]) for k in part], channels)
            for part in best]


class Conv1dMaxOverTime(Function):
    """Inputs x, W_1..W_K, b_1..b_K (biases may be None); output (N, sum O_k)."""

    @staticmethod
    def forward(ctx, x, *params, kernels):
        weights, biases = params[:kernels], params[kernels:]
        ctx.x_shape, ctx.kernels = x.shape, kernels
        ctx.route = fast.forced_route("conv1d_max_over_time") or choose_route(ctx.xp)
        if ctx.route == "reference":
            ctx.weights = weights
            return reference_forward(ctx, x, weights, biases)
        ctx.groups = groups([w.shape[2] for w in weights], [w.shape[0] for w in weights],
                            x.shape[1])
        keep = is_grad_enabled() and any(ctx.needs_input_grad)   # else no backward will run
        return columns_route.forward(ctx, x, weights, biases, ctx.groups, keep)

    @staticmethod
    def backward(ctx, gy):
        needs, k = ctx.needs_input_grad, ctx.kernels
        if ctx.route == "reference":
            dx, dws, dbs = reference_backward(ctx, gy, ctx.weights)
        else:
            dx, dws, dbs = columns_route.backward(ctx, gy, ctx.groups, needs[0],
                                                  any(needs[1:k + 1]), any(needs[k + 1:]),
                                                  ctx.x_shape)
        dws = [d if n else None for d, n in zip(dws, needs[1:k + 1])]
        dbs = [d if n else None for d, n in zip(dbs, needs[k + 1:])]
        return (dx if needs[0] else None, *dws, *dbs)


def conv1d_max_over_time(input, weights, biases=None):
    """Several 1-D convolutions of one input, each reduced by a max over time, concatenated:
    cat([max(conv1d(input, W_k, b_k), dim=2) for k], dim=1) as one op (Kim et al.'s char CNN).

    Parameters
    ----------
    input : Tensor (N, C, L), float
    weights : sequence of Tensors (O_k, C, K_k), K_k <= L, same dtype and device as input
    biases : sequence of Tensors (O_k,) or None (one per weight), or None for no biases

    Returns
    -------
    Tensor (N, sum_k O_k):  y_k[n, o] = max_{t < L - K_k + 1} (b_k[o] + sum_{c, j} W_k[o, c, j]
    x[n, c, t + j]), kernel k's block at columns O_1 + ... + O_{k-1} onward.

    Backward (derived in the module docstring): the gradient of y_k[n, o] reaches the window at
    its first arg-max t* only: dW_k[o, c, j] = sum_n dy_k[n, o] x[n, c, t* + j],
    dx[n, c, t* + j] += sum_o W_k[o, c, j] dy_k[n, o],  db_k = sum_n dy_k.
    Runs on `choose_route`'s route, or the one forced by `fast.use(conv1d_max_over_time=...)`.
    """
    x, weights, biases = _validate(input, weights, biases)
    return Conv1dMaxOverTime.apply(x, *weights, *biases, kernels=len(weights))


def _validate(input, weights, biases):
    op = "conv1d_max_over_time"
    x = check_ndim(check_float(as_tensor(input, f"{op}: input"), f"{op}: input"), f"{op}: input",
                   3, "(N, C, L)")
    n, c, length = x.shape
    if not isinstance(weights, (list, tuple)) or not weights:
        raise ValueError(f"{op}: weights: expected a non-empty list of (O, C, K) tensors, "
                         f"got {weights!r}")
    if biases is None:
        biases = [None] * len(weights)
    if not isinstance(biases, (list, tuple)) or len(biases) != len(weights):
        raise ValueError(f"{op}: biases: expected None or a list of {len(weights)} (one per "
                         f"weight), got {biases!r}")
    ws, bs = [], []
    for k, (w, b) in enumerate(zip(weights, biases)):
        name = f"{op}: weights[{k}]"
        w = check_ndim(check_float(as_tensor(w, name), name), name, 3, "(O, C, K)")
        if w.shape[1] != c or not 1 <= w.shape[2] <= length:
            raise ValueError(f"{name}: expected shape (O, {c}, K) with 1 <= K <= {length} for "
                             f"input {tuple(x.shape)}, got {tuple(w.shape)}")
        if b is not None:
            b = check_shape(as_tensor(b, f"{op}: biases[{k}]"), f"{op}: biases[{k}]",
                            (w.shape[0],), "(O,)")
        check_same(f"{op}: input", x, **{name: w, f"{op}: biases[{k}]": b})
        ws.append(w)
        bs.append(b)
    return x, ws, bs
