"""One rank of a test job: `mpiexec -n N python tests/mpi_job.py lm|image [options] -- ARGV`
runs train.lm or train.image's main(ARGV) as the entry point does, with test hooks.

    --no-dropout         the tiny LM without dropout (so that 1 and 2 ranks compute the same)
    --check-identical    after training, compare every rank's parameters with rank 0's
                         (bit for bit) and print 'parameters identical on N ranks'
    --signal R:K:NAME    rank R sends itself signal NAME (e.g. SIGTERM) during step K
    --kill R:K           rank R kills itself (SIGKILL) during step K
    --nan R:K            rank R's model gets a NaN bias before step K (the LM's decoder)
"""
import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repository root

import numpy as np  # noqa: E402

from nets.char_lm import CONFIGS  # noqa: E402
from train import image, lm  # noqa: E402
from train.parallel import launch  # noqa: E402


def hook_steps(module, rank, step, action):
    """Run `action()` on `rank` when its Trainer starts training step `step`."""
    real = module.Trainer.train_step

    def train_step(self, *batch):
        if self.comm.rank == rank and self.step == step:
            action()
        return real(self, *batch)
    module.Trainer.train_step = train_step


def remember_trainers(module, trainers):
    real = module.Trainer.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        trainers.append(self)
    module.Trainer.__init__ = init


def check_identical(trainer):
    comm = trainer.comm
    mine = {k: np.asarray(v) for k, v in trainer.model.state_dict().items()
            if k in dict(trainer.model.named_parameters())}
    everyone = comm.gather_object(mine)
    if comm.is_root:
        for rank, theirs in enumerate(everyone):
            for name, value in mine.items():
                if not np.array_equal(theirs[name], value):
                    raise SystemExit(f"rank {rank}'s {name} differs from rank 0's")
        print(f"parameters identical on {comm.size} ranks", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("entry", choices=("lm", "image"))
    p.add_argument("--no-dropout", action="store_true")
    p.add_argument("--check-identical", action="store_true")
    p.add_argument("--signal", default=None)
    p.add_argument("--kill", default=None)
    p.add_argument("--nan", default=None)
    split = sys.argv.index("--")   # after it: the entry point's own flags
    args = p.parse_args(sys.argv[1:split])
    args.argv = sys.argv[split + 1:]
    module = lm if args.entry == "lm" else image
    if args.no_dropout:
        CONFIGS["tiny"]["dropout"] = 0.0
    if args.signal:
        rank, step, name = args.signal.split(":")
        hook_steps(module, int(rank), int(step),
                   lambda: os.kill(os.getpid(), signal.Signals[name]))
    if args.kill:
        rank, step = map(int, args.kill.split(":"))
        hook_steps(module, rank, step, lambda: os.kill(os.getpid(), signal.SIGKILL))
    trainers = []
    remember_trainers(module, trainers)
    if args.nan:
        rank, step = map(int, args.nan.split(":"))
        hook_steps(module, rank, step, lambda: trainers[-1].model.decoder.bias.data.fill(np.nan))

    def run():
        module.main(args.argv)
        if args.check_identical:
            check_identical(trainers[-1])
    launch(run)


if __name__ == "__main__":
    main()
