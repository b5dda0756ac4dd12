"""Collect training runs into a Markdown table beside the paper's numbers, and plot their curves.

    python -m train.report runs/lm_small_c_only runs/image_resnet20 runs/image_highway20
    python -m train.report results/* --out runs/results_report

Each RUN_DIR is a folder written by `python -m train.lm` or `python -m train.image` (by default
runs/lm_<config>_<variant> and runs/image_<arch>); an argument that is not a run folder (no
metrics.jsonl, e.g. results/bench) is skipped with a one-line note on stderr, so a glob works.
command.txt holds the command lines that trained it (the last one is the latest; its flags are
read with the entry point's own parser, so defaults are the entry point's) and metrics.jsonl one
record per epoch plus a record {"final": true, ...} each time a command finished. A run whose
last epoch has no final record after it is marked "(running/stopped)" and reported as far as
it got. A run stopped by --max-steps says so in its epochs column; when it stopped before its
first epoch ended there is no best.npz, and its test perplexity is marked as that of the last
model.

Language-model runs are set beside Greff et al.'s Table 1a (PTB test perplexity), image runs
beside Table 1b (ILSVRC-2012 top-5 error of 50-layer nets) or, for the CIFAR nets, which the
paper does not train, beside He et al. (2016)'s CIFAR-10 test error. The Markdown goes to
stdout and to OUT/report.md (default runs/report; an existing report.md is replaced only with
--overwrite, so a committed report such as results/report is not overwritten by accident); with
matplotlib installed, OUT also gets the curves as PNG files (val perplexity per epoch; val top-1
error and train loss per epoch). Image runs that bear on the seed papers' claims about the CIFAR
nets (batch norm at equal training loss, shared blocks, extra iterations at test time) get a
section each, with a verdict per row (train/report_claims.py).
"""
import argparse
import contextlib
import importlib
import io
import json
import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from train import report_claims
from train.report_inference import ReportError
from train.markdown import DASH, markdown_table

ENTRY_POINTS = {"train.lm": "lm", "train.image": "image"}
STOPPED = "(running/stopped)"

# Greff et al. (2017), Table 1a: Kim et al.'s large char-aware LM, PTB test perplexity, 25 epochs.
TABLE_1A = {"plain": 92.60, "residual": 91.32, "t_only": 82.94, "c_only": 79.15,
            "coupled": 79.13, "full": 79.09}
# Kim et al. (2015), Table 7 (PTB test perplexity with and without highway layers): the small
# model's row for the same layers as each of our small variants. Our small coupled, t_only,
# c_only and full have one highway layer (Kim: 92.3), residual two layers (Kim's two highway
# layers: 90.1, the nearest), plain one MLP layer (Kim: 111.2); without highway layers: 100.3.
KIM_SMALL = {"one highway layer": 92.3, "two highway layers": 90.1, "one MLP layer": 111.2,
             "no highway layers": 100.3}
KIM_SMALL_TEST_PPL = KIM_SMALL["one highway layer"]   # LSTM-Char-Small as published (Table 3)
KIM_LARGE_TEST_PPL = 78.9                             # LSTM-Char-Large, two highway layers
# Greff et al. (2017), Table 1b: ILSVRC-2012 50-layer nets, top-5 val error %, {bn: error}.
TABLE_1B = {"resnet50": ("ResNet", {False: 9.40, True: 7.17}),
            "highway50": ("Highway", {False: 10.03, True: 7.53}),
            "highway_full50": ("Highway-Full", {False: 10.21, True: 7.29})}
# He et al. (2016), Table 6: CIFAR-10 test (top-1) error %, with BN, 164 epochs (64k iterations).
HE_CIFAR10 = {"resnet20": ("ResNet-20", 8.75), "resnet32": ("ResNet-32", 7.51),
              "resnet56": ("ResNet-56", 6.97), "resnet110": ("ResNet-110", 6.43)}
# Keys every epoch record has; an image run's val keys only on scored epochs (--val-every).
REQUIRED = {"lm": ("val_ppl",), "image": ("train_loss",)}
IMAGE_VAL_KEYS = ("val_loss", "val_top1_err", "val_top5_err")


