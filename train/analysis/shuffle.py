"""Reshuffling (Veit et al. 2016): reorder the blocks within a stage and measure the val error.

If every block of a stage refines the same representation, the order of refinement matters
little, and the error grows slowly with the number of swaps; a net whose blocks compute new,
different representations in sequence breaks at once.

Only blocks that keep the stage's shape can move: the first block of a stage that changes the
shape (stride 2, more channels) stays first, the others are permuted among themselves. One swap
exchanges the positions of a pair of such blocks drawn uniformly from all pairs of movable
blocks in the same stage. Each random order r applies swaps one after another, so its
configurations after 0, 1, ..., max_swaps swaps form one trajectory; a later swap may undo an
earlier one, so each trial also records how many blocks sit away from their place (`displaced`)
and the Kendall tau between the new and the original order within stages (1 = unchanged).
Configurations met twice are scored once (the error of an order is deterministic).
"""
import itertools

import numpy as np

from .common import (AnalysisError, Timer, block_names, net_label, report, score,
                     setup as make_setup, shape_keeping)
from . import lm_layers
from .plots import stage_axes

NAME = "shuffle"


def movable_pairs(net):
    """[(stage, i, j)]: every pair of shape-keeping blocks of the same stage."""
    return [(s, i, j) for s, stage in enumerate(net.stages)
            for i, j in itertools.combinations(shape_keeping(stage), 2)]


def trajectories(net, orders, max_swaps, seed):
    """For each random order: the list of block orders after 0 .. max_swaps swaps."""
    pairs = movable_pairs(net)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(orders):
        current = [list(range(len(stage))) for stage in net.stages]
        path = [[list(o) for o in current]]
        for _ in range(max_swaps):
            s, i, j = pairs[rng.integers(len(pairs))]
            a, b = current[s].index(i), current[s].index(j)
            current[s][a], current[s][b] = current[s][b], current[s][a]
            path.append([list(o) for o in current])
        out.append(path)
    return out


def kendall_tau(order):
    """Kendall's tau between each stage's order and the identity, pooled over stages."""
    concordant = discordant = 0
    for stage in order:
        for a, b in itertools.combinations(range(len(stage)), 2):
            if stage[a] < stage[b]:
                concordant += 1
            else:
                discordant += 1
    pairs = concordant + discordant
    return (concordant - discordant) / pairs if pairs else 1.0


def displaced(order):
    return sum(int(k != position) for stage in order for position, k in enumerate(stage))


def compute(setup, orders=5, max_swaps=None, seed=0):
    """The shuffle result: error after 0 .. max_swaps swaps for `orders` random orders."""
    timer, net = Timer(), setup.model
    pairs = movable_pairs(net)
    if not pairs:
        raise AnalysisError(f"shuffle needs a stage with at least two blocks that keep its shape; "
                            f"--checkpoint {setup.checkpoint} has stages of "
                            f"{[len(st) for st in net.stages]} blocks")
    names = block_names(net)
    movable = {f"stage {s + 1}": [names[s][k] for k in shape_keeping(st)]
               for s, st in enumerate(net.stages)}
    if max_swaps is None:
        max_swaps = sum(len(v) for v in movable.values())
    cache, trials = {}, []
    for r, path in enumerate(trajectories(net, orders, max_swaps, seed)):
        for j, order in enumerate(path):
            key = tuple(tuple(o) for o in order)
            if key not in cache:
                cache[key] = score(setup, orders=order)
            trials.append({"order": r, "swaps": j, "blocks": order, "displaced": displaced(order),
                           "kendall_tau": kendall_tau(order), **cache[key]})
    return {"analysis": NAME, **setup.info, "intact": score(setup), "orders": orders,
            "max_swaps": max_swaps, "seed": seed, "movable_blocks": movable,
            "note": "only shape-keeping blocks move (blocks 2..n of stages whose first block "
                    "changes the shape); 'blocks' lists each stage's block indices (0-based) in "
                    "the order run",
            "chance": 1.0 - 1.0 / net.fc.weight.shape[0], "evaluations": len(cache),
            "trials": trials, "summary": summarise(trials, max_swaps), "seconds": timer()}


