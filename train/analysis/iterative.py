"""Iterative inference (Jastrzebski et al. 2017, "Residual connections encourage iterative
inference"): does each block move its representation along the negative gradient of the loss?

For every block with a shortcut, write its output as y = shortcut(h) + F(h), i.e.
    F(h) = block(h) - shortcut(h)
(residual: relu(H + h) - h; highway: T (H - h)). Let L_rest(u) be the loss of the rest of the
net (the blocks after this one and the head) fed u in place of this block's output. Then
    L = L_rest(shortcut(h) + F(h)) ~ L_rest(shortcut(h)) + F(h) . dL_rest/du |_{u = shortcut(h)},
Jastrzebski et al.'s first-order expansion: the block lowers the loss, to first order, when F(h)
has a positive cosine with -dL_rest/du taken at shortcut(h) (= h for shape-keeping blocks), the
gradient of the net with this block removed (lesioned). Two cosines are reported per image:

  cos_rest_of_net    cos(F(h), -dL_rest/du at u = shortcut(h)): the expansion's term, the
                     headline. Defined for every block with a shortcut, shape-changing ones too
                     (F and dL_rest/du both live in the block's output space).
  cos_through_block  cos(F(h), -dL/dh) with dL/dh the gradient at the block's input through the
                     block itself (the full net's gradient at h). It includes the block's own
                     Jacobian, so it is not the expansion's term; kept because earlier versions
                     reported it (as "cosine"). Null for shape-changing blocks (F and dL/dh live in
                     different spaces there).

and ||F(h)|| / ||h|| (a block that refines rather than recomputes has a small ratio).

L is the cross-entropy summed over the batch. Its gradient with respect to the logits is computed
without the cancellation of softmax - one-hot in float32 (see train/analysis/gradients.py: for a
confidently classified image the target entry would round to exactly 0 and the gradient's
direction would be wrong); `saturated_images` counts the images where that would have happened.
dL/dh comes from one backward pass through the whole net (each block input keeps its gradient);
dL_rest/du from one backward pass per block from a leaf u through the blocks after it. In eval
mode (BN on running statistics) the images of a batch do not interact, so each image's slice of a
gradient is the gradient of its own loss. Cosines and ratios are per image, flattened over
channels and positions, then summarised over images (mean, std, 5th/95th percentiles).
"""
import numpy as np

import tinyhw

from .common import (AnalysisError, Timer, block_names, has_shortcut, net_label, report,
                     setup as make_setup)
from .gradients import (DEFINITIONS, HEADLINE, backward_from_logits, cpu64, frozen, per_sample,
                        saturated, summary)
from . import lm_layers
from .plots import stage_axes

NAME = "iterative"


def rest_gradient(model, later_blocks, u, y):
    """dL_rest/du: the gradient at u (an array) of the summed loss of `later_blocks` and the
    head fed u."""
    with tinyhw.enable_grad():
        leaf = tinyhw.Tensor(u, requires_grad=True)
        h = leaf
        for block in later_blocks:
            h = block(h)
        backward_from_logits(model.head(h), y)
    return leaf.grad


def block_gradients(model, x, y):
    """For one batch: (per block (h, F(h), dL/dh through the block, dL_rest/du at shortcut(h)),
    all float64 numpy arrays; the number of saturated images)."""
    blocks = model.blocks()
    with frozen(model):
        with tinyhw.enable_grad():
            h = tinyhw.Tensor(model.stem(x).data, requires_grad=True)   # a leaf: the graph starts
            inputs, outputs = [], []
            for block in blocks:
                h.retain_grad()
                inputs.append(h)
                h = block(h)
                outputs.append(h)
            logits = model.head(h)
            backward_from_logits(logits, y)
        out = []
        for k, (block, h_in, h_out) in enumerate(zip(blocks, inputs, outputs)):
            with tinyhw.no_grad():
                s = block.shortcut(tinyhw.Tensor(h_in.data)).data
            g_rest = rest_gradient(model, blocks[k + 1:], s, y)
            out.append((cpu64(h_in.data), cpu64(h_out.data - s), cpu64(h_in.grad),
                        cpu64(g_rest)))
    return out, int(saturated(logits.data, y).sum())


