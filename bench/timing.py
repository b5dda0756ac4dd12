"""Helpers shared by the benchmarks: alternating timings, the machine's GEMM rate, and tables
written to a file.

Alternating timings: ours and the reference, one after the other in every round, each after a
short idle pause, and the median of the per-round ratios. The pause matters on a small
machine: OpenBLAS worker threads spin for a while after a call and would steal the cores the
next timed call needs. Alternating within a round makes the ratio robust to the machine's
speed drifting between rounds.

BLAS kernels: some machines of this project set OPENBLAS_CORETYPE=Haswell (with
OPENBLAS_L2_SIZE) in their environment, for the sake of old OpenBLAS builds that misbehave on
their processors. That forces numpy's OpenBLAS onto its AVX2 kernels on an AVX-512 machine,
while torch picks its own kernels (oneDNN) regardless: the 1024^3 GEMM runs ~3x slower and a
resnet20 step ~1.3x. The GEMM line therefore names the OpenBLAS kernel in use, and the
results in results/bench/ were measured with both variables unset for that command alone:
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/ops.py ...` (tests and CI keep the
environment as it is).

GEMM rate: this host switches between a fast and a slow state (~2x, for minutes at a time),
which moves every absolute time. So each bench measures a float32 1024^3 matrix product on
the threads it runs with, at its start, in every round and at its end, and prints the rate
in GFLOP/s beside its figures: a row whose rates are low was timed in the slow state.

Tables: `Report` prints each line and, given a path (the benches' --out), also writes it to
that file under the command line that made it, so a result file says how to reproduce it.

A library module with nothing to run: the scripts in bench/ import it. Running it prints
this text."""
import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time

import numpy as np

GEMM_SIZE = 1024


