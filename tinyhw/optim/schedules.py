"""The learning-rate schedules the entry points use, and nothing else.

Kim et al.'s halving rule (train.lm), stepped once per epoch with the validation perplexity:
    after epoch e >= 3:  lr <- lr * factor   if  ppl_{e-1} - ppl_e < threshold
with factor 0.5 and threshold 1.0: "the learning rate is halved if the perplexity does not
decrease by more than 1.0 on the validation set after an epoch" (Kim et al. 2015, Sec. 4),
read as their code does: the comparison is with the previous epoch, not with the best so far,
and it starts once two earlier validation perplexities exist (`#val_losses > 2` in Kim's
main.lua). torch's ReduceLROnPlateau compares with the best epoch instead, which differs as
soon as one epoch fails the test.

The image nets' schedule (train.image), a closed form of the training progress p (epochs, a
float: epoch + fraction of the epoch done), set before every step:
    p < w:          lr = base * p / w                                (linear warm-up)
    cosine:         lr = base * (1 + cos(pi * min(t, 1))) / 2,  t = (p - w) / (E - w)
    step:           lr = base * 0.1 ** (number of milestones m * E that p has reached)
with E the epochs and milestones 0.5 and 0.75 (He et al.'s CIFAR recipe in proportion).
Being a function of p alone, it needs no state to resume.
"""
import math

from .optimizer import Optimizer


class KimHalving:
    """Kim et al.'s rule: `step(val_ppl)` after each epoch; halves the lr of every group when
    the perplexity improved by less than `threshold` over the previous epoch, from the third
    epoch on. `history` (the perplexities so far) is its whole state."""

    def __init__(self, optimizer, factor=0.5, threshold=1.0, history=()):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"KimHalving: expected an Optimizer, got {type(optimizer).__name__}")
        if not 0 < factor < 1:
            raise ValueError(f"KimHalving: factor must be in (0, 1), got {factor!r}")
        if not threshold >= 0:
            raise ValueError(f"KimHalving: threshold must be >= 0, got {threshold!r}")
        self.optimizer, self.factor, self.threshold = optimizer, factor, threshold
        self.history = [float(v) for v in history]

    def step(self, val_ppl):
        """Record this epoch's validation perplexity; returns True when the lr was cut."""
        val_ppl = float(val_ppl)
        cut = len(self.history) >= 2 and self.history[-1] - val_ppl < self.threshold
        if cut:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.factor
        self.history.append(val_ppl)
        return cut


def warmup_cosine_lr(base_lr, progress, epochs, warmup=0.0):
    """Linear warm-up over `warmup` epochs, then cosine from base_lr to 0 at `epochs`."""
    if progress < warmup:
        return base_lr * progress / warmup
    t = (progress - warmup) / max(epochs - warmup, 1e-9)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(t, 1.0)))


def warmup_step_lr(base_lr, progress, epochs, warmup=0.0, milestones=(0.5, 0.75), gamma=0.1):
    """Linear warm-up, then base_lr times gamma at each milestone (a fraction of `epochs`)."""
    if progress < warmup:
        return base_lr * progress / warmup
    return base_lr * gamma ** sum(progress >= m * epochs for m in milestones)