def compute(setup):
    """The iterative-inference result of `setup`'s net over its val batches."""
    timer, net = Timer(), setup.model
    if any(not has_shortcut(b) for b in net.blocks()):
        raise AnalysisError(f"iterative needs blocks with a shortcut (F(h) = block(h) - "
                            f"shortcut(h)); --checkpoint {setup.checkpoint} holds "
                            f"{setup.info['arch']}, whose blocks are plain")
    net.eval()
    blocks = net.blocks()
    values = [{key: [] for key in ("cos_rest_of_net", "cos_through_block", "norm_ratio")}
              for _ in blocks]
    saturated_images = 0
    for x, y in setup.batches():
        arrays, count = block_gradients(net, x, y)
        saturated_images += count
        for i, a in enumerate(arrays):
            for key, v in per_sample(*a).items():
                values[i][key].append(v)
    names = [(s, k, name) for s, stage in enumerate(block_names(net)) for k, name in
             enumerate(stage)]
    result_blocks = []
    for (s, k, name), block, v in zip(names, blocks, values):
        through = None if v["cos_through_block"][0] is None else summary(
            np.concatenate(v["cos_through_block"]))
        result_blocks.append({"stage": s + 1, "block": k + 1, "name": name, "kind": block.kind,
                              "shape_changing": block.changes_shape,
                              "cos_rest_of_net": summary(np.concatenate(v["cos_rest_of_net"])),
                              "cos_through_block": through,
                              "norm_ratio": summary(np.concatenate(v["norm_ratio"]))})
    return {"analysis": NAME, **setup.info, "headline": HEADLINE, "definitions": DEFINITIONS,
            "saturated_images": saturated_images, "blocks": result_blocks, "seconds": timer()}


def rows(result):
    out = []
    for b in result["blocks"]:
        row = {"stage": b["stage"], "block": b["block"], "name": b["name"],
               "shape_changing": b["shape_changing"]}
        for key in ("cos_rest_of_net", "cos_through_block", "norm_ratio"):
            stats = b[key] or {}
            row.update({f"{key}_mean": stats.get("mean"), f"{key}_std": stats.get("std")})
        out.append(row)
    return out


def _cell(stats):
    if not stats or stats["mean"] is None:
        return f"{'-':>15}"
    return f"{stats['mean']:8.4f} ±{stats['std']:5.3f}"


def table(result):
    lines = [f"iterative inference over {result['images']} val images ({result['seconds']:.1f} s); "
             f"{result['saturated_images']} images would have had a zero target gradient in "
             "float32 (computed without cancellation here)",
             f"{'block':>6} {'cos_rest_of_net':>15} {'cos_through_block':>17} {'|F|/|h|':>15}"]
    for b in result["blocks"]:
        lines.append(f"{b['name'] + ('*' if b['shape_changing'] else ''):>6} "
                     f"{_cell(b['cos_rest_of_net'])} {_cell(b['cos_through_block']):>17} "
                     f"{_cell(b['norm_ratio'])}")
    lines.append("  cos_rest_of_net: cos(F(h), -dL/du) with the block removed (Jastrzebski et "
                 "al.'s first-order term; the headline); cos_through_block: through the block; "
                 "* changes the shape")
    return lines


def plot(result, plt):
    fig, (ax1, ax2) = stage_axes(plt, 2, width=5.0, height=3.4)
    blocks = result["blocks"]
    x = np.arange(1, len(blocks) + 1)
    ax1.axhline(0.0, color="0.6", lw=0.8)
    for key, style, label in (("cos_rest_of_net", "o-", "rest of net (headline)"),
                              ("cos_through_block", "s--", "through the block")):
        kept = [(i, b[key]) for i, b in zip(x, blocks) if b[key] and b[key]["mean"] is not None]
        ax1.errorbar([i for i, _ in kept], [s["mean"] for _, s in kept],
                     yerr=[s["std"] for _, s in kept], fmt=style, capsize=2, label=label)
    ax1.set_ylabel("cos(F(h), -dL/dh)")
    ax1.legend(fontsize=7)
    ax2.errorbar(x, [b["norm_ratio"]["mean"] for b in blocks],
                 yerr=[b["norm_ratio"]["std"] for b in blocks], fmt="o-", capsize=2)
    ax2.set_ylabel("||F(h)|| / ||h||")
    for ax in (ax1, ax2):
        ax.set_xticks(x, [b["name"] for b in blocks], rotation=60, fontsize=7)
        ax.set_xlabel("block")
    fig.suptitle(f"iterative inference: {net_label(result)}", fontsize=10)
    return fig


def run(args):
    setup = make_setup(args, NAME, families=("image", "lm"))
    if setup.family == "lm":   # the char-LM's highway stack (see lm_layers)
        return lm_layers.report_lm(setup, NAME, args.limit)
    result = compute(setup)
    return report(setup, result, rows(result), table(result), plot)
