"""The convolutional Residual / Highway / plain nets: sizes, shapes, gradients, block API."""
import numpy as np
import pytest

import tinyhw
import tinyhw.functional as F
from nets import (ARCHS, BasicBlock, Bottleneck, build_image_net, cifar_net, count_parameters,
                  highway20, highway50, highway_full50, plain20, resnet20, resnet50)
from nets.blocks import PadShortcut
from nets.convnet import imagenet_net
from tinyhw import Tensor


def _tensor(r, *shape):
    return Tensor(r.standard_normal(shape))


# ---- sizes -----------------------------------------------------------------------------
def test_resnet50_has_torchvisions_parameter_count():
    assert count_parameters(resnet50()) == 25_557_032


@pytest.mark.parametrize("factory", [highway50, highway_full50])
def test_highway50_parameters_within_two_percent_of_resnet50(factory):
    n = count_parameters(factory())
    assert abs(n / 25_557_032 - 1) < 0.02


def test_resnet20_has_he_et_als_parameter_count():
    assert count_parameters(resnet20()) == 269_722   # He et al.: 0.27M


@pytest.mark.parametrize("depth", [20, 32, 56, 110])
@pytest.mark.parametrize("bn", [True, False])
def test_cifar_highway_and_plain_nets_match_resnet_parameters(depth, bn):
    ref = count_parameters(ARCHS[f"resnet{depth}"](bn=bn))
    assert count_parameters(ARCHS[f"plain{depth}"](bn=bn)) == ref
    assert abs(count_parameters(ARCHS[f"highway{depth}"](bn=bn)) / ref - 1) < 0.02


def test_no_bn_drops_every_batch_norm_and_gives_convs_biases():
    net = resnet50(num_classes=10, bn=False)
    modules = list(net.modules())
    assert not any(isinstance(m, tinyhw.nn.BatchNorm2d) for m in modules)
    convs = [m for m in modules if isinstance(m, tinyhw.nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)
    assert all(c.bias is None for c in resnet20().modules() if isinstance(c, tinyhw.nn.Conv2d))


@pytest.mark.parametrize("depth,blocks", [(20, 3), (56, 9)])
def test_cifar_stages_hold_n_blocks_and_change_shape_only_at_their_first(depth, blocks):
    net = cifar_net(depth, "residual")
    assert [len(s) for s in net.stages] == [blocks] * 3
    x = tinyhw.Tensor(np.zeros((2, 3, 32, 32), np.float32))
    x = net.stem(x)
    shapes = []
    for stage in net.stages:
        outs = stage(x, keep=True)
        shapes.append([tuple(o.shape) for o in outs])
        x = outs[-1]
    assert shapes == [[(2, c, s, s)] * blocks for c, s in ((16, 32), (32, 16), (64, 8))]


def test_resnet50_stages_follow_torchvision():
    net = resnet50(num_classes=7)
    assert [len(s) for s in net.stages] == [3, 4, 6, 3]
    assert len(net.blocks()) == 16
    assert net.fc.weight.shape == (7, 2048)


# ---- forward -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet20", "highway20", "plain20"])
@pytest.mark.parametrize("bn", [True, False])
def test_cifar_nets_give_logits_per_image(name, bn):
    tinyhw.manual_seed(0)
    net = build_image_net(name, 10, bn=bn)
    y = net(tinyhw.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32))
                          .astype(np.float32)))
    assert y.shape == (2, 10) and y.dtype == np.float32 and np.isfinite(y.data).all()


def test_tiny_imagenet_net_forward_shape():
    """The 50-layer trunk at one block per stage and a 64x64 input (224 is slow on 2 cores)."""
    net = imagenet_net("highway", num_classes=5, widths=(4, 4, 4, 4), layers=(1, 1, 1, 1))
    y = net(tinyhw.Tensor(np.zeros((1, 3, 64, 64), np.float32)))
    assert y.shape == (1, 5)


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown arch 'resnet18'.*resnet20"):
        build_image_net("resnet18", 10)


