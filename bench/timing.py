"""Alternating timings shared by the benchmarks: ours and the reference, one after the other
in every round, each after a short idle pause, and the median of the per-round ratios.

The pause matters on a small machine: OpenBLAS worker threads spin for a while after a call
and would steal the cores the next timed call needs. Alternating within a round makes the
ratio robust to the machine's speed drifting between rounds.

A library module with nothing to run: bench/ops.py, bench/lm_step.py and bench/image_step.py
import it. Running it prints this text."""
import argparse
import statistics
import time


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


def run_case(ours, theirs, rounds, pause, min_seconds=0.05):
    """Alternate ours and theirs (None: ours alone) for `rounds` rounds; short ops repeat
    within a round (`reps` calls, at least `min_seconds` in all) so thread wake-ups are
    amortised. Returns the medians in ms and of the ratios ours/theirs."""
    first = seconds_per_call(ours, 0, 1)  # warm-up: first calls allocate and page in memory
    if theirs is not None:
        theirs()
    reps = max(1, round(min_seconds / first))
    ours_times, torch_times, ratios = [], [], []
    for _ in range(rounds):
        ours_times.append(seconds_per_call(ours, pause, reps))
        if theirs is not None:
            torch_times.append(seconds_per_call(theirs, pause, reps))
            ratios.append(ours_times[-1] / torch_times[-1])
    return {
        "ours_ms": 1e3 * statistics.median(ours_times),
        "torch_ms": 1e3 * statistics.median(torch_times) if torch_times else None,
        "ratio": statistics.median(ratios) if ratios else None,
        "reps_per_round": reps,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python bench/timing.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    parser.print_help()
