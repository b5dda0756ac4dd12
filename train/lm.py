"""Train the character-aware language model (Kim et al. 2015) on Penn Treebank.

    python -m train.lm --variant c_only                       # one row of Greff et al.'s Table 1a
    python -m train.lm --config small --epochs 1 --out runs/lm_small_coupled

Kim et al.'s protocol: parameters uniform in [-0.05, 0.05]; plain SGD at learning rate 1.0
on the gradient of the sum over the 35 steps of the batch-mean negative log-likelihood;
global gradient norm clipped to 5; truncated BPTT carrying the LSTM state across windows of
35 steps over 20 parallel streams; after every epoch the validation perplexity is measured
and, from the third epoch on, the learning rate is halved when it improved by less than 1.0
over the previous epoch; the best-validation model is kept, and the test perplexity is
measured with it over the whole test split as one continuous stream.

Writes into --out: command.txt, metrics.jsonl (one record per epoch), last.npz (the
resumable state, written atomically every epoch, every --checkpoint-every steps, every
--checkpoint-minutes and on Ctrl-C or SIGTERM) and best.npz (the best-validation model). An
--out that already holds a run needs --resume (continue it) or --overwrite (start over).
The last line printed is the test perplexity.
"""
import argparse
import math
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import tinyhw
import tinyhw.functional as F
from data.ptb import KIM_MAX_WORD_LEN, Corpus, find_ptb_dir, num_windows, stream_batches
from nets import count_parameters
from nets.char_lm import CONFIGS, build
from tinyhw import distributed, optim, serialize
from tinyhw.backend import keep_freed_memory, to_device
from tinyhw.ops.highway import VARIANTS
from train import threads
from train.lm_eval import device_ints, evaluate, perplexity
from train.memory import gpu_free_bytes, training_bytes
from train.parallel import (RANKS_FLAG, check_batch_split, launch, my_share, on_root,
                            ranks_note)
from train.runs import (CheckpointClock, Diverged, StopSignals, add_run_arguments, append_metrics,
                        check_run_arguments, check_same_flags, checkpoint_note, choose_device,
                        fail, open_run_folder, read_checkpoint_meta, record_command,
                        remember_command, require_at_least_one, require_at_least_zero,
                        require_finite_model, require_memory, require_positive_finite, resume,
                        run_final_pass, train_epochs)

CHECKPOINT_KIND = "train.lm"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.lm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=VARIANTS, default="coupled",
                   help="highway variant (default coupled, Kim et al.'s layer)")
    p.add_argument("--config", choices=tuple(CONFIGS), default="large",
                   help="model size: large (Kim's LSTM-Char-Large), small, or tiny (default large)")
    p.add_argument("--epochs", type=int, default=25, help="epochs (default 25)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many training steps in all (default: no limit)")
    p.add_argument("--lr", type=float, default=1.0, help="initial learning rate (default 1.0)")
    p.add_argument("--batch-size", type=int, default=20, help="parallel streams (default 20)")
    p.add_argument("--seq-len", type=int, default=35, help="BPTT window (default 35)")
    p.add_argument("--clip", type=float, default=5.0, help="global gradient-norm clip (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where to compute (default auto: the GPU when one is usable)")
    p.add_argument("--data", default=None,
                   help="folder with train/valid/test.txt (default $TINYHW_DATA/ptb, then data/ptb)")
    p.add_argument("--max-word-len", type=int, default=KIM_MAX_WORD_LEN,
                   help="cap on a word's spelling, { and } included; longer words are cut "
                        f"(default {KIM_MAX_WORD_LEN}, Kim et al.'s max_word_l; PTB needs 21)")
    p.add_argument("--out", default=None, help="run folder (default runs/lm_<config>_<variant>)")
    add_run_arguments(p, checkpoint_every=500)
    args = p.parse_args(argv)
    require_at_least_one(p, args, ("epochs", "batch_size", "seq_len", "max_steps"))
    require_positive_finite(p, args, ("lr", "clip"))
    require_at_least_zero(p, args, ("seed",))
    check_run_arguments(p, args)
    if args.max_word_len < 3:
        p.error(f"--max-word-len must be at least 3 ({{, a character, }}), got "
                f"{args.max_word_len}")
    args.out = Path(args.out or f"runs/lm_{args.config}_{args.variant}")
    remember_command(args, "train.lm", argv)
    return args


def _detach(state):
    return tuple(s.detach() for s in state)


