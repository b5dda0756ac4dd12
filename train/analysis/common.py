"""What every analysis shares: reading a checkpoint into a net, the validation data, running a
conv net block by block (with blocks lesioned or reordered), scoring it, and writing the results.

Checkpoints are recognised by their metadata, whatever the file is called:
    image net  meta has "arch" and "bn"         (train.image's best.npz and last.npz; with
               "share_blocks" and "unshared_bn" since shared nets exist, else unshared)
    char-LM    meta has "config" and "variant"  (train.lm's best.npz and last.npz)
A training checkpoint (last.npz) stores the model's arrays under "model."; a best.npz stores them
bare. Both are read with `tinyhw.serialize.load` (no pickle).
"""
import csv
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import tinyhw
import tinyhw.functional as F
from data.images import (DEFAULT_DATA_SETS, BatchLoader, find_image_root, image_dataset,
                         spaced_indices)
from nets import build_image_net, lesioned as lesioning, preset_of
from tinyhw import serialize
from tinyhw.backend import to_device
from train.runs import choose_device, json_safe


class AnalysisError(ValueError):
    """A request the analysis cannot serve; the message names the argument and what was expected."""


# ---- checkpoints ---------------------------------------------------------------------------
def read_checkpoint(path):
    """(family, model state, meta) of a checkpoint file; family is "image" or "lm"."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"--checkpoint: no file at {path}")
    try:
        arrays, meta = serialize.load(path)
    except ValueError as e:
        raise AnalysisError(f"--checkpoint: {e}") from None
    meta = meta or {}
    if any(k.startswith("model.") for k in arrays):     # a training checkpoint (last.npz)
        arrays = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    if "arch" in meta and "bn" in meta:
        return "image", arrays, meta
    if "config" in meta and "variant" in meta:
        return "lm", arrays, meta
    raise AnalysisError(
        f"--checkpoint {path}: neither an image-net checkpoint (metadata with 'arch' and 'bn', "
        f"written by train.image) nor a char-LM one ('config' and 'variant', written by "
        f"train.lm); its metadata keys are {sorted(meta) or 'none'}")


def sharing(meta):
    """{"share_blocks", "unshared_bn"} of an image-net checkpoint (False when not recorded)."""
    return {key: bool(meta.get(key, False)) for key in ("share_blocks", "unshared_bn")}


def net_label(info):
    """'resnet20', 'resnet20 (no BN, shared blocks, unshared BN)', ... for titles."""
    notes = [text for flag, text in ((not info.get("bn", True), "no BN"),
                                     (info.get("share_blocks"), "shared blocks"),
                                     (info.get("unshared_bn"), "unshared BN")) if flag]
    return info["arch"] + (f" ({', '.join(notes)})" if notes else "")


def build_image_model(state, meta, path):
    """The image net of a checkpoint (shared blocks as recorded), its weights loaded; classes
    follow from fc.weight."""
    if "fc.weight" not in state:
        raise AnalysisError(f"--checkpoint {path}: no 'fc.weight' array, so not an image net of "
                            f"arch {meta['arch']!r}")
    model = build_image_net(meta["arch"], int(state["fc.weight"].shape[0]), bool(meta["bn"]),
                            **sharing(meta))
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise AnalysisError(f"--checkpoint {path}: its arrays do not fit arch "
                            f"{meta['arch']!r} (bn={meta['bn']}, {sharing(meta)}): {e}") from None
    return model


def build_lm_model(state, meta, path, corpus):
    """The char-LM of a checkpoint, built for `corpus`'s vocabulary, its weights loaded."""
    from nets.char_lm import build
    v = corpus.vocab
    if "decoder.weight" not in state or "cnn.embed.weight" not in state:
        raise AnalysisError(f"--checkpoint {path}: no 'decoder.weight' / 'cnn.embed.weight' "
                            "arrays, so not a char-LM")
    words, chars = state["decoder.weight"].shape[0], state["cnn.embed.weight"].shape[0]
    if (words, chars) != (len(v.words), len(v.chars)):
        raise AnalysisError(f"--data: the corpus has {len(v.words)} words and {len(v.chars)} "
                            f"characters, the checkpoint {path} was trained on {words} and {chars}")
    model = build(meta["config"], meta["variant"], len(v.words), len(v.chars), v.max_word_len)
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise AnalysisError(f"--checkpoint {path}: its arrays do not fit a {meta['config']} "
                            f"{meta['variant']} char-LM: {e}") from None
    return model


