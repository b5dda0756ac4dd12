"""Run folders that never lose work: refusing to reuse a run, Ctrl-C/SIGTERM checkpoints,
checkpoints by time, resume validation and valid metrics, on the tiny char-LM (train.lm)
and, where the mechanism is shared, train.image."""
import json
import os
import re
import signal
import stat
import zipfile

import numpy as np
import pytest

from tests.test_lm import _write_corpus
from tinyhw import serialize
from train import lm, runs


@pytest.fixture
def corpus_dir(tmp_path):
    return _write_corpus(tmp_path / "ptb")


def _run(corpus_dir, out, *extra, **flags):
    """train.lm on the tiny model; `flags` (batch_size="3") replace the defaults here."""
    options = {"config": "tiny", "data": corpus_dir, "out": out, "batch_size": 4, "seq_len": 6,
               "device": "cpu", "checkpoint_every": 0, **flags}
    argv = [str(a) for k, v in options.items() for a in (f"--{k.replace('_', '-')}", v)]
    return lm.main(argv + list(extra))


def _records(out):
    # parse_constant rejects NaN/Infinity/-Infinity, which json.loads would otherwise accept
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return [json.loads(line, parse_constant=refuse)
            for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---- a run folder is never silently reused ------------------------------------------------
def test_rerunning_into_a_finished_run_is_refused_and_leaves_it_untouched(corpus_dir, tmp_path):
    out = tmp_path / "run"
    _run(corpus_dir, out, "--epochs", "1")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SystemExit, match=r"already holds a run .*--resume.*--overwrite"):
        _run(corpus_dir, out, "--epochs", "1")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overwrite_starts_over_with_fresh_run_files(corpus_dir, tmp_path):
    out = tmp_path / "run"
    _run(corpus_dir, out, "--epochs", "1")
    (out / "notes.txt").write_text("mine")
    _run(corpus_dir, out, "--epochs", "1", "--overwrite")
    assert [r.get("epoch") for r in _records(out) if not r.get("final")] == [1]
    assert (out / "command.txt").read_text().count("\n") == 1
    assert (out / "notes.txt").read_text() == "mine"      # only the run's own files go


