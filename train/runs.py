"""What the training entry points share: the device choice, the run folder (command.txt,
metrics.jsonl, last.npz), resuming, checkpoints by steps and by time, the stop on SIGINT or
SIGTERM, the epoch loop and the stop on a diverged loss.

A run is never silently destroyed: a folder that already holds a run is only reused with
--resume (continue it) or --overwrite (delete its run files first). Ctrl-C or a SIGTERM
lets the current step finish, writes last.npz and exits with the command that resumes.
"""
import json
import math
import os
import shlex
import signal
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

import tinyhw
from tinyhw import serialize
from tinyhw.backend import get_array_module, normalize_device
from train import threads

RUN_FILES = ("command.txt", "metrics.jsonl", "last.npz", "best.npz")


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; raised at the next safe point (between steps or batches)."""


def fail(message):
    """End the program with a one-line error (argparse style, exit status 2)."""
    raise SystemExit(f"error: {message}")


# ---- arguments ------------------------------------------------------------------------
def require_at_least_one(parser, args, names):
    """parser.error for the first of the flags `names` (attribute names) set below 1; a flag
    left at None (e.g. --max-steps without a limit) is fine."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def require_at_least_zero(parser, args, names):
    """parser.error for the first of the integer flags `names` set below 0 (e.g. --seed)."""
    for name in names:
        value = getattr(args, name)
        if value < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more, got {value}")


def require_finite_at_least_zero(parser, args, names):
    """parser.error for the first float flag that is not >= 0 and finite (NaN included)."""
    for name in names:
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            parser.error(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")


def require_positive_finite(parser, args, names):
    """parser.error for the first float flag that is not > 0 and finite (NaN included)."""
    for name in names:
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            parser.error(f"--{name.replace('_', '-')} must be a positive finite number, "
                         f"got {value}")


def add_run_arguments(parser, checkpoint_every):
    """The flags every training entry point has for its run folder and checkpoints."""
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an --out that already holds a run, deleting its "
                             f"{', '.join(RUN_FILES)}")
    parser.add_argument("--checkpoint-every", type=int, default=checkpoint_every,
                        help=f"also checkpoint every N training steps (default {checkpoint_every};"
                             " 0: not by steps)")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0,
                        help="also checkpoint when this many minutes passed since the last one "
                             "(default 10; 0: not by time)")
    threads.add_argument(parser)


def check_run_arguments(parser, args):
    if args.checkpoint_every < 0:
        parser.error(f"--checkpoint-every must be 0 (off) or a number of steps, got "
                     f"{args.checkpoint_every}")
    if not (math.isfinite(args.checkpoint_minutes) and args.checkpoint_minutes >= 0):
        parser.error(f"--checkpoint-minutes must be 0 (off) or a positive number, got "
                     f"{args.checkpoint_minutes}")
    if args.resume and args.overwrite:
        parser.error("--resume continues the run in --out and --overwrite deletes it: "
                     "give one of them")


def choose_device(name):
    """'auto' | 'cpu' | 'gpu' -> 'cpu' or 'gpu'; a clear exit when the GPU asked for is missing."""
    device = normalize_device(name)
    if device == "gpu" and not tinyhw.gpu_available():
        raise SystemExit("error: --device gpu: no usable GPU (cupy-cuda12x not installed, or no "
                         "CUDA device); use --device cpu or auto")
    return device