def import_torch():
    """torch, or None when it is not installed (the benchmarks then time ours alone)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def seconds_per_call(fn, pause, reps):
    """Mean seconds per call over `reps` back-to-back calls, after `pause` seconds idle."""
    time.sleep(pause)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


# ---- GEMM rate ---------------------------------------------------------------------------
class Gemm:
    """float32 (n, n) @ (n, n) in numpy (OpenBLAS, on its current thread count) and, when
    torch is given, in torch (on torch's threads). `rate()` is in GFLOP/s: the best of
    `calls` back-to-back products, so that a thread wake-up does not count as the machine's
    state. Every rate measured is kept in `seen` for the summary line."""

    def __init__(self, torch=None, n=GEMM_SIZE, calls=3):
        r = np.random.default_rng(0)
        self.n, self.calls = n, calls
        self.a, self.b = (r.standard_normal((n, n)).astype(np.float32) for _ in range(2))
        self.out = np.empty((n, n), np.float32)
        self.torch = torch
        if torch is not None:
            self.ta, self.tb = torch.from_numpy(self.a), torch.from_numpy(self.b)
            self.tout = torch.empty(n, n)
        self.seen = []

    def _best(self, fn):
        fn()   # wakes the BLAS threads; not counted
        best = min(seconds_per_call(fn, 0, 1) for _ in range(self.calls))
        return 2 * self.n ** 3 / best / 1e9

    def rate(self):
        """numpy's GFLOP/s now (also appended to `seen`)."""
        g = self._best(lambda: np.matmul(self.a, self.b, out=self.out))
        self.seen.append(g)
        return g

    def torch_rate(self):
        """torch's GFLOP/s now, or None without torch."""
        if self.torch is None:
            return None
        return self._best(lambda: self.torch.mm(self.ta, self.tb, out=self.tout))

    def line(self, when):
        """One line for the table: both rates now, with the thread counts they ran on."""
        ours = f"numpy {self.rate():.0f} GFLOP/s ({blas_threads()} BLAS threads, {blas_kernel()})"
        theirs = self.torch_rate()
        theirs = (f", torch {theirs:.0f} GFLOP/s ({self.torch.get_num_threads()} threads)"
                  if theirs is not None else "")
        return f"GEMM float32 {self.n}^3 {when}: {ours}{theirs}"

    def summary(self):
        """min / median / max of every numpy rate measured in this run."""
        if not self.seen:
            return "GEMM: not measured"
        return (f"GEMM numpy GFLOP/s over the run ({len(self.seen)} measures): "
                f"min {min(self.seen):.0f}, median {statistics.median(self.seen):.0f}, "
                f"max {max(self.seen):.0f}")


def blas_threads():
    """OpenBLAS's current thread count (threadpoolctl), or '?' when it cannot be read."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "?"
    counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts) if counts else "?"


def blas_kernel():
    """'OpenBLAS 0.3.31 SkylakeX kernels' (threadpoolctl), plus the forcing variable when set."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS kernels unknown (no threadpoolctl)"
    libs = [f"{i.get('internal_api', '?')} {i.get('version', '?')} "
            f"{i.get('architecture', '?')} kernels"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return ", ".join(libs or ["BLAS unknown"]) + (f", forced by OPENBLAS_CORETYPE={forced}"
                                                  if forced else "")


def cpu_name():
    """'AMD EPYC (family 25, model 17)' from /proc/cpuinfo (the platform's name elsewhere): a
    VM's host can change between runs, and with it every absolute figure (this project's
    machine has reported a Zen 5, family 26, and a Zen 4, family 25: bench/NOTES.md)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break                      # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine() or "CPU unknown"
    return (f"{fields['model name']} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')})")


def routes_line():
    """Which CPU routes conv2d, batch_norm and relu take: the jit routes (with Numba's version
    and thread count) or, without Numba, the NumPy ones."""
    from tinyhw.ops.fast import jit
    if not jit.available:
        return "no Numba: conv2d, batch_norm and relu on their NumPy routes"
    return (f"Numba {jit.numba.__version__}: conv2d, batch_norm and relu (on feature maps) on "
            f"their jit routes, "
            f"{jit.threads()} threads")


def gemm_span(rates):
    """'61' or '58-63': the range of the GEMM rates measured during one row."""
    if not rates:
        return "-"
    lo, hi = round(min(rates)), round(max(rates))
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def run_case(ours, theirs, rounds, pause, min_seconds=0.05, gemm=None, also=None):
    """Alternate ours and theirs (None: ours alone) for `rounds` rounds; short ops repeat
    within a round (`reps` calls, at least `min_seconds` in all) so thread wake-ups are
    amortised. `also`: {label: callable}, other versions of ours (e.g. on fewer BLAS threads),
    each timed right after ours in every round, so that all of them meet the same machine
    state. With a `Gemm`, its rate is measured at the end of every round (after the timed
    calls: the next round's pause lets its threads settle). Returns the medians in ms and of
    the ratios ours/theirs, the round's GEMM rates, and under "also" the same medians for each
    other version."""
    also = also or {}
    first = seconds_per_call(ours, 0, 1)  # warm-up: first calls allocate and page in memory
    for other in also.values():
        other()
    if theirs is not None:
        theirs()
    reps = max(1, round(min_seconds / first))
    times = {label: [] for label in (None, *also)}
    torch_times, rates = [], []
    for _ in range(rounds):
        times[None].append(seconds_per_call(ours, pause, reps))
        for label, other in also.items():
            times[label].append(seconds_per_call(other, pause, reps))
        if theirs is not None:
            torch_times.append(seconds_per_call(theirs, pause, reps))
        if gemm is not None:
            rates.append(gemm.rate())

    def medians(ours_times):
        ratios = [o / t for o, t in zip(ours_times, torch_times)]
        return {"ours_ms": 1e3 * statistics.median(ours_times),
                "ratio": statistics.median(ratios) if ratios else None}
    return {
        **medians(times[None]),
        "torch_ms": 1e3 * statistics.median(torch_times) if torch_times else None,
        "reps_per_round": reps,
        "gemm_gflops": rates,
        "also": {label: medians(times[label]) for label in also},
    }


# ---- tables to a file ----------------------------------------------------------------------
def command_line():
    """How this script was run, as a shell line (python and the script path as given)."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


class Report:
    """Print lines; with a `path`, also write them there, under a header with the command
    line, the date, the host and the routes of conv2d and batch_norm (written as they come: a
    run cut short keeps its rows)."""

    def __init__(self, path=None):
        self.file = None
        print(f"# {routes_line()}", flush=True)
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise SystemExit(f"--out: folder {folder} does not exist")
            self.file = open(path, "w")
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            self.file.write(f"$ {command_line()}\n# {stamp}, {platform.node()}, "
                            f"{os.cpu_count()} CPUs ({cpu_name()}), numpy {np.__version__}; "
                            f"{routes_line()}\n")

    def __call__(self, text=""):
        print(text, flush=True)
        if self.file:
            self.file.write(text + "\n")
            self.file.flush()

    def close(self):
        if self.file:
            self.file.close()
            self.file = None


def choices_list(parser, value, flag, choices):
    """The comma-separated names in `value`; an unknown one is a parser error naming `flag`."""
    names = [n for n in value.split(",") if n]
    bad = [n for n in names if n not in choices]
    if bad:
        parser.error(f"{flag}: unknown {bad}; choose from {', '.join(choices)}")
    return names


def add_out_argument(parser, example):
    parser.add_argument("--out", metavar="FILE",
                        help=f"also write the table to FILE, under the command line that made it "
                             f"(e.g. {example})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python bench/timing.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    parser.print_help()
