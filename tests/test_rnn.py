"""tinyhw.ops.rnn.lstm: gradient checks, references (a NumPy loop, torch.nn.LSTM), errors."""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyhw import autograd
from tinyhw.gradcheck import gradcheck
from tinyhw.ops.rnn import lstm
from tinyhw.tensor import Tensor

from .strategies import lstm_inputs

ORDER = ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")


def _positional(drawn):
    return [drawn[name] for name in ORDER]


def _flat_lstm(*args):
    output, (h_T, c_T) = lstm(*args)
    return output, h_T, c_T


def reference_lstm(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
    """The LSTM equations step by step, in plain NumPy, gates in i, f, g, o order."""
    def sigmoid(a):
        return 1.0 / (1.0 + np.exp(-a))

    bias = (0 if b_ih is None else b_ih) + (0 if b_hh is None else b_hh)
    h, c, outputs = h0, c0, []
    for x_t in x:
        a_i, a_f, a_g, a_o = np.split(x_t @ w_ih.T + h @ w_hh.T + bias, 4, axis=1)
        c = sigmoid(a_f) * c + sigmoid(a_i) * np.tanh(a_g)
        h = sigmoid(a_o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs), h, c


def _random_args(rng, T=4, B=3, D=5, H=6, bias=True, dtype=np.float64):
    def draw(*shape):
        return (rng.uniform(-1, 1, size=shape)).astype(dtype)
    return [draw(T, B, D), draw(B, H), draw(B, H), draw(4 * H, D), draw(4 * H, H),
            draw(4 * H) if bias else None, draw(4 * H) if bias else None]


# ---- gradient checks --------------------------------------------------------------------------
@given(lstm_inputs())
def test_gradcheck_all_inputs_and_outputs(drawn):
    # Random cotangents on output, h_T and c_T; gradients of input, h0, c0, weights, biases.
    gradcheck(_flat_lstm, _positional(drawn), n_directions=3)


@given(lstm_inputs(), st.sampled_from(["output", "h_T", "c_T"]))
def test_gradcheck_one_output_used(drawn, which):
    # The engine fills zero gradients for the unused outputs.
    index = ("output", "h_T", "c_T").index(which)
    gradcheck(lambda *a: _flat_lstm(*a)[index], _positional(drawn))


@given(lstm_inputs(), st.sets(st.sampled_from(range(7)), min_size=1))
def test_gradcheck_some_inputs_constant(drawn, wrt):
    # Inputs outside `wrt` are constants: backward must skip them and still be right for the rest.
    gradcheck(_flat_lstm, _positional(drawn), wrt=wrt)


def test_gradcheck_every_element(rng):
    gradcheck(_flat_lstm, _random_args(rng, T=3, B=2, D=2, H=2), mode="full")


# ---- forward and backward references -----------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_numpy_loop(rng, bias):
    args = _random_args(rng, bias=bias)
    output, (h_T, c_T) = lstm(*args)
    expected = reference_lstm(*args)
    for got, want in zip((output, h_T, c_T), expected):
        np.testing.assert_allclose(got.data, want, rtol=1e-12, atol=1e-12)


def test_single_bias_is_added(rng):
    args = _random_args(rng)
    for keep in (5, 6):
        partial = [a if k < 5 or k == keep else None for k, a in enumerate(args)]
        np.testing.assert_allclose(lstm(*partial)[0].data, reference_lstm(*partial)[0], atol=1e-12)


def test_float32_stays_float32(rng):
    args = _random_args(rng, dtype=np.float32)
    output, (h_T, c_T) = lstm(*args)
    assert output.dtype == h_T.dtype == c_T.dtype == np.float32
    expected = reference_lstm(*[None if a is None else a.astype(np.float64) for a in args])
    np.testing.assert_allclose(output.data, expected[0], atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch_forward_and_gradients(rng, bias):
    torch = pytest.importorskip("torch")
    T, B, D, H = 5, 3, 4, 6
    module = torch.nn.LSTM(D, H, bias=bias).double()
    weights = [p.detach().numpy().copy() for p in module.parameters()]
    x, h0, c0 = (rng.standard_normal(s) for s in ((T, B, D), (B, H), (B, H)))
    cotangents = [rng.standard_normal(s) for s in ((T, B, H), (B, H), (B, H))]

    ours = [Tensor(a.copy(), requires_grad=True) for a in [x, h0, c0, *weights]]
    args = ours if bias else ours + [None, None]
    output, (h_T, c_T) = lstm(*args)
    autograd.backward([output, h_T, c_T], cotangents)

    tx, th, tc = (torch.tensor(a, requires_grad=True) for a in (x, h0[None], c0[None]))
    t_out, (t_h, t_c) = module(tx, (th, tc))
    torch.autograd.backward([t_out, t_h[0], t_c[0]], [torch.tensor(u) for u in cotangents])

    for got, want in zip((output, h_T, c_T), (t_out, t_h[0], t_c[0])):
        np.testing.assert_allclose(got.data, want.detach().numpy(), rtol=1e-10, atol=1e-12)
    theirs = [tx.grad, th.grad[0], tc.grad[0], *(p.grad for p in module.parameters())]
    for ours_t, want in zip(ours, theirs):
        np.testing.assert_allclose(ours_t.grad, want.numpy(), rtol=1e-10, atol=1e-12)


def test_carried_state_equals_one_long_sequence(rng):
    # Two calls chained through (h_T, c_T) (as truncated BPTT carries state) compute the same
    # outputs and, without a detach, the same weight and h0/c0 gradients as one call.
    x, h0, c0, *weights = _random_args(rng, T=6)
    u_out, u_h, u_c = (rng.standard_normal(s) for s in ((6, 3, 6), (3, 6), (3, 6)))

    def run(chunks):
        leaves = [Tensor(a.copy(), requires_grad=True) for a in (h0, c0, *weights)]
        h, c = leaves[0], leaves[1]
        outputs, seeds, start = [], [], 0
        for length in chunks:
            out, (h, c) = lstm(x[start:start + length], h, c, *leaves[2:])
            outputs.append(out)
            seeds.append(u_out[start:start + length])
            start += length
        autograd.backward(outputs + [h, c], seeds + [u_h, u_c])
        return np.concatenate([o.data for o in outputs]), [t.grad for t in leaves]

    whole, grads_whole = run([6])
    chained, grads_chained = run([4, 2])
    np.testing.assert_allclose(chained, whole, atol=1e-13)
    for a, b in zip(grads_chained, grads_whole):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_backward_leaves_cotangents_untouched(rng):
    args = [Tensor(a, requires_grad=True) for a in _random_args(rng)]
    output, (h_T, c_T) = lstm(*args)
    cotangents = [rng.standard_normal(t.shape) for t in (output, h_T, c_T)]
    copies = [u.copy() for u in cotangents]
    autograd.backward([output, h_T, c_T], cotangents)
    for u, before in zip(cotangents, copies):
        np.testing.assert_array_equal(u, before)


def test_bias_gradients_do_not_share_memory(rng):
    args = [Tensor(a, requires_grad=True) for a in _random_args(rng)]
    output, _ = lstm(*args)
    output.sum().backward()
    np.testing.assert_array_equal(args[5].grad, args[6].grad)
    assert not np.shares_memory(args[5].grad, args[6].grad)


# ---- argument errors ----------------------------------------------------------------------------
def _replace(args, index, value):
    return args[:index] + [value] + args[index + 1:]


# T=4, B=3, D=5, H=6 in _random_args.
ERRORS = [
    (0, np.zeros((3, 5)), ValueError,
     "lstm: input: expected a 3-D tensor (T, B, D), got shape (3, 5)"),
    (0, np.zeros((0, 3, 5)), ValueError, "lstm: input: expected at least one time step"),
    (0, np.zeros((4, 3, 5), dtype=np.int64), TypeError, "lstm: input: expected a floating-point"),
    (1, np.zeros((2, 6)), ValueError,
     "lstm: h0: expected shape (3, 6) (B, H) with B=3, H=6, got (2, 6)"),
    (1, np.zeros((3, 6, 1)), ValueError, "lstm: h0: expected shape (3, 6)"),
    (2, np.zeros((3, 5)), ValueError,
     "lstm: c0: expected shape (3, 6) (B, H) with B=3, H=6, got (3, 5)"),
    (2, [[0.0] * 6] * 3, TypeError, "lstm: c0: expected a Tensor, got list"),
    (3, np.zeros((24, 4)), ValueError,
     "lstm: w_ih: expected shape (24, 5) (4H, D) with H=6, D=5, got (24, 4)"),
    (3, np.zeros((20, 5)), ValueError, "lstm: w_ih: expected shape (24, 5)"),
    (4, np.zeros((24, 5)), ValueError, "lstm: w_hh: expected shape (20, 5) (4H, H), got (24, 5)"),
    (4, np.zeros(24), ValueError, "lstm: w_hh: expected a 2-D tensor (4H, H), got shape (24,)"),
    (4, np.zeros((24, 6), dtype=np.float32), TypeError,
     "lstm: w_hh: dtype float32 differs from lstm: input's"),
    (5, np.zeros(23), ValueError, "lstm: b_ih: expected shape (24,) (4H,) with H=6, got (23,)"),
    (6, np.zeros((1, 24)), ValueError, "lstm: b_hh: expected shape (24,)"),
    (6, np.zeros(24, dtype=np.int32), TypeError, "lstm: b_hh: expected a floating-point"),
]


@pytest.mark.parametrize("index, value, error, message", ERRORS)
def test_argument_errors(rng, index, value, error, message):
    args = _replace(_random_args(rng), index, value)
    with pytest.raises(error, match=re.escape(message)):
        lstm(*args)


def test_mixed_devices(rng, monkeypatch):
    # No GPU needed: pretend w_ih lives on the GPU by patching the device lookup the checks use.
    import tinyhw.checks as checks
    args = _random_args(rng)
    on_gpu = args[3]
    monkeypatch.setattr(checks, "device_of", lambda a: "gpu" if a is on_gpu else "cpu")
    message = "lstm: w_ih: on device 'gpu', but lstm: input is on 'cpu'"
    with pytest.raises(ValueError, match=message):
        lstm(*args)
