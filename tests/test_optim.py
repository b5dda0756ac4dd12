"""SGD, gradient clipping and learning-rate schedules: hand-computed cases, torch
where installed, and state_dict round trips that must resume bit-for-bit."""
import json

import numpy as np
import pytest

import tinyhw
from tinyhw import optim, serialize


def _leaf(values):
    return tinyhw.Tensor(np.array(values, dtype=np.float64), requires_grad=True)


def _grad_sequence(seed, shapes, steps):
    """Per step, per parameter: (scale, offset); the gradient is p * scale + offset, so it
    depends on the parameter (as a real loss's would) and differs from step to step."""
    r = np.random.default_rng(seed)
    return [[(r.uniform(0.5, 1.5, s), r.standard_normal(s)) for s in shapes] for _ in range(steps)]


def _set_grads(params, step_grads):
    for p, (scale, offset) in zip(params, step_grads):
        p.grad = p.data * scale + offset


# ---- SGD -----------------------------------------------------------------------
def test_sgd_closed_form_momentum_and_weight_decay():
    # lr 0.1, momentum 0.5, weight decay 0.1, gradient of the loss constant at 1:
    #   step 1: g = 1 + 0.1*1 = 1.1,        b = 1.1 (first step: b = g),  p = 1 - 0.11 = 0.89
    #   step 2: g = 1 + 0.1*0.89 = 1.089,   b = 0.5*1.1 + 1.089 = 1.639,  p = 0.89 - 0.1639
    p = _leaf([1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.5, weight_decay=0.1)
    for expected in (0.89, 0.7261):
        p.grad = np.ones(1)
        opt.step()
        assert p.data[0] == pytest.approx(expected, rel=1e-14)


def test_sgd_closed_form_nesterov_and_dampening():
    # Nesterov, lr 1, momentum 0.5, gradient constant 2: b1 = 2, step 2*(1 + 0.5) = 3;
    # b2 = 0.5*2 + 2 = 3, step 2 + 0.5*3 = 3.5.
    p = _leaf([0.0])
    opt = optim.SGD([p], lr=1.0, momentum=0.5, nesterov=True)
    for expected in (-3.0, -6.5):
        p.grad = np.full(1, 2.0)
        opt.step()
        assert p.data[0] == expected
    # Dampening 0.5 skips the first step (b1 = g) and halves g afterwards: b2 = 0.9*2 + 1.
    q = _leaf([0.0])
    opt = optim.SGD([q], lr=1.0, momentum=0.9, dampening=0.5)
    for expected in (-2.0, -4.8):
        q.grad = np.full(1, 2.0)
        opt.step()
        assert q.data[0] == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.01),
    dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.05),
    dict(lr=0.2, weight_decay=0.1),
])
def test_sgd_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(3)
    shapes = [(4, 3), (3,)]
    ours = [_leaf(r.standard_normal(s)) for s in shapes]
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    opt, ref = optim.SGD(ours, **kwargs), torch.optim.SGD(theirs, **kwargs)
    for step_grads in _grad_sequence(0, shapes, 6):
        _set_grads(ours, step_grads)
        for t, (scale, offset) in zip(theirs, step_grads):
            t.grad = t.detach() * torch.from_numpy(scale) + torch.from_numpy(offset)
        opt.step()
        ref.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_sgd_skips_parameters_without_gradient_and_groups_have_own_lr():
    a, b, c = _leaf([1.0]), _leaf([1.0]), _leaf([1.0])
    opt = optim.SGD([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1, momentum=0.9)
    a.grad, c.grad = np.ones(1), np.ones(1)
    opt.step()
    assert a.data[0] == pytest.approx(0.9) and c.data[0] == pytest.approx(0.5)
    assert b.data[0] == 1.0 and b not in opt.state
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    opt.zero_grad()
    assert a.grad is None and c.grad is None


def test_sgd_updates_in_place():
    p = _leaf([1.0, 2.0])
    array = p.data
    p.grad = np.ones(2)
    optim.SGD([p], lr=0.1).step()
    assert p.data is array


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-0.1), "lr"),
    (dict(lr=0.1, momentum=-0.5), "momentum"),
    (dict(lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (dict(lr=0.1, dampening=-0.1), "dampening"),
    (dict(lr=0.1, nesterov=True), "nesterov"),
    (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
])
def test_sgd_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optim.SGD([_leaf([1.0])], **kwargs)


def test_sgd_rejects_bad_params():
    with pytest.raises(TypeError, match="lr"):
        optim.SGD([_leaf([1.0])], lr="fast")
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    p = _leaf([1.0])
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def _run(opt, params, grads):
    for step_grads in grads:
        _set_grads(params, step_grads)
        opt.step()


@pytest.mark.parametrize("kwargs", [dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
                                    dict(momentum=0.5, dampening=0.2)])
def test_sgd_state_dict_round_trip_through_a_file_resumes_exactly(tmp_path, kwargs):
    shapes = [(3, 2), (2,)]
    grads = _grad_sequence(5, shapes, 6)
    r = np.random.default_rng(1)
    params = [_leaf(r.standard_normal(s)) for s in shapes]
    opt = optim.SGD(params, lr=0.1, **kwargs)
    _run(opt, params, grads[:3])
    opt.param_groups[0]["lr"] = 0.03  # as a scheduler would
    path = tmp_path / "ckpt.npz"
    serialize.save_checkpoint(path, {str(i): p.data for i, p in enumerate(params)},
                              opt.state_dict())
    _run(opt, params, grads[3:])

    model, optimizer_state, _ = serialize.load_checkpoint(path)
    resumed = [_leaf(model[str(i)]) for i in range(len(shapes))]
    opt2 = optim.SGD(resumed, lr=99.0)  # hyperparameters come from the state
    opt2.load_state_dict(optimizer_state)
    assert opt2.param_groups[0]["lr"] == 0.03
    assert opt2.param_groups[0]["momentum"] == kwargs["momentum"]
    _run(opt2, resumed, grads[3:])
    for p, q in zip(params, resumed):
        assert np.array_equal(p.data, q.data)


def test_sgd_load_state_dict_copies_buffers_and_checks_sizes():
    p = _leaf([1.0, 2.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(2)
    opt.step()
    state = opt.state_dict()
    opt2 = optim.SGD([_leaf([0.0, 0.0])], lr=0.1, momentum=0.9)
    opt2.load_state_dict(state)
    buffer = next(iter(opt2.state.values()))["momentum_buffer"]
    assert np.array_equal(buffer, np.ones(2)) and buffer is not opt.state[p]["momentum_buffer"]
    with pytest.raises(ValueError, match="group 0"):
        optim.SGD([_leaf([0.0]), _leaf([0.0])], lr=0.1).load_state_dict(state)


# ---- gradient clipping ---------------------------------------------------------
def test_clip_grad_norm_scales_above_max_norm():
    a, b, c = _leaf([0.0, 0.0]), _leaf([0.0]), _leaf([0.0])
    a.grad, b.grad = np.array([3.0, 4.0]), np.array([12.0])  # global norm 13; c has no grad
    total = optim.clip_grad_norm_([a, b, c], max_norm=5.0)
    assert total == pytest.approx(13.0, rel=1e-14) and isinstance(total, float)
    scale = 5.0 / (13.0 + 1e-6)
    np.testing.assert_allclose(a.grad, [3 * scale, 4 * scale], rtol=1e-14)
    np.testing.assert_allclose(b.grad, [12 * scale], rtol=1e-14)
    assert c.grad is None


def test_clip_grad_norm_leaves_small_gradients_alone():
    a = _leaf([0.0, 0.0])
    a.grad = np.array([0.3, 0.4])
    before = a.grad.copy()
    assert optim.clip_grad_norm_([a], max_norm=1.0) == pytest.approx(0.5)
    assert np.array_equal(a.grad, before)
    assert optim.clip_grad_norm_([_leaf([1.0])], 1.0) == 0.0  # no gradients at all


def test_clip_grad_norm_matches_torch_in_float32():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(2)
    grads = [r.standard_normal(s).astype(np.float32) * 3 for s in [(5, 4), (4,), (2, 3, 3)]]
    ours = [tinyhw.Tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for p, t, g in zip(ours, theirs, grads):
        p.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
    total = optim.clip_grad_norm_(ours, 2.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 2.0)
    assert total == pytest.approx(float(expected), rel=1e-6)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-6)


# ---- learning-rate schedules ---------------------------------------------------
def _sgd(lr=1.0):
    return optim.SGD([_leaf([0.0])], lr=lr)


def test_kim_halving_compares_with_the_previous_epoch_from_the_third_on():
    opt = _sgd(1.0)
    halving = optim.KimHalving(opt)
    # epochs 1-2 never cut; epoch 3 improves by 0.5 (< 1): cut; epoch 4 gets worse: cut;
    # epoch 5 improves by 8.5 over epoch 4 (though only 8 below the best): no cut.
    cuts = [halving.step(v) for v in (100.0, 99.9, 99.4, 100.0, 91.5, 91.0)]
    assert cuts == [False, False, True, True, False, True]
    assert opt.param_groups[0]["lr"] == 0.125
    assert halving.history == [100.0, 99.9, 99.4, 100.0, 91.5, 91.0]


def test_kim_halving_resumes_from_its_history():
    whole, resumed = optim.KimHalving(_sgd()), None
    values = [50.0, 40.0, 39.5, 39.0, 30.0]
    for v in values[:3]:
        whole.step(v)
    resumed = optim.KimHalving(_sgd(whole.optimizer.param_groups[0]["lr"]),
                               history=json.loads(json.dumps(whole.history)))
    assert [whole.step(v) for v in values[3:]] == [resumed.step(v) for v in values[3:]]


def test_kim_halving_validation():
    with pytest.raises(TypeError, match="Optimizer"):
        optim.KimHalving("not an optimizer")
    with pytest.raises(ValueError, match="factor"):
        optim.KimHalving(_sgd(), factor=1.0)


def test_warmup_then_cosine_or_step():
    assert optim.warmup_cosine_lr(0.2, 0.5, 10, warmup=1) == pytest.approx(0.1)
    assert optim.warmup_cosine_lr(0.2, 1, 10, warmup=1) == pytest.approx(0.2)
    assert optim.warmup_cosine_lr(0.2, 5.5, 10, warmup=1) == pytest.approx(0.1)
    assert optim.warmup_cosine_lr(0.2, 10, 10, warmup=1) == pytest.approx(0.0, abs=1e-15)
    steps = [optim.warmup_step_lr(1.0, p, 8) for p in (0, 3.9, 4, 5.9, 6, 7.9)]
    assert steps == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