@dataclass
class Run:
    """One run folder: the latest command's flags and the metrics as trained last."""
    path: Path
    kind: str                                   # "lm" or "image"
    args: argparse.Namespace | None             # None without a readable command.txt
    epochs: list = field(default_factory=list)  # per-epoch records, one per epoch number
    final: dict | None = None                   # the latest final record still valid
    final_epoch: int = 0                        # epochs done when `final` was written
    name: str = ""                              # as the tables name it (the folder's name)

    def __post_init__(self):
        self.name = self.name or self.path.name

    @property
    def finished(self):
        return self.final is not None and self.final_epoch == self.epochs_done

    @property
    def epochs_done(self):
        return self.epochs[-1]["epoch"] if self.epochs else 0

    def last(self, key):
        """`key` of the last epoch record, or None."""
        return self.epochs[-1].get(key) if self.epochs else None

    def final_model(self, key):
        """`key` of the final model: the final record's when the run finished, else the last
        epoch record that has it (--val-every scores only some epochs), or None."""
        if self.finished:
            return self.final.get(key)
        scored = [r for r in self.epochs if key in r]
        return scored[-1][key] if scored else None

    def curve(self, key, scale=1.0):
        """(epochs, values) over the epoch records that have `key`."""
        records = [r for r in self.epochs if key in r]
        return [r["epoch"] for r in records], [scale * r[key] for r in records]


# ---- reading run folders --------------------------------------------------------------------
def read_metrics(path):
    """(line number, record) for every non-blank line of a metrics.jsonl file.

    A last line without its newline that does not parse is a record still being written by a
    running job: it is skipped with a warning. Any other bad line is an error naming it."""
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not text.endswith("\n"):
                print(f"warning: {path}:{number}: skipping a partly written last line",
                      file=sys.stderr)
                continue
            raise ReportError(f"{path}:{number}: not valid JSON ({e.msg}): "
                              f"{line.strip()[:80]!r}") from None
        if not isinstance(record, dict):
            raise ReportError(f"{path}:{number}: expected a JSON object, got {line.strip()[:80]!r}")
        records.append((number, record))
    return records


def read_command(run_dir):
    """(kind, parsed args) of the last command line in run_dir/command.txt, or (None, None)."""
    path = run_dir / "command.txt"
    lines = [line for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []
    if not lines:
        return None, None
    tokens = shlex.split(lines[-1])
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] in ENTRY_POINTS:
            module, argv = tokens[i + 1], tokens[i + 2:]
            break
    else:
        raise ReportError(f"{path}: the last line is not a `python -m train.lm` or "
                          f"`python -m train.image` command: {lines[-1]!r}")
    parse_args = importlib.import_module(module).parse_args
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parse_args(argv)
    except SystemExit:
        reason = (errors.getvalue().strip().splitlines() or ["unknown error"])[-1]
        raise ReportError(f"{path}: cannot parse the last command ({reason})") from None
    return ENTRY_POINTS[module], args


def guess_kind(records, path):
    for _, record in records:
        if "val_ppl" in record or "test_ppl" in record:
            return "lm"
        if "val_top1_err" in record or "train_top1_err" in record:
            return "image"
    raise ReportError(f"{path}: no command.txt and no record that tells an LM run from an "
                      "image run")


def not_a_run(path):
    """Why `path` (which exists) is not a run folder to report, or None when it is one."""
    path = Path(path)
    if not path.is_dir():
        return "not a folder"
    if not (path / "metrics.jsonl").is_file():
        return ("no metrics.jsonl (not a train.lm / train.image run folder, or its first epoch "
                "has not ended yet)")
    return None


def load_run(run_dir):
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not run_dir.exists():
        raise ReportError(f"{run_dir}: no such run folder")
    reason = not_a_run(run_dir)
    if reason:
        raise ReportError(f"{run_dir}: {reason}")
    records = read_metrics(metrics)
    kind, args = read_command(run_dir)
    run = Run(run_dir, kind or guess_kind(records, metrics), args)
    add_records(run, records, metrics)
    return run


