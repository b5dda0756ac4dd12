"""train.report's sections on the seed papers' claims about the CIFAR nets (issue 12): batch
norm compared at equal training loss, shared blocks, and extra iterations at test time.

Each function takes the image runs that train.report read (report.Run) and returns Markdown, or
None when no run bears on the claim. Only finished runs give a verdict; a run still going is
listed as such. The verdicts are mechanical comparisons of the numbers in the row, stated with
the criterion they apply, so that a reader can check them:

* Batch norm regularises (Greff et al. 2017, Table 1b and Fig. 5): without BN a net reaches a
  lower training loss but a higher validation error. Each no-BN run is compared with the BN
  runs of the same net and data (--arch, --limit, sharing flags, weight decay) whose schedule
  is not longer than its own (a no-BN net may train longer, or the BN net shorter: the longest,
  and of the shorter ones the one nearest to equal training loss, see bn_pairs), on the final epoch's
  `train_loss` (the mean loss of the epoch's augmented batches, as trained) and the final
  model's val top-1 error. The claim is only tested when the no-BN net's training loss is at or
  below the BN net's: otherwise the no-BN net underfits and the row says "not resolved". A
  val error difference within twice its binomial standard error is "no difference". A
  second row set compares the no-BN Highway and Residual nets of one depth and data: the
  paper's Highway net fits better.
* Shared blocks (Jastrzebski et al. 2017): the unshared, shared and shared-with-unshared-BN runs
  of one net, data and schedule side by side: val error, training loss and error, and, where
  `train.analyze iterations` wrote analysis/iterations.json, the norm of h through each stage.
  Once the runs are finished (and analysed), a verdict on each of the paper's statements:
  naive sharing makes ||h|| grow more through a stage than in the unshared net, and overfits
  (a larger val - train error gap); unshared BN lowers the shared net's val error and its
  ||h|| growth.
* Extra iterations at test time: from analysis/iterations.json, the val error change after K
  extra applications of each stage's first and last shape-keeping block; the iterative view
  predicts a smaller change for the last block.
* Iterative inference and estimation inside each stage: train/report_inference.py.
"""
import re

from train import report_inference
from train.markdown import DASH, markdown_table


def _pct(value):
    return DASH if value is None else f"{100 * value:.2f}"


def _loss(value):
    return DASH if value is None else f"{value:.4f}"


def _name(run):
    return run.name


def _train_loss(run):
    return run.last("train_loss")   # the final epoch's, as trained


def _train_err(run):
    return run.last("train_top1_err")


def _val_err(run):
    return run.final_model("val_top1_err")


def _state(run):
    a = run.args
    return "finished" if run.finished else f"in progress (epoch {run.epochs_done} of {a.epochs})"


def _training_key(args):
    """The training settings two compared runs share: the training images and the weight
    decay (without BN, L2 limits how well a net can fit; with BN it mostly does not, as the
    conv weights' scale does not change the output)."""
    return args.limit, getattr(args, "weight_decay", None)


def _data_key(args):
    """What must match for two runs to be compared: the training settings and the sharing."""
    return (_training_key(args), bool(getattr(args, "share_blocks", False)),
            bool(getattr(args, "unshared_bn", False)))


def _family_depth(arch):
    """('highway', 20) for highway20; None for highway_full50 and other names."""
    match = re.fullmatch(r"(resnet|highway|plain)(\d+)", arch)
    return (match.group(1), int(match.group(2))) if match else None


def _family(arch):
    """'highway' for highway20; None for names outside the resnet/highway/plain + depth form."""
    fd = _family_depth(arch)
    return fd[0] if fd else None


def _with_args(runs):
    return [r for r in runs if r.args is not None and r.epochs]


# ---- batch norm at equal training loss ---------------------------------------------------
VAL_IMAGES_LOGGED = re.compile(r" / ([\d,]+) val images")   # train.image's first log line


def val_images(run):
    """How many val images a finished image run's final errors are over: the final record's
    `val_images` (train.image writes it since 2026-12-02), else the count in the first line
    train.image printed (log.txt of a results/ folder), else None."""
    if run.final and isinstance(run.final.get("val_images"), int):
        return run.final["val_images"]
    log = run.path / "log.txt"
    match = VAL_IMAGES_LOGGED.search(log.read_text(errors="replace")) if log.is_file() else None
    return int(match.group(1).replace(",", "")) if match else None


