"""Batches of a dataset, prepared by worker threads while the model computes.

Reproducibility does not depend on thread timing: the order of an epoch comes from
`default_rng([ORDER, seed, epoch])` and the augmentation of batch k from
`default_rng([AUGMENT, seed, epoch, k])`, so batch k is a function of (seed, epoch, k) alone,
whichever thread builds it and whenever. That is also what makes resuming exact:
`epoch(e, start=k)` yields the batches k, k+1, ... of the uninterrupted epoch.

Threads, not processes: NumPy's copies and arithmetic and Pillow's decoding and resizing release
the GIL, the batches need no pickling, and nothing has to be forked. Each epoch owns a small
ThreadPoolExecutor; at most `max(prefetch, workers)` batches are in preparation or waiting, and
the consumer receives them in order. Leaving the loop in any way (break, an exception, dropping
the iterator) closes the generator, whose `finally` cancels the batches not yet started and joins
the threads after the ones being built finish: no thread outlives its epoch.
"""
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np

# First words of the seed sequences, so that the order stream and the augmentation streams never
# coincide (numpy's SeedSequence ignores trailing zeros: [s, e] and [s, e, 0] seed alike).
ORDER, AUGMENT = 1, 2


def _check_int(name, value, low):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"BatchLoader: {name} must be an int >= {low}, got {value!r}")
    return int(value)


class BatchLoader:
    """Iterate a dataset in batches of `(x, y)`: x float32 (B, 3, S, S) C-contiguous, y int64 (B,).

    Parameters
    ----------
    dataset : an object with `len(dataset)` and `dataset.batch(indices, rng) -> (x, y)`
        (the datasets of `data.images`).
    batch_size : int
    shuffle : bool
        A new permutation every epoch (else the dataset's order).
    drop_last : bool
        Drop the last, smaller batch (training); keep it for evaluation.
    seed : int >= 0
        With the epoch number, fixes the order and every random augmentation.
    workers : int >= 0
        Threads that build batches; 0 builds them in the consumer's thread (no prefetching).
    prefetch : int >= 1
        Batches prepared ahead of the consumer (raised to `workers` so that each has one).
    part : (index, count) or None
        Data parallelism: yield only the `index`-th of `count` equal contiguous parts of each
        batch (batch_size must split evenly), built with the whole batch's random draws, so
        that the parts of all `count` loaders together are exactly the batch of a loader
        without `part`. The dataset's `batch` must accept `keep=` (those of data.images do).
    """

    def __init__(self, dataset, batch_size, shuffle=True, drop_last=True, seed=0, workers=2,
                 prefetch=2, part=None):
        self.dataset = dataset
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.workers = _check_int("workers", workers, 0)
        self.prefetch = _check_int("prefetch", prefetch, 1)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.keep = None if part is None else self._part_slice(*part)
        if len(dataset) == 0:
            raise ValueError("BatchLoader: the dataset is empty")
        if self.drop_last and len(dataset) < self.batch_size:
            raise ValueError(f"BatchLoader: drop_last=True with batch_size {self.batch_size} > "
                             f"{len(dataset)} items would give no batch at all")

    def _part_slice(self, index, count):
        count, index = _check_int("part count", count, 1), _check_int("part index", index, 0)
        if index >= count or self.batch_size % count or not self.drop_last:
            raise ValueError(f"BatchLoader: part ({index}, {count}) needs index < count, "
                             f"drop_last=True and a batch_size ({self.batch_size}) divisible "
                             f"by count")
        size = self.batch_size // count
        return slice(index * size, (index + 1) * size)

    def __len__(self):
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch):
        """The (N,) dataset indices of `epoch` in the order they are served."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([ORDER, self.seed, epoch]).permutation(n)

    def batch_indices(self, epoch):
        """The dataset indices of every batch of `epoch`: a list of len(self) int arrays."""
        order = self.order(epoch)
        b = self.batch_size
        return [order[k * b:(k + 1) * b] for k in range(len(self))]

    def batch_rng(self, epoch, k):
        """The random stream of batch `k` of `epoch`: a function of (seed, epoch, k) only."""
        return np.random.default_rng([AUGMENT, self.seed, epoch, k])

    def _make(self, epoch, k, indices):
        if self.keep is None:
            return self.dataset.batch(indices, self.batch_rng(epoch, k))
        return self.dataset.batch(indices, self.batch_rng(epoch, k), keep=self.keep)

    def epoch(self, epoch, start=0):
        """Yield the batches `start`, `start` + 1, ... of `epoch` as (x, y).

        Batch k is the same whatever `start`, `workers` or thread timing are, so resuming an
        epoch at its k-th batch with `start=k` continues it exactly."""
        epoch = _check_int("epoch", epoch, 0)
        start = _check_int("start", start, 0)
        if start > len(self):
            raise ValueError(f"BatchLoader.epoch: start={start} is past the last batch "
                             f"(an epoch has {len(self)} batches)")
        jobs = list(enumerate(self.batch_indices(epoch)))[start:]
        # Not a generator itself, so that bad arguments fail here rather than at the first next().
        return self._serial(epoch, jobs) if self.workers == 0 else self._threaded(epoch, jobs)

    def _serial(self, epoch, jobs):
        for k, indices in jobs:
            yield self._make(epoch, k, indices)

    def _threaded(self, epoch, jobs):
        """Keep up to max(prefetch, workers) batches submitted ahead; yield them in order."""
        ahead = max(self.prefetch, self.workers)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tinyhw-loader")
        try:
            jobs = iter(jobs)
            pending = deque(pool.submit(self._make, epoch, k, indices)
                            for k, indices in islice(jobs, ahead))
            while pending:
                batch = pending.popleft().result()   # a worker's exception is raised here
                for k, indices in islice(jobs, 1):   # refill before handing the batch over
                    pending.append(pool.submit(self._make, epoch, k, indices))
                yield batch
        finally:
            # Reached on exhaustion, break, an exception on either side, or garbage collection.
            pool.shutdown(wait=True, cancel_futures=True)
