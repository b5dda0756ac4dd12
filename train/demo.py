"""A ten-second demo of the engine: a deep highway MLP learns the two-spirals problem.

    python -m train.demo                    # 10 coupled highway layers: test accuracy ~0.99
    python -m train.demo --variant plain    # 10 plain layers do not train: 0.5

Two interleaved spirals in the plane are a classic task a shallow net cannot separate; a
stack of highway layers (any of the six variants) learns it with SGD (momentum 0.9, learning
rate annealed to zero) in 1500 steps, about ten seconds on two CPU cores. It runs numpy with
one BLAS thread unless --blas-threads (or, without it, OPENBLAS_NUM_THREADS) says otherwise.
The last line printed is the test accuracy (a linear classifier gets about 0.5).
"""
import argparse
import math

import numpy as np
from tqdm import tqdm

import tinyhw
import tinyhw.functional as F
from tinyhw import nn, optim
from tinyhw.backend import to_device
from tinyhw.ops.highway import VARIANTS
from train import threads
from train.runs import (choose_device, require_at_least_one, require_at_least_zero,
                        require_memory, require_positive_finite)

# Every matrix here is at most 128 x 64: a BLAS thread pool only adds hand-offs, and on a
# machine whose cores are busy its spin-waiting made the demo 7x slower (70 s instead of 10).
# So one thread by default, not the training runs' measuring `auto` (train/threads.py).
BLAS_DEFAULT = 1


def two_spirals(n, noise, rng):
    """n points per spiral: (2n, 2) float32 coordinates and (2n,) labels 0/1."""
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * math.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * math.pi)
    points = np.concatenate([arm, -arm]) + rng.normal(0, noise, (2 * n, 2))
    labels = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    return points.astype(np.float32), labels


class HighwayMLP(nn.Module):
    """Linear(2 -> width) + ReLU, `layers` highway layers, Linear(width -> 2)."""

    def __init__(self, width, layers, variant):
        super().__init__()
        self.inp = nn.Linear(2, width)
        self.blocks = nn.Sequential(*[nn.Highway(width, variant) for _ in range(layers)])
        self.out = nn.Linear(width, 2)

    def forward(self, x):
        return self.out(self.blocks(F.relu(self.inp(x))))


def accuracy(model, x, y):
    with tinyhw.no_grad():
        logits = model(x).numpy()
    return float((logits.argmax(1) == y).mean())


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=VARIANTS, default="coupled", help="highway variant")
    p.add_argument("--layers", type=int, default=10, help="number of highway layers (default 10)")
    p.add_argument("--width", type=int, default=64, help="units per layer (default 64)")
    p.add_argument("--steps", type=int, default=1500, help="SGD steps (default 1500)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--lr", type=float, default=0.1,
                   help="initial learning rate, annealed to 0 by a cosine (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                   help="where to compute (default auto: the GPU when one is usable)")
    threads.add_argument(p, default=BLAS_DEFAULT)
    args = p.parse_args(argv)
    require_at_least_one(p, args, ("layers", "width", "steps", "batch"))
    require_positive_finite(p, args, ("lr",))
    require_at_least_zero(p, args, ("seed",))
    return args


def main(argv=None):
    args = parse_args(argv)
    device = choose_device(args.device)
    blas = threads.BlasThreads.for_run(args.blas_threads, device=device, default=BLAS_DEFAULT)
    tinyhw.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train = two_spirals(1000, 0.02, rng)
    x_test, y_test = two_spirals(500, 0.02, rng)
    # at most 3 width x width maps per layer (H, T, C), each with its gradient and momentum,
    # plus the activations of a batch: refuse now rather than fail to allocate mid-build
    weights = 3 * args.layers * args.width * (args.width + 1)
    require_memory(4 * (3 * weights + 8 * args.layers * args.batch * args.width),
                   f"--layers {args.layers} --width {args.width} --batch {args.batch}")
    model = HighwayMLP(args.width, args.layers, args.variant).to(device)
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    test_x = tinyhw.tensor(x_test, device=device)
    print(f"{args.variant} highway MLP, {args.layers} layers of {args.width}, "
          f"{sum(p.size for p in model.parameters()):,} parameters, device {device}")
    bar = tqdm(range(args.steps), desc="train", unit="step")
    for step in bar:
        # Cosine annealing to zero: the last steps settle instead of jittering, so the final
        # accuracy does not depend on where SGD's noise happened to leave the weights.
        for group in opt.param_groups:
            group["lr"] = 0.5 * args.lr * (1 + math.cos(math.pi * step / args.steps))
        idx = rng.integers(0, len(x_train), args.batch)
        xb = tinyhw.tensor(x_train[idx], device=device)
        yb = tinyhw.Tensor(to_device(y_train[idx], device))
        with blas:
            loss = F.cross_entropy(model(xb), yb)
            if not math.isfinite(loss.item()):
                raise SystemExit(f"loss became {loss.item()} at step {step}: lower --lr")
            opt.zero_grad()
            loss.backward()
            opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", **blas.postfix())
    print(f"train accuracy {accuracy(model, tinyhw.tensor(x_train, device=device), y_train):.3f}")
    test_accuracy = accuracy(model, test_x, y_test)
    print(f"test accuracy {test_accuracy:.3f}")
    return test_accuracy


if __name__ == "__main__":
    main()
