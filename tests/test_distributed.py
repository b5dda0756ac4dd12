"""Data parallelism (tinyhw.distributed, train.parallel, BatchLoader's `part`).

The first tests need no MPI: the single process is the 1-rank case and never imports mpi4py,
gradient buckets, the loader's shares of a batch. The others start 2-rank jobs of train.lm and
train.image with `mpiexec -n 2 python tests/mpi_job.py ...` (the entry points' own main under
the same launcher, plus test hooks). They need the dist extra (pip install -e ".[dist]":
mpi4py and an mpiexec beside the Python that runs the tests, or on PATH) and skip without it;
TINYHW_REQUIRE_MPI=1 (set by .ci/run) turns that skip into a failure.

Equal updates: one step on 2 ranks and one step on 1 rank of the same global batch differ only
by the order of float32 additions (each rank sums half of the batch, then the halves are
added), so parameters are compared with a tolerance of 5e-6 of each array's largest value;
the largest seen are 3e-7 (LM) and 5e-7 (resnet20). Everything else (ranks against Everything else (ranks against each other, a resumed run
against an uninterrupted one) is compared bit for bit.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import tinyhw
from data.images import image_dataset
from data.loader import BatchLoader
from nets.char_lm import CONFIGS
from tinyhw import distributed, serialize
from train import image, lm, parallel

from .test_lm import _write_corpus

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "tests" / "mpi_job.py"
MPIEXEC = shutil.which("mpiexec", path=os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
REQUIRE_MPI = os.environ.get("TINYHW_REQUIRE_MPI", "") not in ("", "0")
STEP_RTOL = 5e-6


# ---- without MPI ------------------------------------------------------------------------
def test_a_single_process_never_imports_mpi4py():
    code = ("import sys, tinyhw, train.lm, train.image\n"
            "from tinyhw import distributed\n"
            "comm = distributed.world()\n"
            "assert (comm.rank, comm.size) == (0, 1)\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'\n")
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARIABLES}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=120)


class _Doubling:
    """A stand-in backend for 2 ranks holding the same gradients: the sum doubles them."""
    calls = 0

    def allreduce_(self, buffer):
        buffer *= 2
        _Doubling.calls += 1


def test_gradients_travel_in_flat_buckets_of_one_dtype():
    params = [tinyhw.tensor(np.ones(shape, dtype), requires_grad=True)
              for shape, dtype in [((300, 300), np.float32), ((10,), np.float32),
                                   ((200, 300), np.float32), ((5,), np.float64)]]
    for k, p in enumerate(params[:3]):
        p.grad = np.full(p.shape, k + 1.0, dtype=p.dtype)
    # params[3] has no gradient on this rank: it adds zeros and gets the sum
    buckets = distributed.make_buckets(params, bucket_bytes=400_000)
    assert [[p.shape for p in b.params] for b in buckets] == [[(300, 300), (10,)], [(200, 300)],
                                                              [(5,)]]
    comm = distributed.Communicator(bucket_bytes=400_000)
    comm.size, comm._cpu, _Doubling.calls = 2, _Doubling(), 0
    grads = [p.grad for p in params[:3]]
    comm.allreduce_gradients(params)
    assert _Doubling.calls == 3
    for k, p in enumerate(params[:3]):
        assert p.grad is grads[k]                      # summed in place
        np.testing.assert_array_equal(p.grad, 2 * (k + 1.0))
    np.testing.assert_array_equal(params[3].grad, np.zeros(5))


def test_one_rank_collectives_return_their_inputs():
    comm = distributed.Communicator()
    p = tinyhw.tensor(np.arange(4.0), requires_grad=True)
    p.grad = np.ones(4)
    comm.allreduce_gradients([p])
    comm.broadcast_parameters([p])
    assert comm.allreduce(2.5) == 2.5 and comm.allreduce(1.0, 3.0) == (1.0, 3.0)
    assert comm.any(True) and not comm.any(False)
    assert comm.gather_object("x") == ["x"] and comm.bcast_object(5) == 5
    np.testing.assert_array_equal(p.grad, np.ones(4))
    assert parallel.on_root(comm, lambda: 7) == 7


def test_a_batch_size_that_does_not_split_is_refused_in_one_line():
    with pytest.raises(SystemExit) as e:
        parallel.check_batch_split(20, SimpleNamespace(size=3))
    assert str(e.value).count("\n") == 0
    assert "--batch-size 20 does not split evenly across the 3 ranks" in str(e.value)


def _image_folder(root, side=32, per_class=4):
    r = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(2):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(r.integers(0, 256, (side, side + 4 * c, 3), dtype=np.uint8)
                                ).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("preset", ["cifar", "imagenet"])
def test_the_ranks_shares_of_a_batch_make_up_the_single_process_batch(tmp_path, monkeypatch,
                                                                       preset):
    monkeypatch.setenv("TINYHW_CACHE", str(tmp_path / "cache"))
    root = _image_folder(tmp_path / "imgs", side=32 if preset == "cifar" else 40)
    if preset == "cifar":   # one image size for the array dataset
        for f in root.rglob("*.png"):
            Image.open(f).convert("RGB").resize((32, 32)).save(f)
    ds = image_dataset(root, "train", preset=preset, train=True)
    whole = BatchLoader(ds, 4, seed=3, workers=0)
    parts = [BatchLoader(ds, 4, seed=3, workers=0, part=(r, 2)) for r in range(2)]
    for epoch in (0, 1):
        for (x, y), *shares in zip(whole.epoch(epoch), *(p.epoch(epoch) for p in parts)):
            np.testing.assert_array_equal(np.concatenate([s[0] for s in shares]), x)
            np.testing.assert_array_equal(np.concatenate([s[1] for s in shares]), y)
    with pytest.raises(ValueError, match="divisible"):
        BatchLoader(ds, 4, part=(0, 3))


# ---- 2-rank jobs ------------------------------------------------------------------------
@pytest.fixture
def mpi():
    missing = ("mpi4py" if importlib.util.find_spec("mpi4py") is None else
               "mpiexec" if MPIEXEC is None else None)
    if missing:
        message = f"{missing} is not installed (pip install -e \".[dist]\")"
        if REQUIRE_MPI:
            pytest.fail(f"TINYHW_REQUIRE_MPI=1, yet {message}")
        pytest.skip(message)


def _mpiexec(ranks, entry, *argv, hooks=(), timeout=120):
    """Run `mpiexec -n ranks python tests/mpi_job.py entry hooks -- argv`; (returncode, output).
    The job runs in its own process group, killed whole if it outlives `timeout`."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    command = [MPIEXEC, "-n", str(ranks), sys.executable, str(JOB), entry, *hooks, "--",
               *map(str, argv)]
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        output, _ = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        output, _ = job.communicate()
        pytest.fail(f"mpiexec -n {ranks} did not end within {timeout} s:\n{output}")
    return job.returncode, output


