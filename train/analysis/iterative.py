"""Iterative inference (Jastrzebski et al. 2017, "Residual connections encourage iterative
inference"): does each block move its input along the negative gradient of the loss?

For every block with a shortcut, write its output as y = shortcut(h) + F(h), i.e.
    F(h) = block(h) - shortcut(h)
(residual: relu(H + h) - h; highway: T (H - h)). To first order, L(h + F) ~ L(h) + <dL/dh, F>,
so a block that does gradient-descent-like refinement has cos(F(h), -dL/dh) > 0, and a block
that refines rather than recomputes has a small ||F(h)|| / ||h||.

dL/dh is the true gradient at the block's input: one graph is built from the stem's output
through every block to the summed cross-entropy, each block input keeps its gradient
(`retain_grad`), and one backward pass fills them all. In eval mode (BN on running statistics)
the images of a batch do not interact, so each image's slice of dL/dh is the gradient of its own
loss. Both quantities are per image, flattened over channels and positions, then averaged over
images. The first block of a later stage changes the shape, so F(h) and dL/dh live in different
spaces there: its cosine is left out (null), its norm ratio kept.
"""
import numpy as np

import tinyhw
import tinyhw.functional as F
from tinyhw.backend import to_device

from .common import (AnalysisError, Timer, block_names, has_shortcut, report,
                     setup as make_setup)
from . import lm_layers
from .plots import stage_axes

NAME = "iterative"


def _cpu(array):
    return np.asarray(to_device(array, "cpu"), dtype=np.float64)


def block_activations(model, x, y):
    """Per block (stage by stage): (h, F(h), dL/dh) as float64 numpy arrays, for one batch.

    L is the cross-entropy summed over the batch; the parameters are frozen for the pass (their
    gradients are not needed) and restored after."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad = False
        with tinyhw.enable_grad():
            h = tinyhw.Tensor(model.stem(x).data, requires_grad=True)   # a leaf: the graph starts
            inputs, outputs = [], []
            for block in model.blocks():
                h.retain_grad()
                inputs.append(h)
                h = block(h)
                outputs.append(h)
            target = tinyhw.Tensor(to_device(y, x.device))
            F.cross_entropy(model.head(h), target, "sum").backward()
        with tinyhw.no_grad():
            out = []
            for block, h_in, h_out in zip(model.blocks(), inputs, outputs):
                residual = h_out.data - block.shortcut(tinyhw.Tensor(h_in.data)).data
                out.append((_cpu(h_in.data), _cpu(residual), _cpu(h_in.grad)))
        return out
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad = flag


def per_sample(h, residual, grad):
    """(cosine of F with -dL/dh, or None where the shapes differ; ||F|| / ||h||), per image."""
    n = h.shape[0]
    f = residual.reshape(n, -1)
    norm_f = np.linalg.norm(f, axis=1)
    norm_h = np.linalg.norm(h.reshape(n, -1), axis=1)
    ratio = np.where(norm_h > 0, norm_f / np.where(norm_h > 0, norm_h, 1), np.nan)
    if residual.shape != grad.shape:
        return None, ratio
    g = -grad.reshape(n, -1)
    denominator = norm_f * np.linalg.norm(g, axis=1)
    cosine = np.where(denominator > 0, (f * g).sum(axis=1) / np.where(denominator > 0,
                                                                      denominator, 1), np.nan)
    return cosine, ratio


def _summary(values):
    if values is None:
        return None
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"mean": None, "std": None, "undefined": int(values.size)}
    return {"mean": float(finite.mean()), "std": float(finite.std()),
            "p5": float(np.percentile(finite, 5)), "p95": float(np.percentile(finite, 95)),
            "undefined": int(values.size - finite.size)}


def compute(setup):
    """The iterative-inference result of `setup`'s net over its val batches."""
    timer, net = Timer(), setup.model
    plain = [b for b in net.blocks() if not has_shortcut(b)]
    if plain:
        raise AnalysisError(f"iterative needs blocks with a shortcut (F(h) = block(h) - "
                            f"shortcut(h)); --checkpoint {setup.checkpoint} holds "
                            f"{setup.info['arch']}, whose blocks are plain")
    net.eval()
    blocks = net.blocks()
    cosines, ratios = [[] for _ in blocks], [[] for _ in blocks]
    for x, y in setup.batches():
        for i, (h, residual, grad) in enumerate(block_activations(net, x, y)):
            cosine, ratio = per_sample(h, residual, grad)
            cosines[i].append(cosine)
            ratios[i].append(ratio)
    names = [(s, k, name) for s, stage in enumerate(block_names(net)) for k, name in
             enumerate(stage)]
    result_blocks = []
    for (s, k, name), block, cos, rat in zip(names, blocks, cosines, ratios):
        cos = None if cos[0] is None else np.concatenate(cos)
        result_blocks.append({"stage": s + 1, "block": k + 1, "name": name, "kind": block.kind,
                              "shape_changing": cos is None, "cosine": _summary(cos),
                              "norm_ratio": _summary(np.concatenate(rat))})
    return {"analysis": NAME, **setup.info, "blocks": result_blocks,
            "definition": "per image: cos(F(h), -dL/dh) and ||F(h)|| / ||h|| with F(h) = "
                          "block(h) - shortcut(h), L the cross-entropy; averaged over images",
            "seconds": timer()}