def add_records(run, records, path):
    """Keep the history as trained last: an epoch logged again (a resumed or restarted run)
    replaces that epoch and everything after it, including a final record written later."""
    for number, record in records:
        if record.get("final") is True:
            run.final, run.final_epoch = record, run.epochs_done
            continue
        if not isinstance(record.get("epoch"), int):
            raise ReportError(f"{path}:{number}: neither an epoch record nor a final record")
        missing = [key for key in REQUIRED[run.kind] if key not in record]
        if run.kind == "image" and any(key in record for key in IMAGE_VAL_KEYS):
            missing += [key for key in IMAGE_VAL_KEYS if key not in record]
        if missing:
            raise ReportError(f"{path}:{number}: epoch record lacks {', '.join(missing)}")
        while run.epochs and run.epochs[-1]["epoch"] >= record["epoch"]:
            run.epochs.pop()
        if run.final is not None and run.final_epoch >= record["epoch"]:
            run.final = None
        run.epochs.append(record)


# ---- table cells ----------------------------------------------------------------------------
def number(value, fmt="{:.2f}", scale=1.0):
    if value is None or not math.isfinite(value):
        return DASH
    return fmt.format(scale * value)


def shown_path(path):
    """The run's path relative to the working directory when it lies below it."""
    try:
        return Path(path).resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def run_link(run, out):
    target = Path(os.path.relpath(run.path.resolve(), out.resolve())).as_posix()
    return f"[`{shown_path(run.path)}`]({target})"


def epochs_cell(run):
    a = run.args
    planned = f" of {a.epochs}" if a is not None else ""
    if not run.finished:
        return f"{run.epochs_done}{planned} {STOPPED}"
    if a is not None and getattr(a, "max_steps", None) and run.epochs_done < a.epochs:
        return f"{run.epochs_done}{planned} (--max-steps {a.max_steps})"
    return f"{run.epochs_done}{planned}"


def scored_last_model(run):
    """Whether the final test perplexity is the last model's, not the best-validation one's:
    train.lm records "model": "last" when no epoch had ended (so no best.npz); older records
    lack the key, and then no epoch before the final record says the same."""
    model = run.final.get("model")
    return model == "last" if model is not None else run.final_epoch == 0


def best(run, key, final_key):
    values = [r[key] for r in run.epochs if key in r]
    if values:
        return min(values)
    return run.final.get(final_key) if run.final else None


def lm_reference(args):
    if args is None:
        return DASH
    if args.config == "large":
        return f"{TABLE_1A[args.variant]:.2f}"
    if args.config == "small":
        return f"{DASH} (Kim et al. small, {kim_small_row(args.variant)}: " \
               f"{KIM_SMALL[kim_small_row(args.variant)]})"
    return DASH


def kim_small_row(variant):
    """Kim et al.'s small-model row with the same layers as our small `variant`."""
    return {"plain": "one MLP layer", "residual": "two highway layers"}.get(
        variant, "one highway layer")


def image_variants(args):
    """What sets an image run apart from the plain --arch run, besides BN (its own column):
    shared blocks, unshared BN, a --limit subset, a weight decay other than the default.
    Older commands lack the sharing flags."""
    from train.image import DEFAULT_WEIGHT_DECAY
    parts = []
    if getattr(args, "share_blocks", False):
        parts.append("shared blocks")
    if getattr(args, "unshared_bn", False):
        parts.append("unshared BN")
    if getattr(args, "limit", None):
        parts.append(f"--limit {args.limit:,}")
    if getattr(args, "weight_decay", DEFAULT_WEIGHT_DECAY) != DEFAULT_WEIGHT_DECAY:
        parts.append(f"weight decay {args.weight_decay:g}")
    return parts


def image_reference(args):
    if args is None or image_variants(args):   # not the published nets or data
        return DASH
    if args.arch in TABLE_1B:
        name, by_bn = TABLE_1B[args.arch]
        return f"top-5 {by_bn[args.bn]:.2f} (Table 1b {name}, {'BN' if args.bn else 'no BN'})"
    if args.arch in HE_CIFAR10 and args.bn:
        name, error = HE_CIFAR10[args.arch]
        return f"top-1 {error:.2f} (He et al. {name})"
    return DASH


def train_hours(run):
    """Hours of training the epoch records account for: the sum of their `seconds` (each
    epoch's training pass, val passes not counted; an epoch resumed from a mid-epoch
    checkpoint counts from the resume), on the run's own machine (its machine.txt or command
    says which); None when no record has them."""
    seconds = [r["seconds"] for r in run.epochs if isinstance(r.get("seconds"), (int, float))]
    return sum(seconds) / 3600 if seconds else None


