"""Models built from tinyhw.nn: highway layers, the character-aware LM, ResNet/Highway conv nets.

Image-net factories, each taking `num_classes`, `bn=True` and, for Jastrzebski et al.'s shared
blocks (nets.convnet), `share_blocks=False` and `unshared_bn=False`:
    resnet20 resnet32 resnet56 resnet110      He et al.'s CIFAR ResNets
    highway20 highway32 highway56 highway110  their Highway counterparts (parameters within 2%)
    plain20 plain32 plain56 plain110          the same depth without skips (lesioning baseline)
    resnet50 highway50 highway_full50         the ImageNet nets of Greff et al.'s Table 1b
`ARCHS` and `PRESETS` map each name to its factory and its input preset (`preset_of(arch)`).

`count_parameters(model)` and `lesioned(layers)` (a layer outputs its identity path alone inside
a `with` block: conv blocks and the char-LM's highway layers) serve every net (nets.common).
"""
from .blocks import BasicBlock, Block, Bottleneck, Stage
from .common import count_parameters, lesioned
from .convnet import CIFAR_DEPTHS, ConvNet, cifar_net, imagenet_net
from .factories import ARCHS, PRESETS, archs_of, build_image_net, preset_of
from .factories import (highway20, highway32, highway56, highway110, highway50, highway_full50,
                        plain20, plain32, plain56, plain110, resnet20, resnet32, resnet50,
                        resnet56, resnet110)

__all__ = ["BasicBlock", "Block", "Bottleneck", "Stage", "CIFAR_DEPTHS", "ConvNet", "cifar_net",
           "count_parameters", "lesioned", "imagenet_net", "ARCHS", "PRESETS", "archs_of",
           "build_image_net", "preset_of",
           "resnet20", "resnet32", "resnet56", "resnet110",
           "highway20", "highway32", "highway56", "highway110",
           "plain20", "plain32", "plain56", "plain110",
           "resnet50", "highway50", "highway_full50"]
