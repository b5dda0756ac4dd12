"""Estimation error, the paper's Figure 3 (Greff et al. 2017, Sec. 5 / Eq. 7).

If the blocks of a stage refine one representation, every block's output a_k is an estimate of
the stage's final output A = a_n, unbiased in the sense that E[a_k - A] ~ 0 for each unit, and
ever closer to it with depth: the spread of a_k - A shrinks with k.

The one definition, for the conv nets and the char-LM alike (train/analysis/unit_errors.py
computes it for both). A sample is a val image (conv nets) or a valid word (char-LM: the highway
stack is its one stage); a unit is one (channel, y, x) of a stage's output, or one feature of a
highway layer's output. For each stage, block k and unit u, over the samples:
    mean_u = E[a_k,u - A_u],   std_u = sqrt(Var[a_k,u - A_u])
and the result averages them over units: `mean` = avg_u mean_u, `std` = avg_u std_u. Also
`mean_abs` = avg_u |mean_u| (a signed average could hide opposite biases) and, to compare stages
of different scales, `a_std` = avg_u std(A_u) and `rel_std` = std / a_std. The last block of a
stage has a_n - A = 0 exactly, by construction.

Why per unit: Eq. 7 is a statement about each unit's estimate over the data, so its spread is a
per-unit variance; pooling every (sample, unit) entry into one std would add the spread of the
per-unit biases mean_u across units, which is not estimation noise. (Before this definition was
shared, the char-LM pooled its entries and the conv nets did not; on one LM, issue 12 measured
0.69 pooled against 0.50 per unit, so LM and CIFAR figures were not comparable.)
"""
import numpy as np

import tinyhw

from .common import Timer, block_names, net_label, report, setup as make_setup
from . import lm_layers
from .plots import stage_axes
from .unit_errors import StageErrors

NAME = "estimation_error"
DEFINITION = ("mean/std: per-unit mean/std over samples (images; words for the char-LM) of "
              "a_k - A, averaged over units (channels x positions; features for the char-LM); "
              "a_std: the same std of A itself")


def accumulate(model, batches):
    """A StageErrors (a_k - A for every block, and A) per stage, over the batches."""
    stages = [StageErrors(len(stage)) for stage in model.stages]
    with tinyhw.no_grad():
        for x, _ in batches:
            h = model.stem(x)
            for errors, stage in zip(stages, model.stages):
                outputs = stage(h, keep=True)
                errors.add([a.data for a in outputs])
                h = outputs[-1]
    return stages


def summarise(stages, names):
    """The per-stage, per-block numbers of the module docstring."""
    out = []
    for s, errors in enumerate(stages):
        a_std, units, rows = errors.summary(names[s])
        stds = [r["std"] for r in rows]
        out.append({"stage": s + 1, "a_std": a_std, "blocks": rows, "units": units,
                    "std_non_increasing": bool(all(b <= a for a, b in zip(stds, stds[1:]))),
                    "max_mean_abs_over_a_std": max(r["mean_abs"] for r in rows) / a_std
                    if a_std > 0 else float("nan")})
    return out


def compute(setup):
    """The estimation-error result of `setup`'s net over its val batches."""
    timer = Timer()
    errors = accumulate(setup.model, setup.batches())
    stages = summarise(errors, block_names(setup.model))
    return {"analysis": NAME, **setup.info, "samples": errors[0].samples, "stages": stages,
            "definition": DEFINITION, "seconds": timer()}


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
    fig.suptitle(f"estimation error: {net_label(result)}", fontsize=10)
    return fig


def run(args):
    setup = make_setup(args, NAME, families=("image", "lm"))
    if setup.family == "lm":   # the char-LM's highway stack (see lm_layers)
        return lm_layers.report_lm(setup, NAME, args.limit)
    result = compute(setup)
    return report(setup, result, rows(result), table(result), plot)
