"""Train a convolutional Residual, Highway or plain net on an image folder (CIFAR-10, ImageNet).

    python -m train.image --arch resnet20 --data ../shared/data/cifar10
    python -m train.image --arch highway20 --no-bn --epochs 30 --out runs/highway20_nobn
    python -m train.image --arch resnet50 --data ../shared/data/imagenette-224-mini --batch-size 32
    python -m train.image --arch resnet32 --share-blocks --unshared-bn

The data folder holds train/<class>/<image> and val/<class>/<image>. CIFAR nets (resnet20 ...
plain110) read it with the CIFAR transforms (pad 4, random crop 32, flip); the 50-layer nets
with the ImageNet ones (random resized crop 224 and flip; shorter side 256, center crop 224).

Optimisation: SGD with momentum 0.9 and weight decay (default 5e-4, on every parameter), the
learning rate set every step by a cosine schedule (default) or a step schedule (times 0.1 at
50% and 75% of the epochs, He et al.'s CIFAR recipe in proportion), after an optional linear
warm-up. After every epoch (or every --val-every epochs, and always after the last) the val
split is scored: cross-entropy, top-1 and top-5 error.

Writes into --out: command.txt, metrics.jsonl (one record per epoch), last.npz (model,
optimizer, position and random state, written atomically at each epoch end and every
--checkpoint-every steps; --resume continues from it exactly) and best.npz (the model with the
lowest val top-1 error among the scored epochs). A NaN or infinite loss stops the run and keeps the last good checkpoint.
The last line printed gives the final val errors.

Every image file is checked before training: a file Pillow cannot read is an error naming it,
or with --skip-bad is left out (the run says how many, per split). --limit N trains and scores
on N images of each split, evenly spaced over the sorted files so every class appears: a quick
smoke run. A --batch-size whose training step cannot fit in memory is refused up front.

--share-blocks trains Jastrzebski et al. (2017)'s shared nets: in every stage the blocks after the
first are one block applied repeatedly (nets.convnet); --unshared-bn gives each of its iterations
its own batch norms. Both are saved in the checkpoints: --resume refuses a mismatch, and
train.analyze rebuilds the same net.
"""
import argparse
import math
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import tinyhw
import tinyhw.functional as F
from data.images import (DEFAULT_DATA_SETS, BadImageError, BatchLoader, ImageSizeError,
                         find_image_root, image_dataset)
from nets import ARCHS, archs_of, build_image_net, count_parameters, preset_of
from tinyhw import distributed, optim, serialize
from tinyhw.backend import keep_freed_memory, to_device
from train.runs import (CheckpointClock, check_same_flags, Diverged, StopSignals, add_run_arguments,
                        append_metrics, check_run_arguments, checkpoint_note, choose_device,
                        fail, open_run_folder, progress, read_checkpoint_meta, record_command,
                        remember_command, require_at_least_one, require_at_least_zero,
                        require_finite_at_least_zero, require_finite_model, require_memory,
                        require_positive_finite, resume,
                        run_final_pass, train_epochs)
from train import threads
from train.memory import gpu_free_bytes, training_bytes
from train.parallel import RANKS_FLAG, check_batch_split, launch, on_root, ranks_note

