"""How many BLAS threads a training run uses, chosen by measuring its own steps.

On an idle machine OpenBLAS's default (one thread per core) is fastest for the big GEMMs. When
another process keeps a core busy, OpenBLAS's threads spin-wait on the core that process
needs, and a step can take 10x longer than on one thread (the small LM: 0.23 s -> 2.9 s; the
demo: 2.4 s -> 17.9 s for 100 steps). Neither setting is right all the time, and the neighbour
comes and goes, so the training loops let `BlasThreads` pick, through threadpoolctl:

* `--blas-threads N` fixes N threads; nothing is measured.
* Without the flag, an `OPENBLAS_NUM_THREADS` / `OMP_NUM_THREADS` / `MKL_NUM_THREADS` set in
  the environment is obeyed: the count is left alone, nothing is measured.
* Under MPI (more than one rank) every rank gets `cores / ranks on this node` threads (at least
  1), fixed: ranks step in lockstep and must not diverge in timing logic.
* On the GPU nothing is touched.
* Otherwise (`--blas-threads auto`, the default) the rule adapts. It runs the first `WARMUP`
  steps on 1 thread, not measured, then a probe: `PROBE` steps on 1 thread, then `PROBE` steps on the
  full count (OpenBLAS's count when the run started: the cores), the first step after each
  switch not counted. It keeps the count whose median step time is lower. The full-count probe
  stops early once its steps (the first included) are all over `GIVE_UP` x the 1-thread median:
  on a busy machine those steps cost the most, and the answer is already plain; one slow step
  too many is corrected by the next probe. A new probe follows `RETEST_STEPS` steps or
  `RETEST_SECONDS` seconds after the last, whichever comes first; the step interval doubles
  (up to `RETEST_STEPS * MAX_BACKOFF`) while probes keep choosing the same count and returns to
  `RETEST_STEPS` when one changes it, so a steady machine pays for few probes.
  A neighbour that arrives between probes would cost a run on the full count up to that
  whole interval at 2-3x its step time (bench/NOTES.md, "A busy core"); so while more than one
  thread is kept, `SLOW_STEPS` steps in a row over `SLOWDOWN` x the median that won the probe
  start a probe at once. On 1 thread there is nothing to fall back to, and nothing is watched.

A switch is `ThreadpoolController.limit` on a controller kept for the whole run (a few
microseconds; `threadpool_limits` would rescan the loaded libraries, ~0.2 ms), made only when
the count changes. The chosen count shows in the progress bar (`blas=1`) when it adapts.
The same count goes to the compiled loops of the jit routes (Numba's threads, when the `fast`
extra is installed): they take the place of the BLAS's threads in conv2d and batch_norm and
lose a busy core the same way. Left alone (an environment variable set), those follow
NUMBA_NUM_THREADS.
"""
import os
import statistics
import time

from tinyhw.ops.fast import jit

ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
WARMUP = 2            # first steps not measured (allocation, caches)
PROBE = 5             # measured steps per count in a probe
RETEST_STEPS = 200    # steps from one probe's end to the next probe
RETEST_SECONDS = 300.0
MAX_BACKOFF = 8       # the step interval grows to at most RETEST_STEPS * MAX_BACKOFF
GIVE_UP = 2.0         # a full-count step over GIVE_UP x the 1-thread median counts as lost
SLOWDOWN = 1.5        # kept on several threads, a step over SLOWDOWN x the probe's median ...
SLOW_STEPS = 3        # ... SLOW_STEPS times in a row starts a new probe

_controller = None


def controller():
    """The process's one ThreadpoolController (made on first use: after numpy is imported)."""
    global _controller
    if _controller is None:
        import numpy  # noqa: F401  (OpenBLAS must be loaded for the controller to see it)
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def blas_count():
    """The BLAS threads now in use (the largest, should several BLAS libraries be loaded)."""
    return max((lib.num_threads for lib in controller().lib_controllers), default=1)


def set_blas_count(n):
    """n threads for the BLAS and for the engine's compiled loops (tinyhw/ops/fast/jit.py):
    both share the same cores, and the conv and batch-norm routes that use them run one
    after the other."""
    controller().limit(limits=n, user_api="blas")
    jit.set_threads(n)


