"""Where the time of one of our training steps goes: BLAS against everything else, and the
functions that take the most of the rest.

    python bench/profile_step.py [--workloads lm_small,lm_large,resnet20] [--steps 5] [--top 12]
                                 [--out results/bench/profile_step.txt]

The steps are those of bench/lm_step.py and bench/image_step.py (resnet20: batch 128 at 32x32).
For each workload, after 2 warm-up steps:

* BLAS: every call to numpy's matmul, dot, tensordot and einsum, and the forward and backward
  of `linear` (whose `@` products cannot be wrapped; its bias add and bias-gradient sum are
  counted with them, a few percent of its time), timed by wrappers around them. The figure is
  the median over --steps steps of the time spent inside them; "the rest" is the step minus
  that: NumPy's elementwise passes, copies, allocation and Python. The wrappers cost about a
  microsecond per call.
* the top --top functions by own time (cProfile's tottime) over --steps more steps, with their
  call counts: the NumPy passes show up as the fast routes' and ops' functions that issue them.

With the `fast` extra, conv2d, batch_norm and relu run on their jit routes; conv's GEMMs are
called inside compiled loops (np.dot in Numba): they count as "the rest", under the loops'
functions (`_forward_chunks`, `_backward_chunks`); the header line names the routes.

Run it with nothing else busy on the machine (its figures are absolute times). Like the other
benches, it prints the float32 GEMM rate and the BLAS kernels at its start, so the machine's
state is on record.
"""
import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import timing  # noqa: E402  (bench/timing.py, beside this file)

WORKLOADS = ("lm_small", "lm_large", "resnet20")
BLAS_FUNCTIONS = ("matmul", "dot", "tensordot", "einsum")
_blas_seconds = [0.0]


def _timed(fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _blas_seconds[0] += time.perf_counter() - start
    return wrapper


WRAPPER_LINE = _timed(len).__code__.co_firstlineno   # how cProfile names the wrapper


def install_blas_timers():
    """Wrap numpy's BLAS entry points and linear's forward/backward (before the ops run)."""
    for name in BLAS_FUNCTIONS:
        setattr(np, name, _timed(getattr(np, name)))
    from tinyhw.ops import linalg
    for name in ("forward", "backward"):
        setattr(linalg.Linear, name, staticmethod(_timed(getattr(linalg.Linear, name))))


def build(workload):
    import image_step
    import lm_step
    if workload == "resnet20":
        return image_step.our_step("resnet20", 128, 32, "cpu")[0]
    return lm_step.our_step(workload.split("_")[1])


def profile(workload, steps, top, out):
    step = build(workload)
    for _ in range(2):
        step()
    totals, blas = [], []
    for _ in range(steps):
        _blas_seconds[0] = 0.0
        start = time.perf_counter()
        step()
        totals.append(time.perf_counter() - start)
        blas.append(_blas_seconds[0])
    total, in_blas = statistics.median(totals), statistics.median(blas)
    out(f"{workload:9s} step {1e3 * total:7.1f} ms   BLAS {1e3 * in_blas:7.1f} ms "
        f"({100 * in_blas / total:4.1f}%)   the rest {1e3 * (total - in_blas):7.1f} ms "
        f"({100 * (total - in_blas) / total:4.1f}%)")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    rows = [line for line in text.getvalue().splitlines() if line.strip()]
    header = next(i for i, line in enumerate(rows) if line.lstrip().startswith("ncalls"))
    out(f"  top {top} by own time over {steps} steps (cProfile adds overhead to every call):")
    for line in rows[header:]:
        line = line.replace(os.path.dirname(HERE) + os.sep, "")
        # numpy's matmul & co. are not functions cProfile sees: their time is the wrapper's
        wrapper = f"{os.path.relpath(__file__, os.path.dirname(HERE))}:{WRAPPER_LINE}(wrapper)"
        out("  " + line.replace(wrapper, "(BLAS: matmul, dot, tensordot, einsum)"))


def main():
    p = argparse.ArgumentParser(prog="python bench/profile_step.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated, from {', '.join(WORKLOADS)} (default all)")
    p.add_argument("--steps", type=int, default=5, help="steps timed, and profiled (default 5)")
    p.add_argument("--top", type=int, default=12, help="functions listed per workload (default 12)")
    timing.add_out_argument(p, "results/bench/profile_step.txt")
    args = p.parse_args()
    workloads = timing.choices_list(p, args.workloads, "--workloads", WORKLOADS)
    if args.steps < 1 or args.top < 1:
        p.error(f"--steps and --top must be at least 1, got {args.steps} and {args.top}")
    from tinyhw.backend import keep_freed_memory
    keep_freed_memory()                      # as the training entry points run
    out = timing.Report(args.out)
    out(timing.Gemm().line("at the start"))
    install_blas_timers()
    for workload in workloads:
        profile(workload, args.steps, args.top, out)
    out.close()


if __name__ == "__main__":
    main()