CHECKPOINT_KIND = "train.image"
DEFAULT_WEIGHT_DECAY = 5e-4   # CIFAR ResNets' usual L2 (He et al. 2016); train.report names others


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.image", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=tuple(ARCHS), default="resnet20",
                   help="net (default resnet20)")
    p.add_argument("--data", default=None, help="image folder with train/ and val/ (default "
                   "$TINYHW_DATA/cifar10 for CIFAR nets, $TINYHW_DATA/imagenette-224-mini else)")
    p.add_argument("--no-bn", dest="bn", action="store_false",
                   help="drop every batch norm (convolutions get biases instead)")
    p.add_argument("--share-blocks", action="store_true",
                   help="within every stage, the blocks after the first share their weights: "
                        "one block applied repeatedly (Jastrzebski et al. 2017)")
    p.add_argument("--unshared-bn", action="store_true",
                   help="with --share-blocks: one batch norm per iteration of the shared block")
    p.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch (default 128)")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default 0.1)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY,
                   help=f"L2 weight decay (default {DEFAULT_WEIGHT_DECAY:g})")
    p.add_argument("--schedule", choices=("cosine", "step"), default="cosine",
                   help="cosine to zero, or step: x0.1 at 50%% and 75%% of the epochs "
                        "(default cosine)")
    p.add_argument("--warmup", type=float, default=0.0,
                   help="epochs of linear warm-up from 0 to --lr (default 0; 1-2 helps nets "
                        "without BN)")
    p.add_argument("--val-every", type=int, default=1,
                   help="score the val split every N epochs and after the last one (default 1: "
                        "every epoch); on a CPU a full val pass costs about a third of an "
                        "epoch's training on as many images")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many training steps in all (default: no limit)")
    p.add_argument("--workers", type=int, default=2, help="loader threads (default 2)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only N images of train/ and N of val/, evenly spaced over the "
                        "sorted files so every class appears (smoke runs; default: all)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out image files Pillow cannot read, and say how many (default: "
                        "such a file is an error)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where to compute (default auto: the GPU when one is usable)")
    p.add_argument("--out", default=None, help="run folder (default runs/image_<arch>[_nobn])")
    add_run_arguments(p, checkpoint_every=200)
    args = p.parse_args(argv)
    require_at_least_one(p, args, ("epochs", "batch_size", "workers", "max_steps", "limit",
                                   "val_every"))
    require_positive_finite(p, args, ("lr",))
    require_finite_at_least_zero(p, args, ("weight_decay", "warmup"))
    require_at_least_zero(p, args, ("seed",))
    if not 0 <= args.momentum < 1:      # False for NaN too
        p.error(f"--momentum must be at least 0 and below 1, got {args.momentum}")
    if args.unshared_bn and not (args.share_blocks and args.bn):
        p.error("--unshared-bn needs --share-blocks and batch norms (not --no-bn)")
    check_run_arguments(p, args)
    args.out = Path(args.out or f"runs/image_{args.arch}{'' if args.bn else '_nobn'}"
                                f"{sharing_suffix(args)}")
    remember_command(args, "train.image", argv)
    return args


def sharing_suffix(args):
    """'_shared', '_shared_unsharedbn' or '' for the default run folder."""
    return "_shared" * args.share_blocks + "_unsharedbn" * args.unshared_bn


def net_name(args):
    """The net in words for printed lines: 'resnet20 without BN, shared blocks' and so on."""
    sharing = ", shared blocks" * args.share_blocks + " (unshared BN)" * args.unshared_bn
    return f"{args.arch}{'' if args.bn else ' without BN'}{sharing}"


def learning_rate(args, progress):
    """The learning rate after `progress` epochs (a float: epoch + fraction of it)."""
    schedule = optim.warmup_step_lr if args.schedule == "step" else optim.warmup_cosine_lr
    return schedule(args.lr, progress, args.epochs, args.warmup)


def topk_errors(logits, labels, ks=(1, 5)):
    """Number of samples whose label is not among the k largest logits, for each k."""
    logits = np.asarray(logits)
    order = np.argsort(-logits, axis=1)
    return [int((order[:, :k] != labels[:, None]).all(axis=1).sum()) for k in ks]


def evaluate(model, loader, device):
    """Mean cross-entropy and top-1 / top-5 error (fractions) over every sample of `loader`."""
    model.eval()
    loss, wrong1, wrong5, count = 0.0, 0, 0, 0
    with tinyhw.no_grad():
        for x, y in progress(loader.epoch(0), len(loader), "val", "batch"):
            logits = model(tinyhw.Tensor(to_device(x, device)))
            loss += F.cross_entropy(logits, tinyhw.Tensor(to_device(y, device)), "sum").item()
            e1, e5 = topk_errors(to_device(logits.data, "cpu"), y)
            wrong1, wrong5, count = wrong1 + e1, wrong5 + e5, count + len(y)
    return {"loss": loss / count, "top1_err": wrong1 / count, "top5_err": wrong5 / count}


