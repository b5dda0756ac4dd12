"""train.image end to end on a tiny generated image folder: learning, resume, divergence, CLI."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from tinyhw import serialize
from train import image as train_image

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """3 classes of 32x32 noisy colour patches: learnable within a few dozen steps."""
    monkeypatch.setenv("TINYHW_CACHE", str(tmp_path / "cache"))
    r = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for split, n in (("train", 24), ("val", 8)):
        for c, colour in enumerate(COLOURS):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                a = np.clip(np.array(colour) + r.normal(0, 50, (32, 32, 3)), 0, 255)
                Image.fromarray(a.astype(np.uint8)).save(d / f"{i}.png")
    return root


def _run(folder, out, *extra):
    return train_image.main(["--arch", "resnet20", "--data", str(folder), "--out", str(out),
                             "--batch-size", "12", "--workers", "1", "--lr", "0.05",
                             "--device", "cpu", *extra])


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tiny_net_learns_and_writes_its_run_folder(folder, tmp_path, capsys):
    out = tmp_path / "run"
    final = _run(folder, out, "--epochs", "3")
    records = _records(out)
    epochs = [r for r in records if not r.get("final")]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[-1]["train_loss"] < 0.5 * math.log(3)       # well below chance
    assert final["top1_err"] < 2 / 3                             # better than chance on val
    assert records[-1]["final"] and records[-1]["val_top1_err"] == final["top1_err"]
    assert {"command.txt", "metrics.jsonl", "last.npz", "best.npz"} <= {
        p.name for p in out.iterdir()}
    assert "train.image --arch resnet20" in (out / "command.txt").read_text()
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith("final val top-1 error") and "top-5 error" in last_line


def test_resume_mid_epoch_matches_an_uninterrupted_run(folder, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    _run(folder, whole, "--epochs", "2", "--checkpoint-every", "0")
    _run(folder, split, "--epochs", "2", "--max-steps", "9")     # stops inside epoch 2
    _, _, meta = serialize.load_checkpoint(split / "last.npz")
    assert (meta["epoch"], meta["batch"], meta["step"]) == (1, 3, 9)
    _run(folder, split, "--epochs", "2", "--resume")
    a, oa, _ = serialize.load_checkpoint(whole / "last.npz")
    b, ob, _ = serialize.load_checkpoint(split / "last.npz")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for i, state in oa["state"].items():
        np.testing.assert_array_equal(state["momentum_buffer"],
                                      ob["state"][i]["momentum_buffer"])
    assert _records(whole)[1]["val_top1_err"] == _records(split)[1]["val_top1_err"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = train_image.F.cross_entropy
    calls = {"n": 0}

    def poisoned(logits, target, *args, **kwargs):
        loss = real(logits, target, *args, **kwargs)
        if logits.requires_grad:                 # training steps only
            calls["n"] += 1
            if calls["n"] == 5:
                return loss * float("nan")
        return loss
    monkeypatch.setattr(train_image.F, "cross_entropy", poisoned)
    with pytest.raises(SystemExit, match="diverged: training loss became nan at step 4"):
        _run(folder, out, "--epochs", "2", "--checkpoint-every", "2")
    _, _, meta = serialize.load_checkpoint(out / "last.npz")
    assert meta["step"] == 4
    model, _, _ = serialize.load_checkpoint(out / "last.npz")
    assert all(np.isfinite(v).all() for v in model.values())


def test_resume_refuses_a_different_arch(folder, tmp_path):
    out = tmp_path / "run"
    _run(folder, out, "--epochs", "1", "--max-steps", "1")
    with pytest.raises(SystemExit, match="holds an --arch resnet20 run"):
        train_image.main(["--arch", "highway20", "--data", str(folder), "--out", str(out),
                          "--resume", "--device", "cpu", "--batch-size", "12"])


def test_batch_larger_than_the_split_is_a_clear_error(folder, tmp_path):
    with pytest.raises(SystemExit, match="batch_size 128 > 72 items"):
        train_image.main(["--data", str(folder), "--out", str(tmp_path / "o"), "--device", "cpu"])


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="nowhere does not exist.*root/train/cat"):
        train_image.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])


@pytest.mark.parametrize("argv,message", [(["--epochs", "0"], "--epochs must be at least 1"),
                                          (["--lr", "-1"], "--lr > 0"),
                                          (["--arch", "resnet18"], "invalid choice")])
def test_bad_arguments_are_rejected(argv, message, capsys):
    with pytest.raises(SystemExit):
        train_image.parse_args(argv)
    assert message in capsys.readouterr().err


def test_help_lists_every_arch(capsys):
    with pytest.raises(SystemExit):
        train_image.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "highway_full50" in text and "--no-bn" in text and "--resume" in text


def test_learning_rate_schedules():
    a = train_image.parse_args(["--epochs", "10", "--lr", "0.2"])
    assert train_image.learning_rate(a, 0) == pytest.approx(0.2)
    assert train_image.learning_rate(a, 5) == pytest.approx(0.1)
    assert train_image.learning_rate(a, 10) == pytest.approx(0.0, abs=1e-12)
    a = train_image.parse_args(["--epochs", "8", "--schedule", "step", "--warmup", "1"])
    lrs = [train_image.learning_rate(a, e) for e in (0.5, 1, 3.9, 4, 5.9, 6, 7.9)]
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_topk_errors_counts_labels_outside_the_k_largest():
    logits = np.array([[0.1, 0.9, 0.0, 0.2, 0.3, 0.4, 0.5],    # label 1: top-1 right
                       [0.9, 0.1, 0.0, 0.2, 0.3, 0.4, 0.5],    # label 1: 7th of 7
                       [0.9, 0.1, 0.0, 0.2, 0.3, 0.4, 0.5]])   # label 6: 2nd
    assert train_image.topk_errors(logits, np.array([1, 1, 6])) == [2, 1]