class Trainer:
    """Holds the run's state; `state_arrays`/`meta` are exactly what a checkpoint stores."""

    def __init__(self, args, corpus, device, comm=None):
        self.args, self.corpus, self.device = args, corpus, device
        self.comm = comm or distributed.world()
        tinyhw.manual_seed(args.seed)
        v = corpus.vocab
        self.model = build(args.config, args.variant, len(v.words), len(v.chars),
                           v.max_word_len).to(device)
        self.comm.broadcast_parameters(self.model.state_dict().values())  # rank 0's model
        if self.comm.rank > 0:   # dropout: each rank draws its own masks
            tinyhw.manual_seed(distributed.rank_seed(args.seed, self.comm.rank))
        self.streams = my_share(args.batch_size, self.comm)   # this rank's streams of a batch
        self.opt = optim.SGD(self.model.parameters(), lr=args.lr)
        self.halving = optim.KimHalving(self.opt)       # its history: the val perplexities
        self.epoch, self.window, self.step = 0, 0, 0    # position: next window of this epoch
        self.state = None                               # LSTM (h, c) carried across windows
        self.best_val = math.inf
        self.epoch_nll, self.epoch_tokens = 0.0, 0
        self.blas = threads.BlasThreads.for_run(getattr(args, "blas_threads", None),
                                                self.comm, device)

    # ---- checkpoints ----------------------------------------------------------------
    def save(self, path):
        """Called on every rank: rank 0 writes the model (the same on every rank), the LSTM
        state of all streams (each rank carries its own) and every rank's random state."""
        self.require_finite()
        carry = None if self.state is None else [to_device(s.data, "cpu") for s in self.state]
        gathered = self.comm.gather_object((carry, tinyhw.random.get_state()))
        if self.comm.is_root:
            arrays = {f"model.{k}": v for k, v in self.model.state_dict().items()}
            if carry is not None:   # streams in rank order: the layout of a single process
                arrays["carry.h"], arrays["carry.c"] = (
                    np.concatenate([c[i] for c, _ in gathered], axis=1) for i in (0, 1))
            meta = {"config": self.args.config, "variant": self.args.variant,
                    "epoch": self.epoch, "window": self.window, "step": self.step,
                    "lr": self.opt.param_groups[0]["lr"], "val_history": self.halving.history,
                    "best_val": self.best_val, "epoch_nll": self.epoch_nll,
                    "epoch_tokens": self.epoch_tokens, "rng": gathered[0][1],
                    "rngs": [rng for _, rng in gathered],
                    "kind": CHECKPOINT_KIND, "flags": self.flags()}
            serialize.save(arrays, path, meta=meta)
        self.comm.barrier()   # no rank goes on (or exits) before the file is written

    def flags(self):
        """The flags a resumed run must share with the saved one: they fix the data stream
        and the position in it (--data, --batch-size, --seq-len), the model's shape, or the
        learning rate (--lr starts Kim et al.'s halving schedule, whose current rate the
        checkpoint carries on: another --lr would be silently ignored)."""
        a = self.args
        return {"--data": str(self.corpus.folder.resolve()), "--batch-size": a.batch_size,
                "--seq-len": a.seq_len, "--max-word-len": a.max_word_len, "--lr": a.lr,
                RANKS_FLAG: self.comm.size}

    def load(self, path):
        meta = read_checkpoint_meta(path, CHECKPOINT_KIND, ("config", "variant", "epoch",
                                                            "window", "step", "lr", "rng"))
        meta.setdefault("flags", {}).setdefault(RANKS_FLAG, 1)   # older runs: one process
        check_same_flags(meta, self.flags(), path)
        arrays, meta = serialize.load(path)
        if (meta["config"], meta["variant"]) != (self.args.config, self.args.variant):
            fail(f"--resume: {path} holds a {meta['config']} {meta['variant']} run, not "
                 f"--config {self.args.config} --variant {self.args.variant}")
        self.model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
        self.state = None
        if "carry.h" in arrays:   # this rank's streams
            self.state = tuple(
                tinyhw.Tensor(to_device(np.ascontiguousarray(arrays[k][:, self.streams]),
                                        self.device)) for k in ("carry.h", "carry.c"))
        for key in ("epoch", "window", "step", "best_val", "epoch_nll", "epoch_tokens"):
            setattr(self, key, meta[key])
        self.halving.history = list(meta["val_history"])
        self.opt.param_groups[0]["lr"] = meta["lr"]
        tinyhw.random.set_state(meta["rngs"][self.comm.rank] if "rngs" in meta else meta["rng"])

    # ---- training -------------------------------------------------------------------
    def train_step(self, inputs, targets):
        """One window of the --batch-size streams, of which this rank computes its own: forward,
        backward of sum_t mean_b NLL (b over all streams: each rank scales its sum by 1 / the
        global batch, and the gradients are summed over ranks), clip the global norm, SGD
        update. Returns the NLL sum over all streams."""
        self.model.train()
        tokens = targets.size   # of all streams
        inputs, targets = inputs[:, self.streams], targets[:, self.streams]
        logits, state = self.model(device_ints(self.corpus.chars(inputs), self.device),
                                   self.state)
        nll = F.cross_entropy(logits, device_ints(targets.reshape(-1), self.device), "sum")
        nll_sum = self.comm.allreduce(nll.item())   # a NaN on any rank stops every rank
        # a mean NLL whose perplexity overflows (> ~709 nats a word; uniform guessing over
        # 10,000 words is 9.2) is divergence too, though finite: clipping keeps weights finite
        if not math.isfinite(perplexity(nll_sum / tokens)):
            became = (f"{nll_sum / tokens:.4g} nats per word (its perplexity overflows)"
                      if math.isfinite(nll_sum) else f"{nll_sum}")
            raise Diverged(f"training loss became {became} at step {self.step} (epoch "
                           f"{self.epoch + 1}, window {self.window}); "
                           f"{checkpoint_note(self.args.out)}. Try a lower --lr.")
        self.opt.zero_grad()
        (nll * (1.0 / self.args.batch_size)).backward()   # sum over steps of the batch mean
        self.comm.allreduce_gradients(self.model.parameters())
        optim.clip_grad_norm_(self.model.parameters(), self.args.clip)   # of the whole batch
        self.opt.step()
        self.state = _detach(state)
        return nll_sum

    def require_finite(self):
        require_finite_model(self.model, self.comm, self.step, self.args.out, "Try a lower --lr.")

    def end_epoch(self, log):
        a = self.args
        self.require_finite()   # before the model is scored (best.npz) or saved
        val = on_root(self.comm, lambda: evaluate(self.model, self.corpus, "valid", a.batch_size,
                                                  a.seq_len, self.device))
        lr = self.opt.param_groups[0]["lr"]
        train_ppl = perplexity(self.epoch_nll / max(self.epoch_tokens, 1))
        improved = val < self.best_val
        if improved:
            self.best_val = val
            if self.comm.is_root:
                serialize.save(self.model.state_dict(), a.out / "best.npz",
                               meta={"config": a.config, "variant": a.variant, "val_ppl": val})
        self.halving.step(val)
        record = {"epoch": self.epoch + 1, "step": self.step, "lr": lr, "train_ppl": train_ppl,
                  "val_ppl": val, "best_val_ppl": self.best_val, "seconds": log["seconds"],
                  "words_per_s": log["words_per_s"]}
        if self.comm.is_root:
            append_metrics(a.out, record)
        print(f"epoch {self.epoch + 1:2d}  lr {lr:.4g}  train ppl {train_ppl:8.2f}  "
              f"val ppl {val:8.2f}{'  (best)' if improved else ''}  "
              f"{log['words_per_s']:.0f} words/s", flush=True)
        self.epoch, self.window, self.state = self.epoch + 1, 0, None
        self.epoch_nll, self.epoch_tokens = 0.0, 0

    def run_epoch(self):
        """Train from the saved position to the end of the epoch (or --max-steps)."""
        a = self.args
        ids = self.corpus.ids["train"]
        total = num_windows(len(ids), a.batch_size, a.seq_len)
        bar = tqdm(total=total, initial=self.window, desc=f"epoch {self.epoch + 1}",
                   unit="win", leave=False, dynamic_ncols=True, mininterval=1.0)
        start, words = time.perf_counter(), 0
        clock = CheckpointClock(a.checkpoint_every, a.checkpoint_minutes, self.comm)
        for index, (inputs, targets) in enumerate(stream_batches(ids, a.batch_size, a.seq_len)):
            if index < self.window:
                continue   # resuming mid-epoch: skip windows already trained
            if a.max_steps is not None and self.step >= a.max_steps:
                bar.close()
                return False
            StopSignals.check(self.comm)   # a signal on any rank stops all after this step
            with self.blas:   # times the step; may switch BLAS threads (train/threads.py)
                nll_sum = self.train_step(inputs, targets)
            self.epoch_nll += nll_sum
            self.epoch_tokens += targets.size
            self.window, self.step = index + 1, self.step + 1
            words += targets.size
            bar.update(1)
            bar.set_postfix(ppl=f"{perplexity(self.epoch_nll / self.epoch_tokens):.1f}",
                            words_s=f"{words / (time.perf_counter() - start):.0f}",
                            **self.blas.postfix())
            if clock.due(self.step):
                self.save(a.out / "last.npz")
                clock.saved()
        bar.close()
        seconds = time.perf_counter() - start
        self.end_epoch({"seconds": seconds, "words_per_s": words / max(seconds, 1e-9)})
        self.save(a.out / "last.npz")
        return True