def val_difference_noise(a, b):
    """Twice the binomial standard error of the difference of two finished runs' final val
    top-1 errors (independent val passes), in points; 0 when a count is unknown."""
    counts = val_images(a), val_images(b)
    if None in counts:
        return 0.0
    return (sum(_two_standard_errors(_val_err(r), n) ** 2
                for r, n in zip((a, b), counts))) ** 0.5


def bn_verdict(bn, nobn):
    """The BN-regularises verdict of one BN / no-BN pair (report.Run each)."""
    if not (bn.finished and nobn.finished):
        return "in progress"
    bn_loss, nobn_loss = _train_loss(bn), _train_loss(nobn)
    bn_err, nobn_err = _val_err(bn), _val_err(nobn)
    if None in (bn_loss, nobn_loss, bn_err, nobn_err):
        return "no verdict (a figure is missing)"
    if nobn_loss > bn_loss:
        return (f"not resolved: without BN the net fits worse ({nobn_loss:.4f} > "
                f"{bn_loss:.4f}); train longer")
    return _difference_verdict(
        100 * (nobn_err - bn_err), val_difference_noise(bn, nobn),
        "at equal or lower training loss, the no-BN net generalises worse",
        "at equal or lower training loss, the no-BN net generalises better")


def bn_pairs(image_runs):
    """(BN run, no-BN run) pairs: each no-BN run with its BN twins, the runs of the same net
    and data whose schedule is not longer than its own. A no-BN net fits worse than its BN twin
    of the same schedule; it reaches the BN net's training loss when it trains longer, or when
    the BN net trains shorter (each run's learning rate anneals to zero at its own last epoch),
    never the other way. Of the twins, the pairs are: those of the longest schedule (the
    equal-schedule comparison), the finished shorter one whose final training loss is the
    closest at or above the no-BN net's (the comparison nearest to equal training loss), and
    any shorter one still going."""
    runs = _with_args(image_runs)
    pairs = []
    for nobn in (r for r in runs if not r.args.bn):
        twins = [r for r in runs if r.args.bn and r.args.arch == nobn.args.arch
                 and _data_key(r.args) == _data_key(nobn.args)
                 and r.args.epochs <= nobn.args.epochs]
        if not twins:
            continue
        longest = max(r.args.epochs for r in twins)
        shorter = [r for r in twins if r.args.epochs < longest]
        target = _train_loss(nobn) if nobn.finished else None
        at_or_above = [r for r in shorter if r.finished and target is not None
                       and _train_loss(r) is not None and _train_loss(r) >= target]
        closest = min(at_or_above, key=_train_loss, default=None)
        pairs += [(bn, nobn) for bn in twins if bn.args.epochs == longest]
        pairs += [(bn, nobn) for bn in shorter if bn is closest or not bn.finished]
    return pairs


def bn_claim(image_runs):
    runs = _with_args(image_runs)
    rows = []
    for bn, nobn in bn_pairs(runs):
        rows.append([bn.args.arch, f"{bn.args.limit:,}" if bn.args.limit else "all",
                     f"{_name(bn)} ({bn.args.epochs} ep.) / {_name(nobn)} "
                     f"({nobn.args.epochs} ep.)",
                     f"{_loss(_train_loss(bn))} / {_loss(_train_loss(nobn))}",
                     f"{_pct(_val_err(bn))} / {_pct(_val_err(nobn))}",
                     bn_verdict(bn, nobn)])
    fits = []
    for highway in (r for r in runs if not r.args.bn):
        fd = _family_depth(highway.args.arch)
        if not fd or fd[0] != "highway":
            continue
        for resnet in (r for r in runs if not r.args.bn and r.args.arch == f"resnet{fd[1]}"
                       and _data_key(r.args) == _data_key(highway.args)
                       and r.args.epochs == highway.args.epochs):
            hw_loss, res_loss = _train_loss(highway), _train_loss(resnet)
            if not (highway.finished and resnet.finished):
                verdict = "in progress"
            else:
                verdict = ("supports: the Highway net fits better" if hw_loss < res_loss else
                           "contradicts: the Residual net fits as well or better")
            fits.append([f"{_name(highway)} / {_name(resnet)}",
                         f"{highway.args.limit:,}" if highway.args.limit else "all",
                         str(highway.args.epochs), f"{_loss(hw_loss)} / {_loss(res_loss)}",
                         f"{_pct(_val_err(highway))} / {_pct(_val_err(resnet))}",
                         verdict])
    if not rows and not fits:
        return None
    parts = []
    if rows:
        parts.append(markdown_table(["net", "training images", "runs: BN / no BN",
                                     "final train loss: BN / no BN", "val top-1 %: BN / no BN",
                                     "BN regularises?"], rows))
    if fits:
        parts.append("Without BN, does the Highway net fit the training data better than the "
                     "Residual net of the same depth (Greff et al.: yes)?")
        parts.append(markdown_table(["runs: Highway / Residual (no BN)", "training images",
                                     "epochs", "final train loss", "val top-1 %", "verdict"],
                                    fits))
    return "\n\n".join(parts)


