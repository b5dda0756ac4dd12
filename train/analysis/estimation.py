"""Estimation error, the paper's Figure 3 (Greff et al. 2017, Sec. 5 / Eq. 7).

If the blocks of a stage refine one representation, every block's output a_k is an estimate of
the stage's final output A = a_n, unbiased in the sense that E[a_k - A] ~ 0 for each unit, and
ever closer to it with depth: the spread of a_k - A shrinks with k.

For each stage and block k, over every val image and for each unit u = (channel, y, x):
    mean_u = E[a_k,u - A_u],   std_u = sqrt(Var[a_k,u - A_u])
and the result averages them over units: `mean` = avg_u mean_u, `std` = avg_u std_u. Also
`mean_abs` = avg_u |mean_u| (a signed average could hide opposite biases) and, to compare stages
of different scales, `a_std` = avg_u std(A_u) and `rel_std` = std / a_std. The last block of a
stage has a_n - A = 0 exactly, by construction.
"""
import numpy as np

import tinyhw
from tinyhw.backend import to_device

from .common import Timer, block_names, report, setup as make_setup
from . import lm_layers
from .plots import stage_axes

NAME = "estimation_error"


class _Moments:
    """Per-unit running sums of d and d^2 (float64) over samples."""

    def __init__(self):
        self.s1 = self.s2 = None
        self.n = 0

    def add(self, d):
        s1, s2 = d.sum(axis=0), (d * d).sum(axis=0)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += d.shape[0]

    def stats(self):
        """(per-unit mean, per-unit std), numpy float64 arrays."""
        s1 = np.asarray(to_device(self.s1, "cpu"))
        s2 = np.asarray(to_device(self.s2, "cpu"))
        mean = s1 / self.n
        return mean, np.sqrt(np.maximum(s2 / self.n - mean * mean, 0.0))


def accumulate(model, batches):
    """Per stage: a list of _Moments of a_k - A for each block, and the _Moments of A."""
    errors, finals = None, None
    with tinyhw.no_grad():
        for x, _ in batches:
            h = model.stem(x)
            if errors is None:
                errors = [[_Moments() for _ in stage] for stage in model.stages]
                finals = [_Moments() for _ in model.stages]
            for s, stage in enumerate(model.stages):
                outputs = stage(h, keep=True)
                final = outputs[-1].data.astype("float64")
                finals[s].add(final)
                for k, a in enumerate(outputs):
                    errors[s][k].add(a.data.astype("float64") - final)
                h = outputs[-1]
    return errors, finals


def summarise(errors, finals, names):
    """The per-stage, per-block numbers of the module docstring."""
    stages = []
    for s, (blocks, final) in enumerate(zip(errors, finals)):
        _, a_std_units = final.stats()
        a_std = float(a_std_units.mean())
        rows = []
        for k, moments in enumerate(blocks):
            mean_u, std_u = moments.stats()
            std = float(std_u.mean())
            rows.append({"block": k + 1, "name": names[s][k], "mean": float(mean_u.mean()),
                         "std": std, "mean_abs": float(np.abs(mean_u).mean()),
                         "rel_std": std / a_std if a_std > 0 else float("nan")})
        stds = [r["std"] for r in rows]
        stages.append({"stage": s + 1, "a_std": a_std, "blocks": rows,
                       "units": int(a_std_units.size),
                       "std_non_increasing": bool(all(b <= a for a, b in zip(stds, stds[1:]))),
                       "max_mean_abs_over_a_std": max(r["mean_abs"] for r in rows) / a_std
                       if a_std > 0 else float("nan")})
    return stages


def compute(setup):
    """The estimation-error result of `setup`'s net over its val batches."""
    timer = Timer()
    errors, finals = accumulate(setup.model, setup.batches())
    stages = summarise(errors, finals, block_names(setup.model))
    return {"analysis": NAME, **setup.info, "samples": finals[0].n, "stages": stages,
            "definition": "mean/std: per-unit mean/std over samples of a_k - A, averaged over "
                          "units (channels x positions); a_std: the same std of A itself",
            "seconds": timer()}


def rows(result):
    return [{"stage": st["stage"], "block": b["block"], "name": b["name"], "mean": b["mean"],
             "std": b["std"], "mean_abs": b["mean_abs"], "rel_std": b["rel_std"],
             "a_std": st["a_std"]}
            for st in result["stages"] for b in st["blocks"]]


def table(result):
    lines = [f"estimation error a_k - A over {result['samples']} val images "
             f"({result['seconds']:.1f} s)",
             f"{'block':>6} {'mean':>10} {'std':>9} {'|mean|':>9} {'std/std(A)':>10}"]
    for st in result["stages"]:
        for b in st["blocks"]:
            lines.append(f"{b['name']:>6} {b['mean']:10.4f} {b['std']:9.4f} {b['mean_abs']:9.4f} "
                         f"{b['rel_std']:10.3f}")
        lines.append(f"  stage {st['stage']}: std non-increasing with depth: "
                     f"{st['std_non_increasing']}; max |mean| / std(A) = "
                     f"{st['max_mean_abs_over_a_std']:.3f}")
    return lines


def plot(result, plt):
    fig, axes = stage_axes(plt, len(result["stages"]))
    for ax, st in zip(axes, result["stages"]):
        k = [b["block"] for b in st["blocks"]]
        mean = np.array([b["mean"] for b in st["blocks"]])
        std = np.array([b["std"] for b in st["blocks"]])
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.fill_between(k, mean - std, mean + std, alpha=0.3, label="mean ± std")
        ax.plot(k, mean, "o-", label="mean")
        ax.set_title(f"stage {st['stage']}")
        ax.set_xlabel("block k")
        ax.set_xticks(k)
    axes[0].set_ylabel("a_k - A (avg over units)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"estimation error: {result.get('arch', '')}", fontsize=10)
    return fig


def run(args):
    setup = make_setup(args, NAME, families=("image", "lm"))
    if setup.family == "lm":   # the char-LM's highway stack (see lm_layers)
        return lm_layers.report_lm(setup, NAME, args.limit)
    result = compute(setup)
    return report(setup, result, rows(result), table(result), plot)
