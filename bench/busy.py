"""Step time with one of the cores held by another process, against the idle machine.

    python bench/busy.py [--workloads demo,lm_small,resnet20] [--rounds 3] [--arrival 20]
                         [--out FILE]

A training run shares its machine: here, with 2 cores, a neighbour holding one of them should
cost us at most 2.5x our idle step time. For each workload this bench times our steps idle and
then busy, round after round, and torch's the same way beside them:

* ours, as the training entry points run it: BLAS threads chosen by their rule
  (train/threads.py, `BlasThreads.for_run` without --blas-threads, so an OPENBLAS_NUM_THREADS
  in the environment is obeyed as there). Each phase starts a fresh rule, as a run starting in
  that state would: for train.lm and train.image it adapts (warm-up, then a probe of 1 thread
  against all cores), and the steps it spends choosing are run but not timed; train.demo fixes
  1 thread. OpenBLAS's count is reset to the cores before each phase.
* torch on its default threads (one per core), its first 2 steps of a phase not timed.

--arrival STEPS adds, per round, what a run sees when the neighbour comes after the rule chose
on the idle machine: ours' mean step over the STEPS steps that follow the arrival (the rule's
noticing it and re-probing included), against the round's idle median.

Busy: a CPU-bound child process (a Python loop, started and killed by this bench; it also
quits by itself should this bench die) holds a core while the phase runs. The figure for each
side is the median over rounds of busy / idle, each phase's time the median of its timed steps.

Workloads (steps as the training loops do them): demo, train.demo's step (a 10-layer coupled
highway MLP of width 64 on a batch of 128 two-spirals points, SGD with momentum; its torch
mirror is written here); lm_small, bench/lm_step.py's step of the small LM; resnet20,
bench/image_step.py's step of resnet20 on 128 images of 32x32. A GEMM line (bench/timing.py)
at the start and end records the machine's fast or slow state.
"""
import argparse
import contextlib
import math
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import numpy as np  # noqa: E402

import image_step  # noqa: E402  (bench/, beside this file)
import lm_step  # noqa: E402
import timing  # noqa: E402
import tinyhw  # noqa: E402
import tinyhw.functional as F  # noqa: E402
from tinyhw import optim  # noqa: E402
from tinyhw.backend import keep_freed_memory  # noqa: E402
from train import demo, threads  # noqa: E402

torch = None   # imported by main() once the arguments parse: --help does not need it

# Timed steps per phase: enough for a stable median, while a whole workload stays ~1-2 min.
STEPS = {"demo": 100, "lm_small": 8, "resnet20": 6}
TORCH_WARMUP = 2

# The neighbour: a pure-Python loop that checks every ~50 ms that its parent is still this
# bench, so a bench killed by SIGKILL does not leave it spinning.
HOG = ("import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n"
       "    for _ in range(10 ** 6):\n        pass\n")


@contextlib.contextmanager
def hog():
    """Holds one core with a CPU-bound child process while in the `with` block; kills it on
    leaving the block, whatever ends the block (an error, Ctrl-C, SIGTERM: see main), its
    start-up wait included."""
    proc = subprocess.Popen([sys.executable, "-c", HOG])
    try:
        time.sleep(0.5)   # running flat out before the first timed step
        yield proc
    finally:
        proc.kill()
        proc.wait()


# ---- the workloads: (our step, the rule's default, torch's step) ----------------------------
def demo_steps():
    """train.demo's step, ours and torch's; the data drawn inside the step, as the demo does."""
    rng = np.random.default_rng(0)
    x, y = demo.two_spirals(1000, 0.02, rng)
    tinyhw.manual_seed(0)
    model = demo.HighwayMLP(64, 10, "coupled")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def ours():
        idx = rng.integers(0, len(x), 128)
        loss = F.cross_entropy(model(tinyhw.tensor(x[idx])), tinyhw.Tensor(y[idx]))
        if not math.isfinite(loss.item()):   # the demo reads the loss every step
            raise SystemExit("demo: the loss is not finite")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ours, demo.BLAS_DEFAULT, (_torch_demo(x, y) if torch else None)


def _torch_demo(x, y):
    nn = torch.nn

    class Highway(nn.Module):   # coupled: y = T h + (1 - T) x, the gate's bias starting at -2
        def __init__(self, width):
            super().__init__()
            self.H, self.T = nn.Linear(width, width), nn.Linear(width, width)
            nn.init.constant_(self.T.bias, -2.0)

        def forward(self, x):
            t = torch.sigmoid(self.T(x))
            return t * torch.relu(self.H(x)) + (1 - t) * x

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), *[Highway(64) for _ in range(10)],
                          nn.Linear(64, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)

    def step():
        idx = rng.integers(0, len(x), 128)
        logits = model(torch.from_numpy(x[idx]))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[idx]))
        if not math.isfinite(loss.item()):
            raise SystemExit("demo (torch): the loss is not finite")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def lm_small_steps():
    lm_step.torch = torch
    return (lm_step.our_step("small"), "auto",
            lm_step.torch_step("small") if torch else None)


def resnet20_steps():
    image_step.torch = torch
    batch, size = image_step.SIZES["resnet20"]
    ours, _ = image_step.our_step("resnet20", batch, size, "cpu")
    theirs = image_step.torch_step("resnet20", batch, size, "cpu")[0] if torch else None
    return ours, "auto", theirs