def test_resume_and_overwrite_together_are_refused(corpus_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _run(corpus_dir, tmp_path / "run", "--resume", "--overwrite")
    assert "give one of them" in capsys.readouterr().err


@pytest.mark.parametrize("make", ["file", "under_a_file"])
def test_out_that_cannot_be_a_folder_is_refused_before_training(corpus_dir, tmp_path, make):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if make == "file" else blocker / "run"
    message = "is a file, not a folder" if make == "file" else "is not a writable folder"
    with pytest.raises(SystemExit, match=message):
        _run(corpus_dir, out, "--epochs", "1")


def test_out_that_is_not_writable_is_refused(tmp_path, monkeypatch):
    # Tests run as root, for whom a chmod'ed folder stays writable: fail the probe instead.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(runs.tempfile, "TemporaryFile", refuse)
    with pytest.raises(SystemExit, match="not a writable folder .Permission denied"):
        runs.open_run_folder(tmp_path / "run")


# ---- Ctrl-C, SIGTERM and checkpoints by time ---------------------------------------------
def _signal_at_step(monkeypatch, step, signum):
    real = lm.Trainer.train_step

    def train_step(self, inputs, targets):
        if self.step == step:
            os.kill(os.getpid(), signum)
        return real(self, inputs, targets)
    monkeypatch.setattr(lm.Trainer, "train_step", train_step)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_resume_equals_an_uninterrupted_run(
        corpus_dir, tmp_path, monkeypatch, signum):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    _run(corpus_dir, straight, "--epochs", "1", "--max-steps", "12")
    with monkeypatch.context() as m:
        _signal_at_step(m, 5, signum)
        with pytest.raises(SystemExit) as e:
            _run(corpus_dir, stopped, "--epochs", "1", "--max-steps", "12")
    name = signal.Signals(signum).name
    assert f"{name}: stopped at step 6; checkpoint saved" in str(e.value)
    assert str(e.value).rstrip().endswith("--resume")
    assert serialize.read_meta(stopped / "last.npz")["step"] == 6   # the step in flight ends
    assert signal.getsignal(signum) not in (runs.StopSignals._handle,)   # handlers restored
    _run(corpus_dir, stopped, "--epochs", "1", "--max-steps", "12", "--resume")
    a, _ = serialize.load(straight / "last.npz")
    b, _ = serialize.load(stopped / "last.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_signal_during_validation_resumes_into_the_same_validation(corpus_dir, tmp_path,
                                                                      monkeypatch):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    _run(corpus_dir, straight, "--epochs", "1")
    real = lm.evaluate
    calls = {"n": 0}

    def evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(lm, "evaluate", evaluate)
        with pytest.raises(SystemExit, match="SIGTERM: stopped at step"):
            _run(corpus_dir, stopped, "--epochs", "1")
    assert not (stopped / "metrics.jsonl").exists()       # the epoch had not been scored
    _run(corpus_dir, stopped, "--epochs", "1", "--resume")
    assert [r["val_ppl"] for r in _records(stopped) if "val_ppl" in r] == \
        [r["val_ppl"] for r in _records(straight) if "val_ppl" in r]


def test_a_second_signal_stops_at_once(monkeypatch):
    with runs.StopSignals():
        runs.StopSignals._handle(signal.SIGINT, None)
        with pytest.raises(SystemExit, match="SIGINT again: stopped at once"):
            runs.StopSignals._handle(signal.SIGINT, None)
    runs.StopSignals.check()          # outside the context nothing is pending


def test_checkpoint_clock_is_due_by_steps_and_by_time(monkeypatch):
    now = {"t": 1000.0}
    monkeypatch.setattr(runs.time, "monotonic", lambda: now["t"])
    clock = runs.CheckpointClock(every_steps=5, minutes=10)
    assert [s for s in range(1, 12) if clock.due(s)] == [5, 10]
    now["t"] += 599
    assert not clock.due(7)
    now["t"] += 1
    assert clock.due(7)
    clock.saved()
    assert not clock.due(8)
    assert not runs.CheckpointClock(0, 0).due(5)          # both off: epoch ends only


def test_checkpoints_by_time_are_written_during_an_epoch(corpus_dir, tmp_path, monkeypatch):
    now = {"t": 0.0}
    monkeypatch.setattr(runs.time, "monotonic", lambda: now["t"])
    real = lm.Trainer.train_step

    def slow_step(self, inputs, targets):
        now["t"] += 61.0                                   # each step "takes" a minute
        return real(self, inputs, targets)
    monkeypatch.setattr(lm.Trainer, "train_step", slow_step)
    saved = []
    real_save = lm.Trainer.save
    monkeypatch.setattr(lm.Trainer, "save", lambda self, path: (saved.append(self.step),
                                                                real_save(self, path)))
    _run(corpus_dir, tmp_path / "run", "--epochs", "1", "--max-steps", "7",
         "--checkpoint-minutes", "3")
    assert saved == [3, 6, 7]                            # 3 minutes, 6 minutes, the stop


# ---- resume validation ---------------------------------------------------------------------
def _damage(path, how):
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "plain_numpy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif how == "npz_without_meta":
        with open(path, "wb") as f:
            np.savez(f, a=np.zeros(3))


@pytest.mark.parametrize("how,message", [
    ("empty", "cannot be read"), ("truncated", "cannot be read"),
    ("plain_numpy", "cannot be read"), ("npz_without_meta", "not a tinyhw training checkpoint")])
def test_resume_from_a_damaged_or_foreign_file_is_a_one_line_error(corpus_dir, tmp_path, how,
                                                                   message):
    out = tmp_path / "run"
    _run(corpus_dir, out, "--epochs", "1", "--max-steps", "3")
    _damage(out / "last.npz", how)
    with pytest.raises(SystemExit, match=message) as e:
        _run(corpus_dir, out, "--epochs", "1", "--resume")
    assert "\n" not in str(e.value)


def test_resume_refuses_a_checkpoint_of_the_other_entry_point(corpus_dir, tmp_path):
    out = tmp_path / "run"
    _run(corpus_dir, out, "--epochs", "1", "--max-steps", "2")
    serialize.save_checkpoint(out / "last.npz", {"w": np.zeros(2)}, None,
                              {"arch": "resnet20", "bn": True, "epoch": 0})
    with pytest.raises(SystemExit, match="is a train.image checkpoint, not one of train.lm"):
        _run(corpus_dir, out, "--epochs", "1", "--resume")
    meta = runs.read_checkpoint_meta  # and the image side refuses an LM checkpoint the same way
    _run(corpus_dir, tmp_path / "lm", "--epochs", "1", "--max-steps", "2")
    with pytest.raises(SystemExit, match="is a train.lm checkpoint, not one of train.image"):
        meta(tmp_path / "lm" / "last.npz", "train.image", ("arch",))


@pytest.mark.parametrize("flag,saved,value", [("batch_size", 4, 3), ("seq_len", 6, 5),
                                              ("max_word_len", 65, 10), ("lr", 1.0, 0.5)])
def test_resume_with_a_different_stream_flag_is_refused_naming_both_values(
        corpus_dir, tmp_path, flag, saved, value):
    out = tmp_path / "run"
    _run(corpus_dir, out, "--epochs", "1", "--max-steps", "3")
    name = "--" + flag.replace("_", "-")
    with pytest.raises(SystemExit, match=f"trained with {name} {saved}, not {name} {value}"):
        _run(corpus_dir, out, "--epochs", "1", "--resume", **{flag: value})


def test_resume_with_different_data_is_refused(corpus_dir, tmp_path):
    out = tmp_path / "run"
    _run(corpus_dir, out, "--epochs", "1", "--max-steps", "3")
    other = _write_corpus(tmp_path / "other")
    with pytest.raises(SystemExit, match=r"trained with --data .*ptb, not --data .*other"):
        _run(other, out, "--epochs", "1", "--resume")


def test_resume_without_a_checkpoint_is_refused_before_writing(corpus_dir, tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint at"):
        _run(corpus_dir, tmp_path / "run", "--resume")
    assert not (tmp_path / "run").exists()


# ---- arguments and divergence ---------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
    (["--clip", "0"], "--clip must be a positive finite number, got 0.0"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be 0 .off. or a number of steps, got -1"),
    (["--checkpoint-minutes", "-5"], "--checkpoint-minutes must be 0"),
    (["--max-word-len", "2"], "--max-word-len must be at least 3"),
    (["--seed", "-1"], "--seed must be 0 or more, got -1")])
def test_bad_flags_are_refused_naming_the_value(argv, message, capsys):
    with pytest.raises(SystemExit):
        lm.parse_args(argv)
    assert re.search(message, capsys.readouterr().err)


def test_divergence_before_any_checkpoint_says_there_is_none(corpus_dir, tmp_path, monkeypatch):
    real = lm.Trainer.train_step

    def poisoned(self, inputs, targets):
        self.model.decoder.bias.data[:] = np.nan
        return real(self, inputs, targets)
    monkeypatch.setattr(lm.Trainer, "train_step", poisoned)
    with pytest.raises(SystemExit, match="no checkpoint had been written yet") as e:
        _run(corpus_dir, tmp_path / "run", "--epochs", "1")
    assert "last.npz" not in str(e.value)


# ---- files a run writes ------------------------------------------------------------------
def test_metrics_stay_valid_json_when_a_value_is_infinite(tmp_path):
    runs.append_metrics(tmp_path, {"epoch": 1, "best_val_ppl": float("inf"),
                                   "history": [1.0, float("nan")]})
    assert _records(tmp_path) == [{"epoch": 1, "best_val_ppl": None, "history": [1.0, None]}]


def test_checkpoints_get_the_same_permissions_as_other_run_files(corpus_dir, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        _run(corpus_dir, out, "--epochs", "1")
    finally:
        os.umask(old)
    for name in ("last.npz", "best.npz", "metrics.jsonl"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def test_final_test_pass_shows_progress_and_says_which_model(corpus_dir, tmp_path, capsys):
    _run(corpus_dir, tmp_path / "run", "--epochs", "1", "--max-steps", "3")
    captured = capsys.readouterr()
    assert "test perplexity" in captured.err                    # the progress bar's label
    assert "no epoch has ended" in captured.out.splitlines()[-1]
    assert _records(tmp_path / "run")[-1]["model"] == "last"


def test_read_meta_reads_only_the_metadata(tmp_path):
    path = tmp_path / "c.npz"
    serialize.save({"w": np.arange(4.0)}, path, meta={"kind": "x", "v": [1, 2]})
    assert serialize.read_meta(path) == {"kind": "x", "v": [1, 2]}
    with zipfile.ZipFile(path) as zf:
        assert "w.npy" in zf.namelist()
    serialize.save({"w": np.arange(4.0)}, path)
    assert serialize.read_meta(path) is None