def check_out_dir(out_dir, what="--out"):
    """Create out_dir if missing and make sure a file can be written there, so that a bad --out
    fails now and not after minutes of computing. Writability is tried for real (a temporary
    file created and removed): permission bits say nothing when running as root, or on a
    read-only mount."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise AnalysisError(f"{what} {out_dir}: is a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise AnalysisError(f"{what} {out_dir}: cannot write there "
                            f"({e.strerror or type(e).__name__})") from None


# ---- data ----------------------------------------------------------------------------------
class Subset:
    """`limit` images of a dataset, evenly spaced over it (data.images.spaced_indices, which
    train.image's --limit uses too): image folders are sorted by class, so the first N images
    would cover only the first classes."""

    def __init__(self, dataset, limit=None):
        self.dataset = dataset
        self.classes, self.num_classes = dataset.classes, dataset.num_classes
        self.index = spaced_indices(len(dataset), limit)
        self.labels = dataset.labels[self.index]

    def __len__(self):
        return len(self.index)

    def batch(self, indices, rng):
        return self.dataset.batch(self.index[indices], rng)


@dataclass
class Setup:
    """Everything an analysis needs, read from the command line."""
    name: str
    family: str                    # "image" or "lm"
    model: object                  # in eval mode, on `device`
    device: str
    checkpoint: Path
    meta: dict
    out_dir: Path
    data_root: Path
    loader: object = None          # image nets: BatchLoader over the (limited) val split
    corpus: object = None          # char-LM: data.ptb.Corpus
    info: dict = field(default_factory=dict)   # what the JSON records about the run

    def batches(self):
        """(x Tensor on the device, y numpy int64) for every val batch, in a fixed order."""
        for x, y in self.loader.epoch(0):
            yield tinyhw.Tensor(to_device(x, self.device)), y


def setup(args, name, families=("image",)):
    """Load --checkpoint and --data for analysis `name`, which supports the net `families`."""
    family, state, meta = read_checkpoint(args.checkpoint)
    if family not in families:
        what = {"image": "an image net (train.image)", "lm": "a char-LM (train.lm)"}
        raise AnalysisError(f"{name.replace('_', '-')} needs {' or '.join(what[f] for f in families)}; "
                            f"--checkpoint {args.checkpoint} holds {what[family]}")
    device = choose_device(args.device)   # exits with the entry points' message
    checkpoint = Path(args.checkpoint)
    out_dir = Path(args.out) if args.out else checkpoint.parent / "analysis"
    check_out_dir(out_dir, "--out" if args.out else "the default output folder")
    common = dict(name=name, family=family, device=device, checkpoint=checkpoint, meta=meta,
                  out_dir=out_dir)
    if family == "image":
        return _image_setup(args, state, meta, common)
    return _lm_setup(args, state, meta, common)


def _image_setup(args, state, meta, common):
    try:
        preset = preset_of(meta["arch"])
    except ValueError as e:   # an arch this version of nets does not know
        raise AnalysisError(f"--checkpoint {args.checkpoint}: {e}") from None
    try:
        root = Path(args.data) if args.data else find_image_root(DEFAULT_DATA_SETS[preset])
        dataset = image_dataset(root, "val", preset=preset, train=False)
    except (FileNotFoundError, ValueError) as e:
        raise AnalysisError(f"--data: {e}") from None
    model = build_image_model(state, meta, args.checkpoint)
    if model.fc.weight.shape[0] != dataset.num_classes:
        raise AnalysisError(f"--data {root}: its val split has {dataset.num_classes} classes, the "
                            f"checkpoint's net {model.fc.weight.shape[0]}")
    subset = Subset(dataset, args.limit)
    loader = BatchLoader(subset, args.batch_size or 100, shuffle=False, drop_last=False,
                         workers=1)
    model.to(common["device"]).eval()
    info = {"command": getattr(args, "command", None),
            "checkpoint": str(common["checkpoint"]), "arch": meta["arch"], "bn": meta["bn"],
            **sharing(meta), "data": str(root), "split": "val", "images": len(subset),
            "images_in_split": len(dataset), "device": common["device"]}
    return Setup(model=model, data_root=root, loader=loader, info=info, **common)


def _lm_setup(args, state, meta, common):
    from data.ptb import Corpus, find_ptb_dir
    try:
        root = find_ptb_dir(args.data)
        corpus = Corpus(root)
    except (FileNotFoundError, ValueError) as e:
        raise AnalysisError(f"--data: {e}") from None
    model = build_lm_model(state, meta, args.checkpoint, corpus).to(common["device"]).eval()
    info = {"command": getattr(args, "command", None),
            "checkpoint": str(common["checkpoint"]), "config": meta["config"],
            "variant": meta["variant"], "data": str(root), "split": "valid",
            "device": common["device"]}
    return Setup(model=model, data_root=root, corpus=corpus, info=info, **common)


# ---- running a conv net block by block ------------------------------------------------------
def has_shortcut(block):
    """Residual and highway blocks add their shortcut; a plain block keeps one only to be
    lesioned (the identity, or option-A pad where it changes the shape)."""
    return block.kind != "plain"


def shape_keeping(stage):
    """Indices of the blocks of a stage that keep its shape: all but a shape-changing first."""
    return [k for k, block in enumerate(stage) if not block.changes_shape]


def forward(net, x, orders=None, lesioned=()):
    """Logits of `net` on x, running stage s's blocks in the order `orders[s]` (default: as
    built), each (stage, block) pair in `lesioned` lesioned (nets.lesioned: it outputs its
    shortcut alone)."""
    with lesioning(net.stages[s][k] for s, k in lesioned):
        h = net.stem(x)
        for s, stage in enumerate(net.stages):
            for k in (orders[s] if orders is not None else range(len(stage))):
                h = stage[k](h)
    return net.head(h)


def score(setup, **forward_kw):
    """{"loss", "top1_err"} of the net on the val batches: run by `forward(**forward_kw)`, or by
    the net's own forward when no keyword is given (the intact net, as train.image scores it)."""
    loss, wrong, count = 0.0, 0, 0
    setup.model.eval()
    with tinyhw.no_grad():
        for x, y in setup.batches():
            logits = forward(setup.model, x, **forward_kw) if forward_kw else setup.model(x)
            loss += F.cross_entropy(logits, tinyhw.Tensor(to_device(y, setup.device)),
                                    "sum").item()
            predicted = np.asarray(to_device(logits.data, "cpu")).argmax(axis=1)
            wrong, count = wrong + int((predicted != y).sum()), count + len(y)
    return {"loss": loss / count, "top1_err": wrong / count}