# ---- shared blocks -----------------------------------------------------------------------
def read_iterations(run):
    """analysis/iterations.json of the run folder (train.analyze iterations), or None."""
    return report_inference.read_analysis(run, "iterations")


def stage_norms(result):
    """{stage: (||h|| after its first block, after its last block)} from an iterations
    result's intact-net norms (stage 0, the stem, left out)."""
    by_stage = {}
    for n in result["norms"]:
        if n["stage"]:
            by_stage.setdefault(n["stage"], []).append(n["norm_mean"])
    return {s: (v[0], v[-1]) for s, v in sorted(by_stage.items())}


def sharing_kind(args):
    if not getattr(args, "share_blocks", False):
        return "unshared"
    return "shared, unshared BN" if getattr(args, "unshared_bn", False) else "shared"


SHARING_ORDER = ("unshared", "shared", "shared, unshared BN")


def sharing_groups(image_runs):
    """The runs of each net, data and schedule that has a shared run, unshared first."""
    groups = {}
    for r in _with_args(image_runs):
        key = (r.args.arch, r.args.bn, r.args.epochs, _training_key(r.args))
        groups.setdefault(key, []).append(r)
    return [sorted(members, key=lambda r: SHARING_ORDER.index(sharing_kind(r.args)))
            for members in groups.values()
            if any(getattr(r.args, "share_blocks", False) for r in members)]


def sharing_norm_lines(image_runs):
    """For the figure of ||h|| block by block: (label, block names, mean ||h||) of every
    sharing run with its analysis/iterations.json."""
    lines = []
    for members in sharing_groups(image_runs):
        for r in members:
            result = read_iterations(r)
            if result is not None:
                lines.append((f"{_name(r)} ({sharing_kind(r.args)})",
                              [n["name"] for n in result["norms"]],
                              [n["norm_mean"] for n in result["norms"]]))
    return lines


def sharing_claim(image_runs):
    groups = sharing_groups(image_runs)
    rows = []
    for members in groups:
        for r in members:
            result = read_iterations(r)
            norms = DASH if result is None else "; ".join(
                f"{first:.3g} → {last:.3g}" for first, last in stage_norms(result).values())
            train_err, val_err = _train_err(r), _val_err(r)
            gap = DASH if None in (train_err, val_err) else f"{100 * (val_err - train_err):.2f}"
            rows.append([r.args.arch, sharing_kind(r.args), _name(r), _state(r),
                         _pct(val_err), _loss(_train_loss(r)), _pct(train_err), gap,
                         norms])
    if not rows:
        return None
    table = markdown_table(["net", "blocks", "run", "state", "val top-1 %", "final train loss",
                            "train top-1 %", "val − train (points)",
                            "‖h‖ per stage, first → last block"], rows)
    verdicts = [row for members in groups for row in sharing_verdicts(members)]
    if not verdicts:
        return table
    return "\n\n".join([table, SHARING_VERDICTS_INTRO, markdown_table(
        ["statement", "runs", "figures", "verdict"], verdicts)])


SHARING_VERDICTS_INTRO = (
    "Jastrzebski et al.'s statements, on finished runs only. ‖h‖ growth is a stage's ‖h‖ after "
    "its last block over ‖h‖ after its first block (never shared), i.e. through the iterations "
    "of the shared block; the gap is val top-1 minus train top-1 error (train "
    "error as trained: augmented batches, BN on batch statistics). Differences under twice "
    "the binomial standard error of the difference of the two nets' final val errors (over "
    "their val images) are called no difference.")


def _stage_growth(result):
    """{stage: ||h|| after its last block / after its first} from an iterations result."""
    return {s: last / first for s, (first, last) in stage_norms(result).items()}


def _growth_verdict(larger, smaller, what):
    """Whether `larger`'s ||h|| growth exceeds `smaller`'s in every stage ({stage: ratio}
    each): supports, contradicts (in no stage), or mixed, naming the stages."""
    more = [s for s in larger if larger[s] > smaller.get(s, float("inf"))]
    if len(more) == len(larger):
        return f"supports: {what} in every stage"
    if not more:
        return f"contradicts: {what} in no stage"
    return f"mixed: {what} in stage{'s' if len(more) > 1 else ''} " + \
        ", ".join(str(s) for s in more) + " only"


