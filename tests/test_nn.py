"""tinyhw.nn: module mechanics, state dicts, default initialisation, train/eval behaviour,
the layers against torch.nn (when installed), the Highway layer, and a tiny training run."""
import math
from collections import OrderedDict

import numpy as np
import pytest

import tinyhw
import tinyhw.nn as nn
from tinyhw import optim, serialize
from tinyhw.gradcheck import gradcheck
from tinyhw.ops.loss import cross_entropy


def _x(*shape, seed=0, scale=1.0, dtype=np.float32):
    return tinyhw.Tensor((np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(3, np.float32))
        self.register_buffer("count", tinyhw.Tensor(np.zeros((), np.int64)))
        self.inner = nn.Linear(3, 2)
        self.note = "plain attribute"

    def forward(self, x):
        return self.inner(x * self.scale)


# ---- registration and traversal ------------------------------------------------
def test_registration_by_assignment():
    b = Block()
    assert [n for n, _ in b.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    assert [n for n, _ in b.named_buffers()] == ["count"]
    assert list(b.children()) == [b.inner]
    assert list(b.modules()) == [b, b.inner]
    assert b.note == "plain attribute" and "note" not in b._parameters
    assert isinstance(b.scale, nn.Parameter) and b.scale.requires_grad
    assert list(b.state_dict()) == ["scale", "count", "inner.weight", "inner.bias"]


def test_registration_errors_and_removal():
    b = Block()
    with pytest.raises(TypeError, match="parameter 'scale'"):
        b.scale = tinyhw.Tensor(np.ones(3, np.float32))  # a plain Tensor is not a Parameter
    with pytest.raises(TypeError, match="buffer 'count'"):
        b.count = np.zeros(())

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(1))

    with pytest.raises(AttributeError, match=r"call super\(\)\.__init__\(\) first"):
        Early()
    del b.inner
    assert [n for n, _ in b.named_parameters()] == ["scale"]
    b.scale = None
    assert b.scale is None and list(b.parameters()) == [] and "scale" not in b.state_dict()


def test_shared_parameters_listed_once():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    assert len(list(model.modules())) == 3  # Sequential, Linear (once), ReLU


def test_sequential_and_module_list():
    layers = [nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)]
    seq = nn.Sequential(*layers)
    x = _x(5, 4)
    y = layers[2](layers[1](layers[0](x)))
    assert np.array_equal(seq(x).data, y.data)
    assert len(seq) == 3 and seq[-1] is layers[2] and list(seq) == layers
    assert [n for n, _ in seq[0:2].named_parameters()] == ["0.weight", "0.bias"]
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.Tanh())]))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    ml = nn.ModuleList([nn.Linear(2, 2)]).append(nn.Linear(2, 1))
    ml[0] = nn.Linear(2, 5)
    assert [tuple(p.shape) for p in ml.parameters()] == [(5, 2), (5,), (1, 2), (1,)]
    with pytest.raises(IndexError, match="out of range"):
        ml[2]


def test_repr_is_readable():
    text = repr(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                              nn.ReLU(), nn.Highway(8, variant="full")))
    assert ("(0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), "
            "bias=False)") in text
    assert "(1): BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True)" in text
    assert "(3): Highway(\n    8, variant='full', gate_bias=-2.0\n    (H): Linear(" in text
    assert "    (C): Linear(in_features=8, out_features=8, bias=True)\n  )\n)" in text


def test_zero_grad_train_eval_flags():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.2))
    model(_x(2, 3)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert model.eval() is model and not any(m.training for m in model.modules())
    assert all(m.training for m in model.train().modules())


def test_to_and_astype_keep_parameter_identity():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    params = list(model.parameters())
    opt = optim.SGD(model.parameters(), lr=0.1)
    model(_x(4, 3)).sum().backward()
    assert model.to("cpu") is model and list(model.parameters()) == params
    model.double()
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in params)
    assert model[1].running_var.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64  # integer buffers untouched
    assert opt.param_groups[0]["params"] == params
    assert model(_x(4, 3, dtype=np.float64)).dtype == np.float64
    assert all(p.dtype == np.float32 for p in model.float().parameters())