def block_names(net):
    """"s<stage>b<block>" (1-based, as the paper counts) for every block, stage by stage."""
    return [[f"s{s + 1}b{k + 1}" for k in range(len(stage))] for s, stage in enumerate(net.stages)]


# ---- results --------------------------------------------------------------------------------
def write_results(out_dir, name, result, rows, plot=None):
    """Write <name>.json, <name>.csv and, when matplotlib imports, <name>.png into out_dir.

    Returns (paths written, plotted) where plotted is False when matplotlib is missing."""
    from . import plots
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.json", out_dir / f"{name}.csv"]
    paths[0].write_text(json.dumps(json_safe(result), indent=1) + "\n")
    with open(paths[1], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(json_safe(rows))
    plotted = False
    if plot is not None:
        plotted = plots.save(plot, result, out_dir / f"{name}.png")
        if plotted:
            paths.append(out_dir / f"{name}.png")
    return paths, plotted


def report(setup, result, rows, lines, plot=None):
    """Write the files of `setup`'s analysis, print `lines` and, last, where the files went."""
    paths, plotted = write_results(setup.out_dir, setup.name, result, rows, plot)
    for line in lines:
        print(line)
    names = ", ".join(p.name for p in paths)
    tail = "" if plotted or plot is None else (
        "; plots skipped: matplotlib is not installed (pip install -e '.[plot]')")
    print(f"wrote {names} to {setup.out_dir}{tail}", flush=True)
    return paths, plotted


class Timer:
    """Seconds since creation, for the `seconds` every result records."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self):
        return round(time.perf_counter() - self.start, 3)
