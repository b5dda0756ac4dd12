"""Time forward+backward of the engine's heaviest ops against PyTorch, in the same run.

    python bench/ops.py [--rounds 9] [--only 'conv2d,lstm,bn_*'] [--out results/bench/ops.txt]

Cases (float32, CPU): conv2d 64->64 3x3 pad 1 on (8, 64, 56, 56); batch_norm (training)
on the same activation; one LSTM layer (650 -> 650, batch 20, 35 steps); linear + cross
entropy (700 x 650 -> 10,000 classes); and the layers of a ResNet-20 training step on CIFAR
(batch 128): conv_* (3x3 convs of each stage, the stride-2 stage change, the 1x1 stride-2
projection; no bias, as before a BN) and bn_* (batch_norm training on each stage's activation).

This machine's speed swings by ~2x within minutes, so absolute times mean little: every
round times one repetition of ours and then one of torch's, and the figure reported is the
median over rounds of the per-round ratio ours/torch. Without torch installed only our
times are printed. The last column is numpy's float32 GEMM rate measured after every round
(bench/timing.py): it says which state a row was timed in.

Each timed call is preceded by a short pause (--pause, 0.3 s): after a GEMM, OpenBLAS's
worker threads spin for ~0.1 s and would otherwise steal the cores from the next call,
which is torch's, making our ratio look better than it is.
"""
import argparse
import fnmatch
import json
import os
import sys
from functools import partial

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
import tinyhw.functional as F  # noqa: E402
from tinyhw import Tensor  # noqa: E402
from tinyhw.backend import keep_freed_memory  # noqa: E402
from tinyhw.ops.conv import conv2d  # noqa: E402
from tinyhw.ops.norm import batch_norm  # noqa: E402
from tinyhw.ops.rnn import lstm  # noqa: E402
from timing import (Gemm, Report, add_out_argument, gemm_span,  # noqa: E402  (bench/timing.py,
                    import_torch, run_case)                      # beside this file)

torch = None   # imported by main() once the arguments parse: --help does not need it


def _params(rng, *shapes):
    return [Tensor(rng.standard_normal(s).astype(np.float32) * 0.1, requires_grad=True)
            for s in shapes]


def _torch_params(arrays):
    return [torch.tensor(a.data, requires_grad=True) for a in arrays]


def case_conv2d(rng, x_shape=(8, 64, 56, 56), out=64, kernel=3, stride=1, padding=1,
                with_bias=True):
    x, w, b = _params(rng, x_shape, (out, x_shape[1], kernel, kernel), (out,))
    b = b if with_bias else None
    y_shape = conv2d(x, w, b, stride=stride, padding=padding).shape
    g = rng.standard_normal(y_shape).astype(np.float32)
    tx, tw = _torch_params([x, w]) if torch else (None,) * 2
    tb = (_torch_params([b])[0] if with_bias else None) if torch else None

    def ours():
        conv2d(x, w, b, stride=stride, padding=padding).backward(g)

    def theirs():
        torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding).backward(
            torch.from_numpy(g))
    return ours, theirs


def case_batch_norm(rng, x_shape=(8, 64, 56, 56)):
    c = x_shape[1]
    x, w, b = _params(rng, x_shape, (c,), (c,))
    g = rng.standard_normal(x.shape).astype(np.float32)
    rm, rv = Tensor(np.zeros(c, np.float32)), Tensor(np.ones(c, np.float32))
    tx, tw, tb = _torch_params([x, w, b]) if torch else (None,) * 3
    trm, trv = (torch.zeros(c), torch.ones(c)) if torch else (None, None)

    def ours():
        batch_norm(x, rm, rv, w, b, training=True).backward(g)

    def theirs():
        torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training=True).backward(
            torch.from_numpy(g))
    return ours, theirs


def case_lstm(rng, steps=35, batch=20, hidden=650):
    x, h0, c0 = _params(rng, (steps, batch, hidden), (batch, hidden), (batch, hidden))
    w_ih, w_hh, b_ih, b_hh = _params(rng, (4 * hidden, hidden), (4 * hidden, hidden),
                                     (4 * hidden,), (4 * hidden,))
    g = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
    if torch:
        layer = torch.nn.LSTM(hidden, hidden)
        with torch.no_grad():
            for p, ours_p in zip((layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0,
                                  layer.bias_hh_l0), (w_ih, w_hh, b_ih, b_hh)):
                p.copy_(torch.from_numpy(ours_p.data))
        tx, th0, tc0 = _torch_params([x, h0, c0])

    def ours():
        out, _ = lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        out.backward(g)

    def theirs():
        out, _ = layer(tx, (th0[None], tc0[None]))
        out.backward(torch.from_numpy(g))
    return ours, theirs


