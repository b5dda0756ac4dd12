"""Measure unrolled iterative estimation (Greff, Srivastava & Schmidhuber, ICLR 2017) on a
trained tinyhw net: one command per analysis, each writing <name>.json, <name>.csv and (with
matplotlib, the optional extra `plot`) <name>.png.

    python -m train.analyze estimation-error --checkpoint runs/image_resnet20/best.npz
    python -m train.analyze lesion --checkpoint runs/image_resnet20/best.npz \\
        --baseline runs/image_plain20/best.npz --limit 2000
    python -m train.analyze shuffle --checkpoint runs/image_highway20/best.npz --limit 1000
    python -m train.analyze gates --checkpoint runs/lm_small_c_only/best.npz
    python -m train.analyze iterative --checkpoint runs/image_resnet20/last.npz
    python -m train.analyze iterations --checkpoint runs/image_resnet20_shared/best.npz --extra 4

Analyses:
  estimation-error  mean and std over the val set of a_k - A per block (block output minus its
                    stage's output), averaged over units: the paper's Figure 3
  lesion            val error with each block removed in turn (only its shortcut kept), beside
                    the intact net and, with --baseline, a second net (a plain net of the depth)
  shuffle           val error after 0, 1, ... random swaps of shape-keeping blocks within stages,
                    over several random orders
  gates             transform-gate statistics of a highway net (per block, per class), or the
                    gates of a char-LM's highway layers (per frequency bucket of the word)
  iterative         per block, with F(h) = block(h) - shortcut(h): cos_rest_of_net = cos(F(h),
                    -dL/du) with the block removed (Jastrzebski et al.'s first-order term; the
                    headline), cos_through_block = cos(F(h), -dL/dh) through the block, and
                    ||F(h)|| / ||h||
  iterations        val error and ||h|| after 0 .. --extra extra applications of every
                    shape-keeping block at test time, and ||h|| block by block (image nets)

The run folders are those train.image and train.lm create by default (runs/image_<arch>,
runs/lm_<config>_<variant>). --checkpoint takes either file of a run: best.npz (the
best-validation model) or last.npz (the latest training state; the only one of a run stopped by
--max-steps before its first epoch ended). Every analysis takes a char-LM checkpoint (train.lm)
too: its highway stack is the one stage it has, and estimation-error, lesion (valid perplexity),
shuffle (needs 2 layers) and iterative run over its layers (train/analysis/lm_layers.py); gates
groups its gates by word frequency; iterations takes image nets only. A checkpoint of a net with
shared blocks (train.image --share-blocks, --unshared-bn) is rebuilt as it was trained.
Files go to the checkpoint's folder under analysis/ unless --out is given; that folder is checked
to be writable before anything is computed. The last line printed says where the files went,
and whether the figure was skipped because matplotlib is missing.
"""
import argparse
import shlex
import sys

from train.analysis import estimation, gates, iterations, iterative, lesion, shuffle
from train.analysis.common import AnalysisError

ANALYSES = {
    "estimation-error": (estimation, "estimation error a_k - A per block (the paper's Fig. 3)"),
    "lesion": (lesion, "val error with one block removed at a time (Veit et al. 2016)"),
    "shuffle": (shuffle, "val error after random swaps of blocks within stages (Veit et al.)"),
    "gates": (gates, "gate statistics of highway nets and of the char-LM's highway layers"),
    "iterative": (iterative, "cos(F(h), -dL/dh) with and without the block, and ||F(h)||/||h|| "
                             "per block (Jastrzebski et al. 2017)"),
    "iterations": (iterations, "val error and ||h|| after extra applications of each block at "
                               "test time, and ||h|| block by block (Jastrzebski et al. 2017)"),
}

# Without LM_NOTE: gates speaks of the char-LM itself; iterations takes image nets only.
NO_LM_NOTE = ("gates", "iterations")


# Appended to the --help of the analyses whose module docstring speaks of image nets only.
LM_NOTE = """
A char-LM checkpoint (train.lm) works too: its highway layers are analysed as one stage, over the
words of the PTB valid split (--data: the PTB folder; see train/analysis/lm_layers.py).
"""


def _integer(text, least, expected):
    """int(text) when it is >= least; otherwise argparse's one-line error, which names the
    option, with `expected` and the value given (argparse would name this function instead)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < least:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _positive(text):
    return _integer(text, 1, "a positive integer")


def _count(text):
    return _integer(text, 0, "an integer >= 0")


def _common(p):
    p.add_argument("--checkpoint", required=True,
                   help="best.npz or last.npz of a train.image or a train.lm run")
    p.add_argument("--data", default=None,
                   help="image folder with val/ (default $TINYHW_DATA/cifar10 for CIFAR nets, "
                        "imagenette-224-mini for 50-layer nets), or the PTB folder for a char-LM "
                        "(default $TINYHW_DATA/ptb, then data/ptb)")
    p.add_argument("--limit", type=_positive, default=None,
                   help="use N val images, evenly spaced over the split (image folders are "
                        "sorted by class), or the first N words of the PTB valid stream "
                        "(default: all)")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help="images per batch (default 100); for a char-LM, words per batch of "
                        "gates (default 1000); the other char-LM analyses use batches of 1000 "
                        "words (estimation-error) or train.lm's 20 streams of 35 steps")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where to compute (default auto: the GPU when one is usable)")
    p.add_argument("--out", default=None,
                   help="folder for the files, created if missing (default: analysis/ beside "
                        "the checkpoint)")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m train.analyze", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    for name, (module, summary) in ANALYSES.items():
        description = module.__doc__ + (LM_NOTE if name not in NO_LM_NOTE else "")
        p = sub.add_parser(name, help=summary, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(p)
        if name == "lesion":
            p.add_argument("--baseline", default=None,
                           help="a second image-net checkpoint lesioned the same way and shown "
                                "beside it, e.g. runs/image_plain20/best.npz")
        if name == "shuffle":
            p.add_argument("--orders", type=_positive, default=5,
                           help="random orders (trajectories of swaps) to average over "
                                "(default 5)")
            p.add_argument("--max-swaps", type=_count, default=None,
                           help="swaps per order (default: the number of movable blocks)")
            p.add_argument("--seed", type=_count, default=0,
                           help="seed of the random swaps (default 0)")
        if name == "iterations":
            p.add_argument("--extra", type=_count, default=4,
                           help="extra applications of each block: 0 .. K (default 4)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    # Recorded in every JSON result, so the numbers can be reproduced from the file alone.
    args.command = shlex.join(["python", "-m", "train.analyze",
                               *(sys.argv[1:] if argv is None else argv)])
    module = ANALYSES[args.analysis][0]
    try:
        return module.run(args)
    except AnalysisError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
