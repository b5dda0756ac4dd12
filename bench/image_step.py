"""Seconds per training step of the image nets, ours against the same nets in torch.

    python bench/image_step.py [--archs resnet20,resnet50] [--rounds 5] [--device cpu|gpu]
                               [--one-thread] [--out results/bench/image_step.txt]

One step is what train.image does per batch: forward, mean cross-entropy, backward and an SGD
update with momentum 0.9 and weight decay 5e-4. resnet20 runs on a batch of 128 32x32 images,
resnet50 on 8 224x224 images (the issue's sizes; --batch overrides both), highway20/plain20
and highway50 are accepted too (ours only where torch has no mirror below). The torch nets
are written here, block for block the same (He et al.'s option-A shortcut for CIFAR,
torchvision's v1.5 bottleneck for resnet50), only as a reference. Rounds alternate one step
of ours and one of torch's after a short pause (idle OpenBLAS threads otherwise spin on the
cores torch needs), and the figure reported is the median of the per-round ratios. On the CPU
the last column is numpy's float32 GEMM rate measured after every round (bench/timing.py):
this machine has a fast and a slow state, and the rate says which one a row was timed in.

Ours runs on the BLAS's own thread count (all cores). --one-thread also times our step on one
BLAS thread in every round, right after the all-thread step, as a second row: train.image's
`--blas-threads auto` (its default) times a run's own steps on both counts and keeps the
faster, so the lower of the two rows is the step a training run takes.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tinyhw  # noqa: E402
import tinyhw.functional as F  # noqa: E402
from nets import ARCHS, count_parameters  # noqa: E402
from tinyhw import optim  # noqa: E402
from tinyhw.backend import keep_freed_memory, to_device  # noqa: E402
from tinyhw.ops.fast import jit  # noqa: E402
from timing import (Gemm, Report, add_out_argument, gemm_span,  # noqa: E402  (bench/timing.py,
                    import_torch, run_case)                      # beside this file)
from train import threads  # noqa: E402

torch = None   # imported by main() once the arguments parse: --help does not need it

SIZES = {"resnet20": (128, 32), "highway20": (128, 32), "plain20": (128, 32),
         "resnet50": (8, 224), "highway50": (8, 224), "highway_full50": (8, 224)}


def _batch(batch, size, classes, seed=0):
    r = np.random.default_rng(seed)
    return (r.standard_normal((batch, 3, size, size)).astype(np.float32),
            r.integers(0, classes, batch))


def _synchronize(device):
    if device == "gpu":
        import cupy
        cupy.cuda.Device().synchronize()
    elif device == "cuda":
        torch.cuda.synchronize()


def our_step(arch, batch, size, device):
    classes = 10 if size == 32 else 1000
    tinyhw.manual_seed(0)
    model = ARCHS[arch](num_classes=classes).to(device)
    model.train()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = _batch(batch, size, classes)
    x, y = tinyhw.Tensor(to_device(x, device)), tinyhw.Tensor(to_device(y, device))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _synchronize(device)
    return step, count_parameters(model)


def on_blas_threads(step, n):
    """`step` run on n BLAS threads (and n threads in the jit routes' compiled loops), the
    counts restored after it (threadpoolctl's limit on train.threads' kept controller, a few
    us)."""
    def run():
        loops = jit.threads()
        try:
            with threads.controller().limit(limits=n, user_api="blas"):
                jit.set_threads(n)
                step()
        finally:
            jit.set_threads(loops)
    return run


def _torch_nets():
    """torch mirrors of resnet20 and resnet50 (defined lazily: torch is optional)."""
    nn = torch.nn

    def conv_bn(cin, cout, k, stride=1, relu=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.H = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, 1, False))
            self.stride, self.pad = stride, (cout - cin) // 2

        def forward(self, x):
            s = x[:, :, ::self.stride, ::self.stride]
            if self.pad:
                s = torch.nn.functional.pad(s, (0, 0, 0, 0, self.pad, self.pad))
            return torch.relu(self.H(x) + s)

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            out = 4 * width
            self.H = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride),
                                   conv_bn(width, out, 1, 1, False))
            self.skip = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                       nn.BatchNorm2d(out))
                         if stride != 1 or cin != out else nn.Identity())

        def forward(self, x):
            return torch.relu(self.H(x) + self.skip(x))

    def stages(block, widths, counts, cin, expansion):
        layers = []
        for i, (w, n) in enumerate(zip(widths, counts)):
            for j in range(n):
                layers.append(block(cin, w, 2 if i > 0 and j == 0 else 1))
                cin = w * expansion
        return layers, cin

    def resnet20():
        blocks, cout = stages(Basic, (16, 32, 64), (3, 3, 3), 16, 1)
        return nn.Sequential(conv_bn(3, 16, 3), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(cout, 10))

    def resnet50():
        blocks, cout = stages(Bottleneck, (64, 128, 256, 512), (3, 4, 6, 3), 64, 4)
        stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                             nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        return nn.Sequential(stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(cout, 1000))
    return {"resnet20": resnet20, "resnet50": resnet50}


def torch_step(arch, batch, size, device):
    nets = _torch_nets()
    if arch not in nets:
        return None, None
    torch.manual_seed(0)
    dev = "cuda" if device == "gpu" else "cpu"
    model = nets[arch]().to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = _batch(batch, size, 10 if size == 32 else 1000)
    x, y = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _synchronize("cuda" if dev == "cuda" else "cpu")
    return step, sum(p.numel() for p in model.parameters())


def main():
    p = argparse.ArgumentParser(prog="python bench/image_step.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="resnet20,resnet50",
                   help=f"comma-separated, from {', '.join(SIZES)} (default resnet20,resnet50)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--batch", type=int, default=None, help="batch size for every arch")
    p.add_argument("--pause", type=float, default=0.3, help="idle seconds before each step")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="cpu (default) or gpu: ours on cupy, torch on cuda")
    p.add_argument("--one-thread", action="store_true",
                   help="also time our step on 1 BLAS thread, alternating with the others "
                        "(CPU only): a second row per arch")
    add_out_argument(p, "results/bench/image_step.txt")
    args = p.parse_args()
    archs = [a for a in args.archs.split(",") if a]
    bad = [a for a in archs if a not in SIZES]
    if bad or args.rounds < 1:
        p.error(f"--archs: unknown {bad}; choose from {', '.join(SIZES)}" if bad
                else "--rounds must be at least 1")
    if args.one_thread and args.device != "cpu":
        p.error("--one-thread: BLAS threads are a CPU setting; got --device gpu, expected cpu")
    global torch
    torch = import_torch()
    keep_freed_memory()
    out = Report(args.out)
    gemm = Gemm(torch) if args.device == "cpu" else None   # the GPU's state is not the CPU's
    if torch is None:
        out("torch not installed: printing our times only (pip install torch==2.13.0 for ratios)")
    else:
        out(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if gemm:
        out(gemm.line("at the start"))
    out(f"{'arch':10s} {'batch':>5s} {'params':>11s} {'ours s/step':>12s} {'torch s/step':>13s} "
        f"{'ours/torch':>11s}" + (f" {'GEMM GF/s':>10s}" if gemm else ""))
    for arch in archs:
        batch, size = SIZES[arch]
        batch = args.batch or batch
        ours, n_ours = our_step(arch, batch, size, args.device)
        theirs, n_theirs = torch_step(arch, batch, size, args.device) if torch else (None, None)
        if theirs and n_theirs != n_ours:
            raise SystemExit(f"{arch}: the torch mirror has {n_theirs:,} parameters, ours "
                             f"{n_ours:,}: they are not the same net")
        ours()   # one more warm-up step than run_case's: the first steps allocate the most
        if theirs:
            theirs()
        also = {"1 thread": on_blas_threads(ours, 1)} if args.one_thread else None
        r = run_case(ours, theirs, args.rounds, args.pause, min_seconds=0, gemm=gemm, also=also)
        rates = f" {gemm_span(r['gemm_gflops']):>10s}" if gemm else ""
        ref_s = f"{r['torch_ms'] / 1e3:13.3f}" if theirs else f"{'-':>13s}"
        for label, mine in [(arch, r), *((f"  {k}", v) for k, v in r["also"].items())]:
            ratio = f"{mine['ratio']:11.2f}" if theirs else f"{'-':>11s}"
            out(f"{label:10s} {batch:5d} {n_ours:11,d} {mine['ours_ms'] / 1e3:12.3f} {ref_s} "
                f"{ratio}{rates}")
    if gemm:
        out(gemm.line("at the end"))
    out.close()


if __name__ == "__main__":
    main()
