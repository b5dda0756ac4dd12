"""Checkpoint files: exact round trips, metadata, atomic replacement, no pickle, clear errors."""
import math
import os
import zipfile

import numpy as np
import pytest

import tinyhw
from tinyhw import serialize


def _state():
    r = np.random.default_rng(0)
    return {
        "encoder.weight": r.standard_normal((4, 3)).astype(np.float32),
        "encoder.bias": r.standard_normal(4),                       # float64
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),       # 0-d
        "vocab.ids": np.arange(5, dtype=np.int32),
        "mask": np.array([True, False, True]),
        "transposed": np.arange(6.0).reshape(2, 3).T,                # not C-contiguous
        "file": np.zeros(2, np.uint8),   # a name np.savez would take as its own argument
    }


def test_round_trip_is_exact_and_keeps_dtypes(tmp_path):
    path = tmp_path / "model.npz"
    state = _state()
    serialize.save(state, path)
    loaded, meta = serialize.load(path)
    assert meta is None
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
        assert np.array_equal(loaded[key], value)


def test_tensors_are_saved_as_arrays(tmp_path):
    t = tinyhw.tensor([[1.5, -2.0]])
    serialize.save({"t": t}, tmp_path / "t.npz")
    loaded, _ = serialize.load(tmp_path / "t.npz")
    assert isinstance(loaded["t"], np.ndarray) and np.array_equal(loaded["t"], t.data)


def test_file_is_a_plain_npz_without_pickles(tmp_path):
    path = tmp_path / "plain.npz"
    serialize.save(_state(), path, meta={"epoch": 3})
    with np.load(path, allow_pickle=False) as archive:  # numpy alone can read it
        assert np.array_equal(archive["encoder.bias"], _state()["encoder.bias"])
        assert archive[serialize.META_KEY].dtype == np.uint8


def test_object_arrays_are_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "bad.npz"
    with pytest.raises(TypeError, match="dtype object"):
        serialize.save({"x": np.array([{"a": 1}], dtype=object)}, path)
    assert os.listdir(tmp_path) == []


def test_meta_round_trip(tmp_path):
    tinyhw.manual_seed(11)
    tinyhw.random.generator().random(3)
    meta = {"epoch": 4, "lr": 0.1 * 3, "best": math.inf, "rng": tinyhw.random.get_state(),
            "history": [1.5, 2.25], "loss": np.float32(2.5), "step": np.int64(12)}
    path = tmp_path / "m.npz"
    serialize.save({"w": np.ones(2)}, path, meta=meta)
    _, loaded = serialize.load(path)
    assert loaded["lr"] == 0.1 * 3 and loaded["best"] == math.inf
    assert loaded["loss"] == 2.5 and loaded["step"] == 12
    assert loaded["rng"] == meta["rng"] and loaded["history"] == [1.5, 2.25]
    # The restored RNG state continues the same stream.
    expected = tinyhw.random.generator().random(4)
    tinyhw.random.set_state(loaded["rng"])
    assert np.array_equal(tinyhw.random.generator().random(4), expected)


def test_meta_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        serialize.save({"w": np.ones(1)}, tmp_path / "x.npz", meta={"f": object()})
    with pytest.raises(ValueError, match="reserved"):
        serialize.save({serialize.META_KEY: np.ones(1)}, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


def test_save_leaves_no_temporary_files_and_overwrites(tmp_path):
    path = tmp_path / "ckpt.npz"
    serialize.save({"w": np.zeros(3)}, path)
    serialize.save({"w": np.ones(3)}, path)
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert np.array_equal(serialize.load(path)[0]["w"], np.ones(3))


def test_failure_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    serialize.save({"w": np.zeros(3)}, path, meta={"epoch": 1})

    def write_half_then_fail(handle, arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(serialize, "_write_archive", write_half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        serialize.save({"w": np.ones(3)}, path, meta={"epoch": 2})
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # the half file was removed
    state, meta = serialize.load(path)
    assert np.array_equal(state["w"], np.zeros(3)) and meta == {"epoch": 1}


def test_failure_at_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    serialize.save({"w": np.zeros(3)}, path)

    def fail(src, dst):
        raise KeyboardInterrupt  # e.g. the run is interrupted at the worst moment

    monkeypatch.setattr(serialize.os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        serialize.save({"w": np.ones(3)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert np.array_equal(serialize.load(path)[0]["w"], np.zeros(3))


def test_load_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        serialize.load(path)


def test_load_non_npz_files_name_the_path(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.npz.*not an .npz"):
        serialize.load(text)
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as f:
        np.save(f, np.ones(3))   # a .npy, not an archive
    with pytest.raises(ValueError, match="array.npz"):
        serialize.load(npy)


def test_load_truncated_archive_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.npz"
    serialize.save({"w": np.arange(1000.0)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + data[-22:])  # body cut, end record kept
    with pytest.raises((ValueError, zipfile.BadZipFile), match="cut.npz"):
        serialize.load(path)


def test_flatten_and_unflatten_nested_state():
    buf = np.arange(6.0).reshape(2, 3)
    state = {"state": {0: {"momentum_buffer": buf}, 3: {"momentum_buffer": buf + 1}},
             "param_groups": [{"lr": 0.1, "nesterov": True, "params": [0, 3]}]}
    arrays, skeleton = serialize.flatten_state(state, "optim")
    assert sorted(arrays) == ["optim.state.0.momentum_buffer", "optim.state.3.momentum_buffer"]
    rebuilt = serialize.unflatten_state(skeleton, arrays)
    assert list(rebuilt["state"]) == [0, 3]   # integer keys survive
    assert np.array_equal(rebuilt["state"][3]["momentum_buffer"], buf + 1)
    assert rebuilt["param_groups"] == state["param_groups"]


def test_flatten_rejects_colliding_keys():
    with pytest.raises(ValueError, match="same key"):
        serialize.flatten_state({"a.b": np.ones(1), "a": {"b": np.ones(1)}}, "x")


def test_checkpoint_with_optimizer_state(tmp_path):
    path = tmp_path / "run.npz"
    model = {"w": np.ones((2, 2), np.float32)}
    opt_state = {"state": {1: {"momentum_buffer": np.full(3, 0.5)}},
                 "param_groups": [{"lr": 0.25, "params": [0, 1]}]}
    serialize.save_checkpoint(path, model, opt_state, meta={"epoch": 9})
    model2, opt2, meta = serialize.load_checkpoint(path)
    assert list(model2) == ["w"] and np.array_equal(model2["w"], model["w"])
    assert np.array_equal(opt2["state"][1]["momentum_buffer"], np.full(3, 0.5))
    assert opt2["param_groups"] == opt_state["param_groups"] and meta == {"epoch": 9}
    with np.load(path, allow_pickle=False) as archive:
        assert "optim.state.1.momentum_buffer.npy" in zipfile.ZipFile(path).namelist()
        assert "model.w" in archive.files


@pytest.mark.skipif(not tinyhw.gpu_available(), reason="needs a GPU")
def test_gpu_arrays_are_saved_from_the_host(tmp_path):
    t = tinyhw.tensor(np.arange(6.0).reshape(2, 3), device="gpu")
    serialize.save({"t": t, "raw": t.data}, tmp_path / "g.npz")
    loaded, _ = serialize.load(tmp_path / "g.npz")
    assert all(isinstance(a, np.ndarray) for a in loaded.values())
    assert np.array_equal(loaded["raw"], np.arange(6.0).reshape(2, 3))
