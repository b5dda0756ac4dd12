"""SGD, gradient clipping and learning-rate schedules: hand-computed cases, torch
where installed, and state_dict round trips that must resume bit-for-bit."""
import json
import math

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


def _lrs(scheduler, epochs, metrics=None):
    """Learning rate after construction and after each of `epochs` steps."""
    out = [scheduler.optimizer.param_groups[0]["lr"]]
    for e in range(epochs):
        scheduler.step() if metrics is None else scheduler.step(metrics[e])
        out.append(scheduler.optimizer.param_groups[0]["lr"])
    return out


def test_step_lr_by_hand():
    assert _lrs(optim.StepLR(_sgd(1.0), step_size=2, gamma=0.5), 5) == [1, 1, .5, .5, .25, .25]


def test_cosine_annealing_by_hand():
    T, base, eta = 4, 0.1, 0.01
    expected = [eta + (base - eta) * (1 + math.cos(math.pi * t / T)) / 2 for t in range(11)]
    got = _lrs(optim.CosineAnnealingLR(_sgd(base), T_max=T, eta_min=eta), 10)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert got[T] == pytest.approx(eta) and got[2 * T] == pytest.approx(base)


def test_plateau_kims_rule_by_hand():
    # Halve whenever the perplexity is not at least 1.0 below the best so far.
    metrics = [100.0, 99.5, 98.0, 98.5, 90.0, 89.2, 87.0]
    got = _lrs(optim.ReduceLROnPlateau(_sgd(1.0)), 7, metrics)
    assert got == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]


def test_plateau_patience_cooldown_min_lr_by_hand():
    s = optim.ReduceLROnPlateau(_sgd(1.0), factor=0.1, patience=1, cooldown=1, min_lr=0.005,
                                threshold=0.0)
    # bad epochs 2 and 3 -> cut at 3; epoch 4 is in cooldown; bad 5 and 6 -> cut at 6 ...
    got = _lrs(s, 9, [5.0] * 9)
    assert got == pytest.approx([1, 1, 1, .1, .1, .1, .01, .01, .01, .005])


def _torch_lrs(torch, make, epochs, lr, metrics=None):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = make(opt)
    out = [opt.param_groups[0]["lr"]]
    for e in range(epochs):
        opt.step()
        sched.step() if metrics is None else sched.step(metrics[e])
        out.append(opt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("name, kwargs", [
    ("StepLR", dict(step_size=3, gamma=0.3)),
    ("StepLR", dict(step_size=1, gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=5, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=3)),
])
def test_epoch_schedulers_match_torch_exactly(name, kwargs):
    torch = pytest.importorskip("torch")
    ours = _lrs(getattr(optim, name)(_sgd(0.2), **kwargs), 13)
    theirs = _torch_lrs(torch, lambda o: getattr(torch.optim.lr_scheduler, name)(o, **kwargs),
                        13, 0.2)
    assert ours == theirs


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(mode="min", factor=0.5, patience=1, threshold=0.02, threshold_mode="rel", cooldown=2),
    dict(mode="max", factor=0.3, patience=0, threshold=0.5, threshold_mode="abs", min_lr=0.01),
])
def test_plateau_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    metrics = [10.0, 9.0, 8.9, 9.5, 7.0, 7.1, 7.05, 6.0, 6.5, 6.4, 6.39, 3.0, 3.2, 3.1]
    full = dict(dict(mode="min", factor=0.5, patience=0, threshold=1.0, threshold_mode="abs"),
                **kwargs)
    ours = _lrs(optim.ReduceLROnPlateau(_sgd(1.0), **kwargs), len(metrics), metrics)
    theirs = _torch_lrs(torch, lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **full),
                        len(metrics), 1.0, metrics)
    assert ours == theirs


@pytest.mark.parametrize("make, metrics", [
    (lambda o: optim.StepLR(o, step_size=2, gamma=0.5), None),
    (lambda o: optim.CosineAnnealingLR(o, T_max=4, eta_min=0.01), None),
    (lambda o: optim.ReduceLROnPlateau(o, patience=1, cooldown=1), [5, 4, 4.5, 4.2, 4, 4, 4, 2]),
])
def test_scheduler_state_dict_round_trip_through_json(make, metrics):
    opt = _sgd(0.5)
    sched = make(opt)
    head = None if metrics is None else metrics[:4]
    _lrs(sched, 4, head)
    state = json.loads(json.dumps(sched.state_dict()))   # checkpoints keep it as JSON
    opt_state = opt.state_dict()
    tail = None if metrics is None else metrics[4:]
    expected = _lrs(sched, 4, tail)

    opt2 = _sgd(123.0)
    opt2.load_state_dict(opt_state)
    sched2 = make(opt2)
    sched2.load_state_dict(state)
    assert _lrs(sched2, 4, tail) == expected


@pytest.mark.parametrize("make, message", [
    (lambda o: optim.StepLR(o, step_size=0), "step_size"),
    (lambda o: optim.CosineAnnealingLR(o, T_max=0), "T_max"),
    (lambda o: optim.ReduceLROnPlateau(o, factor=1.0), "factor"),
    (lambda o: optim.ReduceLROnPlateau(o, mode="up"), "mode"),
    (lambda o: optim.ReduceLROnPlateau(o, threshold_mode="pct"), "threshold_mode"),
])
def test_scheduler_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make(_sgd())
    with pytest.raises(TypeError, match="Optimizer"):
        optim.StepLR("not an optimizer", step_size=1)
