"""train/threads.py: the BLAS-thread rule, driven by made-up step times (nothing here depends
on how fast this machine is), and the entry points running with --blas-threads."""
import argparse

import pytest

from tinyhw.ops.fast import jit
from tests.routes import jit_test

from tests.test_runs import _run, corpus_dir  # noqa: F401  (the fixture)
from train import threads
from train.threads import (PROBE, RETEST_SECONDS, RETEST_STEPS, SLOW_STEPS, WARMUP,
                           BlasThreads)


class Fake:
    """A BlasThreads on a pretend 4-core machine; steps take `cost[n]` seconds on n threads."""

    def __init__(self, cost, full=4):
        self.cost, self.now, self.sets = cost, 0.0, []
        self.blas = BlasThreads(adapt=True, full=full, set_count=self.sets.append,
                                clock=lambda: self.now)

    def steps(self, k):
        for _ in range(k):
            seconds = self.cost[self.blas.threads]
            self.now += seconds
            self.blas.step_done(seconds)
        return self.blas.threads


def probe_steps():
    return 2 * (PROBE + 1)   # each count: a settle step and PROBE measured ones


def test_picks_one_thread_when_one_thread_steps_are_faster():
    f = Fake({1: 0.3, 4: 2.9})
    assert f.steps(WARMUP + probe_steps()) == 1
    assert f.sets[0] == 1 and 4 in f.sets   # warmed up on 1, probed 4, came back to 1
    assert f.blas.postfix() == {"blas": 1}


def test_full_probe_stops_early_when_it_loses_by_far():
    f = Fake({1: 0.3, 4: 2.9})
    f.steps(WARMUP + PROBE + 1)          # warm-up and the 1-thread probe
    assert f.blas.threads == 4
    assert f.steps(1) == 1               # one full-count step over 2x the median: back to 1


def test_picks_the_full_count_when_one_thread_steps_are_slower():
    f = Fake({1: 0.3, 4: 0.2})
    assert f.steps(WARMUP + probe_steps()) == 4
    assert f.steps(RETEST_STEPS - 1) == 4   # kept until the next probe
    assert f.blas.postfix() == {"blas": 4}
    assert f.steps(1) == 1                  # which starts on 1 thread


def test_median_not_mean_decides():
    # warm-up and 1-thread probe at 0.3 s; full count: a slow settle step (not counted), then
    # two 9 s outliers among five steps
    times = iter([0.3] * (WARMUP + PROBE + 1) + [0.5] + [0.2] * 2 + [9.0] * 2 + [0.2])
    blas = BlasThreads(adapt=True, full=2, set_count=lambda n: None, clock=lambda: 0.0)
    for t in times:
        blas.step_done(t)
    assert blas.threads == 2   # full-count median 0.2 < 0.3, despite two 9 s outliers


def test_retests_after_n_steps_and_follows_the_neighbour():
    f = Fake({1: 0.3, 4: 0.2})
    assert f.steps(WARMUP + probe_steps()) == 4
    f.cost = {1: 0.3, 4: 2.9}           # a neighbour takes a core
    assert f.steps(RETEST_STEPS) == 1    # the next probe starts on 1 thread...
    assert f.steps(probe_steps()) == 1   # ...and 1 thread wins it
    f.cost = {1: 0.3, 4: 0.2}           # the neighbour leaves
    counts = [f.steps(1) for _ in range(RETEST_STEPS + probe_steps())]
    assert counts.count(4) > RETEST_STEPS / 2   # the next probe brought 4 threads back


def test_retests_after_some_minutes_of_slow_steps():
    f = Fake({1: 0.3, 4: 0.2})
    f.steps(WARMUP + probe_steps())
    f.cost = {1: RETEST_SECONDS / 3, 4: RETEST_SECONDS / 4}
    f.steps(4)                           # 4 steps, far fewer than RETEST_STEPS: time is up
    assert f.blas.threads == 1           # a new probe began


def test_a_neighbour_arriving_between_probes_starts_a_probe_at_once():
    f = Fake({1: 0.3, 4: 0.2})
    assert f.steps(WARMUP + probe_steps()) == 4
    f.cost = {1: 0.35, 4: 0.6}           # a neighbour takes a core: 3x slower on 4 threads
    assert f.steps(SLOW_STEPS - 1) == 4  # a step or two slow: not yet
    assert f.steps(1) == 1               # SLOW_STEPS in a row: a probe, starting on 1 thread
    assert f.steps(probe_steps()) == 1   # which 1 thread wins


def test_one_slow_step_among_normal_ones_does_not_start_a_probe():
    f = Fake({1: 0.3, 4: 0.2})
    f.steps(WARMUP + probe_steps())
    for _ in range(20):
        f.cost = {1: 0.3, 4: 0.9}
        f.steps(1)
        f.cost = {1: 0.3, 4: 0.2}
        assert f.steps(SLOW_STEPS) == 4