def _difference_verdict(delta, noise, supports, contradicts):
    """A verdict on a difference in points that the statement predicts to be positive."""
    if delta > noise:
        return f"supports: {supports}"
    if delta < -noise:
        return f"contradicts: {contradicts}"
    return f"no difference (within ±{noise:.2f})"


def sharing_verdicts(members):
    """Rows [statement, runs, figures, verdict] for one group of sharing runs (one net, data
    and schedule): the statements whose runs are finished and have their iterations.json."""
    by_kind, results = {}, {}   # the first usable run of each kind, and its iterations.json
    for r in members:
        result = read_iterations(r) if r.finished else None
        kind = sharing_kind(r.args)
        if (result is not None and kind not in by_kind
                and None not in (_val_err(r), _train_err(r))):
            by_kind[kind], results[kind] = r, result
    unshared, shared = by_kind.get("unshared"), by_kind.get("shared")
    fixed = by_kind.get("shared, unshared BN")
    rows = []
    growth = {kind: _stage_growth(result) for kind, result in results.items()}

    def ratios(kind):
        return "; ".join(f"{g:.2f}" for g in growth[kind].values())

    def gap(r):
        return 100 * (_val_err(r) - _train_err(r))

    if unshared and shared:
        rows.append(["naive sharing makes ‖h‖ grow through a stage (representation explosion)",
                     f"{_name(shared)} / {_name(unshared)}",
                     f"‖h‖ growth per stage: {ratios('shared')} / {ratios('unshared')}",
                     _growth_verdict(growth["shared"], growth["unshared"],
                                     "‖h‖ grows more in the shared net")])
        rows.append(["naive sharing overfits (a larger val − train gap)",
                     f"{_name(shared)} / {_name(unshared)}",
                     f"gap {gap(shared):.2f} / {gap(unshared):.2f} points; val top-1 "
                     f"{_pct(_val_err(shared))} / {_pct(_val_err(unshared))}",
                     _difference_verdict(gap(shared) - gap(unshared),
                                         val_difference_noise(shared, unshared),
                                         "the shared net's gap is larger",
                                         "the shared net's gap is smaller")])
    if shared and fixed:
        rows.append(["unshared BN largely fixes it: lower val error than naive sharing",
                     f"{_name(fixed)} / {_name(shared)}",
                     f"val top-1 {_pct(_val_err(fixed))} / {_pct(_val_err(shared))}; gap "
                     f"{gap(fixed):.2f} / {gap(shared):.2f} points",
                     _difference_verdict(100 * (_val_err(shared) - _val_err(fixed)),
                                         val_difference_noise(shared, fixed),
                                         "unshared BN lowers the val error",
                                         "unshared BN raises the val error")])
        rows.append(["unshared BN largely fixes it: less ‖h‖ growth than naive sharing",
                     f"{_name(fixed)} / {_name(shared)}",
                     f"‖h‖ growth per stage: {ratios('shared, unshared BN')} / "
                     f"{ratios('shared')}",
                     _growth_verdict(growth["shared"], growth["shared, unshared BN"],
                                     "‖h‖ grows less with unshared BN")])
    return rows


# ---- extra iterations at test time -------------------------------------------------------
def noise_points(result):
    """Twice the binomial standard error of the intact net's val top-1 error over the
    analysis's images, in points: a change smaller than this is not read as a difference."""
    return _two_standard_errors(result["blocks"][0]["iterations"][0]["top1_err"],
                                result.get("images"))


def _two_standard_errors(error, images):
    """Twice the binomial standard error of an error rate over `images` images, in points
    (0 when the count is unknown)."""
    return 200 * (error * (1 - error) / images) ** 0.5 if images else 0.0


def iteration_deltas(result):
    """Per stage: (first shape-keeping block's name, its val error change after the most
    extra applications, the last block's name, its change, the first one's block number in
    its stage); stages with one shape-keeping block give the same block twice."""
    by_stage = {}
    for b in result["blocks"]:
        its = b["iterations"]
        by_stage.setdefault(b["stage"], []).append(
            (b["name"], its[-1]["top1_err"] - its[0]["top1_err"], b["block"]))
    return {s: (v[0][0], v[0][1], v[-1][0], v[-1][1], v[0][2])
            for s, v in sorted(by_stage.items())}