WORKLOADS = {"demo": demo_steps, "lm_small": lm_small_steps, "resnet20": resnet20_steps}


# ---- one phase ---------------------------------------------------------------------------------
def our_phase(step, default, cores, timed):
    """A fresh rule as a training run makes it, the steps it takes to choose (not timed), then
    `timed` steps. Returns (median seconds, the count the rule chose)."""
    threads.set_blas_count(cores)   # as at a run's start: the previous phase's rule may have cut it
    blas = threads.BlasThreads.for_run(None, device="cpu", default=default)
    while not blas.settled:
        with blas:
            step()
    times = []
    for _ in range(timed):
        with blas:
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return statistics.median(times), threads.blas_count()


def arrival_phase(step, default, cores, timed):
    """A rule settled on the idle machine, then a neighbour arrives: the mean time of the
    `timed` steps that follow, the rule's noticing and re-probing included, and the count it
    ends on."""
    threads.set_blas_count(cores)
    blas = threads.BlasThreads.for_run(None, device="cpu", default=default)
    while not blas.settled:
        with blas:
            step()
    times = []
    with hog():
        for _ in range(timed):
            with blas:
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
    return statistics.mean(times), threads.blas_count()


def torch_phase(step, timed):
    for _ in range(TORCH_WARMUP):
        step()
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), torch.get_num_threads()


def measure(name, rounds, timed, pause, arrival=0):
    """{side: {"idle": [s], "busy": [s], "threads": {"idle": [n], "busy": [n]}}} over rounds,
    and with `arrival` steps ours' "arrival": [(mean s, count at the end)] too."""
    ours, default, theirs = WORKLOADS[name]()
    cores = threads.blas_count()
    sides = {"ours": lambda: our_phase(ours, default, cores, timed)}
    if theirs is not None:
        sides["torch"] = lambda: torch_phase(theirs, timed)
    result = {s: {"idle": [], "busy": [], "threads": {"idle": [], "busy": []}} for s in sides}
    for _ in range(rounds):
        for state in ("idle", "busy"):
            for side, phase in sides.items():
                time.sleep(pause)   # idle BLAS threads stop spinning before the next phase
                if state == "busy":
                    with hog():
                        seconds, n = phase()
                else:
                    seconds, n = phase()
                result[side][state].append(seconds)
                result[side]["threads"][state].append(n)
        if arrival:
            time.sleep(pause)
            result["ours"].setdefault("arrival", []).append(
                arrival_phase(ours, default, cores, arrival))
    threads.set_blas_count(cores)
    return result


def _counts(ns):
    return ",".join(str(n) for n in ns)


def main():
    p = argparse.ArgumentParser(prog="python bench/busy.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated, from {', '.join(WORKLOADS)} (default all; with 3 "
                        "rounds on 2 cores about 1 min for demo, 2 for lm_small, 2.5 for resnet20)")
    p.add_argument("--rounds", type=int, default=3, help="idle/busy rounds (default 3)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per phase (default: demo 100, lm_small 8, resnet20 6)")
    p.add_argument("--pause", type=float, default=0.3, help="idle seconds before each phase")
    p.add_argument("--arrival", type=int, default=0, metavar="STEPS",
                   help="also time ours for STEPS steps after a neighbour arrives mid-run (the "
                        "rule settled idle first), their mean against the idle median")
    timing.add_out_argument(p, "results/bench/busy.txt")
    args = p.parse_args()
    names = timing.choices_list(p, args.workloads, "--workloads", WORKLOADS)
    if args.rounds < 1 or (args.steps is not None and args.steps < 1) or args.arrival < 0:
        p.error("--rounds and --steps must be at least 1, --arrival at least 0")
    # SIGTERM (e.g. `timeout`) ends the bench through SystemExit, so hog()'s exit kills it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("busy.py: terminated"))
    global torch
    torch = timing.import_torch()
    keep_freed_memory()
    out = timing.Report(args.out)
    gemm = timing.Gemm(torch)
    out(gemm.line("at the start (idle)"))
    if torch is None:
        out("torch not installed: our times only")
    out(f"{'workload':9s} {'side':6s} {'threads idle|busy':>18s} {'idle s/step':>12s} "
        f"{'busy s/step':>12s} {'busy/idle':>10s}")
    for name in names:
        r = measure(name, args.rounds, args.steps or STEPS[name], args.pause, args.arrival)
        for side, m in r.items():
            ratio = statistics.median(b / i for b, i in zip(m["busy"], m["idle"]))
            counts = f"{_counts(m['threads']['idle'])}|{_counts(m['threads']['busy'])}"
            out(f"{name:9s} {side:6s} {counts:>18s} {statistics.median(m['idle']):12.4f} "
                f"{statistics.median(m['busy']):12.4f} {ratio:10.2f}")
        if args.arrival:
            m = r["ours"]
            ratio = statistics.median(a / i for (a, _), i in zip(m["arrival"], m["idle"]))
            ends = _counts(n for _, n in m["arrival"])
            out(f"{name:9s} ours: the {args.arrival} steps after a neighbour arrives mid-run "
                f"average {ratio:.2f}x the idle step (threads at their end: {ends})")
    out(gemm.line("at the end (idle)"))
    out.close()


if __name__ == "__main__":
    main()
