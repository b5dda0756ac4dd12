"""train.report's section on iterative inference and estimation inside each stage of the image
nets and of the char-LMs' highway stacks (issue 12), from the analyses `train.analyze
iterative` and `train.analyze estimation-error` wrote into a run's analysis/ folder. A
char-LM's stack is its one stage, its layers the blocks.

One row per run and stage, each block's figures side by side:

* cos_rest_of_net (the headline, Jastrzebski et al. 2017): cos(F(h), -dL_rest/du), the
  first-order term of their expansion L(h + F(h)) ~ L(h) + F(h).dL/dh with the block removed.
  Their statement: a residual block moves h down the loss of the rest of the net, so the mean
  cosine is positive. A block's mean counts as positive (or negative) only when it is more than
  twice its standard error (std / sqrt(count) over the analysed images) away from 0.
* cos_through_block (the gradient through the block, the definition before issue 12) and
  ||F(h)|| / ||h||, shown without a verdict.
* The estimation error (Greff et al. 2017, Fig. 3): std(a_k - A) / std(A) of each block's
  estimate a_k of the stage output A; the unrolled-estimation view predicts that it does not
  grow with depth inside a stage. The stage's last block is A itself (0) and is left out.

iterative.json files written before issue 12 (one `cosine`, through the block, with the
float32-cancelled loss gradient) hold no cos_rest_of_net; they are named under the table as
stale instead of being read, and so are those of a plain char-LM (written before `iterative`
refused it): its layer has no carry path, so layer(h) - h is no increment to h.
"""
import json
from pathlib import Path

from train.markdown import DASH, markdown_table

CAPTION = ("Iterative inference (Jastrzebski et al. 2017) and iterative estimation (Greff et al. "
           "2017, Fig. 3) inside each stage, from `train.analyze iterative` and "
           "`train.analyze estimation-error` on the validation split (images, or a char-LM's "
           "words); one figure per block of the stage, in order (a char-LM's highway stack is "
           "its one stage, its layers the blocks). cos_rest_of_net (the headline) is "
           "cos(F(h), −∂L_rest/∂u), F(h) = block(h) − shortcut(h) and L_rest the loss of the "
           "net with the block removed: positive when the block moves h down the rest of the "
           "net's loss. A mean counts as positive only when it exceeds twice its standard error "
           "over the examples (a char-LM's words share their window's LSTM state and loss, so "
           "they are not independent and the rule is lenient there). cos_through_block uses the full net's gradient through the block "
           "(— where the block changes the shape). The estimation error is std(a_k − A) / "
           "std(A) for each block but the last (A, the stage output, itself); Greff et al.'s "
           "view predicts that it does not grow with depth.")


class ReportError(Exception):
    """A run folder, or a file in it, that cannot be read; the message names the file (and
    line). Defined here, in the lowest of train.report's modules, so that all of them raise it."""


def read_analysis(run, name):
    """analysis/<name>.json of the run folder (what `train.analyze` wrote), or None."""
    path = Path(run.path) / "analysis" / f"{name}.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(result, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(result).__name__}")
    return result


# A char-LM's analyses have no stages: its highway stack's layers are the one stage it has.
LM_STAGE = "highway stack"


def _stages(result):
    """{stage: [its blocks in order]} of an iterative result (a char-LM's: its layers)."""
    if "layers" in result:
        return {LM_STAGE: result["layers"]}
    stages = {}
    for b in result["blocks"]:
        stages.setdefault(b["stage"], []).append(b)
    return dict(sorted(stages.items()))


def _estimation_stages(result):
    """{stage: [its blocks' estimation errors in order]} of an estimation-error result."""
    if result is None:
        return {}
    if "layers" in result:
        return {LM_STAGE: result["layers"]}
    return {s["stage"]: s["blocks"] for s in result["stages"]}


