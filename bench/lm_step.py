"""Seconds per training step of the character-aware LM, ours against the same net in torch.

    python bench/lm_step.py [--configs small,large] [--rounds 7] [--out results/bench/lm_step.txt]

One step is what train.lm does per window: forward over (35, 20) words of 21 characters,
backward of the sum over steps of the batch-mean NLL, global gradient-norm clipping to 5,
and a plain SGD update. The torch model below is the same architecture (Kim et al.'s
LSTM-Char with a coupled highway layer whose gate adds -2 as a constant), built only here,
as a reference. Rounds alternate one step of ours and one of torch's (after a short pause,
see bench/ops.py) and the figure reported is the median per-round ratio. The last column is
numpy's float32 GEMM rate measured after every round (bench/timing.py): this machine has a fast
and a slow state, and the rate says which one a row was timed in.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tinyhw  # noqa: E402
import tinyhw.functional as F  # noqa: E402
from nets.char_lm import CONFIGS, build  # noqa: E402
from tinyhw import optim  # noqa: E402
from tinyhw.backend import keep_freed_memory  # noqa: E402
from timing import (Gemm, Report, add_out_argument, gemm_span,  # noqa: E402  (bench/timing.py,
                    import_torch, run_case)                      # beside this file)

torch = None   # imported by main() once the arguments parse: --help does not need it

WORDS, CHARS, WORD_LEN, STEPS, BATCH = 10_000, 51, 21, 35, 20


def our_step(config):
    tinyhw.manual_seed(0)
    model = build(config, "coupled", WORDS, CHARS, WORD_LEN)
    model.train()
    opt = optim.SGD(model.parameters(), lr=1.0)
    r = np.random.default_rng(0)
    chars = tinyhw.Tensor(r.integers(1, CHARS, (STEPS, BATCH, WORD_LEN)))
    targets = tinyhw.Tensor(r.integers(0, WORDS, STEPS * BATCH))

    def step():
        logits, _ = model(chars)
        loss = F.cross_entropy(logits, targets, "sum") * (1.0 / BATCH)
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return step


def torch_step(config):
    c = CONFIGS[config]
    nn = torch.nn

    class TorchCharLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(CHARS, c["char_dim"], padding_idx=0)
            self.convs = nn.ModuleList([nn.Conv1d(c["char_dim"], c["filters"](w), w)
                                        for w in c["widths"]])
            width = sum(c["filters"](w) for w in c["widths"])
            self.H = nn.ModuleList([nn.Linear(width, width) for _ in range(c["highway_layers"])])
            self.T = nn.ModuleList([nn.Linear(width, width) for _ in range(c["highway_layers"])])
            self.lstm = nn.LSTM(width, c["hidden"], c["lstm_layers"], dropout=c["dropout"])
            self.drop = nn.Dropout(c["dropout"])
            self.decoder = nn.Linear(c["hidden"], WORDS)

        def forward(self, chars):
            t, b, length = chars.shape
            e = self.embed(chars.reshape(t * b, length)).transpose(1, 2)
            y = torch.cat([torch.tanh(conv(e)).amax(dim=2) for conv in self.convs], dim=1)
            for h_layer, t_layer in zip(self.H, self.T):
                gate = torch.sigmoid(t_layer(y) - 2.0)
                y = gate * torch.relu(h_layer(y)) + (1 - gate) * y
            out, _ = self.lstm(y.reshape(t, b, -1))
            return self.decoder(self.drop(out).reshape(t * b, -1))

    torch.manual_seed(0)
    model = TorchCharLM()
    for p in model.parameters():
        torch.nn.init.uniform_(p, -0.05, 0.05)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    r = np.random.default_rng(0)
    chars = torch.from_numpy(r.integers(1, CHARS, (STEPS, BATCH, WORD_LEN)))
    targets = torch.from_numpy(r.integers(0, WORDS, STEPS * BATCH))

    def step():
        loss = torch.nn.functional.cross_entropy(model(chars), targets, reduction="sum") / BATCH
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return step


def main():
    p = argparse.ArgumentParser(prog="python bench/lm_step.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="small,large", help="comma-separated (default small,large)")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    p.add_argument("--pause", type=float, default=0.3, help="idle seconds before each step")
    add_out_argument(p, "results/bench/lm_step.txt")
    args = p.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    bad = [c for c in configs if c not in ("small", "large")]
    if bad:
        p.error(f"--configs: unknown {bad}; choose from small, large")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    global torch
    torch = import_torch()
    keep_freed_memory()
    out = Report(args.out)
    gemm = Gemm(torch)
    if torch is None:
        out("torch not installed: printing our times only (pip install torch==2.13.0 for ratios)")
    else:
        out(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    out(gemm.line("at the start"))
    out(f"{'config':8s} {'ours s/step':>12s} {'torch s/step':>13s} {'ours/torch':>11s} "
        f"{'GEMM GF/s':>10s}")
    for config in configs:
        ours = our_step(config)
        theirs = torch_step(config) if torch else None
        r = run_case(ours, theirs, args.rounds, args.pause, min_seconds=0, gemm=gemm)
        ref_s = f"{r['torch_ms'] / 1e3:13.3f}" if theirs else f"{'-':>13s}"
        ratio = f"{r['ratio']:11.2f}" if theirs else f"{'-':>11s}"
        out(f"{config:8s} {r['ours_ms'] / 1e3:12.3f} {ref_s} {ratio} "
            f"{gemm_span(r['gemm_gflops']):>10s}")
    out(gemm.line("at the end"))
    out.close()


if __name__ == "__main__":
    main()