def case_linear_cross_entropy(rng, rows=700, features=650, classes=10_000):
    x, w, b = _params(rng, (rows, features), (classes, features), (classes,))
    target = rng.integers(0, classes, rows)
    tx, tw, tb = _torch_params([x, w, b]) if torch else (None,) * 3
    tt = torch.from_numpy(target) if torch else None

    def ours():
        F.cross_entropy(F.linear(x, w, b), Tensor(target)).backward()

    def theirs():
        torch.nn.functional.cross_entropy(torch.nn.functional.linear(tx, tw, tb), tt).backward()
    return ours, theirs


def _cifar_conv(x_shape, out, kernel=3, stride=1, padding=1):
    return partial(case_conv2d, x_shape=x_shape, out=out, kernel=kernel, stride=stride,
                   padding=padding, with_bias=False)


CASES = {
    "conv2d": ("conv2d 64->64 3x3 p1, (8,64,56,56)", case_conv2d),
    "batch_norm": ("batch_norm train, (8,64,56,56)", case_batch_norm),
    "lstm": ("lstm 650->650, batch 20, 35 steps", case_lstm),
    # ResNet-20 on CIFAR, batch 128: the convs (no bias) and BNs of its three stages
    "conv_c16": ("conv 16->16 3x3 p1, (128,16,32,32)", _cifar_conv((128, 16, 32, 32), 16)),
    "conv_c16s2": ("conv 16->32 3x3 s2 p1, (128,16,32,32)",
                   _cifar_conv((128, 16, 32, 32), 32, stride=2)),
    "conv_proj": ("conv 16->32 1x1 s2, (128,16,32,32)",
                  _cifar_conv((128, 16, 32, 32), 32, kernel=1, stride=2, padding=0)),
    "conv_c32": ("conv 32->32 3x3 p1, (128,32,16,16)", _cifar_conv((128, 32, 16, 16), 32)),
    "conv_c64": ("conv 64->64 3x3 p1, (128,64,8,8)", _cifar_conv((128, 64, 8, 8), 64)),
    "bn_c16": ("batch_norm train, (128,16,32,32)",
               partial(case_batch_norm, x_shape=(128, 16, 32, 32))),
    "bn_c32": ("batch_norm train, (128,32,16,16)",
               partial(case_batch_norm, x_shape=(128, 32, 16, 16))),
    "bn_c64": ("batch_norm train, (128,64,8,8)",
               partial(case_batch_norm, x_shape=(128, 64, 8, 8))),
    "linear_ce": ("linear+cross_entropy 700x650->10000", case_linear_cross_entropy),
}


def main():
    parser = argparse.ArgumentParser(prog="python bench/ops.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds (default 9)")
    parser.add_argument("--pause", type=float, default=0.3,
                        help="seconds of idle before each timed call (default 0.3)")
    parser.add_argument("--only", default="",
                        help="comma-separated names or shell patterns (conv_*) from "
                        + ",".join(CASES))
    parser.add_argument("--json", help="also write the results to this JSON file")
    add_out_argument(parser, "results/bench/ops.txt")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's allocator settings alone (see keep_freed_memory)")
    args = parser.parse_args()
    global torch
    torch = import_torch()
    if not args.default_malloc:
        keep_freed_memory()  # both engines run in this process, so both benefit
    patterns = [n for n in args.only.split(",") if n] or ["*"]
    names = [n for n in CASES if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    unknown = [p for p in patterns if not fnmatch.filter(CASES, p)]
    if unknown:
        parser.error(f"--only: unknown case(s) {unknown}; choose from {list(CASES)}")
    out = Report(args.out)
    gemm = Gemm(torch)
    if torch is None:
        out("torch not installed: printing our times only (pip install torch==2.13.0 for ratios)")
    else:
        out(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"numpy {np.__version__}; {args.rounds} alternating rounds")
    out(gemm.line("at the start"))
    out(f"{'case':40s} {'ours ms':>9s} {'torch ms':>9s} {'ours/torch':>11s} {'GEMM GF/s':>10s}")
    results = {}
    for name in names:
        title, build = CASES[name]
        ours, theirs = build(np.random.default_rng(0))
        r = results[name] = run_case(ours, theirs if torch else None, args.rounds, args.pause,
                                     gemm=gemm)
        torch_ms = f"{r['torch_ms']:9.1f}" if r["torch_ms"] else f"{'-':>9s}"
        ratio = f"{r['ratio']:11.2f}" if r["ratio"] else f"{'-':>11s}"
        out(f"{title:40s} {r['ours_ms']:9.1f} {torch_ms} {ratio} "
            f"{gemm_span(r['gemm_gflops']):>10s}")
    out(gemm.line("at the end"))
    out.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
