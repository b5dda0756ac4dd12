"""train.image end to end on a tiny generated image folder: learning, resume, divergence, CLI."""
import json
import math
import re
import shutil

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
    assert records[-1]["val_images"] == 3 * 8                   # what the errors are over
    assert {"command.txt", "metrics.jsonl", "last.npz", "best.npz"} <= {
        p.name for p in out.iterdir()}
    assert "train.image --arch resnet20" in (out / "command.txt").read_text()
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith("final val top-1 error") and "top-5 error" in last_line


def test_val_every_scores_every_nth_epoch_and_the_last(folder, tmp_path, capsys):
    """--val-every 2 over 3 epochs: the val split is scored after epochs 2 and 3 only; best.npz
    comes from a scored epoch, and the final record reuses epoch 3's scores."""
    out = tmp_path / "run"
    final = _run(folder, out, "--epochs", "3", "--val-every", "2")
    records = _records(out)
    epochs = [r for r in records if not r.get("final")]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert ["val_top1_err" in r for r in epochs] == [False, True, True]
    assert all("train_loss" in r for r in epochs)
    assert records[-1]["val_top1_err"] == epochs[-1]["val_top1_err"] == final["top1_err"]
    assert serialize.load(out / "best.npz")[1]["epoch"] in (2, 3)
    lines = capsys.readouterr().out.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch")]
    assert ["val loss" in line for line in epoch_lines] == [False, True, True]


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


def test_weights_overflowing_under_a_finite_loss_are_neither_scored_nor_saved(folder, tmp_path,
                                                                              monkeypatch):
    """An update can overflow the weights while the loss that led to it was finite (--lr 1e6
    did): the run stops before scoring or checkpointing them, and the checkpoint it keeps is
    the last good one."""
    out = tmp_path / "run"
    real = train_image.Trainer.train_step

    def overflowing(self, x, y):
        result = real(self, x, y)
        if self.step == 3:                     # the 4th update
            self.model.fc.weight.data[0, 0] = np.inf
        return result
    monkeypatch.setattr(train_image.Trainer, "train_step", overflowing)
    with pytest.raises(SystemExit, match=r"^diverged: the weights became NaN or infinite by "
                                         r"step 4 \(fc\.weight first\); the last good checkpoint "
                                         r"is kept in .*last\.npz\. Try a lower --lr"):
        _run(folder, out, "--epochs", "1", "--checkpoint-every", "2")
    model, _, meta = serialize.load_checkpoint(out / "last.npz")
    assert meta["step"] == 2
    assert all(np.isfinite(v).all() for v in model.values())
    assert not (out / "best.npz").exists() and not (out / "metrics.jsonl").exists()


def test_resume_applies_a_changed_momentum_and_weight_decay_and_says_so(folder, tmp_path,
                                                                         capsys):
    out = tmp_path / "run"
    _run(folder, out, "--epochs", "1", "--max-steps", "1")
    capsys.readouterr()
    _run(folder, out, "--epochs", "1", "--max-steps", "2", "--resume", "--momentum", "0.5",
         "--weight-decay", "0.001")
    notes = [l for l in capsys.readouterr().out.splitlines() if l.startswith("note: --resume")]
    assert [n.split("; ")[1] for n in notes] == ["going on with --momentum 0.5",
                                                 "going on with --weight-decay 0.001"]
    _, optim_state, _ = serialize.load_checkpoint(out / "last.npz")
    (group,) = optim_state["param_groups"]
    assert (group["momentum"], group["weight_decay"]) == (0.5, 0.001)


def test_resume_refuses_a_max_steps_already_passed(folder, tmp_path):
    out = tmp_path / "run"
    _run(folder, out, "--epochs", "1", "--max-steps", "3")
    metrics = (out / "metrics.jsonl").read_bytes() if (out / "metrics.jsonl").exists() else None
    with pytest.raises(SystemExit, match=r"^error: --max-steps 2: .*last\.npz is already at "
                                         r"step 3; give a --max-steps above 3, or none$"):
        _run(folder, out, "--epochs", "1", "--max-steps", "2", "--resume")
    assert ((out / "metrics.jsonl").read_bytes() if metrics is not None else None) == metrics


