"""Peak memory of one training step, ours against the same step in torch.

    python bench/memory.py [--cases lm_large,resnet50] [--steps 2] [--out results/bench/memory.txt]

The steps are those of bench/lm_step.py (the character-aware LM: forward over (35, 20) words,
backward, clipping, SGD) and bench/image_step.py (forward, cross-entropy, backward, SGD with
momentum and weight decay; resnet50 on 8 images of 224x224, resnet20 on 128 of 32x32), built
by their own `our_step` / `torch_step`. Every measure runs in a fresh subprocess of its own, so
that nothing one side allocated stays in the other's heap:

* RSS: the resident-set high-water mark over `--steps` steps minus the resident set just
  before them, once the model, optimizer and batch are built. The high-water mark is reset
  there (Linux's /proc/self/clear_refs), so the import and build peaks do not count, and read
  back as VmHWM from /proc/self/status. (getrusage's ru_maxrss is the same mark, except that
  it also keeps the largest resident set of the process image it was exec'd from: a child of
  a parent that imported torch starts with ru_maxrss at the parent's ~190 MB, and no reset
  clears that.) This counts everything the process touches: arrays, allocator slack, the BLAS
  and thread-pool buffers.
* tracemalloc: the peak of the bytes allocated through Python's tracked allocators during the
  steps, NumPy's array data included (NumPy reports its allocations to tracemalloc). This is
  what our arrays need, without the allocator's slack. torch's tensors are not reported to
  tracemalloc, so torch has only the RSS figure.

`--steps 2` (the default) includes the steady state: from the second step on, the previous
step's gradients and SGD's momentum buffers are alive during the forward (both step
definitions zero the gradients after the forward, as torch's examples do). Ours runs as the
training entry points run it, with keep_freed_memory() (tinyhw/backend.py), and again without
it ("ours, default malloc"), to show what that allocator setting costs in RSS.
"""
import argparse
import gc
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

CASES = ("lm_large", "lm_small", "resnet50", "resnet20")
SIDES = {"ours": "ours", "ours_default_malloc": "ours, default malloc", "torch": "torch"}
MB = 2 ** 20


def build_step(case, side, batch=None):
    """The training step of `case` for `side` ('ours' or 'torch'), from the step benches."""
    import timing
    if case.startswith("lm_"):
        import lm_step as bench
        bench.torch = timing.import_torch() if side == "torch" else None
        config = case[3:]
        return bench.our_step(config) if side == "ours" else bench.torch_step(config)
    import image_step as bench
    bench.torch = timing.import_torch() if side == "torch" else None
    default_batch, size = bench.SIZES[case]
    build = bench.our_step if side == "ours" else bench.torch_step
    step, _ = build(case, batch or default_batch, size, "cpu")
    return step


def current_rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_high_water():
    """Reset the kernel's resident-set high-water mark to the current RSS; False when the
    kernel does not allow it (then the build's own peak may hide part of the step's)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def high_water():
    """This process image's resident-set high-water mark in bytes (VmHWM; ru_maxrss where
    /proc is missing, see the module docstring)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(case, side, how, steps, batch=None):
    """Run in the child: build, then `steps` steps; returns the peak in bytes above the
    state just before the steps."""
    if side == "ours":
        from tinyhw.backend import keep_freed_memory
        keep_freed_memory()
    step = build_step(case, "torch" if side == "torch" else "ours", batch)
    gc.collect()
    if how == "tracemalloc":
        tracemalloc.start()
        for _ in range(steps):
            step()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"peak": peak}
    base = current_rss()
    reset = reset_high_water()
    before = high_water()
    for _ in range(steps):
        step()
    after = high_water()
    # Without the reset, the mark may still hold the build's peak: count only its growth.
    return {"peak": after - (base if reset else before), "base": base, "reset": reset}


def run_child(case, side, how, steps, batch):
    """One measure in a fresh interpreter; its result is the last line of its stdout."""
    command = [sys.executable, os.path.abspath(__file__), "--child", case, side, how,
               "--steps", str(steps)] + (["--batch", str(batch)] if batch else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SystemExit(f"{case} {side} {how}: the measuring process failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    import timing
    p = argparse.ArgumentParser(prog="python bench/memory.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="lm_large,resnet50",
                   help=f"comma-separated, from {', '.join(CASES)} (default lm_large,resnet50)")
    p.add_argument("--sides", default=",".join(SIDES),
                   help=f"comma-separated, from {', '.join(SIDES)} (default all)")
    p.add_argument("--steps", type=int, default=2, help="training steps measured (default 2)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size of the image cases (default: resnet50 8, resnet20 128)")
    timing.add_out_argument(p, "results/bench/memory.txt")
    p.add_argument("--child", nargs=3, metavar=("CASE", "SIDE", "HOW"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.steps < 1 or (args.batch is not None and args.batch < 1):
        p.error("--steps and --batch must be at least 1")
    if args.child:
        case, side, how = args.child
        print(json.dumps(measure(case, side, how, args.steps, args.batch)))
        return
    cases = [c for c in args.cases.split(",") if c]
    sides = [s for s in args.sides.split(",") if s]
    bad = [c for c in cases if c not in CASES] + [s for s in sides if s not in SIDES]
    if bad:
        p.error(f"unknown {bad}: --cases from {', '.join(CASES)}, --sides from {', '.join(SIDES)}")
    if "torch" in sides and importlib.util.find_spec("torch") is None:   # not imported here
        p.error("torch is not installed: pass --sides ours,ours_default_malloc")
    out = timing.Report(args.out)
    out(f"peak memory of {args.steps} training step(s) above the built model and batch, MB; "
        "each figure from its own fresh process")
    out(f"{'case':9s} {'side':22s} {'RSS peak':>9s} {'tracemalloc peak':>17s}")
    for case in cases:
        rss = {}
        for side in sides:
            rss[side] = run_child(case, side, "rss", args.steps, args.batch)["peak"] / MB
            if side == "torch":
                traced = "-  (not traced)"
            else:
                traced = run_child(case, side, "tracemalloc", args.steps, args.batch)["peak"]
                traced = f"{traced / MB:.0f}"
            out(f"{case:9s} {SIDES[side]:22s} {rss[side]:9.0f} {traced:>17s}")
        if "torch" in rss and "ours" in rss:
            out(f"{case:9s} {'ours / torch (RSS)':22s} {rss['ours'] / rss['torch']:9.2f}")
    out.close()


if __name__ == "__main__":
    main()
