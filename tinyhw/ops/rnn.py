"""LSTM over a whole sequence, with a hand-written backward through time.

One layer, one direction, gates in torch.nn.LSTM's order i, f, g, o. For
t = 1..T, with x_t (B, D), h_{t-1}, c_{t-1} (B, H):

    a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh          (B, 4H) = [a_i | a_f | a_g | a_o]
    i = sigma(a_i),  f = sigma(a_f),  g = tanh(a_g),  o = sigma(a_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Backward through time. Let dh_t be the total gradient reaching h_t (from the
output y_t = h_t and from step t+1) and dc_t the gradient reaching c_t from
step t+1 (dc_T is the cotangent of c_T, dh_T includes that of h_T). Then

    dh_t  = dy_t + da_{t+1} W_hh                      (recurrent path, one GEMM per step)
    do    = dh_t * tanh(c_t)
    dc    = dc_t + dh_t * o * (1 - tanh^2(c_t))      (total gradient on c_t)
    di    = dc * g,   df = dc * c_{t-1},   dg = dc * i
    da_i  = di * i (1 - i),  da_f = df * f (1 - f),  da_o = do * o (1 - o),  da_g = dg * (1 - g^2)
    dc_{t-1} = dc * f

and, with the da_t stacked over all steps as dA (T*B, 4H), X (T*B, D) and
H_prev (T*B, H) the stacked h_{t-1}:

    dX = dA W_ih,   dW_ih = dA^T X,   dW_hh = dA^T H_prev,   db_ih = db_hh = sum of the rows of dA
    dh_0 = da_1 W_hh,   dc_0 = dc * f at t = 1.

So the only sequential work is one GEMM with W_hh and some (B, H) elementwise
maths per step; everything that can be batched over time is one big GEMM. Gate
activations and tanh(c_t) are saved in preallocated buffers in forward, and the
per-step maths writes into preallocated buffers (out=, in place) so the inner
loops allocate nothing. Inside the loops every per-step array is kept
transposed, (features, B): see `LSTM`.
"""
from ..autograd import Function
from ..checks import as_tensor, check_float, check_ndim, check_same, check_shape


def _sigmoid_(xp, a):
    """In-place sigmoid as 0.5 * (1 + tanh(a / 2)): equal to 1 / (1 + e^-a), never overflows."""
    a *= 0.5
    xp.tanh(a, out=a)
    a *= 0.5
    a += 0.5


def _split(a, H):
    """The four gate blocks i, f, g, o (each (H, B)) of a (4H, B) array."""
    return a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:]


def _cell_forward(xp, gates, c_prev, c, tanh_c, h, scratch):
    """Turn pre-activations `gates` (4H, B) into activations in place; write c_t, tanh(c_t), h_t."""
    H = c.shape[0]
    i, f, g, o = _split(gates, H)
    _sigmoid_(xp, gates[:2 * H])            # i and f are adjacent: one call for both
    xp.tanh(g, out=g)
    _sigmoid_(xp, o)
    xp.multiply(f, c_prev, out=c)
    xp.multiply(i, g, out=scratch)
    c += scratch
    xp.tanh(c, out=tanh_c)
    xp.multiply(o, tanh_c, out=h)


def _cell_backward(xp, gates, c_prev, tanh_c, dh, dc, da, scratch, scratch2):
    """One step of the backward recursion (module docstring), on (features, B) blocks.

    Reads the activations `gates` (4H, B), c_{t-1}, tanh(c_t) and dh_t; writes the
    pre-activation gradient into `da` (4H, B); turns `dc` from dc_t into dc_{t-1} in place.
    """
    H = dh.shape[0]
    i, f, g, o = _split(gates, H)
    da_i, da_f, da_g, da_o = _split(da, H)
    # dc += dh * o * (1 - tanh^2 c)
    xp.multiply(tanh_c, tanh_c, out=scratch)
    xp.subtract(1, scratch, out=scratch)
    scratch *= o
    scratch *= dh
    dc += scratch
    # da_o = dh * tanh(c) * o (1 - o)
    xp.multiply(dh, tanh_c, out=da_o)
    xp.subtract(1, o, out=scratch)
    scratch *= o
    da_o *= scratch
    # da_i = dc * g * i (1 - i) and da_f = dc * c_{t-1} * f (1 - f); i and f share one factor call
    xp.multiply(dc, g, out=da_i)
    xp.multiply(dc, c_prev, out=da_f)
    xp.subtract(1, gates[:2 * H], out=scratch2)
    scratch2 *= gates[:2 * H]
    da[:2 * H] *= scratch2
    # da_g = dc * i * (1 - g^2)
    xp.multiply(g, g, out=scratch)
    xp.subtract(1, scratch, out=scratch)
    scratch *= i
    xp.multiply(dc, scratch, out=da_g)
    dc *= f


