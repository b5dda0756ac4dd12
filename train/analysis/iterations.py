"""Extra iterations at test time, and the norm of the representation block by block
(Jastrzebski et al. 2017: iterative refinement, and the "representation explosion" of nets whose
blocks share weights).

If the shape-keeping blocks of a stage refine an estimate, a block applied once more should move
the representation little and change the prediction little; a block that recomputes, or a shared
block whose iterations inflate h, should not. For every shape-keeping block k (every block but a
stage's shape-changing first one), with h_k its output in the intact net:
    h^(0) = h_k,   h^(j) = block_k(h^(j - 1)),   j = 1 .. K (--extra, default 4),
and the rest of the net (the blocks after k, then the head) is run from h^(j). Reported per block
and j: the val top-1 error and loss of that net, and the mean and std over val images of the
per-image L2 norm ||h^(j)|| (over channels and positions). j = 0 is the intact net itself (the
same operations: its error is the intact error exactly). In a net with shared blocks
(train.image --share-blocks) every block after the first of a stage is an iteration of the one
shared block, so applying block k again applies the shared block (with block k's own batch norms
under --unshared-bn).

`norms` measures the explosion directly on the intact net: the mean and std over val images of
||h|| after the stem and after every block, stage by stage.

Everything runs in eval mode (BN on running statistics), so the images do not interact.
"""
import numpy as np

import tinyhw
import tinyhw.functional as F
from tinyhw.backend import to_device

from .common import (AnalysisError, Timer, block_names, net_label, report, setup as make_setup,
                     shape_keeping)
from .plots import stage_axes

NAME = "iterations"


def image_norms(h):
    """Per-image L2 norm of a (N, ...) Tensor's data, float64 numpy (N,)."""
    a = np.asarray(to_device(h.data, "cpu"), dtype=np.float64)
    return np.linalg.norm(a.reshape(a.shape[0], -1), axis=1)


class Tally:
    """Sums over images of top-1 mistakes, loss and ||h|| (and ||h||^2)."""

    def __init__(self):
        self.wrong, self.loss, self.count, self.norm, self.norm_sq = 0, 0.0, 0, 0.0, 0.0

    def add_norms(self, norms):
        self.norm += float(norms.sum())
        self.norm_sq += float((norms * norms).sum())
        self.count += len(norms)

    def add_logits(self, logits, y, device):
        self.loss += F.cross_entropy(logits, tinyhw.Tensor(to_device(y, device)), "sum").item()
        predicted = np.asarray(to_device(logits.data, "cpu")).argmax(axis=1)
        self.wrong += int((predicted != y).sum())

    def norm_stats(self):
        mean = self.norm / self.count
        return {"norm_mean": mean,
                "norm_std": float(np.sqrt(max(self.norm_sq / self.count - mean * mean, 0.0)))}

    def errors(self):
        return {"top1_err": self.wrong / self.count, "loss": self.loss / self.count}


def rest_of_net(net, later_blocks, h):
    """Logits of the blocks after this one and the head, run from h."""
    for block in later_blocks:
        h = block(h)
    return net.head(h)


def sweep_batch(net, x, y, device, extra, repeated, intact):
    """Add one batch to `repeated` ({block index: [Tally per j]}) and `intact` (a Tally per
    representation: the stem's output, then every block's)."""
    blocks = net.blocks()
    with tinyhw.no_grad():
        hs = [net.stem(x)]
        for block in blocks:
            hs.append(block(hs[-1]))
        for tally, h in zip(intact, hs):
            tally.add_norms(image_norms(h))
        for k, tallies in repeated.items():
            h = hs[k + 1]
            for j, tally in enumerate(tallies):
                if j:
                    h = blocks[k](h)
                tally.add_norms(image_norms(h))
                tally.add_logits(rest_of_net(net, blocks[k + 1:], h), y, device)