def test_on_one_thread_slow_steps_start_no_probe():
    f = Fake({1: 0.3, 4: 2.9})
    assert f.steps(WARMUP + probe_steps()) == 1
    f.cost = {1: 0.9, 4: 2.9}            # slower still: one thread is all it can fall back to
    sets = len(f.sets)
    f.steps(RETEST_STEPS - 1)
    assert len(f.sets) == sets


def test_switches_only_when_the_count_changes():
    f = Fake({1: 0.3, 4: 0.2})
    f.steps(WARMUP + probe_steps() + sum(RETEST_STEPS * 2 ** k + probe_steps() for k in range(3)))
    assert all(a != b for a, b in zip(f.sets, f.sets[1:]))
    assert len(f.sets) == 2 + 3 * 2      # 1, 4, then per probe 1 and 4


def test_a_steady_machine_is_probed_less_and_less_often():
    f = Fake({1: 0.03, 4: 0.02})   # short steps: RETEST_SECONDS never comes first
    f.steps(WARMUP + probe_steps())
    starts, step = [], 0
    while len(starts) < 5:
        before = f.blas.threads
        f.steps(1)
        step += 1
        if before == 4 and f.blas.threads == 1:
            starts.append(step)
    gaps = [b - a - probe_steps() for a, b in zip(starts, starts[1:])]
    assert gaps == [RETEST_STEPS * 2, RETEST_STEPS * 4, RETEST_STEPS * 8, RETEST_STEPS * 8]


def test_one_core_machine_never_adapts():
    sets = []
    blas = BlasThreads(adapt=True, full=1, set_count=sets.append)
    for _ in range(100):
        blas.step_done(1.0)
    assert sets == [] and blas.postfix() == {}


@pytest.mark.parametrize("env", [{}, {"OPENBLAS_NUM_THREADS": "2"}])
def test_an_explicit_flag_fixes_the_count(monkeypatch, env):
    for name in threads.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sets = []
    monkeypatch.setattr(threads, "set_blas_count", sets.append)
    blas = BlasThreads.for_run(3)
    for _ in range(3 * RETEST_STEPS):
        blas.step_done(1.0)
    assert sets == [3] and not blas.adapt and blas.postfix() == {}


@pytest.mark.parametrize("name", ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"])
def test_an_environment_variable_is_obeyed_without_the_flag(monkeypatch, name):
    for other in threads.ENV_VARS:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, "2")
    sets = []
    monkeypatch.setattr(threads, "set_blas_count", sets.append)
    blas = BlasThreads.for_run(None)
    for _ in range(3 * RETEST_STEPS):
        blas.step_done(1.0)
    assert sets == [] and not blas.adapt


def test_auto_adapts_without_flag_or_environment(monkeypatch):
    for name in threads.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "blas_count", lambda: 2)
    monkeypatch.setattr(threads, "set_blas_count", lambda n: None)
    assert BlasThreads.for_run(None).adapt
    assert BlasThreads.for_run("auto").adapt
    assert not BlasThreads.for_run(None, default=1).adapt   # the demo's default
    assert not BlasThreads.for_run("auto", device="gpu").adapt


def test_mpi_ranks_get_a_fixed_share_of_the_cores(monkeypatch):
    for name in threads.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    sets = []
    monkeypatch.setattr(threads, "blas_count", lambda: 8)
    monkeypatch.setattr(threads, "set_blas_count", sets.append)
    comm = argparse.Namespace(size=4, local_size=2)
    blas = BlasThreads.for_run("auto", comm)
    assert not blas.adapt and sets == [4]


def test_flag_values():
    assert threads.parse_flag("auto") == "auto" and threads.parse_flag("2") == 2
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            threads.parse_flag(bad)


def test_switching_through_threadpoolctl_sets_the_count():
    before = threads.blas_count()
    try:
        threads.set_blas_count(1)
        assert threads.blas_count() == 1
    finally:
        threads.set_blas_count(before)


@jit_test
def test_the_count_reaches_the_compiled_loops_and_spares_their_blas():
    """The jit routes' loops take the BLAS's count; the BLAS they call inside (SciPy's) stays
    on one thread per caller, even after a BLAS-wide limit that includes it."""
    from threadpoolctl import ThreadpoolController
    jit.prepare_blas()
    before = threads.blas_count()
    try:
        for n in (1, 2):
            ThreadpoolController().limit(limits=2, user_api="blas")   # SciPy's included
            threads.set_blas_count(n)
            assert jit.threads() == min(n, jit.numba.config.NUMBA_NUM_THREADS)
            assert {lib.num_threads for lib in jit._loop_blas.lib_controllers} == {1}
            assert jit._loop_blas.lib_controllers   # SciPy's BLAS was found
    finally:
        threads.set_blas_count(before)


@pytest.mark.parametrize("flag", ["1", "auto"])
def test_lm_runs_with_blas_threads(corpus_dir, tmp_path, flag):  # noqa: F811
    before = threads.blas_count()
    try:
        _run(corpus_dir, tmp_path / "run", "--epochs", "1", "--blas-threads", flag)
    finally:
        threads.set_blas_count(before)
    assert (tmp_path / "run" / "last.npz").exists()