@pytest.mark.skipif(not tinyhw.gpu_available(), reason="needs a GPU")
def test_to_gpu_and_back():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).eval()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    model.to("gpu")
    assert all(p.device == "gpu" for p in params) and list(model.parameters()) == params
    y = model(_x(4, 3).to("gpu"))
    assert y.device == "gpu"
    model.to("cpu")
    for key, value in model.state_dict().items():
        assert isinstance(value, np.ndarray) and np.array_equal(value, before[key]), key


# ---- state dicts -----------------------------------------------------------------
def _small_model():
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Highway(6),
                         nn.Linear(6, 3))


def test_state_dict_round_trip_through_file_is_exact(tmp_path):
    tinyhw.manual_seed(1)
    model = _small_model()
    model(_x(8, 4))  # training forward: moves the BN running statistics off their defaults
    path = tmp_path / "model.npz"
    serialize.save(model.state_dict(), path)

    tinyhw.manual_seed(2)
    other = _small_model()
    params = list(other.parameters())
    arrays = [p.data for p in params]
    other.load_state_dict(serialize.load(path)[0])
    for (key, a), (key2, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert key == key2 and a.dtype == b.dtype and np.array_equal(a, b), key
    assert [p.data for p in other.parameters()] == arrays  # same Parameters, same arrays
    x = _x(5, 4, seed=3)
    assert np.array_equal(model.eval()(x).data, other.eval()(x).data)


def test_load_state_dict_copies_and_casts():
    model = nn.Linear(2, 2)
    state = {"weight": np.ones((2, 2)), "bias": np.zeros(2)}  # float64 into float32
    model.load_state_dict(state)
    state["weight"][0, 0] = 5.0
    assert model.weight.dtype == np.float32 and model.weight.data[0, 0] == 1.0


def test_load_state_dict_errors_name_keys_and_shapes():
    model = _small_model()
    good = {k: v.copy() for k, v in model.state_dict().items()}
    before = {k: v.copy() for k, v in good.items()}

    missing = dict(good)
    del missing["3.T.bias"]
    with pytest.raises(RuntimeError, match=r"missing keys: 3\.T\.bias"):
        model.load_state_dict(missing)
    with pytest.raises(RuntimeError, match="unexpected keys: extra.weight"):
        model.load_state_dict(dict(good, **{"extra.weight": np.ones(1)}))
    wrong = dict(good, **{"0.weight": np.ones((6, 5)), "0.bias": np.ones(6)})
    with pytest.raises(RuntimeError, match=r"0\.weight: expected shape \(6, 4\).*got \(6, 5\)"):
        model.load_state_dict(wrong)
    for key, value in model.state_dict().items():  # failed loads changed nothing
        assert np.array_equal(value, before[key]), key

    result = model.load_state_dict(dict(missing, **{"extra": np.ones(1)}), strict=False)
    assert result.missing_keys == ["3.T.bias"] and result.unexpected_keys == ["extra"]
    with pytest.raises(RuntimeError, match="shape"):
        model.load_state_dict({"0.bias": np.ones(2)}, strict=False)


def test_manual_seed_makes_models_reproducible():
    tinyhw.manual_seed(5)
    a = _small_model().state_dict()
    tinyhw.manual_seed(5)
    b = _small_model().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


# ---- default initialisation --------------------------------------------------------
def test_default_initialisation():
    lin = nn.Linear(400, 300)
    for p in (lin.weight, lin.bias):
        assert np.abs(p.data).max() <= 1 / 20 and np.abs(p.data).max() > 0.9 / 20
    conv = nn.Conv2d(4, 8, 3)
    assert np.abs(conv.weight.data).max() <= 1 / 6 and np.abs(conv.bias.data).max() <= 1 / 6
    lstm = nn.LSTM(10, 25, num_layers=2)
    assert all(np.abs(p.data).max() <= 0.2 for p in lstm.parameters())
    assert max(np.abs(p.data).max() for p in lstm.parameters()) > 0.19
    bn = nn.BatchNorm2d(5)
    assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)
    assert np.all(bn.running_mean.data == 0) and np.all(bn.running_var.data == 1)
    emb = nn.Embedding(500, 40, padding_idx=-1)
    assert emb.padding_idx == 499 and np.all(emb.weight.data[499] == 0)
    assert abs(emb.weight.data[:499].std() - 1) < 0.02 and abs(emb.weight.data.mean()) < 0.02


