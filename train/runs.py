"""What the training entry points share: the device choice, the run folder (command.txt,
metrics.jsonl, last.npz), resuming, the epoch loop and the stop on a diverged loss."""
import json
import shlex
import sys

import tinyhw
from tinyhw.backend import normalize_device


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


def require_at_least_one(parser, args, names):
    """parser.error for the first of the flags `names` (attribute names) set below 1; a flag
    left at None (e.g. --max-steps without a limit) is fine."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def choose_device(name):
    """'auto' | 'cpu' | 'gpu' -> 'cpu' or 'gpu'; a clear exit when the GPU asked for is missing."""
    device = normalize_device(name)
    if device == "gpu" and not tinyhw.gpu_available():
        raise SystemExit("error: --device gpu: no usable GPU (cupy-cuda12x not installed, or no "
                         "CUDA device); use --device cpu or auto")
    return device


def open_run_folder(out, module, argv):
    """Create the run folder and append the exact command line to its command.txt."""
    out.mkdir(parents=True, exist_ok=True)
    command = ["python", "-m", module] + list(sys.argv[1:] if argv is None else argv)
    with open(out / "command.txt", "a") as f:
        f.write(shlex.join(command) + "\n")


def append_metrics(out, record):
    """One JSON record per line of out/metrics.jsonl."""
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def resume(trainer, out, position):
    """Load out/last.npz into `trainer`; `position(trainer)` says where it continues."""
    path = out / "last.npz"
    if not path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {path}")
    trainer.load(path)
    print(f"resumed from {path}: {position(trainer)}")


def train_epochs(trainer, args):
    """trainer.run_epoch() until args.epochs are done or it reports --max-steps reached (it
    returns False); a Diverged loss ends the program with its message."""
    try:
        while trainer.epoch < args.epochs:
            if not trainer.run_epoch():
                trainer.save(args.out / "last.npz")
                print(f"stopped after --max-steps {args.max_steps} (checkpoint saved)")
                break
    except Diverged as e:
        raise SystemExit(f"diverged: {e}") from None
