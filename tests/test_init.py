"""Initialisers: fans and gains as torch computes them, sample statistics, reproducibility."""
import math

import numpy as np
import pytest

import tinyhw
from tinyhw import init


def _weight(*shape, dtype=np.float32):
    return tinyhw.Tensor(np.zeros(shape, dtype=dtype))


@pytest.mark.parametrize("shape, expected", [
    ((30, 20), (20, 30)),                 # Linear (out, in)
    ((16, 3, 5), (15, 80)),               # Conv1d (out, in, k)
    ((8, 4, 3, 2), (24, 48)),             # Conv2d (out, in, kh, kw)
])
def test_fans_by_hand(shape, expected):
    assert init.calculate_fan_in_and_fan_out(_weight(*shape)) == expected


@pytest.mark.parametrize("shape", [(30, 20), (16, 3, 5), (8, 4, 3, 2), (1, 7, 1, 1)])
def test_fans_match_torch(shape):
    torch = pytest.importorskip("torch")
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init.calculate_fan_in_and_fan_out(_weight(*shape)) == tuple(expected)


def test_fans_need_two_dims():
    with pytest.raises(ValueError, match="at least 2 dims"):
        init.calculate_fan_in_and_fan_out(_weight(5))


@pytest.mark.parametrize("name, param, expected", [
    ("linear", None, 1.0), ("conv2d", None, 1.0), ("sigmoid", None, 1.0),
    ("tanh", None, 5 / 3), ("relu", None, math.sqrt(2)),
    ("leaky_relu", None, math.sqrt(2 / (1 + 0.01 ** 2))),
    ("leaky_relu", math.sqrt(5), math.sqrt(2 / 6)), ("selu", None, 0.75),
])
def test_calculate_gain(name, param, expected):
    assert init.calculate_gain(name, param) == pytest.approx(expected, rel=1e-12)


def test_calculate_gain_matches_torch():
    torch = pytest.importorskip("torch")
    for name, param in [("tanh", None), ("relu", None), ("leaky_relu", 0.2), ("conv1d", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(
            torch.nn.init.calculate_gain(name, param), rel=1e-12)


def test_calculate_gain_rejects_unknown():
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")


def _stats(t):
    a = t.numpy().astype(np.float64)
    return a.min(), a.max(), a.mean(), a.std()


def test_uniform_statistics_and_in_place():
    t = _weight(200, 100)
    array = t.data
    init.uniform_(t, -2.0, 3.0)
    low, high, mean, std = _stats(t)
    assert t.data is array  # filled in place: holders of the array see the new values
    assert -2.0 <= low and high < 3.0
    assert mean == pytest.approx(0.5, abs=0.05)
    assert std == pytest.approx(5 / math.sqrt(12), rel=0.02)


def test_normal_statistics():
    t = init.normal_(_weight(200, 100), mean=1.5, std=0.5)
    _, _, mean, std = _stats(t)
    assert mean == pytest.approx(1.5, abs=0.01)
    assert std == pytest.approx(0.5, rel=0.02)


def test_constant_zeros_ones_keep_dtype():
    t = _weight(3, 4, dtype=np.float64)
    assert np.all(init.constant_(t, -0.25).data == -0.25)
    assert np.all(init.zeros_(t).data == 0) and np.all(init.ones_(t).data == 1)
    assert t.dtype == np.float64


def test_xavier():
    t = init.xavier_uniform_(_weight(300, 100), gain=2.0)
    bound = 2.0 * math.sqrt(6 / 400)
    low, high, _, std = _stats(t)
    assert -bound <= low and high <= bound and high > 0.95 * bound
    assert std == pytest.approx(bound / math.sqrt(3), rel=0.02)
    _, _, mean, std = _stats(init.xavier_normal_(_weight(300, 100)))
    assert abs(mean) < 0.005 and std == pytest.approx(math.sqrt(2 / 400), rel=0.02)


@pytest.mark.parametrize("mode, fan", [("fan_in", 36), ("fan_out", 72)])
def test_kaiming_uniform_bound(mode, fan):
    t = init.kaiming_uniform_(_weight(8, 4, 3, 3), mode=mode, nonlinearity="relu")
    bound = math.sqrt(3) * math.sqrt(2) / math.sqrt(fan)
    low, high, _, _ = _stats(t)
    assert -bound <= low and high <= bound and high > 0.9 * bound


def test_kaiming_uniform_torch_default_gives_inverse_sqrt_fan_in():
    # Linear's default init: a = sqrt(5) makes the bound exactly 1 / sqrt(fan_in).
    t = init.kaiming_uniform_(_weight(400, 25), a=math.sqrt(5))
    low, high, _, std = _stats(t)
    assert -0.2 <= low and high <= 0.2 and high > 0.19
    assert std == pytest.approx(0.2 / math.sqrt(3), rel=0.02)


def test_kaiming_normal_statistics():
    t = init.kaiming_normal_(_weight(200, 50, 2), mode="fan_in", nonlinearity="relu")
    _, _, mean, std = _stats(t)
    assert abs(mean) < 0.005 and std == pytest.approx(math.sqrt(2 / 100), rel=0.02)


def test_kaiming_rejects_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(_weight(3, 3), mode="fan_avg")


def test_manual_seed_makes_init_reproducible():
    tinyhw.manual_seed(7)
    a = init.normal_(_weight(5, 5)).numpy().copy()
    b = init.normal_(_weight(5, 5)).numpy().copy()
    tinyhw.manual_seed(7)
    assert np.array_equal(init.normal_(_weight(5, 5)).numpy(), a)
    assert not np.array_equal(a, b)  # the stream moves on between draws


@pytest.mark.skipif(not tinyhw.gpu_available(), reason="needs a GPU")
def test_initialisers_fill_gpu_tensors_on_the_gpu():
    t = tinyhw.tensor(np.zeros((50, 40), np.float32), device="gpu")
    array = t.data
    init.kaiming_uniform_(t, a=math.sqrt(5))
    assert t.data is array and t.device == "gpu" and t.dtype == np.float32
    assert 0 < float(abs(t.data).max()) <= 1 / math.sqrt(40)
