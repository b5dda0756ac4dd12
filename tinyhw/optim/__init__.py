"""Optimisation: SGD, global gradient-norm clipping, learning-rate schedules.

    import tinyhw.optim as optim
    opt = optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    sched = optim.ReduceLROnPlateau(opt)          # Kim et al.'s halving rule
"""
from . import lr_scheduler
from .clip import clip_grad_norm_
from .lr_scheduler import CosineAnnealingLR, LRScheduler, StepLR
from .optimizer import Optimizer
from .plateau import ReduceLROnPlateau
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "clip_grad_norm_", "LRScheduler", "StepLR",
           "CosineAnnealingLR", "ReduceLROnPlateau", "lr_scheduler"]