@pytest.mark.parametrize("make", [
    lambda m: m.Linear(7, 5), lambda m: m.Linear(7, 5, bias=False),
    lambda m: m.Conv2d(3, 8, 3), lambda m: m.Conv2d(3, 8, (3, 1), stride=2, bias=False),
    lambda m: m.Conv1d(4, 6, 5), lambda m: m.LSTM(10, 20, num_layers=2),
    lambda m: m.LSTM(10, 20, bias=False), lambda m: m.Embedding(50, 8),
    lambda m: m.BatchNorm1d(6), lambda m: m.BatchNorm2d(6),
])
def test_names_and_shapes_match_torch(make):
    torch = pytest.importorskip("torch")
    ours, theirs = make(nn), make(torch.nn)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
           [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    assert sum(p.size for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


# ---- layers against torch -----------------------------------------------------------
def _copy_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


@pytest.mark.parametrize("hx", [False, True])
def test_lstm_two_layers_matches_torch(hx):
    torch = pytest.importorskip("torch")
    T, B, D, H = 5, 3, 4, 6
    theirs = torch.nn.LSTM(D, H, num_layers=2, dropout=0.3).double().eval()
    ours = nn.LSTM(D, H, num_layers=2, dropout=0.3).double().eval()
    _copy_from_torch(ours, theirs)
    x = _x(T, B, D, seed=1, dtype=np.float64)
    x.requires_grad = True
    tx = torch.tensor(x.data, requires_grad=True)
    states = tstates = None
    if hx:  # carried states (truncated BPTT): gradients must reach them too
        states = tuple(_x(2, B, H, seed=s, dtype=np.float64).requires_grad_() for s in (2, 3))
        tstates = tuple(torch.tensor(s.data, requires_grad=True) for s in states)
    out, (h, c) = ours(x, states)
    tout, (th, tc) = theirs(tx, tstates)
    for a, b in ((out, tout), (h, th), (c, tc)):
        np.testing.assert_allclose(a.data, b.detach().numpy(), rtol=1e-10, atol=1e-12)
    r = np.random.default_rng(4)
    cot = [r.standard_normal(t.shape) for t in (out, h, c)]
    tinyhw.autograd.backward([out, h, c], cot)
    torch.autograd.backward([tout, th, tc], [torch.tensor(u) for u in cot])
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    for s, ts in zip(states or (), tstates or ()):
        np.testing.assert_allclose(s.grad, ts.grad.numpy(), rtol=1e-9, atol=1e-12)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, getattr(theirs, name).grad.numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)


def test_lstm_dropout_between_layers_only_in_training():
    tinyhw.manual_seed(0)
    x = _x(4, 2, 3)
    two = nn.LSTM(3, 5, num_layers=2, dropout=0.5)
    train_out = two(x)[0].data
    assert not np.allclose(train_out, two.eval()(x)[0].data)
    one = nn.LSTM(3, 5, num_layers=1, dropout=0.5)  # no layer after the last: no dropout
    assert np.array_equal(one(x)[0].data, one.eval()(x)[0].data)
    out, (h, c) = two(x)
    assert out.shape == (4, 2, 5) and h.shape == c.shape == (2, 2, 5)
    with pytest.raises(ValueError, match=r"h_0 must have shape"):
        two(x, (tinyhw.Tensor(np.zeros((1, 2, 5), np.float32)),) * 2)
    with pytest.raises(ValueError, match=r"\(T, B, 3\)"):
        two(_x(4, 3))


def test_conv_and_embedding_modules_match_torch():
    torch = pytest.importorskip("torch")
    for make, x in [(lambda m: m.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1), _x(2, 3, 7, 6)),
                    (lambda m: m.Conv1d(3, 4, 3, padding=1), _x(2, 3, 8))]:
        ours, theirs = make(nn), make(torch.nn)
        _copy_from_torch(ours, theirs)
        expected = theirs(torch.tensor(x.data)).detach().numpy()
        np.testing.assert_allclose(ours(x).data, expected, rtol=1e-5, atol=1e-5)
    ours, theirs = nn.Embedding(10, 3, padding_idx=0), torch.nn.Embedding(10, 3, padding_idx=0)
    _copy_from_torch(ours, theirs)
    ids = np.array([[0, 3, 3], [9, 0, 1]])
    ours(tinyhw.Tensor(ids)).sum().backward()
    theirs(torch.tensor(ids)).sum().backward()
    np.testing.assert_array_equal(ours.weight.grad, theirs.weight.grad.numpy())