def rows(result):
    out = []
    for b in result["blocks"]:
        cos, rat = b["cosine"] or {}, b["norm_ratio"]
        out.append({"stage": b["stage"], "block": b["block"], "name": b["name"],
                    "shape_changing": b["shape_changing"], "cosine_mean": cos.get("mean"),
                    "cosine_std": cos.get("std"), "norm_ratio_mean": rat["mean"],
                    "norm_ratio_std": rat["std"]})
    return out


def table(result):
    lines = [f"iterative inference over {result['images']} val images ({result['seconds']:.1f} s)",
             f"{'block':>6} {'cos(F,-dL/dh)':>14} {'±':>6} {'|F|/|h|':>8} {'±':>6}"]
    for b in result["blocks"]:
        cos, rat = b["cosine"], b["norm_ratio"]
        cos_text = (f"{cos['mean']:14.4f} {cos['std']:6.3f}" if cos and cos["mean"] is not None
                    else f"{'(shape changes)':>21}")
        lines.append(f"{b['name']:>6} {cos_text} {rat['mean']:8.3f} {rat['std']:6.3f}")
    return lines


def plot(result, plt):
    fig, (ax1, ax2) = stage_axes(plt, 2, width=5.0, height=3.4)
    blocks = result["blocks"]
    x = np.arange(1, len(blocks) + 1)
    kept = [(i, b) for i, b in zip(x, blocks) if b["cosine"] and b["cosine"]["mean"] is not None]
    ax1.axhline(0.0, color="0.6", lw=0.8)
    ax1.errorbar([i for i, _ in kept], [b["cosine"]["mean"] for _, b in kept],
                 yerr=[b["cosine"]["std"] for _, b in kept], fmt="o-", capsize=2)
    ax1.set_ylabel("cos(F(h), -dL/dh)")
    ax2.errorbar(x, [b["norm_ratio"]["mean"] for b in blocks],
                 yerr=[b["norm_ratio"]["std"] for b in blocks], fmt="o-", capsize=2)
    ax2.set_ylabel("||F(h)|| / ||h||")
    for ax in (ax1, ax2):
        ax.set_xticks(x, [b["name"] for b in blocks], rotation=60, fontsize=7)
        ax.set_xlabel("block")
    fig.suptitle(f"iterative inference: {result['arch']}{'' if result['bn'] else ' (no BN)'}",
                 fontsize=10)
    return fig


def run(args):
    setup = make_setup(args, NAME, families=("image", "lm"))
    if setup.family == "lm":   # the char-LM's highway stack (see lm_layers)
        return lm_layers.report_lm(setup, NAME, args.limit)
    result = compute(setup)
    return report(setup, result, rows(result), table(result), plot)
