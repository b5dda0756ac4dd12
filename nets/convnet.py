"""Convolutional Residual, Highway and plain nets: a stem, stages of blocks, a linear head.

Two families, built from the blocks of `nets.blocks`:
- CIFAR (He et al. 2016, Sec. 4.2): conv3x3(3->16)-BN-ReLU, then 3 stages of n basic blocks
  on 16, 32, 64 channels at 32x32, 16x16, 8x8 (depth 6n + 2), global average pool, linear.
  Shortcuts where the shape changes are parameter-free (option A: subsample, zero-pad).
- ImageNet (torchvision's ResNet-50): conv7x7/2(3->64)-BN-ReLU, max-pool 3x3/2, 4 stages of
  [3, 4, 6, 3] bottlenecks of widths 64, 128, 256, 512 (outputs 4x that), projection
  shortcuts, global average pool, linear. 25,557,032 parameters for 1,000 classes.

`net.stages` is a list of `Stage`s (each a list of blocks), so analysis code can run the stem,
then the blocks one by one, then `net.head`.

Shared blocks (Jastrzebski et al. 2017): with share_blocks=True, within every stage the
blocks after the first all use one block's convolutions (and batch norms): the stage applies its
first block, then one shape-keeping block n - 1 times, like an unrolled recurrence. With
unshared_bn=True each of those iterations keeps its own batch norms (affine parameters and
running statistics; Liao & Poggio 2016), which Jastrzebski et al. found needed to train shared
nets well. The iterations stay separate Block objects (each with its own `lesioned` switch, so
the analyses address them one by one) holding the same Conv2d modules; a module shared this way
is listed once by parameters() and state_dict() (under the first iteration's name), so the
optimizer updates it once, with the gradients of every iteration summed by the autograd engine.
"""
import tinyhw.functional as F
from tinyhw import init, nn

from .blocks import BasicBlock, Bottleneck, ConvUnit, Stage, norm


class ImageNetStem(nn.Module):
    """conv7x7/2 (3->64) -> BN -> ReLU -> max-pool 3x3/2: (N, 3, 224, 224) -> (N, 64, 56, 56)."""

    def __init__(self, bn=True, channels=64):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 7, stride=2, padding=3, bias=not bn)
        self.bn = norm(channels, bn)

    def forward(self, x):
        return F.max_pool2d(F.relu(self.bn(self.conv(x))), 3, stride=2, padding=1)


