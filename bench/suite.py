"""Every CPU bench of issue 11 in turn, into one folder named by the machine's state.

    python bench/suite.py [--out results/bench/DATE-STATE] [--pause-runs] [--quick]

This host switches between a fast and a slow state (numpy's 2-thread float32 1024^3 GEMM at
360-450 GFLOP/s against 150-210), and issue 11's targets hold in the fast one. So the suite
first measures that GEMM (best of 10 products) and names its folder
results/bench/<date>-fast or -slow (FAST_GFLOPS is the line between them) unless --out names
one (with --quick, <date>-<state>-quick); a folder that exists is refused, never overwritten. Then it runs, each in its own process
so that no bench inherits another's threads or memory:

  image_step.txt  bench/image_step.py --one-thread   resnet20 and resnet50 training steps
  ops.txt, .json  bench/ops.py                       conv2d, batch_norm, LSTM, linear + loss
  lm_step.txt     bench/lm_step.py                   the char-LM's step, small and large
  memory.txt      bench/memory.py                    peak RSS: resnet50, resnet20, LM large
  busy.txt        bench/busy.py                      one core held by a neighbour

with the rounds of `ROUNDS` (2 each with --quick, which checks that the suite runs and measures
nothing), and writes command.txt (the commands, in order) and gemm.txt (the rate at the start
and at the end, and the CPU: a VM's host can change, bench/NOTES.md). Each table file starts
with its own command line, CPU and GEMM lines.

A bench needs the cores to itself. --pause-runs stops this machine's training runs (processes
run as `python -m train.<entry>`) with SIGSTOP for the whole suite and continues them with
SIGCONT at its end, also after an error or Ctrl-C. About 15 minutes on 2 cores.
"""
import argparse
import datetime
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import timing  # noqa: E402  (bench/ is the script's folder)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_GFLOPS = 300   # between the slow state's 150-210 and the fast state's 360-450 GFLOP/s
ROUNDS = {"image_step": 9, "ops": 15, "lm_step": 7, "busy": 3}


def state_of(gflops):
    """'fast' or 'slow': the machine's state from numpy's 2-thread 1024^3 GEMM rate."""
    return "fast" if gflops >= FAST_GFLOPS else "slow"


def commands(out, quick=False):
    """(file name, argv) of each bench, writing its table into the folder `out`."""
    rounds = {name: 2 if quick else n for name, n in ROUNDS.items()}
    inside = os.path.abspath(out).startswith(ROOT + os.sep)   # the benches run in ROOT

    def path(name):
        full = os.path.join(os.path.abspath(out), name)
        return os.path.relpath(full, ROOT) if inside else full
    py = [sys.executable]
    return [
        ("image_step.txt", py + ["bench/image_step.py", "--one-thread", "--rounds",
                                 str(rounds["image_step"]), "--out", path("image_step.txt")]),
        ("ops.txt", py + ["bench/ops.py", "--rounds", str(rounds["ops"]), "--out",
                          path("ops.txt"), "--json", path("ops.json")]),
        ("lm_step.txt", py + ["bench/lm_step.py", "--rounds", str(rounds["lm_step"]), "--out",
                              path("lm_step.txt")]),
        ("memory.txt", py + ["bench/memory.py", "--cases", "resnet50,resnet20,lm_large",
                             "--sides", "ours,torch"] + (["--steps", "1"] if quick else [])
         + ["--out", path("memory.txt")]),
        ("busy.txt", py + ["bench/busy.py", "--workloads", "resnet20,lm_small,demo", "--rounds",
                           str(rounds["busy"]), "--out", path("busy.txt")]),
    ]


def training_runs(own=os.getpid()):
    """PIDs of this machine's training runs: processes with `-m train.<entry>` in their argv."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == own:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:   # gone meanwhile, or not ours to read
            continue
        if any(a == b"-m" and b.startswith(b"train.") for a, b in zip(argv, argv[1:])):
            pids.append(int(name))
    return pids


def _signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _gemm_line(gemm, when):
    """numpy's GEMM rate now and its line, with the state it says."""
    rate = gemm.rate()
    return rate, (f"GEMM float32 {gemm.n}^3 {when}: numpy {rate:.0f} GFLOP/s, best of "
                  f"{gemm.calls} ({timing.blas_threads()} BLAS threads, {timing.blas_kernel()}): "
                  f"{state_of(rate)} state")


def run(out, quick, paused):
    """Run the benches into `out`, the training runs `paused` stopped meanwhile."""
    gemm = timing.Gemm(calls=10)
    _signal_all(paused, signal.SIGSTOP)
    try:
        rate, start_line = _gemm_line(gemm, "at the start")
        out = out or os.path.join(ROOT, "results", "bench",
                                  f"{datetime.date.today().isoformat()}-{state_of(rate)}"
                                  + ("-quick" if quick else ""))
        if os.path.exists(out):
            raise SystemExit(f"--out: {out} exists; the suite never overwrites a folder "
                             f"(name a new one with --out)")
        os.makedirs(out)
        print(start_line, flush=True)
        planned = commands(out, quick)
        with open(os.path.join(out, "command.txt"), "w") as f:
            f.write(f"$ {timing.command_line()}\n" + "".join(
                " ".join(["python"] + argv[1:]) + "\n" for _, argv in planned))
        failed = []
        for name, argv in planned:
            print(f"\n== {name}: {' '.join(argv[1:])}", flush=True)
            if subprocess.run(argv, cwd=ROOT).returncode != 0:
                failed.append(name)
        _, end_line = _gemm_line(gemm, "at the end")
        print(end_line, flush=True)
        with open(os.path.join(out, "gemm.txt"), "w") as f:
            f.write(f"{start_line}\n{end_line}\nCPU: {timing.cpu_name()}\n")
    finally:
        _signal_all(paused, signal.SIGCONT)
    if failed:
        raise SystemExit(f"bench/suite.py: {', '.join(failed)} failed (see above); "
                         f"the others are in {out}")
    print(f"\nall benches written to {out}")


def main():
    p = argparse.ArgumentParser(prog="python bench/suite.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", metavar="FOLDER",
                   help="the folder for the tables (default results/bench/<date>-<state>); "
                        "must not exist")
    p.add_argument("--pause-runs", action="store_true",
                   help="stop this machine's `python -m train.*` runs while the suite runs")
    p.add_argument("--quick", action="store_true",
                   help="2 rounds per bench: checks that the suite runs, measures nothing")
    args = p.parse_args()
    if args.out and os.path.exists(args.out):
        p.error(f"--out: {args.out} exists; the suite never overwrites a folder")
    paused = training_runs() if args.pause_runs else []
    if paused:
        print(f"pausing training runs {paused} until the suite ends", flush=True)
    run(os.path.abspath(args.out) if args.out else None, args.quick, paused)


if __name__ == "__main__":
    main()