def parse_flag(text):
    """`--blas-threads` values: 'auto' or a positive integer."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        import argparse
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got {text!r}")
    return n


def add_argument(parser, default="auto"):
    parser.add_argument("--blas-threads", type=parse_flag, default=None, metavar="N|auto",
                        help=f"BLAS threads: a number, or auto to measure steps on 1 thread and "
                             f"on all cores and keep the faster, re-measured every "
                             f"{RETEST_STEPS} steps (default {default}, unless "
                             f"OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set)")


def env_set(environ=None):
    environ = os.environ if environ is None else environ
    return any(environ.get(name, "").strip() for name in ENV_VARS)


class BlasThreads:
    """Call `step_done(seconds)` after every training step (or time the step with `with`).

    `fixed`: a count to set once and keep, or None to leave the count alone; `adapt`: measure
    (the count the rule starts from and probes against is `full`). `set_count`/`clock` are
    there for the tests; by default they are threadpoolctl and time.monotonic."""

    def __init__(self, fixed=None, adapt=False, full=None, set_count=None, clock=time.monotonic):
        self._set = set_count or set_blas_count
        self._clock = clock
        self.adapt = adapt
        self.full = full if full is not None else (blas_count() if adapt or fixed else 1)
        self.threads = None
        if fixed is not None:
            self._switch(fixed)
        if adapt and self.full <= 1:
            self.adapt = False   # one core: nothing to choose
        if self.adapt:
            self._switch(1)      # warm up on 1 thread: never slow, however busy the machine
        self._phase = "warmup"
        self._left = WARMUP
        self._times = {}
        self._started = None
        self._interval = RETEST_STEPS
        self._chosen = None
        self._reference = None   # median step time of the count kept, from its probe
        self._slow = 0           # consecutive run steps over SLOWDOWN x that median

    @classmethod
    def for_run(cls, flag, comm=None, device="cpu", default="auto"):
        """The rule of the module docstring, from --blas-threads (None: not given) and the
        run's communicator (None: one process)."""
        if str(device) != "cpu":
            return cls()
        ranks = getattr(comm, "size", 1)
        ranks_here = getattr(comm, "local_size", ranks)
        if ranks > 1:
            n = flag if isinstance(flag, int) else (
                None if env_set() else max(1, blas_count() // max(ranks_here, 1)))
            return cls(fixed=n)
        if flag is None:
            if env_set():
                return cls()
            flag = default
        if flag == "auto":
            return cls(adapt=True)
        return cls(fixed=flag)

    # ---- timing -------------------------------------------------------------------------
    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.step_done(time.perf_counter() - self._t0)
        return False

    @property
    def settled(self):
        """True once the count is chosen: at once when fixed or left alone, after the first
        probe when adapting (bench/busy.py times the steps that follow)."""
        return not self.adapt or self._phase == "run"

    def postfix(self):
        """{"blas": n} for the progress bar while adapting, else {}."""
        return {"blas": self.threads or self.full} if self.adapt else {}

    def _switch(self, n):
        if n != self.threads:
            self._set(n)
            self.threads = n

    def _probe(self, n, phase):
        self._switch(n)
        self._phase, self._left, self._times[n] = phase, PROBE + 1, []   # + 1: the settle step

    def step_done(self, seconds):
        """Record one step's time; may switch the count for the next step."""
        if not self.adapt:
            return
        if self._phase in ("warmup", "run"):
            self._left -= 1
            due = self._left <= 0 or (self._phase == "run" and (
                self._clock() - self._started >= RETEST_SECONDS or self._slowed(seconds)))
            if due:
                self._times = {}
                self._probe(1, "one")
            return
        n = self.threads
        self._left -= 1
        if self._left < PROBE:   # the step right after the switch is not counted
            self._times[n].append(seconds)
        if self._phase == "one":
            if self._left <= 0:
                self._probe(self.full, "full")
            return
        one = statistics.median(self._times[1])
        if n == self.full and seconds > GIVE_UP * one and all(
                t > GIVE_UP * one for t in self._times[n]):
            return self._decide(1)   # all full-count steps so far lost by far: stop early
        if self._left <= 0:
            self._decide(1 if one < statistics.median(self._times[self.full]) else self.full)

    def _slowed(self, seconds):
        """Whether the last SLOW_STEPS steps on several threads were all far slower than the
        probe that chose this count: a neighbour has likely arrived."""
        if self.threads <= 1:
            return False
        self._slow = self._slow + 1 if seconds > SLOWDOWN * self._reference else 0
        return self._slow >= SLOW_STEPS

    def _decide(self, n):
        self._reference, self._slow = statistics.median(self._times[n]), 0
        self._switch(n)
        if n == self._chosen:
            self._interval = min(2 * self._interval, RETEST_STEPS * MAX_BACKOFF)
        else:
            self._chosen, self._interval = n, RETEST_STEPS
        self._phase, self._left, self._started = "run", self._interval, self._clock()