def check_split_sizes(corpus, batch_size):
    """Each split must fill at least one step of every stream it is read in (train and valid
    in --batch-size streams, test in one): else training or scoring cannot start."""
    for split, streams in (("train", batch_size), ("valid", batch_size), ("test", 1)):
        n = len(corpus.ids[split])
        if (n - 1) // streams < 1:
            where = f"--batch-size {batch_size}" if streams > 1 else "the test stream"
            fail(f"{corpus.folder / f'{split}.txt'} has {n} tokens (words and end-of-line "
                 f"tokens): too few for {where}, which needs at least {streams + 1}")


def require_step_memory(trainer):
    """Exit with one line when a training step cannot fit in memory (train.memory's estimate,
    from the graph of one time step of this rank's streams, times --seq-len; on the CPU, times
    the ranks that share the machine)."""
    a, model, comm = trainer.args, trainer.model, trainer.comm
    inputs = np.zeros((1, a.batch_size // comm.size), dtype=np.int64)
    chars = device_ints(trainer.corpus.chars(inputs), trainer.device)
    model.eval()    # no dropout draw: the random state stays as seeded
    need = training_bytes(lambda: model(chars)[0], 1, a.seq_len, model.parameters())
    if trainer.device == "cpu":
        need *= comm.local_size
    require_memory(need, f"--config {a.config} --batch-size {a.batch_size} "
                         f"--seq-len {a.seq_len}",
                   gpu_free_bytes() if trainer.device == "gpu" else None)


def main(argv=None):
    args = parse_args(argv)
    comm = distributed.world()   # one rank, or those mpiexec started
    check_batch_split(args.batch_size, comm)
    args.ranks = comm.size
    keep_freed_memory()
    device = choose_device(args.device)
    comm.use_device(device)
    try:
        corpus = Corpus(find_ptb_dir(args.data), args.max_word_len)
    except (FileNotFoundError, ValueError) as e:
        fail(e)
    check_split_sizes(corpus, args.batch_size)
    trainer = Trainer(args, corpus, device, comm)
    on_root(comm, lambda: require_step_memory(trainer))
    on_root(comm, lambda: open_run_folder(args.out, args.resume, args.overwrite))
    if args.resume:   # every rank reads the checkpoint
        resume(trainer, args.out,
               lambda t: f"epoch {t.epoch + 1}, window {t.window}, step {t.step}")
    if comm.is_root:
        record_command(args)
    v = corpus.vocab
    print(f"{args.config} char-LM, {args.variant} highway: {count_parameters(trainer.model):,} "
          f"parameters; {corpus.folder}: {len(v.words)} words, {len(v.chars)} chars, max word "
          f"length {v.max_word_len}; device {device}{ranks_note(comm)}; out {args.out}")
    train_epochs(trainer, args)
    return run_final_pass(args, lambda: on_root(comm, lambda: finish(trainer, args, corpus,
                                                                     device)))


def finish(trainer, args, corpus, device):
    """Test perplexity of the best-validation model (or the current one if no epoch has
    ended yet, e.g. a run stopped by --max-steps: said so in the output and the record)."""
    best = args.out / "best.npz"
    scored = "best"
    if best.is_file():
        trainer.model.load_state_dict(serialize.load(best)[0])
    else:
        scored = "last"
    test = evaluate(trainer.model, corpus, "test", 1, args.seq_len, device)
    append_metrics(args.out, {"final": True, "step": trainer.step, "model": scored,
                              "best_val_ppl": trainer.best_val, "test_ppl": test})
    which = ("best-validation model" if scored == "best" else
             "current model: no epoch has ended, so there is no best-validation model yet")
    print(f"test perplexity {test:.2f} ({which})")
    return test


if __name__ == "__main__":
    launch(main)
