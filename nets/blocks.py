"""The blocks of the convolutional Residual, Highway and plain nets, and the stage that holds them.

Every block maps x (N, C_in, H, W) to y (N, C_out, H/s, W/s) through two paths:
    H(x)         the transform branch (convolutions),
    shortcut(x)  the identity path: x itself, or x projected where the shape changes,
and combines them according to its `kind`:
    residual   y = relu(H(x) + shortcut(x))          (He et al. 2016, post-activation)
    highway    y = H(x) T(x) + shortcut(x) (1 - T(x))  (Srivastava et al. 2015), T from a gate
               branch of the same receptive field as H, ending in a sigmoid
    plain      y = relu(H(x))                         (no skip: the baseline that lesioning breaks)
The analysis tools (Greff et al. 2017) need the paths one by one, so every block exposes
`transform(x)`, `shortcut(x)`, `gate(x)` and `combine(h, s, t)`, and `lesioned = True` makes it
return its identity path alone (Veit et al. 2016); `nets.lesioned(blocks)` sets it for a `with`
block.

A `Stage` is the list of blocks between two changes of shape: its first block may change the
shape (stride, channels), the others keep it, so the blocks of a stage refine one representation.

bn=False drops every batch norm and gives the convolutions biases instead.
"""
import tinyhw
import tinyhw.functional as F
from tinyhw import init, nn

KINDS = ("residual", "highway", "plain")

# The transform gate starts mostly closed, so each highway block starts close to its carry path
# (Srivastava et al. 2015 use -1 to -3): sigmoid(-2) ~ 0.12.
GATE_BIAS = -2.0


def conv3x3(in_channels, out_channels, stride=1, bias=False):
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def conv1x1(in_channels, out_channels, stride=1, bias=False):
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)


def norm(channels, bn):
    """BatchNorm2d, or nothing when the net is built without batch norm."""
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


class ConvUnit(nn.Module):
    """conv -> BN (if bn) -> ReLU (if relu): the repeated unit of every branch."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, bn=True, relu=True):
        super().__init__()
        make = conv3x3 if kernel_size == 3 else conv1x1
        self.conv = make(in_channels, out_channels, stride, bias=not bn)
        self.bn = norm(out_channels, bn)
        self.relu = bool(relu)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return F.relu(y) if self.relu else y


class PadShortcut(nn.Module):
    """He et al.'s CIFAR shortcut (option A), free of parameters: keep every `stride`-th pixel
    and zero-pad the new channels equally on both sides. Its gradient is the slice's and the
    concatenation's: the kept pixels of the middle channels get dy, the rest nothing."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        if out_channels < in_channels or (out_channels - in_channels) % 2:
            raise ValueError(f"PadShortcut: out_channels ({out_channels}) must exceed "
                             f"in_channels ({in_channels}) by an even number")
        self.stride = int(stride)
        self.pad = (out_channels - in_channels) // 2

    def forward(self, x):
        s = self.stride
        if s > 1:
            x = x[:, :, ::s, ::s]
        if not self.pad:
            return x
        xp = tinyhw.get_array_module(x.data)
        shape = (x.shape[0], self.pad) + tuple(x.shape[2:])
        zeros = tinyhw.Tensor(xp.zeros(shape, dtype=x.dtype))
        return F.cat([zeros, x, zeros], dim=1)

    def extra_repr(self):
        return f"stride={self.stride}, pad={self.pad}"


def projection(in_channels, out_channels, stride, bn):
    """torchvision's shortcut where the shape changes: 1x1 conv (strided) -> BN."""
    return nn.Sequential(conv1x1(in_channels, out_channels, stride, bias=not bn),
                         norm(out_channels, bn))


def make_shortcut(in_channels, out_channels, stride, style, bn):
    """Identity when the shape is kept; else 'pad' (option A) or 'project' (1x1 conv)."""
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    if style == "pad":
        return PadShortcut(in_channels, out_channels, stride)
    if style == "project":
        return projection(in_channels, out_channels, stride, bn)
    raise ValueError(f"shortcut style must be 'pad' or 'project', got {style!r}")