def _ok(result):
    code, output = result
    assert code == 0, output
    return output


def _lm_flags(corpus, out, *extra):
    return ["--config", "tiny", "--data", corpus, "--out", out, "--batch-size", "4",
            "--seq-len", "6", "--device", "cpu", "--checkpoint-every", "0", *extra]


def _assert_close(single, double, keys):
    for key in keys:
        a, b = single[key], double[key]
        scale = max(float(np.abs(a).max()), 1e-12)
        np.testing.assert_allclose(b, a, rtol=0, atol=STEP_RTOL * scale, err_msg=key)


def test_lm_steps_on_two_ranks_equal_steps_on_one(mpi, tmp_path, monkeypatch):
    corpus = _write_corpus(tmp_path / "ptb", lines=(40, 10, 10))
    flags = ("--max-steps", "2")   # the second step starts from the carried LSTM state
    _ok(_mpiexec(2, "lm", *_lm_flags(corpus, tmp_path / "two", *flags), hooks=["--no-dropout"]))
    monkeypatch.setitem(CONFIGS["tiny"], "dropout", 0.0)
    lm.main(_lm_flags(str(corpus), str(tmp_path / "one"), *flags))
    single, _ = serialize.load(tmp_path / "one" / "last.npz")
    double, meta = serialize.load(tmp_path / "two" / "last.npz")
    assert single.keys() == double.keys() and "carry.h" in single
    _assert_close(single, double, single)
    assert meta["flags"]["mpiexec -n"] == 2 and len(meta["rngs"]) == 2
    command = (tmp_path / "two" / "command.txt").read_text()
    assert command.startswith("mpiexec -n 2 python -m train.lm ")