def lm_row(run, out):
    a = run.args
    test = DASH
    if run.final is not None:
        test = number(run.final.get("test_ppl"))
        if scored_last_model(run):
            test += " (last model: no epoch ended, no best.npz)"
        if not run.finished:
            test += f" (after epoch {run.final_epoch})"
    return [run_link(run, out), a.config if a else "?", a.variant if a else "?", epochs_cell(run),
            number(best(run, "val_ppl", "best_val_ppl")), test,
            number(run.last("words_per_s"), "{:,.0f}"), number(train_hours(run)),
            lm_reference(a)]


def image_row(run, out):
    a = run.args
    net = ", ".join([a.arch] + image_variants(a)) if a else "?"
    return [run_link(run, out), net, ("yes" if a.bn else "no") if a else "?",
            epochs_cell(run), number(run.final_model("val_top1_err"), scale=100),
            number(run.final_model("val_top5_err"), scale=100),
            number(best(run, "val_top1_err", "best_val_top1_err"), scale=100),
            number(run.last("images_per_s"), "{:,.0f}"), number(train_hours(run)),
            image_reference(a)]


# ---- captions -------------------------------------------------------------------------------
TRAIN_HOURS_NOTE = ("train hours: the epochs' training passes summed (val passes not counted), on "
                    "the run's own machine (GPU or CPU, as its command and machine.txt say).")


def lm_caption():
    table = ", ".join(f"{v} {ppl:.2f}" for v, ppl in TABLE_1A.items())
    return ("Ours: Penn Treebank perplexity after the epochs shown (done of the latest command's "
            "planned epochs); best val ppl over those epochs; test ppl of the best-validation "
            "model, measured when a command finished; words/s of the last epoch; "
            f"{TRAIN_HOURS_NOTE} Paper: Greff et al. (2017) Table 1a, "
            "Kim et al.'s large model with each highway variant, PTB test perplexity after "
            f"**25 epochs** ({table}). Table 1a has only the large model; small runs show Kim "
            f"et al. (2015)'s small model with the same layers for reference (Table 7: one "
            f"highway layer {KIM_SMALL_TEST_PPL}, two {KIM_SMALL['two highway layers']}, one "
            f"MLP layer {KIM_SMALL['one MLP layer']}; large: {KIM_LARGE_TEST_PPL}).")


# ---- Table 1a as it stands ------------------------------------------------------------------
def seed_of(run):
    return getattr(run.args, "seed", None) if run.args is not None else None


PROTOCOL_EPOCHS = 25   # Kim et al.'s and Greff et al.'s epochs: a Table 1a result has them all


def complete(run):
    """Whether `run` went through the whole protocol: finished all of at least 25 epochs and
    scored its best-validation model on test."""
    return (run.finished and not scored_last_model(run) and run.args is not None
            and run.epochs_done == run.args.epochs >= PROTOCOL_EPOCHS)


def protocol_tests(lm_runs, config):
    """{variant: [test ppl of each run of `config` through the whole protocol]}, in
    Table 1a's order; a variant without such a run has an empty list."""
    return {v: [r.final["test_ppl"] for r in lm_runs
                if r.args is not None and r.args.config == config and r.args.variant == v
                and complete(r)] for v in TABLE_1A}


def mean_tests(tests):
    """{variant: mean test ppl} of the variants of protocol_tests' result that have one."""
    return {v: sum(t) / len(t) for v, t in tests.items() if t}