class Trainer:
    """Holds the run's state; `save`/`load` write and read exactly that state."""

    def __init__(self, args, train_set, val_set, device, comm=None):
        self.args, self.device = args, device
        self.comm = comm = comm or distributed.world()
        tinyhw.manual_seed(args.seed)
        self.model = build_image_net(args.arch, train_set.num_classes, args.bn,
                                     args.share_blocks, args.unshared_bn).to(device)
        comm.broadcast_parameters(self.model.state_dict().values())   # rank 0's model
        if comm.rank > 0:   # dropout, should a net have any: each rank draws its own
            tinyhw.manual_seed(distributed.rank_seed(args.seed, comm.rank))
        self.opt = optim.SGD(self.model.parameters(), lr=args.lr, momentum=args.momentum,
                             weight_decay=args.weight_decay)
        # Each rank builds its share of every batch, with the batch's own order and random
        # augmentation: together the ranks see exactly the batch a single process would.
        self.train_loader = BatchLoader(train_set, args.batch_size, shuffle=True, drop_last=True,
                                        seed=args.seed, workers=args.workers,
                                        part=None if comm.size == 1 else (comm.rank, comm.size))
        self.val_loader = BatchLoader(val_set, args.batch_size, shuffle=False, drop_last=False,
                                      seed=args.seed, workers=args.workers)
        self.epoch, self.batch, self.step = 0, 0, 0    # position: next batch of this epoch
        self.history, self.best_top1 = [], math.inf
        self.epoch_loss, self.epoch_wrong, self.epoch_seen = 0.0, 0, 0
        self.blas = threads.BlasThreads.for_run(getattr(args, "blas_threads", None), comm, device)

    # ---- checkpoints ----------------------------------------------------------------
    def _meta(self, rngs):
        keys = ("epoch", "batch", "step", "history", "best_top1", "epoch_loss", "epoch_wrong",
                "epoch_seen")
        meta = {k: getattr(self, k) for k in keys}
        meta.update(arch=self.args.arch, bn=self.args.bn, classes=self.train_loader.dataset.classes,
                    rng=rngs[0], rngs=rngs, kind=CHECKPOINT_KIND, **self.net_meta())
        meta["flags"] = self.flags()
        return meta

    def net_meta(self):
        """What rebuilds the net, besides arch and bn (train.analyze reads it)."""
        return {"share_blocks": self.args.share_blocks, "unshared_bn": self.args.unshared_bn}

    def flags(self):
        """The flags a resumed run must share with the saved one, because they fix the
        batches it sees again (the data folder, resolved; --batch-size and --limit) or the
        net (--share-blocks, --unshared-bn)."""
        return {"--data": str(Path(self.train_loader.dataset.root).resolve()),
                "--batch-size": self.args.batch_size, "--limit": self.args.limit,
                RANKS_FLAG: self.comm.size, "--share-blocks": self.args.share_blocks,
                "--unshared-bn": self.args.unshared_bn}

    def _check_same_data(self, meta, path):
        """Refuse other data, batches or classes than the checkpoint's run saw; what an older
        checkpoint did not record is not checked."""
        meta.setdefault("flags", {}).setdefault(RANKS_FLAG, 1)   # older runs: one process
        for flag in ("--share-blocks", "--unshared-bn"):           # older runs: no sharing
            meta["flags"].setdefault(flag, False)
        check_same_flags(meta, self.flags(), path)
        classes = self.train_loader.dataset.classes
        if "classes" in meta and list(meta["classes"]) != classes:
            raise ValueError("the image classes of --data differ from the run's: " +
                             class_difference(meta["classes"], classes, "the run", "--data"))

    def save(self, path):
        """Called on every rank: rank 0 writes the model and optimizer state (the same on every
        rank, but batch norm's running statistics, which are rank 0's) and every rank's random
        state."""
        self.require_finite()
        rngs = self.comm.gather_object(tinyhw.random.get_state())
        if self.comm.is_root:
            serialize.save_checkpoint(path, self.model.state_dict(), self.opt.state_dict(),
                                      self._meta(rngs))
        self.comm.barrier()   # no rank goes on (or exits) before the file is written

    def load(self, path):
        read_checkpoint_meta(path, CHECKPOINT_KIND, ("arch", "bn", "epoch", "batch", "step",
                                                     "rng"))
        model_state, optim_state, meta = serialize.load_checkpoint(path)
        if (meta["arch"], meta["bn"]) != (self.args.arch, self.args.bn):
            fail(f"--resume: {path} holds an --arch {meta['arch']} run with bn={meta['bn']}, "
                 f"not --arch {self.args.arch} bn={self.args.bn}")
        self._check_same_data(meta, path)
        self.model.load_state_dict(model_state)
        self.opt.load_state_dict(optim_state)
        self._apply_changed_hyperparameters(path)
        for key in ("epoch", "batch", "step", "history", "best_top1", "epoch_loss",
                    "epoch_wrong", "epoch_seen"):
            setattr(self, key, meta[key])
        tinyhw.random.set_state(meta["rngs"][self.comm.rank] if "rngs" in meta else meta["rng"])

    def _apply_changed_hyperparameters(self, path):
        """The optimizer state of the checkpoint brings its --momentum and --weight-decay; the
        ones given now win (command.txt records them) and a note says what changed. (--lr,
        --warmup and --schedule set the learning rate of every step from the flags anyway.)"""
        for key in ("momentum", "weight_decay"):
            saved, given = self.opt.param_groups[0][key], getattr(self.args, key)
            if saved != given:
                flag = "--" + key.replace("_", "-")
                print(f"note: --resume: {path} was trained with {flag} {saved}; going on "
                      f"with {flag} {given}", flush=True)
                for group in self.opt.param_groups:
                    group[key] = given

    # ---- training -------------------------------------------------------------------
    def train_step(self, x, y):
        """This rank's share (x, y) of a batch: forward, backward of the cross-entropy's mean
        over the whole --batch-size (each rank scales its sum by 1 / --batch-size, and the
        gradients are summed over ranks), SGD update. Returns (loss, wrong) of the whole batch.
        Batch norm normalises with the statistics of this rank's share, as torch's
        DistributedDataParallel does without SyncBatchNorm."""
        self.model.train()
        logits = self.model(tinyhw.Tensor(to_device(x, self.device)))
        loss = F.cross_entropy(logits, tinyhw.Tensor(to_device(y, self.device)), "sum")
        loss = loss * (1.0 / self.args.batch_size)
        wrong = topk_errors(to_device(logits.data, "cpu"), y, ks=(1,))[0]
        value, wrong = self.comm.allreduce(loss.item(), wrong)   # a NaN on any rank stops all
        if not math.isfinite(value):
            raise Diverged(f"training loss became {value} at step {self.step} (epoch "
                           f"{self.epoch + 1}, batch {self.batch}); "
                           f"{checkpoint_note(self.args.out)}. Try a lower --lr or --warmup.")
        self.opt.zero_grad()
        loss.backward()
        self.comm.allreduce_gradients(self.model.parameters())
        self.opt.step()
        return value, int(wrong)

    def run_epoch(self):
        """Train from the saved position to the end of the epoch (or --max-steps)."""
        a, loader = self.args, self.train_loader
        steps = len(loader)
        bar = tqdm(total=steps, initial=self.batch, desc=f"epoch {self.epoch + 1}", unit="batch",
                   leave=False, dynamic_ncols=True, mininterval=1.0)
        start, seen = time.perf_counter(), 0
        clock = CheckpointClock(a.checkpoint_every, a.checkpoint_minutes, self.comm)
        for x, y in loader.epoch(self.epoch, start=self.batch):
            if a.max_steps is not None and self.step >= a.max_steps:
                bar.close()
                return False
            StopSignals.check(self.comm)   # a signal on any rank stops all after this step
            self.opt.param_groups[0]["lr"] = learning_rate(a, self.epoch + self.batch / steps)
            with self.blas:   # times the step; may switch BLAS threads (train/threads.py)
                loss, wrong = self.train_step(x, y)
            n = a.batch_size   # the whole batch (every training batch is whole: drop_last)
            self.epoch_loss += loss * n
            self.epoch_wrong += wrong
            self.epoch_seen += n
            self.batch, self.step, seen = self.batch + 1, self.step + 1, seen + n
            bar.update(1)
            bar.set_postfix(loss=f"{self.epoch_loss / self.epoch_seen:.3f}",
                            img_s=f"{seen / (time.perf_counter() - start):.0f}",
                            **self.blas.postfix())
            if clock.due(self.step):
                self.save(a.out / "last.npz")
                clock.saved()
        bar.close()
        seconds = time.perf_counter() - start
        self.end_epoch(seconds, seen / max(seconds, 1e-9))
        self.save(a.out / "last.npz")
        return True

    def scores_val(self, epoch):
        """Whether the end of (1-based) epoch scores the val split (--val-every, and the last)."""
        return epoch % self.args.val_every == 0 or epoch == self.args.epochs

    def require_finite(self):
        require_finite_model(self.model, self.comm, self.step, self.args.out,
                             "Try a lower --lr or --warmup.")

    def end_epoch(self, seconds, images_per_s):
        a = self.args
        self.require_finite()   # before the model is scored (best.npz) or saved
        record = {"epoch": self.epoch + 1, "step": self.step,
                  "lr": self.opt.param_groups[0]["lr"],
                  "train_loss": self.epoch_loss / max(self.epoch_seen, 1),
                  "train_top1_err": self.epoch_wrong / max(self.epoch_seen, 1)}
        scored = ""
        if self.scores_val(self.epoch + 1):
            scored = self.score_val(record)
        record.update(seconds=seconds, images_per_s=images_per_s)
        self.history.append(record)
        if self.comm.is_root:
            append_metrics(a.out, record)
        print(f"epoch {self.epoch + 1:3d}  lr {record['lr']:.4f}  train loss "
              f"{record['train_loss']:.3f} err {100 * record['train_top1_err']:5.2f}%{scored}  "
              f"{images_per_s:.0f} img/s", flush=True)
        self.epoch, self.batch = self.epoch + 1, 0
        self.epoch_loss, self.epoch_wrong, self.epoch_seen = 0.0, 0, 0

    def score_val(self, record):
        """Score the val split into `record`, keep best.npz; the text the epoch line shows."""
        a = self.args
        val = on_root(self.comm, lambda: evaluate(self.model, self.val_loader, self.device))
        improved = val["top1_err"] < self.best_top1
        if improved:
            self.best_top1 = val["top1_err"]
            if self.comm.is_root:
                serialize.save(self.model.state_dict(), a.out / "best.npz",
                               meta={"arch": a.arch, "bn": a.bn, **self.net_meta(),
                                     "epoch": self.epoch + 1, **val})
        record.update(val_loss=val["loss"], val_top1_err=val["top1_err"],
                      val_top5_err=val["top5_err"])
        return (f"  val loss {val['loss']:.3f} top-1 {100 * val['top1_err']:5.2f}% top-5 "
                f"{100 * val['top5_err']:5.2f}%{'  (best)' if improved else ''}")