def test_bad_depth_and_kind_are_clear_errors():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        cifar_net(21, "residual")
    with pytest.raises(ValueError, match="kind must be one of"):
        BasicBlock(4, 4, kind="dense")


def test_pad_shortcut_subsamples_and_zero_pads_channels(rng):
    x = rng.standard_normal((2, 4, 6, 6))
    y = PadShortcut(4, 8, 2)(Tensor(x)).data
    assert y.shape == (2, 8, 3, 3)
    np.testing.assert_array_equal(y[:, 2:6], x[:, :, ::2, ::2])
    assert not y[:, :2].any() and not y[:, 6:].any()


def test_highway_block_combines_transform_and_shortcut_with_its_gate(rng):
    tinyhw.manual_seed(0)
    block = BasicBlock(4, 4, kind="highway").double()
    x = _tensor(rng, 3, 4, 5, 5)
    h, s, t = block.transform(x).data, block.shortcut(x).data, block.gate(x).data
    np.testing.assert_allclose(block(x).data, h * t + s * (1 - t), rtol=1e-12)
    # The gate starts mostly closed: the BN's shift is -2, so the mean gate is near sigmoid(-2).
    assert 0.05 < t.mean() < 0.3


def test_residual_and_plain_blocks(rng):
    tinyhw.manual_seed(0)
    x = _tensor(rng, 2, 4, 5, 5)
    res = BasicBlock(4, 4, kind="residual").double()
    np.testing.assert_allclose(res(x).data,
                               np.maximum(res.transform(x).data + x.data, 0), rtol=1e-12)
    plain = BasicBlock(4, 4, kind="plain").double()
    assert plain.gate(x) is None
    np.testing.assert_allclose(plain(x).data, np.maximum(plain.transform(x).data, 0))


@pytest.mark.parametrize("kind", ["residual", "highway", "plain"])
def test_lesioned_block_returns_its_identity_path(kind, rng):
    block = BasicBlock(4, 8, stride=2, kind=kind).double()
    x = _tensor(rng, 2, 4, 6, 6)
    block.lesioned = True
    np.testing.assert_array_equal(block(x).data, block.shortcut(x).data)


def test_eval_mode_uses_batch_norm_running_statistics(rng):
    tinyhw.manual_seed(0)
    net = resnet20().double()
    x = _tensor(rng, 4, 3, 32, 32)
    net.train()
    for _ in range(3):
        net(x)                                   # moves the running statistics
    net.eval()
    one = net(Tensor(x.data[:1])).data           # in eval, a sample's output
    four = net(x).data[:1]                       # does not depend on the rest of the batch
    np.testing.assert_allclose(one, four, rtol=1e-10, atol=1e-12)
    net.train()
    assert not np.allclose(net(Tensor(x.data[:1])).data, one)   # batch statistics in training


# ---- gradients ---------------------------------------------------------------------------
def _check_block_gradients(block, x, seed=0):
    """Directional derivative through the input and every parameter at once, in float64,
    against central differences of L = <block(x), u> for a random cotangent u."""
    r = np.random.default_rng(seed)
    params = list(block.parameters())
    x = Tensor(x, requires_grad=True)
    u = r.standard_normal(block(x).shape)
    out = block(x)
    (out * Tensor(u)).sum().backward()
    leaves = [x] + params
    directions = [r.standard_normal(p.shape) for p in leaves]
    analytic = sum(float((p.grad * v).sum()) for p, v in zip(leaves, directions))
    eps, values = 1e-6, []
    for sign in (1, -1):
        for p, v in zip(leaves, directions):
            p.data += sign * eps * v
        with tinyhw.no_grad():
            values.append(float((block(x).data * u).sum()))
        for p, v in zip(leaves, directions):
            p.data -= sign * eps * v
    numeric = (values[0] - values[1]) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("kind", ["residual", "highway", "plain"])
