"""Optimisation: SGD, global gradient-norm clipping, and the learning-rate schedules the entry
points use (Kim et al.'s halving rule; warm-up with cosine or step decay).

    import tinyhw.optim as optim
    opt = optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    halving = optim.KimHalving(opt)               # then halving.step(val_ppl) after each epoch
"""
from .clip import clip_grad_norm_
from .optimizer import Optimizer
from .schedules import KimHalving, warmup_cosine_lr, warmup_step_lr
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "clip_grad_norm_", "KimHalving", "warmup_cosine_lr",
           "warmup_step_lr"]