def _input_gates(xp, x, w_ih, b_ih, b_hh):
    """x_t W_ih^T + b_ih + b_hh for every t in one GEMM, returned as (T, 4H, B)."""
    T, B, D = x.shape
    G = w_ih.shape[0]
    projected = xp.matmul(x.reshape(T * B, D), w_ih.T).reshape(T, B, G).transpose(0, 2, 1)
    gates = xp.empty((T, G, B), dtype=x.dtype)
    biases = [b for b in (b_ih, b_hh) if b is not None]
    if biases:
        xp.add(projected, sum(biases)[:, None], out=gates)
    else:
        gates[...] = projected
    return gates


class LSTM(Function):
    """Inputs x, h0, c0, w_ih, w_hh, b_ih, b_hh; outputs (y, h_T, c_T).

    Inside, every per-step array is laid out (features, B) (gates (T, 4H, B), states
    (T, H, B)): then the recurrent GEMMs W_hh h^T and W_hh^T da run faster in BLAS than
    their (B, features) transposes for a small batch (about 1.3x with OpenBLAS at B = 20),
    and each gate block is contiguous. Only the arrays that meet the big weight GEMMs
    (the output/H_prev and dA) are kept batch-major, (T, B, *).
    """

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        xp = ctx.xp
        T, B, D = x.shape
        H = w_hh.shape[1]
        gates = _input_gates(xp, x, w_ih, b_ih, b_hh)
        h = xp.empty((T + 1, H, B), dtype=x.dtype)     # h[t] = h_t^T, h[0] = h0^T
        c = xp.empty((T + 1, H, B), dtype=x.dtype)     # c[t] = c_t^T, c[0] = c0^T
        tanh_c = xp.empty((T, H, B), dtype=x.dtype)    # tanh_c[t - 1] = tanh(c_t)^T
        h[0], c[0] = h0.T, c0.T
        recurrent = xp.empty((4 * H, B), dtype=x.dtype)
        scratch = xp.empty((H, B), dtype=x.dtype)
        for t in range(T):
            xp.matmul(w_hh, h[t], out=recurrent)
            gates[t] += recurrent
            _cell_forward(xp, gates[t], c[t], c[t + 1], tanh_c[t], h[t + 1], scratch)
        # Back to (B, H): hs[1:] is the output, hs[:T] the H_prev of dW_hh.
        hs = xp.empty((T + 1, B, H), dtype=x.dtype)
        hs[0] = h0
        hs[1:] = h[1:].transpose(0, 2, 1)
        ctx.save(x, w_ih, w_hh, gates, hs, c, tanh_c)
        return hs[1:], hs[T].copy(), c[T].T.copy()

    @staticmethod
    def backward(ctx, gy, gh_T, gc_T):
        xp = ctx.xp
        x, w_ih, w_hh, gates, hs, c, tanh_c = ctx.saved
        need_x, need_h0, need_c0, need_w_ih, need_w_hh, need_b_ih, need_b_hh = ctx.needs_input_grad
        T, B, D = x.shape
        H = w_hh.shape[1]
        da, dh0, dc0 = _backward_through_time(xp, gy, gh_T, gc_T, gates, c, tanh_c, w_hh, need_h0)
        da2 = da.reshape(T * B, 4 * H)                   # dA (T*B, 4H)
        dx = None
        if need_x:
            dx = xp.empty((T, B, D), dtype=x.dtype)      # owned, not a reshaped view: no copy later
            xp.matmul(da2, w_ih, out=dx.reshape(T * B, D))
        dw_ih = xp.matmul(da2.T, x.reshape(T * B, D)) if need_w_ih else None
        dw_hh = xp.matmul(da2.T, hs[:T].reshape(T * B, H)) if need_w_hh else None
        db = da2.sum(axis=0) if (need_b_ih or need_b_hh) else None
        db_ih = db if need_b_ih else None
        # A fresh array for the second bias, so the two .grad never alias one buffer.
        db_hh = (db.copy() if need_b_ih else db) if need_b_hh else None
        return dx, dh0, (dc0 if need_c0 else None), dw_ih, dw_hh, db_ih, db_hh