def _joined(values, digits=3):
    """The values with `digits` decimals, " / " between them (no "-0.000": a mean that rounds
    to zero shows as 0)."""
    return " / ".join(DASH if v is None else f"{round(v, digits) + 0.0:.{digits}f}"
                      for v in values)


def _mean(summary):
    return None if not summary or summary.get("mean") is None else summary["mean"]


def cosine_sign(summary):
    """+1, -1 or 0: the sign of a block's mean cosine, 0 when it lies within twice its
    standard error of 0 (or is undefined)."""
    summary = summary or {}
    mean, count = summary.get("mean"), summary.get("count")
    if mean is None or not count:
        return 0
    standard_error = (summary.get("std") or 0.0) / count ** 0.5
    return 0 if abs(mean) <= 2 * standard_error else (1 if mean > 0 else -1)


def cosine_verdict(blocks):
    """Jastrzebski et al.'s statement on one stage: every block's mean cos_rest_of_net > 0."""
    signs = {b["name"]: cosine_sign(b.get("cos_rest_of_net")) for b in blocks}
    negative = [name for name, s in signs.items() if s < 0]
    unclear = [name for name, s in signs.items() if s == 0]
    if negative:
        return f"contradicts: negative in {', '.join(negative)}"
    if unclear:
        return f"mixed: not clearly above 0 in {', '.join(unclear)}"
    return "supports: positive in every block"


def estimation_cells(blocks):
    """(std(a_k - A) / std(A) of a stage's blocks but the last, verdict)."""
    ratios = [b["rel_std"] for b in blocks[:-1]]
    if len(ratios) < 2:
        return _joined(ratios, 2), DASH
    shrinks = all(later <= earlier for earlier, later in zip(ratios, ratios[1:]))
    return _joined(ratios, 2), ("yes: it never grows" if shrinks
                                       else "no: it grows somewhere")


def inference_claim(runs):
    """Markdown: the table (one row per run and stage) and the runs whose iterative.json
    predates cos_rest_of_net (stale), or None. `runs` may mix image nets and char-LMs."""
    rows, stale, no_carry = [], [], []
    for r in runs:
        result = read_analysis(r, "iterative")
        if result is None:
            continue
        if "headline" not in result:
            stale.append(r.name)
            continue
        if result.get("variant") == "plain":
            no_carry.append(r.name)
            continue
        estimation = _estimation_stages(read_analysis(r, "estimation_error"))
        for stage, blocks in _stages(result).items():
            ratios, sharpens = (estimation_cells(estimation[stage]) if stage in estimation
                                else (DASH, DASH))
            rows.append([r.name, str(stage),
                         blocks[0]["name"] if len(blocks) == 1
                         else f"{blocks[0]['name']}–{blocks[-1]['name']}",
                         _joined(_mean(b.get("cos_rest_of_net")) for b in blocks),
                         _joined(_mean(b.get("cos_through_block")) for b in blocks),
                         _joined((_mean(b.get("norm_ratio")) for b in blocks), 2),
                         cosine_verdict(blocks), ratios, sharpens])
    if not rows and not stale and not no_carry:
        return None
    parts = []
    if rows:
        parts.append(markdown_table(
            ["run", "stage", "blocks", "cos_rest_of_net", "cos_through_block", "‖F(h)‖/‖h‖",
             "moves h down the rest-of-net loss?", "estimation error std(a_k − A)/std(A)",
             "estimate sharpens with depth?"], rows))
    if stale:
        parts.append("Not read, as stale (an iterative.json from before issue 12, with only the "
                     "cosine through the block and the float32-cancelled loss gradient): "
                     f"{', '.join(stale)}. `train.analyze iterative` on the checkpoint again "
                     "replaces it.")
    if no_carry:
        parts.append("Not read, as a plain char-LM's layer relu(W h + b) has no carry path, so "
                     "layer(h) − h is no increment to h (`train.analyze iterative` refuses such "
                     f"a checkpoint now): {', '.join(no_carry)}.")
    return "\n\n".join(parts)