class Block(nn.Module):
    """Shared combination logic; subclasses build `self.H`, `self.T` (highway only) and
    `self.skip` (the shortcut module) in __init__, then call `reset_gate()`."""

    def __init__(self, kind, in_channels, out_channels, stride, bn):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"{type(self).__name__}: kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.bn = bool(bn)
        self.lesioned = False
        # The first block of a stage may change the shape; the analyses move only the others.
        self.changes_shape = in_channels != out_channels or stride != 1

    def reset_gate(self):
        """Start a highway block's transform gate mostly closed (GATE_BIAS on its last unit).
        Called when the block is built, and by ConvNet.reset_parameters after its generic
        initialisation has set every BN shift and conv bias back to zero."""
        if self.kind == "highway":
            init_gate_bias(self.T, self.bn)

    def transform(self, x):
        return self.H(x)

    def shortcut(self, x):
        if "skip" not in self._modules:
            raise ValueError(f"{type(self).__name__}: this {self.kind} block has no shortcut "
                             "(only CIFAR plain blocks keep a parameter-free one for lesioning)")
        return self.skip(x)

    def gate(self, x):
        """Transform gate T(x) in (0, 1) for highway blocks; None otherwise."""
        return F.sigmoid(self.T(x)) if self.kind == "highway" else None

    def combine(self, h, s, t):
        if self.kind == "residual":
            return F.relu(h + s)
        if self.kind == "highway":
            return F.highway(h, s, t=t, variant="coupled")
        return F.relu(h)

    def forward(self, x):
        if self.lesioned:
            return self.shortcut(x)
        s = None if self.kind == "plain" else self.shortcut(x)
        return self.combine(self.transform(x), s, self.gate(x))

    def extra_repr(self):
        return f"kind={self.kind!r}" + (", lesioned=True" if self.lesioned else "")


def init_gate_bias(gate_branch, bn, value=GATE_BIAS):
    """Start the gate's pre-activation at `value`: the last BN's shift, or the last conv's bias."""
    last = gate_branch[-1]
    init.constant_(last.bn.bias if bn else last.conv.bias, value)


class BasicBlock(Block):
    """He et al.'s two 3x3 convolutions (CIFAR nets).

    residual/plain: H = conv3x3(C_in->C)-BN-ReLU-conv3x3(C->C)-BN.
    highway: H and the gate branch each conv3x3(C_in->C/2)-BN-ReLU-conv3x3(C/2->C)-BN, halving
    the inner width so that the two branches together hold as many weights as one residual
    branch (2 * 9 C (C/2) * 2 = 18 C^2); the gate branch ends in a sigmoid.
    A plain block keeps the parameter-free shortcut too, used only when it is lesioned: a
    layer removed from a plain net is bridged by the identity (Veit et al. 2016).
    """

    def __init__(self, in_channels, channels, stride=1, kind="residual", bn=True,
                 shortcut="pad"):
        super().__init__(kind, in_channels, channels, stride, bn)
        inner = channels // 2 if kind == "highway" else channels
        self.H = self._branch(in_channels, inner, channels, stride, bn)
        if kind == "highway":
            self.T = self._branch(in_channels, inner, channels, stride, bn)
        if kind != "plain" or shortcut == "pad":
            self.skip = make_shortcut(in_channels, channels, stride, shortcut, bn)
        self.reset_gate()

    @staticmethod
    def _branch(in_channels, inner, channels, stride, bn):
        return nn.Sequential(ConvUnit(in_channels, inner, 3, stride, bn),
                             ConvUnit(inner, channels, 3, 1, bn, relu=False))


class Bottleneck(Block):
    """torchvision's bottleneck (ResNet v1.5: the stride sits on the 3x3 conv).

    residual/plain: H = conv1x1(C_in->w)-BN-ReLU-conv3x3(w->w, stride)-BN-ReLU-conv1x1(w->4w)-BN.
    highway: the same H with a reduced width w (and, for `final_relu`, a ReLU at its end:
    Highway-Full), and a gate branch of the same shape and receptive field ending in a sigmoid.
    """

    expansion = 4

    def __init__(self, in_channels, width, stride=1, kind="residual", bn=True, out_channels=None,
                 final_relu=False):
        out_channels = out_channels or width * self.expansion
        super().__init__(kind, in_channels, out_channels, stride, bn)
        self.final_relu = bool(final_relu)
        self.H = self._branch(in_channels, width, out_channels, stride, bn, final_relu)
        if kind == "highway":
            self.T = self._branch(in_channels, width, out_channels, stride, bn, False)
        if kind != "plain":
            self.skip = make_shortcut(in_channels, out_channels, stride, "project", bn)
        self.reset_gate()

    @staticmethod
    def _branch(in_channels, width, out_channels, stride, bn, final_relu):
        return nn.Sequential(ConvUnit(in_channels, width, 1, 1, bn),
                             ConvUnit(width, width, 3, stride, bn),
                             ConvUnit(width, out_channels, 1, 1, bn, relu=final_relu))


class Stage(nn.ModuleList):
    """The blocks between two changes of shape, applied in order."""

    def forward(self, x, keep=False):
        """The stage's output; with keep=True, the list of every block's output instead."""
        outputs = []
        for block in self:
            x = block(x)
            if keep:
                outputs.append(x)
        return outputs if keep else x