def _backward_through_time(xp, gy, gh_T, gc_T, gates, c, tanh_c, w_hh, need_h0):
    """Run the recursion of the module docstring from t = T down to 1 (indices T-1..0).

    Returns the pre-activation gradients da (T, B, 4H), dh_0 (B, H) or None, and dc_0 (B, H).
    The incoming cotangents are only read, never modified.
    """
    T, B, H = gy.shape
    dtype = gates.dtype
    da = xp.empty((T, B, 4 * H), dtype=dtype)      # batch-major, as the weight GEMMs want it
    da_t = xp.empty((4 * H, B), dtype=dtype)
    dh = xp.empty((H, B), dtype=dtype)
    dh_next = gh_T.T.astype(dtype, order="C")     # the gradient reaching h_t from step t+1
    dc = gc_T.T.astype(dtype, order="C")
    scratch = xp.empty((H, B), dtype=dtype)
    scratch2 = xp.empty((2 * H, B), dtype=dtype)
    w_hh_t = xp.ascontiguousarray(w_hh.T)         # contiguous W_hh^T: the faster BLAS layout
    for t in range(T - 1, -1, -1):
        xp.add(gy[t].T, dh_next, out=dh)
        _cell_backward(xp, gates[t], c[t], tanh_c[t], dh, dc, da_t, scratch, scratch2)
        da[t] = da_t.T
        if t > 0 or need_h0:
            xp.matmul(w_hh_t, da_t, out=dh_next)
    dh0 = dh_next.T.copy() if need_h0 else None
    return da, dh0, dc.T.copy()


def lstm(input, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
    """A single-layer, unidirectional LSTM run over a whole sequence.

    Parameters
    ----------
    input : Tensor (T, B, D)
        The sequence, time first.
    h0, c0 : Tensor (B, H)
        Initial hidden and cell state (carry them across batches for truncated BPTT;
        gradients flow into both).
    w_ih : Tensor (4H, D)
        Input-to-hidden weights, rows in gate order i, f, g, o (as torch.nn.LSTM).
    w_hh : Tensor (4H, H)
        Hidden-to-hidden weights, same row order.
    b_ih, b_hh : Tensor (4H,) or None

    Returns
    -------
    output : Tensor (T, B, H), all h_t
    (h_T, c_T) : Tensors (B, H), the final states

    Forward:  a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh;  i, f, o = sigma(a_i, a_f, a_o),
    g = tanh(a_g);  c_t = f c_{t-1} + i g;  h_t = o tanh(c_t).
    Backward (derived in the module docstring): per step, from dh_t = dy_t + da_{t+1} W_hh,
    dc = dc_t + dh_t o (1 - tanh^2 c_t);  da_i = dc g i(1-i),  da_f = dc c_{t-1} f(1-f),
    da_g = dc i (1-g^2),  da_o = dh_t tanh(c_t) o(1-o);  dc_{t-1} = dc f.
    Then dX = dA W_ih, dW_ih = dA^T X, dW_hh = dA^T H_prev, db = column sums of dA.
    """
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = _validate(input, h0, c0, w_ih, w_hh, b_ih, b_hh)
    output, h_T, c_T = LSTM.apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    return output, (h_T, c_T)


def _validate(input, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """Check ranks, sizes, dtypes and devices; return the arguments as Tensors."""
    def tensor(value, name):
        return check_float(as_tensor(value, f"lstm: {name}"), f"lstm: {name}")

    x = check_ndim(tensor(input, "input"), "lstm: input", 3, "(T, B, D)")
    if x.shape[0] < 1:
        raise ValueError("lstm: input: expected at least one time step, "
                         f"got shape {tuple(x.shape)}")
    T, B, D = x.shape
    w_hh = check_ndim(tensor(w_hh, "w_hh"), "lstm: w_hh", 2, "(4H, H)")
    H = w_hh.shape[1]
    check_shape(w_hh, "lstm: w_hh", (4 * H, H), "(4H, H)")
    w_ih = check_shape(tensor(w_ih, "w_ih"), "lstm: w_ih", (4 * H, D), f"(4H, D) with H={H}, D={D}")
    h0 = check_shape(tensor(h0, "h0"), "lstm: h0", (B, H), f"(B, H) with B={B}, H={H}")
    c0 = check_shape(tensor(c0, "c0"), "lstm: c0", (B, H), f"(B, H) with B={B}, H={H}")
    biases = [None if b is None else check_shape(tensor(b, name), f"lstm: {name}", (4 * H,),
                                                 f"(4H,) with H={H}")
              for b, name in ((b_ih, "b_ih"), (b_hh, "b_hh"))]
    check_same("lstm: input", x, **{"lstm: h0": h0, "lstm: c0": c0, "lstm: w_ih": w_ih,
                                    "lstm: w_hh": w_hh, "lstm: b_ih": biases[0],
                                    "lstm: b_hh": biases[1]})
    return (x, h0, c0, w_ih, w_hh, *biases)