def available_memory_bytes():
    """Memory the system can still give this process (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require_memory(estimate, what, available=None):
    """Refuse up front a run whose training step would need more memory than the machine has:
    better one line now than an out-of-memory kill hours later. `what` names the flags."""
    available = available_memory_bytes() if available is None else available
    if available is not None and estimate > available:
        fail(f"one training step needs about {estimate / 2**30:.1f} GiB (activations and "
             f"parameters) with {what}, but only {available / 2**30:.1f} GiB of memory is available: use a "
             "smaller value")


# ---- the run folder -------------------------------------------------------------------
def open_run_folder(out, resume=False, overwrite=False):
    """Make `out` ready for a run, before anything is computed: it must be (or become) a
    writable folder; one that already holds a run needs --resume or --overwrite."""
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file, not a folder")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if resume and not (out / "last.npz").is_file():
        fail(f"--resume: no checkpoint at {out / 'last.npz'}")
    if existing and not (resume or overwrite):
        fail(f"--out {out} already holds a run ({', '.join(existing)}): add --resume to "
             "continue it, --overwrite to start it over, or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        fail(f"--out {out} is not a writable folder ({e.strerror})")
    if overwrite:
        for name in existing:
            (out / name).unlink()


def remember_command(args, module, argv):
    """Keep the command line on `args` (args.module, args.argv) for command.txt and hints."""
    args.module, args.argv = module, list(sys.argv[1:] if argv is None else argv)


def command_line(args, argv):
    """`python -m MODULE ARGV`, after `mpiexec -n N` when args.ranks (set by the entry
    point) says the run has N > 1 ranks."""
    ranks = getattr(args, "ranks", 1)
    launcher = ["mpiexec", "-n", str(ranks)] if ranks > 1 else []
    return shlex.join(launcher + ["python", "-m", args.module] + list(argv))


def record_command(args):
    """Append the exact command line to OUT/command.txt."""
    with open(args.out / "command.txt", "a") as f:
        f.write(command_line(args, args.argv) + "\n")


def json_safe(value):
    """`value` with what JSON cannot hold replaced: NaN and Infinity become null (so every line
    and file stays valid JSON), NumPy scalars and arrays become Python numbers and lists."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def append_metrics(out, record):
    """One JSON record per line of out/metrics.jsonl (non-finite numbers become null)."""
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")


def checkpoint_note(out):
    """Where the last good checkpoint is, for a message about a run that stopped."""
    path = out / "last.npz"
    if path.is_file():
        return f"the last good checkpoint is kept in {path}"
    return "no checkpoint had been written yet"


def require_finite_model(model, comm, step, out, hint):
    """Raise Diverged (on every rank, so that none waits on the others) when a parameter or
    buffer of `model` is NaN or infinite on any rank. The loss can stay finite while one step's
    update overflows the weights (e.g. --lr 1e6): such a model must be neither scored nor
    checkpointed, so that the checkpoint kept is a good one. One pass over the weights; called
    before every checkpoint and every evaluation."""
    bad = next((name for name, value in model.state_dict().items()
                if not get_array_module(value).isfinite(value).all()), None)
    if comm.any(bad is not None):
        raise Diverged(f"the weights became NaN or infinite by step {step}"
                       f"{f' ({bad} first)' if bad else ' on another rank'}; "
                       f"{checkpoint_note(out)}. {hint}")


# ---- resuming ---------------------------------------------------------------------------
def read_checkpoint_meta(path, kind, required):
    """The metadata of a training checkpoint of `kind` ('train.lm' or 'train.image'), with a
    one-line error for a file that is truncated, not an archive, not a tinyhw checkpoint or
    one of the other entry point. `required`: meta keys a checkpoint of this kind has (older
    checkpoints carry no 'kind' entry and are recognised by them)."""
    try:
        meta = serialize.read_meta(path)
    except (ValueError, OSError) as e:
        fail(f"--resume: {path} cannot be read ({e}); it is damaged: start again with "
             "--overwrite, or copy back a good last.npz")
    if meta is None or not isinstance(meta, dict):
        fail(f"--resume: {path} is not a tinyhw training checkpoint (no metadata)")
    found = meta.get("kind") or ("train.lm" if "config" in meta else
                                 "train.image" if "arch" in meta else None)
    if found != kind:
        which = f"a {found} checkpoint" if found else "not a training checkpoint"
        fail(f"--resume: {path} is {which}, not one of {kind}")
    missing = [k for k in required if k not in meta]
    if missing:
        fail(f"--resume: {path} lacks {', '.join(missing)} in its metadata: not a complete "
             f"{kind} checkpoint")
    return meta


def check_same_flags(meta, current, path):
    """Refuse to resume with a flag that changes what the saved position means. `current`
    maps a flag to its value now; meta['flags'] holds them as saved. Flags an older
    checkpoint did not record are not checked."""
    saved = meta.get("flags", {})
    shown = lambda v: "(not given)" if v is None else v   # noqa: E731
    for flag, value in current.items():
        if flag in saved and saved[flag] != value:
            fail(f"--resume: {path} was trained with {flag} {shown(saved[flag])}, not {flag} "
                 f"{shown(value)}: resume with the same {flag}, or start a new run in another "
                 "--out")