class ConvNet(nn.Module):
    """stem -> stages -> global average pool -> linear. (N, 3, S, S) -> logits (N, num_classes)."""

    def __init__(self, stem, stages, features, num_classes, share_blocks=False,
                 unshared_bn=False):
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if unshared_bn and not share_blocks:
            raise ValueError("unshared_bn=True needs share_blocks=True (it keeps one batch norm "
                             "per iteration of a shared block)")
        if unshared_bn and not stages[0][0].bn:
            raise ValueError("unshared_bn=True needs batch norms: the net is built with bn=False")
        if share_blocks:
            share_stage_blocks(stages, unshared_bn)
        self.share_blocks, self.unshared_bn = bool(share_blocks), bool(unshared_bn)
        self.stem = stem
        self.stages = nn.ModuleList([Stage(blocks) for blocks in stages])
        self.fc = nn.Linear(features, num_classes)
        self.reset_parameters()

    def reset_parameters(self):
        """torchvision's init: He-normal (fan_out) convs with zero biases, BN at (1, 0); then
        every highway gate bias back to its negative start, and without BN the last
        convolution of every residual branch at zero."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                init.ones_(m.weight)
                init.zeros_(m.bias)
        for block in self.blocks():
            block.reset_gate()
            if block.kind == "residual" and not block.bn:
                # Without BN nothing rescales the sum x + H(x): with He-initialised branches its
                # variance doubles at every block (2^27 over resnet56's blocks: the loss is NaN
                # within steps). Zeroing each branch's last convolution starts every residual
                # block at the identity (as Fixup, Zhang et al. 2019); the branch still learns,
                # since that convolution's own gradient is not zero.
                init.zeros_(block.H[-1].conv.weight)

    def blocks(self):
        """Every block, stage by stage."""
        return [block for stage in self.stages for block in stage]

    def head(self, x):
        """Global average pool and the linear classifier: (N, C, h, w) -> (N, num_classes)."""
        return self.fc(F.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def share_stage_blocks(stages, unshared_bn=False):
    """Make the blocks after the first of every stage (lists of blocks) one shared block: blocks
    2, 3, ... take block 1's Conv2d modules (0-based), and its BatchNorm2d modules too unless
    `unshared_bn`. Block 0 may change the shape, so it keeps its own weights. Done before
    ConvNet.reset_parameters, which then initialises each shared module once."""
    for blocks in stages:
        for block in blocks[2:]:
            _take_weights(block, blocks[1], unshared_bn)


def _take_weights(target, source, unshared_bn):
    """Replace every Conv2d (and, unless unshared_bn, BatchNorm2d) below `target` by the module
    at the same place below `source`, a block of the same structure."""
    for name, child in list(target.named_children()):
        twin = getattr(source, name)
        if isinstance(child, nn.Conv2d) or (isinstance(child, nn.BatchNorm2d) and not unshared_bn):
            setattr(target, name, twin)
        else:
            _take_weights(child, twin, unshared_bn)


def make_stages(in_channels, counts, out_channels, make_block):
    """He et al.'s stage layout, for both families: stage i holds counts[i] blocks with
    out_channels[i] outputs, built by make_block(i, in_channels, out_channels, stride); the
    first block of every stage but the first halves the resolution (stride 2), and every other
    block keeps the shape. Returns the stages (each a list of blocks) and the channels of
    their output."""
    stages = []
    for i, (n, channels) in enumerate(zip(counts, out_channels)):
        blocks = []
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            blocks.append(make_block(i, in_channels, channels, stride))
            in_channels = channels
        stages.append(blocks)
    return stages, in_channels


CIFAR_DEPTHS = (20, 32, 56, 110)
CIFAR_CHANNELS = (16, 32, 64)


def cifar_net(depth, kind, num_classes=10, bn=True, share_blocks=False, unshared_bn=False):
    """He et al.'s CIFAR net of `depth` = 6n + 2 layers with blocks of `kind`; with
    share_blocks, the blocks after the first of each stage share their weights (see above)."""
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"cifar_net: depth must be 6n + 2 (e.g. {CIFAR_DEPTHS}), got {depth}")
    n = (depth - 2) // 6
    stages, channels = make_stages(
        CIFAR_CHANNELS[0], [n] * len(CIFAR_CHANNELS), CIFAR_CHANNELS,
        lambda i, c_in, c_out, stride: BasicBlock(c_in, c_out, stride, kind, bn))
    stem = ConvUnit(3, CIFAR_CHANNELS[0], 3, 1, bn)
    return ConvNet(stem, stages, channels, num_classes, share_blocks, unshared_bn)


RESNET50_LAYERS = (3, 4, 6, 3)
RESNET50_WIDTHS = (64, 128, 256, 512)
# Highway-50's bottleneck widths: two branches (H and the gate) of these widths hold about as
# many weights as ResNet-50's one branch, so the whole net is within 2% of its parameters.
HIGHWAY50_WIDTHS = (40, 80, 160, 320)   # 5/8 of ResNet-50's; 0.4% fewer parameters


def imagenet_net(kind, num_classes=1000, bn=True, widths=RESNET50_WIDTHS, final_relu=False,
                 layers=RESNET50_LAYERS, share_blocks=False, unshared_bn=False):
    """A 50-layer ImageNet net: ResNet-50's trunk (stage outputs 256, 512, 1024, 2048 channels)
    with bottleneck blocks of `kind` and inner `widths` (shared as the CIFAR nets')."""
    stages, channels = make_stages(
        64, layers, [w * Bottleneck.expansion for w in RESNET50_WIDTHS],
        lambda i, c_in, c_out, stride: Bottleneck(c_in, widths[i], stride, kind, bn, c_out,
                                                  final_relu))
    return ConvNet(ImageNetStem(bn), stages, channels, num_classes, share_blocks, unshared_bn)