def table_1a(lm_runs, config):
    """One row per highway variant of `config`: our test perplexity per seed (runs through
    the whole protocol only), their mean and spread, every other run of the variant with its
    epoch and val perplexity, and both rank orders; None when no run has that config."""
    runs = [r for r in lm_runs if r.args is not None and r.args.config == config]
    if not runs:
        return None
    by_variant = {v: [r for r in runs if r.args.variant == v] for v in TABLE_1A}
    finished = protocol_tests(runs, config)
    means = mean_tests(finished)
    ours_rank = {v: i + 1 for i, v in enumerate(sorted(means, key=means.get))}
    paper_rank = {v: i + 1 for i, v in enumerate(sorted(TABLE_1A, key=TABLE_1A.get))}
    rows = []
    for v, rs in by_variant.items():
        tests = ", ".join(f"{t:.2f}" for t in finished[v]) or DASH
        spread = (f"{means[v]:.2f} ± {(max(finished[v]) - min(finished[v])) / 2:.2f}"
                  if len(finished[v]) > 1 else (f"{means[v]:.2f}" if v in means else DASH))
        going = [f"seed {seed_of(r)}: epoch {r.epochs_done} of {r.args.epochs}"
                 f"{'' if r.args.epochs >= PROTOCOL_EPOCHS else ' (a shorter run)'}, val "
                 f"{number(r.last('val_ppl'))}" for r in rs if not complete(r)]
        kim = kim_small_row(v) if config == "small" else None
        rows.append([v, tests, spread, str(ours_rank.get(v, DASH)),
                     "; ".join(going) or DASH,
                     f"{TABLE_1A[v]:.2f}", str(paper_rank[v]),
                     f"{KIM_SMALL[kim]} ({kim})" if kim else f"{KIM_LARGE_TEST_PPL}"])
    header = ["variant", f"ours: test ppl per seed ({config})", "mean ± half-range",
              "our rank", "in progress or shorter (not results)", "paper (large, Table 1a)",
              "paper rank",
              f"Kim et al. {config}, same layers"]
    return markdown_table(header, rows)


def table_1a_gaps(lm_runs, config):
    """Each pair of variants adjacent in our rank order (by mean test perplexity): the gap
    between their means, the paper's difference for the same pair, and whether the gap is
    larger than the seed spread, the largest max - min over the variants with two or more
    seeds. None without such a variant or without two variants to compare."""
    tests = {v: t for v, t in protocol_tests(lm_runs, config).items() if t}
    ranges = {v: max(t) - min(t) for v, t in tests.items() if len(t) > 1}
    if not ranges or len(tests) < 2:
        return None
    spread_variant = max(ranges, key=ranges.get)
    spread = ranges[spread_variant]
    means = mean_tests(tests)
    order = sorted(means, key=means.get)
    rows = []
    for better, worse in zip(order, order[1:]):
        gap = means[worse] - means[better]
        rows.append([f"{better} < {worse}", f"{gap:.2f}",
                     f"{TABLE_1A[worse] - TABLE_1A[better]:+.2f}", f"{spread:.2f}",
                     "yes" if gap > spread else "no: within the seed spread"])
    header = ["ours, adjacent in rank", "gap (mean test ppl)", "paper: same pair (large)",
              "seed spread", "gap beyond the seed spread?"]
    seeds = ", ".join(f"{v} {ranges[v]:.2f} over {len(tests[v])} seeds" for v in ranges)
    return (f"Seed spread: max - min of one variant's test perplexities ({seeds}); the "
            f"largest, {spread_variant}'s, is the yardstick. With two seeds this is a rough "
            "guide, not a confidence interval. The paper's column is worse minus better in "
            "Table 1a; a negative value means the paper orders the pair the other way.\n\n"
            + markdown_table(header, rows))


def table_1a_caption(config):
    return (f"Each variant of the **{config}** model trained with Kim et al.'s protocol to the "
            f"end ({PROTOCOL_EPOCHS} epochs, best-validation model scored on test). A run still "
            "going, or one planned for fewer epochs, is listed under *in progress or shorter* "
            "with its epochs done and its last validation perplexity, never as a result. "
            "Ranks: 1 is the lowest test perplexity, among the variants that have a result. "
            "The paper's numbers are for the large model; the claim tested is their order: "
            "full, coupled, c_only < t_only < residual < plain. The figure has every run of "
            "the protocol's length, those still going labelled so: one colour per variant, "
            "seed 0 solid, other seeds dashed; left every epoch (log scale), right from epoch "
            f"{ZOOM_FROM} on.")


def data_name(args):
    if args.data:
        return Path(args.data).name
    return "cifar10" if args.arch not in TABLE_1B else "imagenette-224-mini"


