"""Models built from tinyhw.nn: highway layers, the character-aware LM, ResNet/Highway conv nets.

Image-net factories, each taking `num_classes` and `bn=True`:
    resnet20 resnet32 resnet56 resnet110      He et al.'s CIFAR ResNets
    highway20 highway32 highway56 highway110  their Highway counterparts (parameters within 2%)
    plain20 plain32 plain56 plain110          the same depth without skips (lesioning baseline)
    resnet50 highway50 highway_full50         the ImageNet nets of Greff et al.'s Table 1b
"""
from .blocks import BasicBlock, Block, Bottleneck, Stage
from .convnet import CIFAR_DEPTHS, ConvNet, cifar_net, count_parameters, imagenet_net
from .factories import ARCHS, build_image_net
from .factories import (highway20, highway32, highway56, highway110, highway50, highway_full50,
                        plain20, plain32, plain56, plain110, resnet20, resnet32, resnet50,
                        resnet56, resnet110)

__all__ = ["BasicBlock", "Block", "Bottleneck", "Stage", "CIFAR_DEPTHS", "ConvNet", "cifar_net",
           "count_parameters", "imagenet_net", "ARCHS", "build_image_net",
           "resnet20", "resnet32", "resnet56", "resnet110",
           "highway20", "highway32", "highway56", "highway110",
           "plain20", "plain32", "plain56", "plain110",
           "resnet50", "highway50", "highway_full50"]