def test_batchnorm_train_and_eval_match_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.BatchNorm2d(3, momentum=0.2), torch.nn.BatchNorm2d(3, momentum=0.2)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-1, 1)
    _copy_from_torch(ours, theirs)
    for seed in (1, 2):
        x = _x(4, 3, 5, 5, seed=seed, scale=2.0)
        np.testing.assert_allclose(ours(x).data, theirs(torch.tensor(x.data)).detach().numpy(),
                                   rtol=1e-4, atol=1e-5)
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=1e-5, err_msg=key)
    x = _x(2, 3, 4, 4, seed=3)
    np.testing.assert_allclose(ours.eval()(x).data,
                               theirs.eval()(torch.tensor(x.data)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


# ---- train / eval behaviour ------------------------------------------------------
def test_batchnorm_uses_batch_stats_in_training_and_running_stats_in_eval():
    bn = nn.BatchNorm1d(3, momentum=0.1)
    x = _x(64, 3, seed=1, scale=3.0)
    x.data += np.array([1.0, -2.0, 5.0], np.float32)
    y = bn(x).data
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(0), 1, rtol=1e-3)
    np.testing.assert_allclose(bn.running_mean.data, 0.1 * x.data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.data, 0.9 + 0.1 * x.data.var(0, ddof=1), rtol=1e-5)
    assert bn.num_batches_tracked.item() == 1

    bn.eval()
    stats = (bn.running_mean.data.copy(), bn.running_var.data.copy())
    z = _x(5, 3, seed=2)
    expected = (z.data - stats[0]) / np.sqrt(stats[1] + bn.eps)
    np.testing.assert_allclose(bn(z).data, expected, rtol=1e-5, atol=1e-6)
    assert np.array_equal(bn.running_mean.data, stats[0]) and bn.num_batches_tracked.item() == 1
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        nn.BatchNorm2d(3)(z)


def test_dropout_train_and_eval():
    tinyhw.manual_seed(0)
    drop = nn.Dropout(0.25)
    x = tinyhw.Tensor(np.ones((100, 100), np.float32))
    y = drop(x).data
    assert set(np.unique(y).tolist()) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.02
    assert np.array_equal(drop.eval()(x).data, x.data)
    with pytest.raises(ValueError, match="p must be"):
        nn.Dropout(1.5)


# ---- constructor arguments ------------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda: nn.Linear(0, 2), r"Linear: in_features: must be positive, got 0"),
    (lambda: nn.Linear(3, -1), r"Linear: out_features: must be positive, got -1"),
    (lambda: nn.Conv2d(0, 4, 3), r"Conv2d: in_channels: must be positive, got 0"),
    (lambda: nn.Conv2d(3, 4, 0), r"Conv2d: kernel_size: must be positive, got 0"),
    (lambda: nn.Conv2d(3, 4, (3, -1)), r"Conv2d: kernel_size: must be positive, got -1"),
    (lambda: nn.Conv2d(3, 4, 3, stride=0), r"Conv2d: stride: must be positive, got 0"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), r"Conv2d: padding: must be >= 0, got -1"),
    (lambda: nn.Conv1d(3, 0, 3), r"Conv1d: out_channels: must be positive, got 0"),
    (lambda: nn.Conv1d(3, 4, 0), r"Conv1d: kernel_size: must be positive, got 0"),
    (lambda: nn.BatchNorm2d(0), r"BatchNorm2d: num_features: must be positive, got 0"),
    (lambda: nn.BatchNorm1d(4, eps=0), r"BatchNorm1d: eps must be a positive number, got 0"),
    (lambda: nn.Embedding(0, 4), r"Embedding: num_embeddings: must be positive, got 0"),
    (lambda: nn.Embedding(10, -3), r"Embedding: embedding_dim: must be positive, got -3"),
    (lambda: nn.LSTM(4, 0), r"LSTM: hidden_size: must be positive, got 0"),
    (lambda: nn.LSTM(4, 8, num_layers=0), r"LSTM: num_layers: must be positive, got 0"),
    (lambda: nn.Highway(0), r"Highway: dim: must be positive, got 0"),
])
def test_non_positive_sizes_are_refused(make, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        make()


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Linear(2.5, 3), r"Linear: in_features: expected an int, got 2.5 \(float\)"),
    (lambda: nn.Linear("4", 3), r"Linear: in_features: expected an int, got '4' \(str\)"),
    (lambda: nn.Linear(True, 3), r"Linear: in_features: expected an int, got True \(bool\)"),
    (lambda: nn.Conv2d(3.0, 4, 3), r"Conv2d: in_channels: expected an int, got 3.0"),
    (lambda: nn.BatchNorm1d(None), r"BatchNorm1d: num_features: expected an int, got None"),
    (lambda: nn.Embedding(10, 4, padding_idx=1.5), r"Embedding: padding_idx: expected an int"),
    (lambda: nn.LSTM(4.0, 8), r"LSTM: input_size: expected an int, got 4.0"),
    (lambda: nn.Highway(8.0), r"Highway: dim: expected an int, got 8.0"),
])
def test_non_integer_sizes_are_refused(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_numpy_integer_sizes_are_accepted():
    n = np.int64(4)
    layers = [nn.Linear(n, n), nn.Conv2d(n, n, np.int32(3)), nn.Conv1d(n, n, np.int64(2)),
              nn.BatchNorm2d(n), nn.Embedding(n, n), nn.LSTM(n, n), nn.Highway(n)]
    assert all(type(v) is int for m in layers for v in vars(m).values()
               if isinstance(v, (int, np.integer)) and not isinstance(v, bool))


# ---- Highway ---------------------------------------------------------------------
FORMULAS = {
    "plain": lambda h, x, t, c: h,
    "residual": lambda h, x, t, c: h + x,
    "t_only": lambda h, x, t, c: h * t + x,
    "c_only": lambda h, x, t, c: h + x * c,
    "coupled": lambda h, x, t, c: h * t + x * (1 - t),
    "full": lambda h, x, t, c: h * t + x * c,
}
GATES = {"plain": "", "residual": "", "t_only": "T", "c_only": "C", "coupled": "T", "full": "TC"}


def _dense(layer, x, act):
    return act(x @ layer.weight.data.T + layer.bias.data)


@pytest.mark.parametrize("variant", list(FORMULAS))
def test_highway_variants_compute_their_formula(variant):
    tinyhw.manual_seed(3)
    hw = nn.Highway(4, variant=variant).double()
    names = {n.split(".")[0] for n, _ in hw.named_parameters()}
    assert names == {"H"} | set(GATES[variant])
    x = _x(2, 3, 4, seed=1, dtype=np.float64)
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    h = _dense(hw.H, x.data, lambda a: np.maximum(a, 0))
    t = _dense(hw.T, x.data, sig) if "T" in names else None
    c = _dense(hw.C, x.data, sig) if "C" in names else None
    y = hw(x)
    assert y.shape == (2, 3, 4)
    np.testing.assert_allclose(y.data, FORMULAS[variant](h, x.data, t, c), rtol=1e-12)


@pytest.mark.parametrize("variant", list(FORMULAS))
def test_highway_gate_biases_make_it_carry_at_init(variant):
    hw = nn.Highway(16, variant=variant)
    t, c = hw.gates(_x(256, 16, scale=1e-3))
    if "T" in GATES[variant]:
        assert np.all(hw.T.bias.data == -2.0)
        assert t.data.mean() == pytest.approx(1 / (1 + math.e ** 2), abs=1e-3)
    if "C" in GATES[variant]:
        assert np.all(hw.C.bias.data == 2.0)
        assert c.data.mean() == pytest.approx(1 / (1 + math.e ** -2), abs=1e-3)
    assert nn.Highway(4, variant=variant, gate_bias=-1.0).gate_bias == -1.0
    with pytest.raises(ValueError, match="variant"):
        nn.Highway(4, variant="gated")


def _directional_check_parameters(module, x, seed=0, eps=1e-6):
    """<dL/dtheta, v> by backward against (L(theta + eps v) - L(theta - eps v)) / 2 eps."""
    r = np.random.default_rng(seed)
    params = list(module.parameters())
    u = r.standard_normal(module(x).shape)
    module.zero_grad()
    tinyhw.autograd.backward([module(x)], [u])
    v = [r.standard_normal(p.shape) for p in params]
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(params, v))

    def loss(sign):
        for p, d in zip(params, v):
            p.data += sign * eps * d
        with tinyhw.no_grad():
            value = float((module(x).data * u).sum())
        for p, d in zip(params, v):
            p.data -= sign * eps * d
        return value

    numeric = (loss(1) - loss(-1)) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("variant", ["coupled", "full", "c_only"])