def compute(setup, extra=4):
    """The iterations result of `setup`'s net: val error and ||h|| after 0 .. extra extra
    applications of every shape-keeping block, and ||h|| block by block."""
    timer, net = Timer(), setup.model
    net.eval()
    positions = [(s, k) for s, stage in enumerate(net.stages) for k in range(len(stage))]
    index = {pos: i for i, pos in enumerate(positions)}
    keeping = [index[(s, k)] for s, stage in enumerate(net.stages) for k in shape_keeping(stage)]
    if not keeping:
        raise AnalysisError(f"iterations needs blocks that keep their shape; --checkpoint "
                            f"{setup.checkpoint} has none")
    repeated = {i: [Tally() for _ in range(extra + 1)] for i in keeping}
    intact = [Tally() for _ in range(len(positions) + 1)]
    for x, y in setup.batches():
        sweep_batch(net, x, y, setup.device, extra, repeated, intact)
    names = block_names(net)
    shared = bool(setup.info.get("share_blocks"))
    result_blocks = []
    for i in keeping:
        s, k = positions[i]
        result_blocks.append({
            "stage": s + 1, "block": k + 1, "name": names[s][k],
            "shared_weights": shared and k > 0,
            "iterations": [{"extra": j, **t.errors(), **t.norm_stats()}
                           for j, t in enumerate(repeated[i])]})
    norms = [{"stage": 0, "block": 0, "name": "stem", **intact[0].norm_stats()}]
    norms += [{"stage": s + 1, "block": k + 1, "name": names[s][k], **t.norm_stats()}
              for (s, k), t in zip(positions, intact[1:])]
    return {"analysis": NAME, **setup.info, "extra": extra, "blocks": result_blocks,
            "norms": norms,
            "definition": "per shape-keeping block k: h^(0) = its output in the intact net, "
                          "h^(j) = block_k(h^(j-1)); the rest of the net run from h^(j) gives "
                          "top1_err and loss (j = 0: the intact net); norm: mean/std over images "
                          "of the per-image L2 norm of h^(j). norms: the same norm of the intact "
                          "net's h after the stem and after every block",
            "seconds": timer()}


def rows(result):
    out = [{"table": "extra", "name": b["name"], "stage": b["stage"], "block": b["block"],
            "extra": it["extra"], "top1_err": it["top1_err"], "loss": it["loss"],
            "norm_mean": it["norm_mean"], "norm_std": it["norm_std"]}
           for b in result["blocks"] for it in b["iterations"]]
    out += [{"table": "norms", "name": n["name"], "stage": n["stage"], "block": n["block"],
             "extra": "", "top1_err": "", "loss": "", "norm_mean": n["norm_mean"],
             "norm_std": n["norm_std"]} for n in result["norms"]]
    return out


def table(result):
    k = result["extra"]
    lines = [f"extra iterations of each shape-keeping block, {result['images']} val images "
             f"({result['seconds']:.1f} s): top-1 error % after 0 .. {k} extra applications, "
             "then ||h|| after them",
             f"{'block':>6} " + " ".join(f"{j:>6}" for j in range(k + 1)) + "   ||h||: " +
             " ".join(f"{j:>8}" for j in range(k + 1))]
    for b in result["blocks"]:
        its = b["iterations"]
        lines.append(f"{b['name']:>6} " + " ".join(f"{100 * it['top1_err']:6.2f}" for it in its)
                     + " " * 11 + " ".join(f"{it['norm_mean']:8.3g}" for it in its))
    lines.append("||h|| of the intact net, block by block (mean over images ± std):")
    lines.append("  " + "  ".join(f"{n['name']} {n['norm_mean']:.3g}±{n['norm_std']:.2g}"
                                  for n in result["norms"]))
    return lines


def plot(result, plt):
    fig, (ax1, ax2, ax3) = stage_axes(plt, 3, width=4.4, height=3.4)
    for b in result["blocks"]:
        its = b["iterations"]
        j = [it["extra"] for it in its]
        ax1.plot(j, [100 * it["top1_err"] for it in its], "o-", ms=3, label=b["name"])
        ax2.plot(j, [it["norm_mean"] for it in its], "o-", ms=3, label=b["name"])
    ax1.set(xlabel="extra applications of the block", ylabel="val top-1 error (%)")
    ax2.set(xlabel="extra applications of the block", ylabel="mean ||h||", yscale="log")
    ax1.legend(fontsize=6, ncol=2)
    norms = result["norms"]
    x = np.arange(len(norms))
    ax3.errorbar(x, [n["norm_mean"] for n in norms], yerr=[n["norm_std"] for n in norms],
                 fmt="o-", capsize=2)
    ax3.set_xticks(x, [n["name"] for n in norms], rotation=60, fontsize=7)
    ax3.set(xlabel="representation after", ylabel="mean ||h|| (intact net)")
    fig.suptitle(f"extra iterations at test time: {net_label(result)}", fontsize=10)
    return fig


def run(args):
    setup = make_setup(args, NAME, families=("image",))
    result = compute(setup, args.extra)
    return report(setup, result, rows(result), table(result), plot)