def image_caption(runs):
    table = ", ".join(f"{name} {by_bn[False]:.2f} / {by_bn[True]:.2f}"
                      for name, by_bn in TABLE_1B.values())
    datas = sorted({data_name(r.args) for r in runs if r.args is not None})
    text = ("Ours: error (%) on the val split of the final model after the epochs shown (done of "
            "the latest command's planned epochs); best top-1 over those epochs; training "
            f"images/s of the last epoch; {TRAIN_HOURS_NOTE} "
            "Paper / reference: for the 50-layer nets, Greff et al. "
            "(2017) Table 1b, **top-5** val error on ILSVRC-2012 (1000 classes) after their full "
            f"training (no BN / BN: {table}); compare with our top-5 column. The paper trains no "
            "CIFAR nets: for them the reference is He et al. (2016)'s CIFAR-10 **top-1** test "
            "error with BN after **164 epochs** (64k iterations); compare with our top-1 "
            "column. Our CIFAR-10 is a JPEG copy (quality 75) of the dataset, so its numbers "
            "are close to, not equal to, those on the original.")
    if datas:
        text += " Data folders: " + ", ".join(f"`{d}`" for d in datas) + "."
    if any(r.args is not None and r.args.arch in TABLE_1B for r in runs):
        text += (" A 50-layer run on a folder other than ILSVRC-2012 (e.g. the 10-class "
                 "Imagenette) is a smoke test, not comparable with Table 1b.")
    return text


# ---- curves ---------------------------------------------------------------------------------
def load_figure_class():
    """matplotlib's Figure (no pyplot, no global backend state), or None when not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def run_label(run):
    a = run.args
    if a is None:
        return shown_path(run.path)
    if run.kind == "lm":
        return f"{a.config} {a.variant}"
    return ", ".join([a.arch, "BN" if a.bn else "no BN"] + image_variants(a))


def unique_labels(runs):
    labels = [run_label(run) for run in runs]
    return [f"{label} ({shown_path(run.path)})" if labels.count(label) > 1 else label
            for label, run in zip(labels, runs)]


def plot(Figure, path, title, ylabel, lines):
    """One PNG: lines are (label, epochs, values, dashed) tuples, one per run."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for label, xs, ys, dashed in lines:
        ax.plot(xs, ys, marker="o", markersize=3, linestyle="--" if dashed else "-", label=label)
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return path


ZOOM_FROM = 10   # the Table 1a figure's right panel starts at this epoch, where the gaps show


def table_1a_lines(lm_runs, config):
    """The curves of the Table 1a figure of `config`: every run of the protocol's length
    (finished or still going; shorter runs are left out), in the paper's order of the
    variants, as (label, epochs, val ppl, colour, dashed): one colour per variant, seed 0
    solid and other seeds dashed, a run still going labelled with its epoch."""
    order = sorted(TABLE_1A, key=TABLE_1A.get)
    runs = [r for r in lm_runs if r.epochs and r.args is not None and r.args.config == config
            and r.args.epochs >= PROTOCOL_EPOCHS]
    lines = []
    for r in sorted(runs, key=lambda r: (order.index(r.args.variant), seed_of(r) or 0)):
        going = "" if complete(r) else f" (epoch {r.epochs_done} of {r.args.epochs}, in progress)"
        lines.append((f"{r.args.variant}, seed {seed_of(r)}{going}", *r.curve("val_ppl"),
                      f"C{order.index(r.args.variant)}", bool(seed_of(r))))
    return lines


