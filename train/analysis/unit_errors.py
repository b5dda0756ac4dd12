"""The estimation error's one definition, shared by the conv nets and the char-LM (derived in
train/analysis/estimation.py): per unit, the mean and std over samples of d_k = a_k - A, then
averaged over units.

A sample is an image (conv nets) or a word (the char-LM); a unit is one (channel, y, x) position
of a conv stage's output or one feature of a highway layer's output. Arrays come in as (N, ...)
batches of samples and are flattened to (N, units) here, so both paths compute the same numbers
from the same values.
"""
import numpy as np

from tinyhw.backend import to_device


class UnitMoments:
    """Per-unit running sums of d and d^2 (float64) over samples."""

    def __init__(self):
        self.s1 = self.s2 = None
        self.n = 0

    def add(self, d):
        """d: (N, ...) of any float dtype and device."""
        d = d.reshape(d.shape[0], -1).astype("float64")
        s1, s2 = d.sum(axis=0), (d * d).sum(axis=0)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += d.shape[0]

    def stats(self):
        """(per-unit mean, per-unit std), numpy float64 arrays of shape (units,)."""
        s1 = np.asarray(to_device(self.s1, "cpu"))
        s2 = np.asarray(to_device(self.s2, "cpu"))
        mean = s1 / self.n
        return mean, np.sqrt(np.maximum(s2 / self.n - mean * mean, 0.0))


class StageErrors:
    """The moments of a_k - A for every block (or layer) k of one stage, and of A itself."""

    def __init__(self, blocks):
        self.errors = [UnitMoments() for _ in range(blocks)]
        self.final = UnitMoments()

    def add(self, outputs):
        """outputs: the arrays a_1 ... a_n (each (N, ...)) of one batch; A = a_n."""
        final = outputs[-1].astype("float64")
        self.final.add(final)
        for moments, a in zip(self.errors, outputs):
            moments.add(a.astype("float64") - final)

    @property
    def samples(self):
        return self.final.n

    def summary(self, names):
        """(a_std, units, rows): a_std = avg_u std(A_u); per block k a row with `mean` =
        avg_u mean_u, `std` = avg_u std_u, `mean_abs` = avg_u |mean_u|, `rel_std` = std / a_std."""
        _, a_std_units = self.final.stats()
        a_std = float(a_std_units.mean())
        rows = []
        for k, (moments, name) in enumerate(zip(self.errors, names)):
            mean_u, std_u = moments.stats()
            std = float(std_u.mean())
            rows.append({"block": k + 1, "name": name, "mean": float(mean_u.mean()), "std": std,
                         "mean_abs": float(np.abs(mean_u).mean()),
                         "rel_std": std / a_std if a_std > 0 else float("nan")})
        return a_std, int(a_std_units.size), rows
