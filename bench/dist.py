"""Data-parallel speed on this machine: 1 process with 2 BLAS threads against 2 MPI ranks
with 1 thread each, and the cost of the gradient all-reduce.

    python bench/dist.py [--steps 20] [--rounds 3] [--ptb DIR] [--cifar DIR] [--limit 1024]

Throughput: words/s of train.lm's training step (--config small, 20 streams of 35 words) and
images/s of train.image's (--arch resnet20, batch 128, CIFAR-10 through the real loader, the
first --limit images), timed over --steps steps after 2 warm-up steps. Every round runs the
four cases one after the other (lm 1x2, lm 2x1, resnet20 1x2, resnet20 2x1), so both set-ups
see the same drift of the machine's speed; the medians over --rounds are printed. The 2-rank
cases are the entry points' own Trainer under `mpiexec -n 2`; the time they spend in
Communicator.allreduce_gradients (copying into flat buckets, the MPI all-reduce, waiting for
the slower rank, copying back) is printed per step.

All-reduce alone: 2 ranks sum the gradients of the small and large LM and of resnet20 (ones,
no training), the mean time of --steps calls: the communication cost without load imbalance.
The all-reduce is not overlapped with the backward pass (it runs after it).

Needs the dist extra (pip install -e ".[dist]") and the data sets (default $TINYHW_DATA/ptb and
$TINYHW_DATA/cifar10, else data/). Run it on an idle machine: the figures mean nothing beside
a training run. Each case runs in a fresh process (--worker, used internally).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = {"lm": "words/s", "image": "images/s"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python bench/dist.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps per case (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of all cases (default 3)")
    p.add_argument("--ptb", default=None, help="PTB folder (default $TINYHW_DATA/ptb, data/ptb)")
    p.add_argument("--cifar", default=None,
                   help="CIFAR-10 image folder (default $TINYHW_DATA/cifar10, data/cifar10)")
    p.add_argument("--limit", type=int, default=1024,
                   help="CIFAR training images the loader uses (default 1024: quick to cache)")
    p.add_argument("--worker", choices=("lm", "image", "allreduce"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.limit < 256:
        p.error("need --steps >= 1, --rounds >= 1 and --limit >= 256 (two batches of 128)")
    return args


# ---- workers: one case, in this process (one rank of it) -------------------------------
def _timed(comm, step, steps):
    """Seconds for `steps` calls of step() after 2 warm-up calls, all ranks started together;
    and the all-reduce seconds per step in them."""
    for _ in range(2):
        step()
    comm.barrier()
    comm.seconds, start = 0.0, time.perf_counter()
    for _ in range(steps):
        step()
    comm.barrier()
    return time.perf_counter() - start, comm.seconds / steps


def lm_worker(args, comm, out):
    from data.ptb import Corpus, find_ptb_dir, stream_batches
    from train import lm
    flags = lm.parse_args(["--config", "small", "--device", "cpu", "--out", out])
    flags.ranks = comm.size
    corpus = Corpus(find_ptb_dir(args.ptb))
    trainer = lm.Trainer(flags, corpus, "cpu", comm)
    windows = stream_batches(corpus.ids["train"], flags.batch_size, flags.seq_len)
    seconds, reduce_s = _timed(comm, lambda: trainer.train_step(*next(windows)), args.steps)
    return args.steps * flags.batch_size * flags.seq_len / seconds, reduce_s


def image_worker(args, comm, out):
    from train import image
    argv = ["--arch", "resnet20", "--device", "cpu", "--workers", "1", "--out", out,
            "--limit", str(args.limit)] + (["--data", args.cifar] if args.cifar else [])
    flags = image.parse_args(argv)
    flags.ranks = comm.size
    _, train_set, val_set = image.load_data(flags)
    trainer = image.Trainer(flags, train_set, val_set, "cpu", comm)
    batches = iter([])

    def step():
        nonlocal batches
        batch = next(batches, None)
        if batch is None:   # a new epoch of the loader: same order on every rank
            batches = iter(trainer.train_loader.epoch(0))
            batch = next(batches)
        trainer.train_step(*batch)
    seconds, reduce_s = _timed(comm, step, args.steps)
    return args.steps * flags.batch_size / seconds, reduce_s


def allreduce_worker(args, comm):
    import numpy as np

    from nets import build_image_net
    from nets.char_lm import build
    models = {"lm small": build("small", "coupled", 10_000, 51, 21),
              "lm large": build("large", "coupled", 10_000, 51, 21),
              "resnet20": build_image_net("resnet20", 10, True)}
    result = {}
    for name, model in models.items():
        params = list(model.parameters())
        for p in params:
            p.grad = np.ones(p.shape, p.dtype)
        _, seconds = _timed(comm, lambda: comm.allreduce_gradients(params), args.steps)
        megabytes = sum(p.grad.nbytes for p in params) / 2**20
        result[name] = {"megabytes": megabytes, "ms": 1e3 * seconds}
    return result


def worker(args):
    from tinyhw import distributed
    from tinyhw.backend import keep_freed_memory
    keep_freed_memory()
    comm = distributed.world()
    with tempfile.TemporaryDirectory() as out:
        if args.worker == "allreduce":
            result = allreduce_worker(args, comm)
        else:
            run = lm_worker if args.worker == "lm" else image_worker
            rate, reduce_s = run(args, comm, out)
            result = {"rate": rate, "allreduce_ms": 1e3 * reduce_s}
    if comm.is_root:
        print("RESULT " + json.dumps(result), flush=True)


# ---- the driver: every case in its own processes, interleaved ---------------------------
def launch(args, case, ranks):
    """Run `--worker case` as 1 process x 2 threads or 2 ranks x 1 thread; its RESULT."""
    threads = str(2 // ranks)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = ([str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(ranks)]
               if ranks > 1 else [])
    command += [sys.executable, __file__, "--worker", case, "--steps", str(args.steps),
                "--limit", str(args.limit)]
    for flag in ("ptb", "cifar"):
        if getattr(args, flag):
            command += [f"--{flag}", getattr(args, flag)]
    done = subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    results = {(case, ranks): [] for case in CASES for ranks in (1, 2)}
    for r in range(args.rounds):
        for case in CASES:
            for ranks in (1, 2):
                results[case, ranks].append(launch(args, case, ranks))
                rate = results[case, ranks][-1]["rate"]
                print(f"round {r + 1}: {case} {ranks} x {2 // ranks} threads: {rate:.1f} "
                      f"{CASES[case]}", flush=True)
    print(f"\nmedians of {args.rounds} rounds, {args.steps} steps each:")
    for case, unit in CASES.items():
        one = statistics.median(x["rate"] for x in results[case, 1])
        two = statistics.median(x["rate"] for x in results[case, 2])
        reduce_ms = statistics.median(x["allreduce_ms"] for x in results[case, 2])
        name = "lm --config small" if case == "lm" else "resnet20"
        print(f"{name:18s} 1 process x 2 threads {one:8.1f} {unit}   2 ranks x 1 thread "
              f"{two:8.1f} {unit}   ratio {two / one:.2f}   all-reduce {reduce_ms:.1f} ms/step")
    alone = launch(args, "allreduce", 2)
    print("\ngradient all-reduce alone, 2 ranks (mean per step):")
    for name, x in alone.items():
        print(f"{name:10s} {x['megabytes']:6.1f} MB  {x['ms']:7.2f} ms")


if __name__ == "__main__":
    main()