def class_difference(a, b, a_name, b_name, shown=5):
    """'only in <a_name>: x, y; only in <b_name>: z' for two lists of class names (the first
    `shown` of each)."""
    parts = []
    for name, mine, other in ((a_name, a, b), (b_name, b, a)):
        only = sorted(set(mine) - set(other))
        if only:
            more = f" and {len(only) - shown} more" if len(only) > shown else ""
            parts.append(f"only in {name}: {', '.join(only[:shown])}{more}")
    return "; ".join(parts) or "the same names in another order"


def _split(root, split, preset, args):
    """One split's dataset, its errors worded for the command line."""
    try:
        return image_dataset(root, split, preset=preset, train=split == "train",
                             skip_bad=args.skip_bad, limit=args.limit)
    except BadImageError as e:
        raise ValueError(f"{e}; rerun with --skip-bad to leave unreadable files out") from None
    except ImageSizeError as e:   # the API's advice names a preset, which --arch chooses here
        imagenet_archs = ", ".join(archs_of("imagenet"))
        raise ValueError(
            f"{e.problem}: CIFAR nets (--arch {args.arch}) stack images of one size; resize "
            f"them, or train a 50-layer net (--arch {imagenet_archs}), which crops "
            "and resizes every image to 224x224") from None


def load_data(args):
    """(root, train set, val set) of --data for --arch's preset; ValueError or
    FileNotFoundError with a one-line message."""
    preset = preset_of(args.arch)
    root = Path(args.data) if args.data else find_image_root(DEFAULT_DATA_SETS[preset])
    train_set = _split(root, "train", preset, args)
    val_set = _split(root, "val", preset, args)
    if train_set.classes != val_set.classes:
        raise ValueError(f"{root}: train/ and val/ hold different classes "
                         f"({len(train_set.classes)} and {len(val_set.classes)}): " +
                         class_difference(train_set.classes, val_set.classes, "train/", "val/"))
    if len(train_set.classes) < 2:
        raise ValueError(f"{root / 'train'} has one class folder ({train_set.classes[0]}): a "
                         "classifier needs at least 2")
    for split, dataset in (("train", train_set), ("val", val_set)):
        empty = [c for k, c in enumerate(dataset.classes) if not (dataset.labels == k).any()]
        if empty:     # --limit below the class count, or --skip-bad emptied a class folder
            how = " and ".join(f for f, on in ((f"--limit {args.limit}", args.limit),
                                               ("--skip-bad", args.skip_bad)) if on)
            named = ", ".join(empty[:3]) + (", ..." if len(empty) > 3 else "")
            raise ValueError(f"{root / split}: {how} leaves {len(empty)} of its "
                             f"{len(dataset.classes)} classes without an image ({named}); "
                             "every class needs one")
    if len(train_set) < args.batch_size:   # drop_last: no training batch at all
        more = " or a larger --limit" if args.limit is not None else ""
        raise ValueError(f"--batch-size {args.batch_size} is more than the {len(train_set)} "
                         f"images of train/ (an epoch drops the last, incomplete batch): use a "
                         f"smaller --batch-size{more}")
    if args.skip_bad:
        print(f"--skip-bad: left out {train_set.skipped} unreadable files of train/ and "
              f"{val_set.skipped} of val/", flush=True)
    return root, train_set, val_set