def test_resume_refuses_a_different_arch(folder, tmp_path):
    out = tmp_path / "run"
    _run(folder, out, "--epochs", "1", "--max-steps", "1")
    with pytest.raises(SystemExit, match="holds an --arch resnet20 run"):
        train_image.main(["--arch", "highway20", "--data", str(folder), "--out", str(out),
                          "--resume", "--device", "cpu", "--batch-size", "12"])


def test_batch_larger_than_the_split_is_a_clear_error(folder, tmp_path):
    with pytest.raises(SystemExit, match="--batch-size 128 is more than the 72 images of "
                                         "train/ .*: use a smaller --batch-size$"):
        train_image.main(["--data", str(folder), "--out", str(tmp_path / "o"), "--device", "cpu"])
    with pytest.raises(SystemExit, match="more than the 10 images .* or a larger --limit$"):
        train_image.main(["--data", str(folder), "--out", str(tmp_path / "o"), "--device", "cpu",
                          "--limit", "10"])


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="nowhere does not exist.*root/train/cat"):
        train_image.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])


@pytest.mark.parametrize("argv,message", [(["--epochs", "0"], "--epochs must be at least 1"),
                                          (["--val-every", "0"],
                                           "--val-every must be at least 1, got 0"),
                                          (["--lr", "-1"],
                                           "--lr must be a positive finite number, got -1.0"),
                                          (["--lr", "nan"], "--lr must be a positive finite"),
                                          (["--warmup", "inf"],
                                           "--warmup must be a finite number >= 0, got inf"),
                                          (["--weight-decay", "nan"],
                                           "--weight-decay must be a finite number >= 0, got nan"),
                                          (["--momentum", "nan"],
                                           "--momentum must be at least 0 and below 1, got nan"),
                                          (["--seed", "-1"], "--seed must be 0 or more, got -1"),
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


# ---- bad inputs: one clear line each ----------------------------------------------------------
def _error(capsys_or_none, *argv):
    """The SystemExit message of train.image.main(argv), checked to be one line."""
    with pytest.raises(SystemExit) as info:
        train_image.main(list(argv))
    message = str(info.value.code)
    assert "\n" not in message and message.startswith("error: ")
    return message


def _cpu(folder, out, *extra):
    return ["--data", str(folder), "--out", str(out), "--device", "cpu", "--workers", "1",
            "--batch-size", "12", *extra]


@pytest.mark.parametrize("arch, name", [("resnet20", "cat/x.png"), ("resnet50", "x.jpg")])
def test_unreadable_image_is_named_with_the_skip_bad_hint(folder, tmp_path, arch, name):
    bad = folder / "train" / "class1" / name.split("/")[-1]
    bad.write_text("not an image")
    message = _error(None, "--arch", arch, *_cpu(folder, tmp_path / "run"))
    assert str(bad) in message and "rerun with --skip-bad" in message


def test_one_class_is_not_a_classification_set(folder, tmp_path):
    for split in ("train", "val"):
        for c in ("class1", "class2"):
            shutil.rmtree(folder / split / c)
    message = _error(None, *_cpu(folder, tmp_path / "a"))
    assert message.endswith("imgs/train has one class folder (class0): a classifier needs at "
                            "least 2")


def test_a_class_left_without_images_by_limit_or_skip_bad_is_an_error(folder, tmp_path):
    message = _error(None, *_cpu(folder, tmp_path / "a", "--limit", "2", "--batch-size", "1"))
    assert message.endswith("imgs/train: --limit 2 leaves 1 of its 3 classes without an image "
                            "(class1); every class needs one")
    for i in range(8):                           # every val image of class2 unreadable
        (folder / "val" / "class2" / f"{i}.png").write_text("not an image")
    message = _error(None, *_cpu(folder, tmp_path / "b", "--skip-bad"))
    assert message.endswith("imgs/val: --skip-bad leaves 1 of its 3 classes without an image "
                            "(class2); every class needs one")


def test_truncated_jpeg_found_before_training(folder, tmp_path):
    path = folder / "val" / "class2" / "t.jpg"
    Image.fromarray(np.zeros((250, 300, 3), np.uint8) + 90).save(path, "JPEG")
    path.write_bytes(path.read_bytes()[:-300])
    message = _error(None, "--arch", "resnet50", *_cpu(folder, tmp_path / "run"))
    assert f"{path}: not a readable image" in message and "truncated" in message


def test_skip_bad_leaves_files_out_and_says_how_many(folder, tmp_path, capsys):
    (folder / "train" / "class0" / "bad.png").write_bytes(b"\x89PNG nothing else")
    (folder / "val" / "class1" / "bad.jpg").write_text("")
    (folder / "val" / "class2" / "bad2.jpg").write_text("")
    train_image.main(_cpu(folder, tmp_path / "run", "--skip-bad", "--max-steps", "1"))
    out = capsys.readouterr().out
    assert "--skip-bad: left out 1 unreadable files of train/ and 2 of val/" in out
    assert "72 train / 24 val images" in out


def test_image_failing_mid_training_is_one_line(folder, tmp_path, monkeypatch):
    real = train_image.BatchLoader._make
    calls = {"n": 0}

    def damaged(self, epoch, k, indices):
        calls["n"] += 1
        if calls["n"] == 3:
            raise train_image.BadImageError("/data/train/c/7.bmp: cannot decode as an image")
        return real(self, epoch, k, indices)
    monkeypatch.setattr(train_image.BatchLoader, "_make", damaged)
    message = _error(None, *_cpu(folder, tmp_path / "run", "--checkpoint-every", "1"))
    assert message.startswith("error: /data/train/c/7.bmp: cannot decode as an image; the last "
                              "good checkpoint is kept in")
    assert "--skip-bad" in message


def test_limit_uses_n_evenly_spaced_images_of_each_split(folder, tmp_path, capsys):
    out = tmp_path / "run"
    train_image.main(_cpu(folder, out, "--limit", "12", "--batch-size", "6", "--epochs", "1"))
    assert "12 train / 12 val images, 3 classes" in capsys.readouterr().out
    _, _, meta = serialize.load_checkpoint(out / "last.npz")
    assert meta["flags"]["--limit"] == 12 and meta["flags"]["--batch-size"] == 6
    assert meta["flags"]["--data"] == str(folder.resolve())


@pytest.mark.parametrize("argv", [["--limit", "0"], ["--limit", "-3"]])
def test_limit_must_be_positive(argv, capsys):
    with pytest.raises(SystemExit):
        train_image.parse_args(argv)
    assert "--limit must be at least 1" in capsys.readouterr().err


def test_different_classes_in_train_and_val_are_named(folder, tmp_path):
    (folder / "val" / "class2").rename(folder / "val" / "zebra")
    message = _error(None, *_cpu(folder, tmp_path / "run"))
    assert ("train/ and val/ hold different classes (3 and 3): only in train/: class2; "
            "only in val/: zebra") in message


def test_images_of_another_size_suggest_a_cli_remedy(folder, tmp_path):
    Image.new("RGB", (1, 1)).save(folder / "train" / "class1" / "tiny.png")
    message = _error(None, *_cpu(folder, tmp_path / "run"))
    assert "class1/tiny.png: is 1x1 but" in message and "is 32x32" in message
    assert "--arch resnet50" in message and "preset" not in message


@pytest.mark.parametrize("change, expected", [
    (["--batch-size", "6"], "was trained with --batch-size 12, not --batch-size 6"),
    (["--limit", "30"], "was trained with --limit (not given), not --limit 30"),
])
def test_resume_refuses_other_batches(folder, tmp_path, change, expected):
    out = tmp_path / "run"
    train_image.main(_cpu(folder, out, "--max-steps", "1"))
    message = _error(None, *_cpu(folder, out, "--resume", *change))
    assert expected in message and message.startswith("error: --resume: ")


def test_resume_refuses_other_data_or_classes(folder, tmp_path):
    out = tmp_path / "run"
    train_image.main(_cpu(folder, out, "--max-steps", "1", "--limit", "30"))
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    message = _error(None, *_cpu(copy, out, "--resume", "--limit", "30"))
    assert f"trained with --data {folder.resolve()}, not --data {copy.resolve()}" in message
    for split in ("train", "val"):
        (folder / split / "class0").rename(folder / split / "apple")
    message = _error(None, *_cpu(folder, out, "--resume", "--limit", "30"))
    assert ("the image classes of --data differ from the run's: only in the run: class0; "
            "only in --data: apple") in message


def test_resume_of_a_checkpoint_without_the_data_keys(folder, tmp_path):
    out = tmp_path / "run"
    train_image.main(_cpu(folder, out, "--max-steps", "1"))
    model, optimizer, meta = serialize.load_checkpoint(out / "last.npz")
    del meta["flags"], meta["kind"]                   # as written before they were recorded
    serialize.save_checkpoint(out / "last.npz", model, optimizer, meta)
    train_image.main(_cpu(folder, out, "--resume", "--max-steps", "2", "--batch-size", "6"))


def test_batch_too_large_for_memory_is_refused(folder, tmp_path, monkeypatch):
    from train import runs
    monkeypatch.setattr(runs, "available_memory_bytes", lambda: 2**20)   # 1 MiB left
    message = _error(None, *_cpu(folder, tmp_path / "run"))
    assert "--batch-size 12" in message and "0.0 GiB of memory is available" in message


def test_memory_estimate_covers_the_measured_peak():
    """train.memory's estimate lies between the peak tracemalloc sees in a training step of
    resnet20 and three times that."""
    import tracemalloc
    import tinyhw
    import tinyhw.functional as F
    from nets import build_image_net
    from tinyhw import optim
    from train.memory import training_bytes
    tinyhw.manual_seed(0)
    model = build_image_net("resnet20", 10)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    model.eval()
    estimate = training_bytes(lambda: model(tinyhw.Tensor(x[:1])), 1, 16, model.parameters())
    model.train()
    resident = sum(p.data.nbytes for p in model.parameters())
    tracemalloc.start()
    try:
        loss = F.cross_entropy(model(tinyhw.Tensor(x)), tinyhw.Tensor(np.arange(16) % 10))
        opt.zero_grad()
        loss.backward()
        opt.step()
        peak = tracemalloc.get_traced_memory()[1] + resident
    finally:
        tracemalloc.stop()
    assert peak <= estimate <= 3 * peak


def test_evaluation_shows_a_progress_bar_that_goes_away(folder, capsys):
    from data.images import image_dataset
    from nets import build_image_net
    val = image_dataset(folder, "val", preset="cifar", train=False, cache_dir=False)
    loader = train_image.BatchLoader(val, 8, shuffle=False, drop_last=False, workers=0)
    scores = train_image.evaluate(build_image_net("resnet20", 3), loader, "cpu")
    assert set(scores) == {"loss", "top1_err", "top5_err"}
    err = capsys.readouterr().err
    assert "val: " in err and "0/3" in err
    last = err.rstrip("\r").split("\r")[-1]
    # leave=False: cleared at the end (tqdm may add a cursor-up escape after other bars)
    assert re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", last).strip() == ""


# ---- shared blocks -------------------------------------------------------------------------------
def test_shared_blocks_are_trained_counted_saved_and_checked_on_resume(folder, tmp_path, capsys):
    out = tmp_path / "run"
    train_image.main(_cpu(folder, out, "--share-blocks", "--unshared-bn", "--epochs", "1"))
    first = capsys.readouterr().out.splitlines()[0]
    # resnet20's 172,954 with a head for 3 classes instead of 10.
    assert first.startswith("resnet20, shared blocks (unshared BN): 172,499 parameters;")
    for name in ("last.npz", "best.npz"):
        meta = serialize.load(out / name)[1]
        assert (meta["share_blocks"], meta["unshared_bn"]) == (True, True)
    message = _error(None, *_cpu(folder, out, "--resume", "--share-blocks"))
    assert "was trained with --unshared-bn True, not --unshared-bn False" in message
    message = _error(None, *_cpu(folder, out, "--resume"))
    assert "was trained with --share-blocks True, not --share-blocks False" in message
    train_image.main(_cpu(folder, out, "--resume", "--share-blocks", "--unshared-bn",
                          "--epochs", "2", "--max-steps", "7"))


def test_unshared_bn_needs_shared_blocks_with_batch_norms(capsys):
    for argv in (["--unshared-bn"], ["--share-blocks", "--unshared-bn", "--no-bn"]):
        with pytest.raises(SystemExit):
            train_image.parse_args(argv)
        assert "--unshared-bn needs --share-blocks and batch norms" in capsys.readouterr().err
    args = train_image.parse_args(["--share-blocks", "--unshared-bn"])
    assert str(args.out) == "runs/image_resnet20_shared_unsharedbn"
