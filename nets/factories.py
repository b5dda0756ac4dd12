"""Named factories for the image nets: `resnet20(num_classes=10, bn=True, share_blocks=False,
unshared_bn=False)` and so on (share_blocks: nets.convnet's shared blocks).

`ARCHS` maps each name to its factory, for command lines (`--arch resnet20`); `PRESETS` maps
it to the input preset of data.images it is trained and evaluated on: "cifar" (32x32 images)
for the CIFAR nets, "imagenet" (224x224 crops) for the 50-layer nets.
"""
from .convnet import CIFAR_DEPTHS, HIGHWAY50_WIDTHS, cifar_net, imagenet_net

_KIND_NAMES = {"resnet": "residual", "highway": "highway", "plain": "plain"}
_CIFAR_DOC = ("{name}: He et al.'s {depth}-layer CIFAR net with {kind} blocks "
              "(3 stages of {n} basic blocks on 16/32/64 channels).")


def _cifar_factory(prefix, depth):
    kind = _KIND_NAMES[prefix]

    def factory(num_classes=10, bn=True, share_blocks=False, unshared_bn=False):
        return cifar_net(depth, kind, num_classes, bn, share_blocks, unshared_bn)
    factory.__name__ = factory.__qualname__ = f"{prefix}{depth}"
    factory.__doc__ = _CIFAR_DOC.format(name=factory.__name__, depth=depth, kind=kind,
                                        n=(depth - 2) // 6)
    return factory


resnet20, resnet32, resnet56, resnet110 = (_cifar_factory("resnet", d) for d in CIFAR_DEPTHS)
highway20, highway32, highway56, highway110 = (_cifar_factory("highway", d) for d in CIFAR_DEPTHS)
plain20, plain32, plain56, plain110 = (_cifar_factory("plain", d) for d in CIFAR_DEPTHS)


def resnet50(num_classes=1000, bn=True, share_blocks=False, unshared_bn=False):
    """torchvision's ResNet-50 (v1.5): 25,557,032 parameters for 1,000 classes."""
    return imagenet_net("residual", num_classes, bn, share_blocks=share_blocks,
                        unshared_bn=unshared_bn)


def highway50(num_classes=1000, bn=True, share_blocks=False, unshared_bn=False):
    """Highway-50: ResNet-50's trunk with highway bottlenecks, y = H T + x (1 - T)."""
    return imagenet_net("highway", num_classes, bn, widths=HIGHWAY50_WIDTHS,
                        share_blocks=share_blocks, unshared_bn=unshared_bn)


def highway_full50(num_classes=1000, bn=True, share_blocks=False, unshared_bn=False):
    """Highway-Full-50: as Highway-50, with a final ReLU at the end of each transform H."""
    return imagenet_net("highway", num_classes, bn, widths=HIGHWAY50_WIDTHS, final_relu=True,
                        share_blocks=share_blocks, unshared_bn=unshared_bn)


_FAMILIES = {
    "cifar": (resnet20, resnet32, resnet56, resnet110, highway20, highway32, highway56,
              highway110, plain20, plain32, plain56, plain110),
    "imagenet": (resnet50, highway50, highway_full50),
}
ARCHS = {f.__name__: f for family in _FAMILIES.values() for f in family}
PRESETS = {f.__name__: preset for preset, family in _FAMILIES.items() for f in family}


def _check_arch(arch):
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")


def build_image_net(arch, num_classes, bn=True, share_blocks=False, unshared_bn=False):
    """The net called `arch` (a key of ARCHS); a clear error for an unknown name."""
    _check_arch(arch)
    return ARCHS[arch](num_classes=num_classes, bn=bn, share_blocks=share_blocks,
                       unshared_bn=unshared_bn)


def preset_of(arch):
    """The input preset ("cifar" or "imagenet", see data.images) of the net called `arch`."""
    _check_arch(arch)
    return PRESETS[arch]


def archs_of(preset):
    """The names of the nets trained on `preset`, in ARCHS order."""
    return tuple(name for name, p in PRESETS.items() if p == preset)