def summarise(trials, max_swaps):
    out = []
    for j in range(max_swaps + 1):
        errors = np.array([t["top1_err"] for t in trials if t["swaps"] == j])
        taus = np.array([t["kendall_tau"] for t in trials if t["swaps"] == j])
        out.append({"swaps": j, "mean": float(errors.mean()), "std": float(errors.std()),
                    "min": float(errors.min()), "max": float(errors.max()),
                    "kendall_tau_mean": float(taus.mean()), "trials": int(errors.size)})
    return out


def rows(result):
    return [{"order": t["order"], "swaps": t["swaps"], "displaced": t["displaced"],
             "kendall_tau": t["kendall_tau"], "top1_err": t["top1_err"], "loss": t["loss"],
             "blocks": " | ".join(",".join(map(str, o)) for o in t["blocks"])}
            for t in result["trials"]]


def table(result):
    lines = [f"reshuffling blocks within stages: {result['orders']} random orders, "
             f"{result['images']} val images, {result['evaluations']} distinct orders scored "
             f"({result['seconds']:.0f} s)",
             "movable: " + "; ".join(f"{k}: {', '.join(v) or 'none'}"
                                     for k, v in result["movable_blocks"].items()),
             f"intact top-1 error {100 * result['intact']['top1_err']:.2f}%",
             f"{'swaps':>5} {'mean err':>9} {'std':>6} {'min':>6} {'max':>6} {'tau':>6}"]
    for row in result["summary"]:
        lines.append(f"{row['swaps']:5d} {100 * row['mean']:8.2f}% {100 * row['std']:6.2f} "
                     f"{100 * row['min']:6.2f} {100 * row['max']:6.2f} "
                     f"{row['kendall_tau_mean']:6.2f}")
    return lines


def plot(result, plt):
    """Left: error against the number of swaps; right: against Kendall's tau (Veit et al.)."""
    fig, (ax, ax_tau) = stage_axes(plt, 2, width=5.0, height=3.6)
    for r in range(result["orders"]):
        path = [t for t in result["trials"] if t["order"] == r]
        ax.plot([t["swaps"] for t in path], [100 * t["top1_err"] for t in path], color="C0",
                alpha=0.25, lw=0.8)
    s = result["summary"]
    x = [row["swaps"] for row in s]
    mean, std = np.array([row["mean"] for row in s]), np.array([row["std"] for row in s])
    ax.fill_between(x, 100 * (mean - std), 100 * (mean + std), color="C0", alpha=0.2)
    ax.plot(x, 100 * mean, "o-", color="C0", label="mean ± std over random orders")
    ax.set_xlabel("number of swaps")
    ax_tau.scatter([t["kendall_tau"] for t in result["trials"]],
                   [100 * t["top1_err"] for t in result["trials"]], s=12, alpha=0.6)
    ax_tau.set_xlabel("Kendall's tau with the original order")
    ax_tau.invert_xaxis()
    for a in (ax, ax_tau):
        a.axhline(100 * result["intact"]["top1_err"], color="k", ls="--", lw=1, label="intact")
        a.axhline(100 * result["chance"], color="0.5", ls=":", label="chance")
        a.set_ylabel("val top-1 error (%)")
        a.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"reshuffling: {net_label(result)}", fontsize=10)
    return fig


def run(args):
    setup = make_setup(args, NAME, families=("image", "lm"))
    if setup.family == "lm":   # the char-LM's highway stack (see lm_layers)
        return lm_layers.report_lm(setup, NAME, args.limit)
    result = compute(setup, args.orders, args.max_swaps, args.seed)
    return report(setup, result, rows(result), table(result), plot)