def require_step_memory(trainer):
    """Exit with one line when a training step of this rank's share of --batch-size images
    cannot fit in the memory of the device (train.memory's estimate, from the graph of one real
    image; on the CPU, times the ranks that share the machine)."""
    a, model, comm = trainer.args, trainer.model, trainer.comm
    x, _ = trainer.train_loader.dataset.batch(np.arange(1), np.random.default_rng(0))
    x = tinyhw.Tensor(to_device(x, trainer.device))
    model.eval()    # no running-statistics update, no random draw
    need = training_bytes(lambda: model(x), 1, a.batch_size // comm.size, model.parameters())
    if trainer.device == "cpu":
        need *= comm.local_size
    require_memory(need, f"--arch {a.arch} --batch-size {a.batch_size}",
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
        root, train_set, val_set = load_data(args)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    try:
        trainer = Trainer(args, train_set, val_set, device, comm)
    except ValueError as e:   # e.g. a --batch-size larger than the training split
        raise SystemExit(f"error: {e}") from None
    on_root(comm, lambda: require_step_memory(trainer))
    on_root(comm, lambda: open_run_folder(args.out, args.resume, args.overwrite))
    if args.resume:   # every rank reads the checkpoint
        resume(trainer, args.out, lambda t: f"epoch {t.epoch + 1}, batch {t.batch}, step {t.step}")
    if comm.is_root:
        record_command(args)
    print(f"{net_name(args)}: {count_parameters(trainer.model):,} parameters; {root}: "
          f"{len(train_set):,} train / {len(val_set):,} val images, {train_set.num_classes} "
          f"classes; device {device}{ranks_note(comm)}; out {args.out}", flush=True)
    try:
        train_epochs(trainer, args)
        return run_final_pass(args, lambda: on_root(comm, lambda: finish(trainer, args)))
    except BadImageError as e:   # a file damaged since the check, or one it cannot see into
        fail(f"{e}; {checkpoint_note(args.out)}. Rerun with --skip-bad (and --resume to "
             "continue) to replace unreadable files")


def finish(trainer, args):
    """Score the final model on the val split and print the final errors last."""
    last = trainer.history[-1] if trainer.history else None
    if trainer.batch == 0 and last and last["epoch"] == trainer.epoch and "val_loss" in last:
        # The model is the one the last epoch's end already scored: no second pass over val.
        val = {"loss": last["val_loss"], "top1_err": last["val_top1_err"],
               "top5_err": last["val_top5_err"]}
    else:
        val = evaluate(trainer.model, trainer.val_loader, trainer.device)
    append_metrics(args.out, {"final": True, "step": trainer.step, "epoch": trainer.epoch,
                              "val_top1_err": val["top1_err"], "val_top5_err": val["top5_err"],
                              "best_val_top1_err": trainer.best_top1,
                              # how many images the errors are over: their binomial noise
                              "val_images": len(trainer.val_loader.dataset)})
    print(f"final val top-1 error {100 * val['top1_err']:.2f}%, top-5 error "
          f"{100 * val['top5_err']:.2f}% ({net_name(args)}, {trainer.epoch} epochs)")
    return val


if __name__ == "__main__":
    launch(main)