def test_highway_gradients(variant):
    tinyhw.manual_seed(4)
    hw = nn.Highway(3, variant=variant, gate_bias=-0.5).double()
    x = np.random.default_rng(1).standard_normal((4, 3))
    gradcheck(hw, [x], n_directions=3)
    _directional_check_parameters(hw, tinyhw.Tensor(x))


def test_gradients_of_a_stacked_model():
    tinyhw.manual_seed(6)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Highway(4, "t_only"), nn.Linear(4, 2))
    model.double()
    _directional_check_parameters(model, _x(5, 3, dtype=np.float64))


# ---- a tiny training run -----------------------------------------------------------
def test_tiny_model_learns_with_sgd():
    tinyhw.manual_seed(0)
    r = np.random.default_rng(0)
    x = tinyhw.Tensor(r.standard_normal((32, 4)).astype(np.float32))
    target = tinyhw.Tensor((x.data[:, 0] > 0).astype(np.int64) + (x.data[:, 1] > 0))
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Highway(16), nn.Linear(16, 3))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = cross_entropy(model(x), target)
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_highway_gate_offset_is_a_constant_on_top_of_the_learned_bias():
    layer = nn.Highway(3, "full", gate_bias=0.0, gate_offset=-2.0)
    for p in layer.parameters():
        p.data[...] = 0.0
    t, c = layer.gates(tinyhw.Tensor(np.ones((2, 3), np.float32)))
    np.testing.assert_allclose(t.data, 1 / (1 + np.exp(2.0)), rtol=1e-6)   # sigmoid(-2)
    np.testing.assert_allclose(c.data, 1 / (1 + np.exp(-2.0)), rtol=1e-6)  # sigmoid(+2)
    assert {n for n, _ in layer.named_parameters()} == {
        "H.weight", "H.bias", "T.weight", "T.bias", "C.weight", "C.bias"}