@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_basic_block_gradients(kind, bn, stride, rng):
    tinyhw.manual_seed(1)
    block = BasicBlock(2, 4 if stride == 2 else 2, stride, kind, bn).double()
    _check_block_gradients(block, rng.standard_normal((3, 2, 5, 5)))


@pytest.mark.parametrize("kind,final_relu", [("residual", False), ("highway", False),
                                             ("highway", True)])
@pytest.mark.parametrize("bn", [True, False])
def test_bottleneck_block_gradients(kind, final_relu, bn, rng):
    tinyhw.manual_seed(2)
    block = Bottleneck(3, 2, stride=2, kind=kind, bn=bn, final_relu=final_relu).double()
    _check_block_gradients(block, rng.standard_normal((2, 3, 6, 6)))


def test_whole_tiny_net_gradients_through_loss(rng):
    tinyhw.manual_seed(3)
    net = cifar_net(8, "highway", num_classes=3).double()
    x = rng.standard_normal((3, 3, 8, 8))
    targets = Tensor(np.array([0, 2, 1]))

    class Loss(tinyhw.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return F.cross_entropy(self.net(x), targets)
    _check_block_gradients(Loss(), x)


def test_plain_blocks_ignore_their_shortcut_unless_lesioned(rng):
    """plain20's parameter-free shortcuts exist only for lesioning: its output never uses them."""
    tinyhw.manual_seed(0)
    net = plain20().double().eval()
    x = _tensor(rng, 2, 3, 32, 32)
    h = net.stem(x)
    for block in net.blocks():
        h = F.relu(block.transform(h))
    np.testing.assert_allclose(net(x).data, net.head(h).data, rtol=1e-12)
    assert [b.changes_shape for b in net.blocks()] == [False] * 3 + [True, False, False] * 2
    assert all(b.kind == "highway" for b in highway20().blocks())


def test_plain_bottleneck_has_no_shortcut_to_lesion():
    block = Bottleneck(4, 2, kind="plain")
    with pytest.raises(ValueError, match="no shortcut"):
        block.shortcut(Tensor(np.zeros((1, 4, 4, 4))))


def test_residual_nets_without_bn_start_at_the_identity_and_stay_finite(rng):
    """Zero-initialised last convolutions: each residual block passes relu(x) at init, so
    even 110 layers without BN give finite, moderate logits."""
    tinyhw.manual_seed(0)
    net = ARCHS["resnet110"](bn=False)
    for block in net.blocks():
        assert not block.H[-1].conv.weight.data.any()
    y = net(Tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))).data
    assert np.isfinite(y).all() and np.abs(y).max() < 100
    assert ARCHS["highway20"](bn=False).blocks()[0].H[-1].conv.weight.data.any()


# ---- shared blocks (Jastrzebski et al. 2017) ---------------------------------------------------
def _bn_parameters(block):
    return sum(m.weight.size + m.bias.size for m in block.modules()
               if isinstance(m, tinyhw.nn.BatchNorm2d))


@pytest.mark.parametrize("arch", ["resnet20", "highway20", "resnet32"])
def test_shared_nets_count_each_shared_block_once(arch):
    """shared = stem + first block of each stage + one shared block per stage + head; unshared
    BN adds each extra iteration's batch norms (2 C per BN layer: weight and bias)."""
    ref = build_image_net(arch, 10)
    shared = build_image_net(arch, 10, share_blocks=True)
    unshared_bn = build_image_net(arch, 10, share_blocks=True, unshared_bn=True)
    expected = (count_parameters(ref.stem) + count_parameters(ref.fc)
                + sum(count_parameters(stage[0]) + count_parameters(stage[1])
                      for stage in ref.stages))
    assert count_parameters(shared) == expected
    extra_bn = sum((len(stage) - 2) * _bn_parameters(stage[1]) for stage in ref.stages)
    assert count_parameters(unshared_bn) == expected + extra_bn
    if arch == "resnet20":   # two BN layers of C channels per basic block: 4 C per iteration
        assert extra_bn == 4 * (16 + 32 + 64)
        assert (count_parameters(shared), count_parameters(unshared_bn)) == (172_506, 172_954)


