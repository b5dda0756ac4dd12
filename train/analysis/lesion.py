"""Lesioning (Veit et al. 2016; Srivastava et al. 2015): remove one block at a time.

A lesioned block keeps only its identity (residual) or carry (highway) path: y = shortcut(x).
The first block of a later stage changes the shape; its shortcut (option A: subsample, zero-pad)
does too, so lesioning it is still well defined. If the blocks of a stage refine one estimate,
dropping one block costs little: the next blocks keep refining a representation of the same
kind. A plain net (no skips) of the same depth has no such path: a removed layer is bridged by
the identity (or the option-A shortcut where the shape changes), and its error should collapse
towards chance, 1 - 1/classes.

Reported: the intact net's val error (its own forward), the error with nothing lesioned through
the block-by-block runner (equal by construction), and the error with each block lesioned; with
--baseline, the same for a second net (e.g. plain20 beside resnet20).
"""
from .common import (AnalysisError, Timer, block_names, net_label, report, score,
                     setup as make_setup, shape_keeping)
from . import lm_layers
from .plots import stage_axes

NAME = "lesion"


def sweep(setup):
    """{"intact", "none_lesioned", "blocks": [...], "chance"} for one net."""
    timer = Timer()
    net, names = setup.model, block_names(setup.model)
    result = {"arch": setup.info["arch"], "bn": setup.info["bn"],
              "share_blocks": setup.info["share_blocks"], "unshared_bn": setup.info["unshared_bn"],
              "checkpoint": setup.info["checkpoint"], "intact": score(setup),
              "none_lesioned": score(setup, lesioned=()),
              "chance": 1.0 - 1.0 / net.fc.weight.shape[0], "blocks": []}
    for s, stage in enumerate(net.stages):
        keeping = set(shape_keeping(stage))
        for k, block in enumerate(stage):
            errors = score(setup, lesioned=[(s, k)])
            result["blocks"].append({"stage": s + 1, "block": k + 1, "name": names[s][k],
                                     "kind": block.kind, "shape_changing": k not in keeping,
                                     **errors})
    result["seconds"] = timer()
    return result


def compute(setup, baseline=None):
    """The lesion result of `setup`'s net, and of the `baseline` setup's net when given."""
    result = {"analysis": NAME, **setup.info, "net": sweep(setup),
              "baseline": sweep(baseline) if baseline is not None else None,
              "note": "a lesioned block outputs its shortcut (identity, or option-A pad where "
                      "the first block of a stage changes the shape); a plain block, which has "
                      "none, is bridged the same way"}
    return result


def rows(result):
    out = []
    for role in ("net", "baseline"):
        net = result[role]
        if net is None:
            continue
        common = {"role": role, "arch": net["arch"], "bn": net["bn"]}
        for label, errors in (("intact", net["intact"]), ("none", net["none_lesioned"])):
            out.append({**common, "lesioned": label, "stage": "", "block": "",
                        "shape_changing": "", **errors})
        for b in net["blocks"]:
            out.append({**common, "lesioned": b["name"], "stage": b["stage"],
                        "block": b["block"], "shape_changing": b["shape_changing"],
                        "loss": b["loss"], "top1_err": b["top1_err"]})
    return out


def _describe(net):
    return (f"{net_label(net)}: intact top-1 error {100 * net['intact']['top1_err']:.2f}% "
            f"(nothing lesioned: {100 * net['none_lesioned']['top1_err']:.2f}%), chance "
            f"{100 * net['chance']:.0f}%, {net['seconds']:.0f} s")


def _short(net):
    """'resnet20', 'resnet20-nobn', 'resnet20-shared', 'resnet20-shared-ubn' for columns."""
    return (net["arch"] + "-nobn" * (not net["bn"]) + "-shared" * bool(net.get("share_blocks"))
            + "-ubn" * bool(net.get("unshared_bn")))


def table(result):
    nets = [result["net"]] + ([result["baseline"]] if result["baseline"] else [])
    lines = [f"lesioning one block at a time, top-1 val error over {result['images']} images"]
    lines += [_describe(n) for n in nets]
    lines.append(f"{'removed':>8}" + "".join(f" {_short(n):>16}" for n in nets))
    by_name = [{b["name"]: b for b in n["blocks"]} for n in nets]
    for b in nets[0]["blocks"]:
        cells = [m.get(b["name"]) for m in by_name]
        text = "".join(f" {100 * c['top1_err']:15.2f}%" if c else f" {'-':>16}" for c in cells)
        lines.append(f"{b['name'] + ('*' if b['shape_changing'] else ''):>8}{text}")
    lines.append("  * first block of a stage: changes the shape, lesioned to its option-A shortcut")
    return lines


def plot(result, plt):
    fig, (ax,) = stage_axes(plt, 1, width=7.0, height=3.6)
    for net, colour in ((result["net"], "C0"), (result["baseline"], "C3")):
        if net is None:
            continue
        label = net_label(net)
        x = list(range(1, len(net["blocks"]) + 1))
        ax.plot(x, [100 * b["top1_err"] for b in net["blocks"]], "o-", color=colour,
                label=f"{label}: one block removed")
        ax.axhline(100 * net["intact"]["top1_err"], color=colour, ls="--", lw=1,
                   label=f"{label}: intact")
        ax.set_xticks(x, [b["name"] for b in net["blocks"]], rotation=45, fontsize=8)
    ax.axhline(100 * result["net"]["chance"], color="0.5", ls=":", label="chance")
    ax.set_ylabel("val top-1 error (%)")
    ax.set_xlabel("removed block")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    return fig


def run(args):
    setup = make_setup(args, NAME, families=("image", "lm"))
    if setup.family == "lm":
        if args.baseline:
            raise AnalysisError("--baseline: only for image nets (a char-LM's lesion needs none)")
        return lm_layers.report_lm(setup, NAME, args.limit)
    baseline = None
    if args.baseline:
        base_args = type(args)(**{**vars(args), "checkpoint": args.baseline})
        try:
            baseline = make_setup(base_args, NAME, families=("image",))
        except AnalysisError as e:    # the loader names --checkpoint; here it is --baseline
            message = str(e)
            if message.startswith("--checkpoint"):
                message = message.removeprefix("--checkpoint")
            else:
                message = ": " + message
            raise AnalysisError(f"--baseline{message}") from None
    result = compute(setup, baseline)
    return report(setup, result, rows(result), table(result), plot)