def iterations_claim(image_runs):
    rows = []
    for r in _with_args(image_runs):
        result = read_iterations(r)
        if result is None or not result["blocks"]:   # (a net with no shape-keeping block)
            continue
        k, noise = result["extra"], noise_points(result)
        for stage, (first, d_first, last_name, d_last, first_number) in \
                iteration_deltas(result).items():
            if first == last_name:
                verdict = DASH
            elif _family(r.args.arch) == "plain":
                # no shortcut: a plain block is not an increment to its input, so the
                # iterative view makes no prediction; its rows are the control
                verdict = f"{DASH} (plain net, no shortcut: the control)"
            elif (getattr(r.args, "share_blocks", False)
                  and not getattr(r.args, "unshared_bn", False) and first_number > 1):
                # blocks 2.. of a stage all apply its one shared block (block 1 is its own);
                # with unshared BN each iteration has its own batch norm, so they differ
                verdict = f"{DASH} (shared blocks: the same map, so the same change)"
            elif abs(100 * (d_last - d_first)) < noise:
                verdict = f"no difference (within ±{noise:.2f})"
            else:
                verdict = "supports" if d_last < d_first else "contradicts"
            rows.append([_name(r), str(stage), str(k), f"{first}: {100 * d_first:+.2f}",
                         f"{last_name}: {100 * d_last:+.2f}", verdict])
    if not rows:
        return None
    return markdown_table(["run", "stage", "extra applications K",
                           "first shape-keeping block: Δ val top-1 (points)",
                           "last block: Δ val top-1 (points)", "last block hurts less?"], rows)


CAPTIONS = {
    "bn": ("Greff et al. (2017) report that without batch norm their 50-layer nets reach a lower "
           "*training* loss but a higher *validation* error (Table 1b, Fig. 5), i.e. BN "
           "regularises. Each row pairs a no-BN run with a BN run of the same net and "
           "training images whose schedule is not longer than its own: to reach the BN net's "
           "training loss a no-BN net may train longer, or its BN twin shorter (every run's "
           "learning rate anneals to zero at its own last epoch). The rows show the BN twin of "
           "the longest such schedule and, of the shorter ones, the one whose final training "
           "loss is nearest at or above the no-BN net's. The claim is tested only when "
           "the no-BN net's final-epoch training loss (mean over the epoch's augmented "
           "batches) is at or below the BN net's; val top-1 is the final model's, and a "
           "difference within twice the binomial standard error of the difference of the two "
           "errors (over their val images) is called no difference."),
    "sharing": ("Jastrzebski et al. (2017): if a stage's blocks refine one representation, one "
                "block applied repeatedly should do; naive sharing instead makes the norm of h "
                "grow and overfits, and a separate batch norm per iteration (unshared BN) "
                "largely fixes it. Rows: one net, data and schedule with its blocks unshared, "
                "shared, and shared with unshared BN; ‖h‖ (mean over val images, intact net, "
                "from `train.analyze iterations`) after each stage's first and last block."),
    "iterations": ("Extra iterations at test time (`train.analyze iterations`): a stage's block "
                   "applied K more times before the rest of the net. Under the iterative view "
                   "the stage's last block (a late refinement) changes the val error less than "
                   "its first shape-keeping block; Δ is the error after K extra applications "
                   "minus the intact net's. Differences below twice the binomial standard error "
                   "of the intact net's error over the analysed images are called no "
                   "difference. A plain net (no shortcuts) is the control: the view predicts "
                   "nothing for it."),
    "inference": report_inference.CAPTION,
}


def sections(image_runs, lm_runs=()):
    """(title, key, caption, Markdown) of each claim with runs that bear on it; key is one of
    CAPTIONS' (the report adds to a section the figures it drew as <key>_*.png). Only the
    iterative-inference section reads the char-LM runs."""
    found = [("Batch norm at equal training loss (Greff et al. Table 1b, Fig. 5)", "bn",
              bn_claim(image_runs)),
             ("Shared blocks (Jastrzebski et al. 2017)", "sharing", sharing_claim(image_runs)),
             ("Extra iterations at test time", "iterations", iterations_claim(image_runs)),
             ("Iterative inference and estimation inside each stage (Jastrzebski et al. 2017; "
              "Greff et al. Fig. 3)", "inference",
              report_inference.inference_claim(list(image_runs) + list(lm_runs)))]
    return [(title, key, CAPTIONS[key], text) for title, key, text in found if text]