def test_shared_iterations_hold_the_same_convolutions_and_their_own_switches():
    net = resnet20(share_blocks=True, unshared_bn=True)
    for stage in net.stages:
        first, one, two = stage
        assert two.H[0].conv is one.H[0].conv and two.H[1].conv is one.H[1].conv
        assert first.H[1].conv is not one.H[1].conv          # the first block keeps its own
        assert two.H[0].bn is not one.H[0].bn                 # unshared BN: one per iteration
        assert two is not one and not two.lesioned
    shared = resnet20(share_blocks=True)
    assert shared.stages[0][2].H[0].bn is shared.stages[0][1].H[0].bn
    # A shared module is saved once, under the first iteration's name.
    keys = set(shared.state_dict())
    assert "stages.0.1.H.0.conv.weight" in keys and "stages.0.2.H.0.conv.weight" not in keys
    assert "stages.0.2.H.0.bn.weight" in set(net.state_dict())
    # So a checkpoint of the other kind does not load silently.
    with pytest.raises(RuntimeError, match="unexpected keys"):
        shared.load_state_dict(resnet20().state_dict())
    with pytest.raises(RuntimeError, match="missing keys"):
        resnet20().load_state_dict(shared.state_dict())


def test_sharing_flags_are_checked():
    with pytest.raises(ValueError, match="needs share_blocks=True"):
        resnet20(unshared_bn=True)
    with pytest.raises(ValueError, match="needs batch norms"):
        resnet20(bn=False, share_blocks=True, unshared_bn=True)


@pytest.mark.parametrize("kind,bn,unshared_bn", [("residual", True, False),
                                                 ("residual", True, True),
                                                 ("highway", True, True),
                                                 ("residual", False, False)])
def test_whole_tiny_shared_net_gradients_through_loss(kind, bn, unshared_bn, rng):
    tinyhw.manual_seed(4)
    net = cifar_net(20, kind, num_classes=3, bn=bn, share_blocks=True,
                    unshared_bn=unshared_bn).double()
    if not bn:   # the zero-initialised last convolutions would hide the shared branch
        for p in net.parameters():
            p.data += 0.1 * rng.standard_normal(p.shape)
    targets = Tensor(np.array([0, 2]))

    class Loss(tinyhw.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return F.cross_entropy(self.net(x), targets)
    _check_block_gradients(Loss(), rng.standard_normal((2, 3, 8, 8)))


def test_shared_weights_get_the_sum_of_every_iterations_gradient(rng):
    """The shared net's gradient equals that of an unshared net holding the same weights at
    every iteration, summed over the iterations."""
    tinyhw.manual_seed(5)
    shared = resnet20(num_classes=3, share_blocks=True, unshared_bn=True).double()
    twin = resnet20(num_classes=3).double()
    twin_state = twin.state_dict()
    for key in twin_state:               # every iteration k >= 1 gets iteration 1's weights
        parts = key.split(".")
        source = key if key in shared.state_dict() else ".".join(parts[:2] + ["1"] + parts[3:])
        twin_state[key][...] = shared.state_dict()[source]
    x = Tensor(rng.standard_normal((2, 3, 8, 8)))
    y = Tensor(np.array([1, 2]))
    for net in (shared, twin):
        F.cross_entropy(net(x), y).backward()
    for s in range(3):
        conv = shared.stages[s][1].H[0].conv.weight
        summed = sum(twin.stages[s][k].H[0].conv.weight.grad for k in (1, 2))
        np.testing.assert_allclose(conv.grad, summed, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(shared.stages[s][2].H[0].bn.weight.grad,
                                   twin.stages[s][2].H[0].bn.weight.grad, rtol=1e-10)