def plot_table_1a(Figure, path, config, lines):
    """Two panels of the lines of table_1a_lines: every epoch on a log scale, and the epochs
    from ZOOM_FROM on at a linear scale, where the variants' final gaps are visible."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    whole, zoom = fig.subplots(1, 2)
    late = [y for _, xs, ys, _, _ in lines for x, y in zip(xs, ys) if x >= ZOOM_FROM]
    for label, xs, ys, colour, dashed in lines:
        for ax in (whole, zoom):
            ax.plot(xs, ys, color=colour, linestyle="--" if dashed else "-", marker="o",
                    markersize=2.5, label=label if ax is whole else None)
    whole.set_yscale("log")   # ticks as plain numbers (100, 150, 200, 300), not 10^2 ...
    whole.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    whole.yaxis.set_major_formatter(ScalarFormatter())
    whole.yaxis.set_minor_formatter(NullFormatter())
    whole.set(title=f"Table 1a, {config} model: val perplexity per epoch", xlabel="epoch",
              ylabel="val perplexity (log scale)")
    zoom.set(title=f"from epoch {ZOOM_FROM} on", xlabel="epoch", ylabel="val perplexity")
    if late:
        margin = 0.05 * (max(late) - min(late)) + 0.5
        zoom.set_xlim(ZOOM_FROM - 0.5, max(x for _, xs, _, _, _ in lines for x in xs) + 0.5)
        zoom.set_ylim(min(late) - margin, max(late) + margin)
    for ax in (whole, zoom):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    whole.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return path


def draw_curves(Figure, lm_runs, image_runs, out):
    """The PNG files drawn into `out`, as (caption, path) pairs."""
    drawn = []
    lm_runs = [r for r in lm_runs if r.epochs]
    for config in ("small", "large"):
        lines = table_1a_lines(lm_runs, config)
        if lines:
            drawn.append((f"Table 1a, {config}: validation perplexity", plot_table_1a(
                Figure, out / f"lm_table1a_{config}.png", config, lines)))
    if lm_runs:
        lines = [(label, *r.curve("val_ppl"), False)
                 for label, r in zip(unique_labels(lm_runs), lm_runs)]
        drawn.append(("validation perplexity", plot(
            Figure, out / "lm_val_ppl.png", "Char-aware LM on PTB: val perplexity per epoch",
            "val perplexity", lines)))
    image_runs = [r for r in image_runs if r.epochs]
    if image_runs:
        labels = unique_labels(image_runs)
        no_bn = [r.args is not None and not r.args.bn for r in image_runs]
        for key, scale, name, ylabel in (
                ("val_top1_err", 100, "image_val_top1", "val top-1 error %"),
                ("train_loss", 1, "image_train_loss", "train loss")):
            lines = [(label, *r.curve(key, scale), dashed)
                     for label, r, dashed in zip(labels, image_runs, no_bn)]
            drawn.append((ylabel, plot(Figure, out / f"{name}.png",
                                       f"Image nets: {ylabel} per epoch", ylabel, lines)))
        pairs = report_claims.bn_pairs(image_runs)
        if pairs:
            drawn.append(("batch norm pairs: train loss and val error", plot_bn_pairs(
                Figure, out / "bn_curves.png", pairs)))
        lines = report_claims.sharing_norm_lines(image_runs)
        if lines:
            drawn.append(("norm of h block by block", plot_norms(
                Figure, out / "sharing_norms.png", lines)))
    return drawn


def plot_bn_pairs(Figure, path, pairs):
    """Greff et al.'s Fig. 5 for each (BN run, no-BN run) pair: training loss and val top-1
    error per epoch side by side, one colour per pair, BN solid and no BN dashed (a BN run
    in several pairs is drawn once per pair)."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    loss_ax, err_ax = fig.subplots(1, 2)
    for colour, (bn, nobn) in enumerate(pairs):
        for run, dashed in ((bn, False), (nobn, True)):
            label = f"{run.name} ({'BN' if run.args.bn else 'no BN'})"
            for ax, key, scale in ((loss_ax, "train_loss", 1), (err_ax, "val_top1_err", 100)):
                ax.plot(*run.curve(key, scale), color=f"C{colour}",
                        linestyle="--" if dashed else "-", marker="o", markersize=2,
                        label=label if ax is loss_ax else None)
    loss_ax.set(title="training loss (as trained)", xlabel="epoch", ylabel="train loss",
                yscale="log")
    err_ax.set(title="validation error", xlabel="epoch", ylabel="val top-1 error %")
    for ax in (loss_ax, err_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return path


def plot_norms(Figure, path, lines):
    """||h|| (mean over val images) after the stem and every block, one line per run: lines
    are (label, block names, norms), on a log scale (a shared block's iterations may make it
    explode)."""
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    for label, names, norms in lines:
        ax.plot(range(len(norms)), norms, marker="o", markersize=3, label=label)
    longest = max((names for _, names, _ in lines), key=len)
    ax.set_xticks(range(len(longest)), longest, rotation=60, fontsize="small")
    ax.set_yscale("log")
    ax.set(title="Norm of h through the net (intact net, mean over val images)",
           xlabel="after block", ylabel="‖h‖ (log scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return path


# ---- the report -----------------------------------------------------------------------------
LM_HEADER = ["run", "config", "variant", "epochs", "best val ppl", "test ppl", "words/s",
             "train hours", "paper test ppl (Table 1a)"]
IMAGE_HEADER = ["run", "arch", "BN", "epochs", "val top-1 %", "val top-5 %", "best top-1 %",
                "images/s", "train hours", "paper / reference (error %)"]


def section(title, caption, table, figures):
    parts = [f"## {title}", caption, table]
    if figures:
        parts.append(" ".join(f"![{name}]({path.name})" for name, path in figures))
    return "\n\n".join(parts)


def name_runs(runs):
    """Runs whose folders share a name (a rerun of results/x as results/issue12/x) are named
    with their parent folder too, so that no table row is ambiguous."""
    names = [r.path.name for r in runs]
    for r in runs:
        if names.count(r.path.name) > 1:
            r.name = f"{r.path.resolve().parent.name}/{r.path.name}"


def build_report(runs, out, Figure, command):
    """(Markdown text, PNG paths drawn into `out`); no PNGs when Figure (matplotlib) is None."""
    name_runs(runs)
    lm_runs = [r for r in runs if r.kind == "lm"]
    image_runs = [r for r in runs if r.kind == "image"]
    figures = draw_curves(Figure, lm_runs, image_runs, out) if Figure else []
    lm_figures = [f for f in figures if f[1].name == "lm_val_ppl.png"]
    parts = ["# Training runs beside the paper", f"Generated by `{command}`."]
    for config in ("small", "large"):
        table = table_1a(lm_runs, config)
        if table:
            gaps = table_1a_gaps(lm_runs, config)
            table += f"\n\n{gaps}" if gaps else ""
            parts.append(section(f"Table 1a, {config} model: the highway variants side by side",
                                 table_1a_caption(config), table,
                                 [f for f in figures if f[1].name == f"lm_table1a_{config}.png"]))
    if lm_runs:
        parts.append(section("Character-aware language model (Greff et al. Table 1a)",
                             lm_caption(),
                             markdown_table(LM_HEADER, [lm_row(r, out) for r in lm_runs]),
                             lm_figures))
    if image_runs:
        parts.append(section("Image classification (Greff et al. Table 1b)",
                             image_caption(image_runs),
                             markdown_table(IMAGE_HEADER, [image_row(r, out) for r in image_runs]),
                             [f for f in figures if f[1].name.startswith("image_")]))
    for title, key, caption, text in report_claims.sections(image_runs, lm_runs):
        parts.append(section(title, caption, text,
                             [f for f in figures if f[1].name.startswith(f"{key}_")]))
    if Figure is None:
        parts.append("_Plots skipped: matplotlib is not installed "
                     "(`pip install matplotlib`, or the `plot` extra)._")
    return "\n\n".join(parts) + "\n", [path for _, path in figures]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run folders of train.lm or train.image (command.txt, metrics.jsonl)")
    p.add_argument("--out", default="runs/report",
                   help="folder for report.md and the PNG curves (default runs/report)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUT/report.md (and its PNGs); without it, refuse")
    return p.parse_args(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out}: is a file; expected a folder (new or existing)")
    if (out / "report.md").exists() and not args.overwrite:
        raise SystemExit(f"error: {out / 'report.md'} exists; pass --overwrite to replace it, "
                         "or --out another folder")
    try:
        runs = []
        for path in args.runs:
            reason = not_a_run(path) if Path(path).exists() else None
            if reason:     # e.g. results/bench under `results/*`
                print(f"note: skipping {path}: {reason}", file=sys.stderr)
                continue
            runs.append(load_run(path))
    except ReportError as e:
        raise SystemExit(f"error: {e}") from None
    if not runs:
        raise SystemExit(f"error: none of {', '.join(args.runs)} is a run folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"error: --out {out}: cannot create the folder ({e.strerror})") from None
    Figure = load_figure_class()
    command = shlex.join(["python", "-m", "train.report"] + argv)
    try:
        text, pngs = build_report(runs, out, Figure, command)
    except ReportError as e:     # an analysis/*.json that cannot be read
        raise SystemExit(f"error: {e}") from None
    (out / "report.md").write_text(text)
    print(text, end="")
    written = ["report.md"] + [path.name for path in pngs]
    print(f"wrote {', '.join(written)} into {out}"
          + ("" if Figure else " (plots skipped: matplotlib is not installed)"), file=sys.stderr)
    return text


if __name__ == "__main__":
    main()
