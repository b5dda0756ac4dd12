"""`ReduceLROnPlateau`: cut the learning rate when a validation metric stops improving.

torch's rule, per call step(metric):
    better = metric < best - threshold            (mode "min", threshold_mode "abs")
             metric < best * (1 - threshold)      (mode "min", "rel"; "max" mirrors both)
    if better: best = metric, bad_epochs = 0  else bad_epochs += 1
    during a cooldown, bad epochs are not counted
    if bad_epochs > patience: lr = max(lr * factor, min_lr) (skipped if the change
        is below eps), start the cooldown, bad_epochs = 0
`best` is the best metric so far, not the previous epoch's.

The defaults here (factor 0.5, patience 0, threshold 1.0 absolute) give Kim et
al.'s schedule as torch would run it: halve the learning rate after any epoch
whose validation perplexity is not at least 1.0 below the best so far. The
paper's wording ("halved if the perplexity does not decrease by more than 1.0
... after an epoch") reads as a comparison with the previous epoch instead; the
two agree while every epoch passes the test and can differ after one fails it,
because `best` then stays at the older, higher value.
"""
import math

from .optimizer import Optimizer
from .scheduler_state import SchedulerState


class ReduceLROnPlateau(SchedulerState):
    def __init__(self, optimizer, mode="min", factor=0.5, patience=0, threshold=1.0,
                 threshold_mode="abs", cooldown=0, min_lr=0.0, eps=1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau: expected an Optimizer, got "
                            f"{type(optimizer).__name__}")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', "
                             f"got {threshold_mode!r}")
        if not 0 <= factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in [0, 1), got {factor!r}")
        if patience < 0 or cooldown < 0:
            raise ValueError(f"ReduceLROnPlateau: patience and cooldown must be >= 0, "
                             f"got {patience!r} and {cooldown!r}")
        n = len(optimizer.param_groups)
        min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * n
        if len(min_lrs) != n:
            raise ValueError(f"ReduceLROnPlateau: expected {n} min_lr values, got {len(min_lrs)}")
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.min_lrs, self.eps = cooldown, min_lrs, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]

    def is_better(self, current, best):
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return current < best * (1 - self.threshold)
            return current < best - self.threshold
        if self.threshold_mode == "rel":
            return current > best * (1 + self.threshold)
        return current > best + self.threshold

    def step(self, metrics):
        """Record this epoch's metric (a float or a one-element Tensor) and maybe cut the lr."""
        current = float(metrics.item() if hasattr(metrics, "item") else metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during a cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def _reduce_lr(self):
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, min_lr)
            if old - new > self.eps:
                group["lr"] = new