def resume(trainer, out, position):
    """Load out/last.npz into `trainer`; `position(trainer)` says where it continues."""
    path = out / "last.npz"
    try:
        trainer.load(path)
    except (ValueError, KeyError, OSError) as e:
        fail(f"--resume: {path} is damaged or does not fit this run: {e}")
    max_steps = trainer.args.max_steps
    if max_steps is not None and max_steps < trainer.step:   # equal: nothing to train, score
        fail(f"--max-steps {max_steps}: {path} is already at step {trainer.step}; give a "
             f"--max-steps above {trainer.step}, or none")
    print(f"resumed from {path}: {position(trainer)}")


# ---- stopping safely --------------------------------------------------------------------
class StopSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM only set a flag; `check()` (called between
    steps and batches, where the state is whole) raises Interrupted. A second signal ends
    the program at once: the last checkpoint on disk is complete (writes are atomic)."""
    received = None

    def __enter__(self):
        StopSignals.received = None
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        StopSignals.received = None

    @staticmethod
    def _handle(signum, frame):
        name = signal.Signals(signum).name
        if StopSignals.received:
            raise SystemExit(f"error: {name} again: stopped at once, without a new checkpoint")
        StopSignals.received = name
        print(f"\n{name} received: stopping after this step ...", file=sys.stderr, flush=True)

    @staticmethod
    def check(comm=None):
        """Raise Interrupted if a signal arrived. With a communicator of several ranks, on
        every rank when it arrived on any (the signal numbers are all-reduced), so that all
        ranks stop after the same step."""
        received = StopSignals.received
        if comm is not None and comm.size > 1:
            number = comm.allreduce(int(signal.Signals[received]) if received else 0, op="max")
            received = signal.Signals(int(number)).name if number else None
        if received:
            raise Interrupted(received)


def progress(iterable, total, desc, unit):
    """Iterate with a progress bar that disappears when done; a pending SIGINT/SIGTERM stops
    the loop between items (evaluation passes take minutes)."""
    with tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
              mininterval=1.0) as bar:
        for item in bar:
            StopSignals.check()
            yield item


class CheckpointClock:
    """Says when a checkpoint is due: every `every_steps` steps and `minutes` after the last.
    With a communicator, the ranks agree (a checkpoint gathers from all of them): it is due
    on every rank when the time is up on any."""

    def __init__(self, every_steps, minutes, comm=None):
        self.every_steps, self.seconds, self.comm = every_steps, minutes * 60.0, comm
        self.last = time.monotonic()

    def due(self, step):
        by_steps = self.every_steps and step % self.every_steps == 0
        by_time = self.seconds and time.monotonic() - self.last >= self.seconds
        if self.comm is not None and self.seconds:
            by_time = self.comm.any(by_time)
        return bool(by_steps or by_time)

    def saved(self):
        self.last = time.monotonic()


def resume_hint(args):
    """The command that continues this run: the one given (args.module, args.argv), with
    --resume instead of --overwrite."""
    argv = [a for a in args.argv if a != "--overwrite"]
    return command_line(args, argv + ([] if "--resume" in argv else ["--resume"]))


def train_epochs(trainer, args):
    """trainer.run_epoch() until args.epochs are done or it reports --max-steps reached (it
    returns False). A Diverged loss ends the program with its message; SIGINT or SIGTERM
    write last.npz and end it with the command that resumes."""
    with StopSignals():
        try:
            while trainer.epoch < args.epochs:
                if not trainer.run_epoch():
                    trainer.save(args.out / "last.npz")
                    print(f"stopped after --max-steps {args.max_steps} (checkpoint saved)")
                    break
        except Diverged as e:
            raise SystemExit(f"diverged: {e}") from None
        except Interrupted as e:
            try:
                trainer.save(args.out / "last.npz")
            except Diverged as d:   # the weights went bad since the last checkpoint
                raise SystemExit(f"diverged: {d}") from None
            raise SystemExit(f"{e}: stopped at step {trainer.step}; checkpoint saved in "
                             f"{args.out / 'last.npz'}. Continue with: {resume_hint(args)}"
                             ) from None


def run_final_pass(args, compute):
    """Run the final scoring `compute()` with SIGINT/SIGTERM stopping it cleanly: training is
    done and saved, so a stop loses only the scoring, which --resume repeats."""
    with StopSignals():
        try:
            return compute()
        except Interrupted as e:
            raise SystemExit(f"{e}: stopped during the final evaluation; training is saved in "
                             f"{args.out / 'last.npz'}. Score it with: {resume_hint(args)}"
                             ) from None