def test_image_one_step_on_two_ranks_equals_one_step_on_one(mpi, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYHW_CACHE", str(tmp_path / "cache"))
    root = _image_folder(tmp_path / "imgs")
    for f in root.rglob("*.png"):
        Image.open(f).convert("RGB").resize((32, 32)).save(f)
    flags = ["--arch", "resnet20", "--no-bn", "--data", root, "--batch-size", "8",
             "--workers", "1", "--device", "cpu", "--max-steps", "1"]
    _ok(_mpiexec(2, "image", *flags, "--out", tmp_path / "two"))
    image.main([str(f) for f in flags] + ["--out", str(tmp_path / "one")])
    single, _ = serialize.load(tmp_path / "one" / "last.npz")
    double, _ = serialize.load(tmp_path / "two" / "last.npz")
    assert single.keys() == double.keys()
    _assert_close(single, double, [k for k in single if single[k].dtype.kind == "f"])


def _records(out):
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "words_per_s")}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_lm_stop_on_one_rank_and_resume_equal_an_uninterrupted_two_rank_run(mpi, tmp_path):
    """With dropout (per-rank streams): the ranks stay identical for 20 steps across an epoch
    end; SIGTERM on rank 1 alone stops both after the same step, rank 0 writes the checkpoint,
    and resuming on 2 ranks ends bit for bit where the uninterrupted run ends. Resuming on 1
    rank is refused."""
    corpus = _write_corpus(tmp_path / "ptb", lines=(40, 10, 10))
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    output = _ok(_mpiexec(2, "lm", *_lm_flags(corpus, straight, "--epochs", "2"),
                          hooks=["--check-identical"]))
    assert "parameters identical on 2 ranks" in output
    assert serialize.read_meta(straight / "last.npz")["step"] >= 20

    code, output = _mpiexec(2, "lm", *_lm_flags(corpus, stopped, "--epochs", "2"),
                            hooks=["--signal", "1:6:SIGTERM"])
    assert code != 0
    assert output.count("SIGTERM: stopped at step 7; checkpoint saved") == 1, output
    assert "Continue with: mpiexec -n 2 python -m train.lm" in output
    assert serialize.read_meta(stopped / "last.npz")["step"] == 7
    _ok(_mpiexec(2, "lm", *_lm_flags(corpus, stopped, "--epochs", "2", "--resume")))

    a, _ = serialize.load(straight / "last.npz")
    b, _ = serialize.load(stopped / "last.npz")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert _records(straight) == _records(stopped)

    with pytest.raises(SystemExit, match="mpiexec -n 2, not mpiexec -n 1"):
        lm.main(_lm_flags(str(corpus), str(stopped), "--epochs", "3", "--resume"))


def test_a_killed_rank_ends_the_job_and_keeps_the_last_checkpoint(mpi, tmp_path):
    corpus = _write_corpus(tmp_path / "ptb", lines=(40, 10, 10))
    out = tmp_path / "run"
    flags = _lm_flags(corpus, out, "--epochs", "1")
    flags[flags.index("--checkpoint-every") + 1] = "2"
    code, output = _mpiexec(2, "lm", *flags, hooks=["--kill", "1:5"], timeout=60)
    assert code != 0 and "Killed" in output, output
    meta = serialize.read_meta(out / "last.npz")
    assert meta["step"] == 4
    serialize.load(out / "last.npz")   # whole and readable


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(mpi, tmp_path):
    corpus = _write_corpus(tmp_path / "ptb", lines=(40, 10, 10))
    code, output = _mpiexec(2, "lm", *_lm_flags(corpus, tmp_path / "run", "--epochs", "1"),
                            hooks=["--nan", "1:3"], timeout=60)
    assert code != 0
    assert output.count("diverged: training loss became nan at step 3") == 1, output
    assert "MPI_Abort" not in output   # an ending every rank shares, not an abort


def test_the_entry_point_refuses_a_batch_that_does_not_split(mpi, tmp_path):
    corpus = _write_corpus(tmp_path / "ptb", lines=(40, 10, 10))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    job = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "train.lm",
                          *_lm_flags(str(corpus), str(tmp_path / "o"), "--batch-size", "3")],
                         cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, timeout=60)
    assert job.returncode != 0
    assert job.stderr.strip() == ("error: --batch-size 3 does not split evenly across the 2 "
                                  "ranks of mpiexec -n 2: each rank takes an equal share of "
                                  "the global batch"), job.stderr
    assert not (tmp_path / "o").exists()
