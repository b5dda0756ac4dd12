"""The analyses of train.analyze on tiny nets trained here for two steps on a tiny image folder:
the properties that hold by construction, checks against direct computations, and the CLI's
files and messages (with and without matplotlib)."""
import argparse
import csv
import importlib.util
import json
import math
import sys

import numpy as np
import pytest
from PIL import Image

import nets
import tinyhw
import tinyhw.functional as F
from nets import build_image_net
from nets.blocks import init_gate_bias
from nets.char_lm import build as build_lm
from data.ptb import Corpus
from tinyhw import serialize
from train import analyze, image
from train.analysis import (common, estimation, gates, gradients, iterations, iterative, lesion,
                            lm_layers, shuffle)
from train.analysis.common import AnalysisError

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

CLASSES = ("ant", "bee", "cow")
PER_CLASS = 4     # images per class and split: 12 train images = 2 steps of 6


# ---- fixtures -------------------------------------------------------------------------------
def _make_folder(root):
    """root/{train,val}/<class>/<i>.png: coloured noise, a different mean colour per class."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(PER_CLASS):
                base = np.array([200 if j == c else 40 for j in range(3)])
                pixels = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The image folder, a cache outside the project, and a run folder per trained arch."""
    base = tmp_path_factory.mktemp("analyze")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYHW_CACHE", str(base / "cache"))
        root = _make_folder(base / "images")
        runs = {}
        for arch in ("resnet20", "highway20", "plain20"):
            out = base / "runs" / arch
            image.main(["--arch", arch, "--data", str(root), "--epochs", "1", "--batch-size", "6",
                        "--workers", "1", "--device", "cpu", "--out", str(out),
                        "--checkpoint-every", "0"])
            runs[arch] = out
        yield argparse.Namespace(root=root, runs=runs, base=base)


def _args(env, checkpoint, **extra):
    values = dict(checkpoint=str(checkpoint), data=str(env.root), limit=None, batch_size=None,
                  device="cpu", out=str(env.base / "out"), baseline=None, orders=2,
                  max_swaps=3, seed=0)
    values.update(extra)
    return argparse.Namespace(**values)


def _setup(env, arch, name="test", which="best.npz", **extra):
    return common.setup(_args(env, env.runs[arch] / which, **extra), name,
                        families=("image", "lm"))


def _val_batch(setup):
    """Every val image in one batch: (x Tensor, y)."""
    xs, ys = zip(*setup.batches())
    return tinyhw.Tensor(np.concatenate([x.data for x in xs])), np.concatenate(ys)


def _write_corpus(folder):
    """A tiny PTB-like folder: a few words, some much more frequent than others."""
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "mat", "dog", "N", "<unk>", "extraordinarily"]
    p = 1.0 / np.arange(1, len(words) + 1)
    folder.mkdir(parents=True)
    for split, lines in (("train", 60), ("valid", 20), ("test", 10)):
        text = "\n".join(" ".join(rng.choice(words, rng.integers(2, 9), p=p / p.sum()))
                         for _ in range(lines))
        (folder / f"{split}.txt").write_text(text + "\n")
    return folder


# ---- checkpoints ------------------------------------------------------------------------------
def test_both_checkpoint_kinds_load_the_same_kind_of_net(env):
    best = _setup(env, "resnet20", which="best.npz")
    last = _setup(env, "resnet20", which="last.npz")
    assert best.family == last.family == "image"
    assert best.model.fc.weight.shape[0] == len(CLASSES)
    # Trained for one epoch: best.npz and last.npz hold the same weights.
    for (k, a), (_, b) in zip(best.model.state_dict().items(), last.model.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_a_checkpoint_of_neither_kind_is_refused(env, tmp_path):
    path = tmp_path / "odd.npz"
    serialize.save({"w": np.zeros(2)}, path, meta={"epoch": 1})
    with pytest.raises(AnalysisError, match=r"--checkpoint .*neither an image-net"):
        common.read_checkpoint(path)
    with pytest.raises(SystemExit, match="--checkpoint: no file"):
        analyze.main(["lesion", "--checkpoint", str(tmp_path / "missing.npz")])


def test_limit_spreads_over_classes(env):
    s = _setup(env, "resnet20", limit=3)
    assert len(s.loader.dataset) == 3
    assert sorted(s.loader.dataset.labels.tolist()) == [0, 1, 2]


# ---- estimation error -------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet20", "highway20"])
def test_estimation_error_of_last_block_is_exactly_zero_and_matches_numpy(env, arch):
    s = _setup(env, arch, batch_size=5)      # several batches: the running sums must add up
    result = estimation.compute(s)
    x, _ = _val_batch(s)
    with tinyhw.no_grad():
        h = s.model.stem(x)
        for stage, st in zip(s.model.stages, result["stages"]):
            outputs = [a.numpy().astype(np.float64) for a in stage(h, keep=True)]
            h = stage(h)
            last = st["blocks"][-1]
            assert last["mean"] == 0.0 and last["std"] == 0.0 and last["mean_abs"] == 0.0
            for a, block in zip(outputs, st["blocks"]):
                d = a - outputs[-1]
                # The activations are float32, computed here in one batch of 12 and by the
                # analysis in batches of 5: the GEMMs block differently, so they differ by a
                # few float32 ulps (~1e-8 of their scale measured, both BLAS thread counts).
                # Allow ~8 float32 eps (1e-6) of the activations' scale; only the running sums
                # themselves are float64.
                tol = 1e-6 * np.abs(a).mean()
                assert block["mean"] == pytest.approx(d.mean(axis=0).mean(), abs=tol)
                assert block["std"] == pytest.approx(d.std(axis=0).mean(), rel=1e-6, abs=tol)
    assert result["samples"] == len(CLASSES) * PER_CLASS


def _per_unit(outputs):
    """The one definition by hand: per unit over samples, then averaged over units."""
    flat = [a.reshape(len(a), -1).astype(np.float64) for a in outputs]
    d = [a - flat[-1] for a in flat]
    return ([x.std(axis=0).mean() for x in d], [x.mean(axis=0).mean() for x in d],
            flat[-1].std(axis=0).mean())


class _Given:
    """A stand-in for a net's stage or a char-LM's cnn: returns the given arrays' rows."""

    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays)

    def __call__(self, rows, keep=True):
        return [tinyhw.Tensor(a[rows.data]) for a in self.arrays]


def test_conv_and_lm_code_paths_give_the_same_estimation_error_on_the_same_array(monkeypatch):
    """One array of block outputs, seen as 30 images of (4, 3, 3) units by the conv path and as
    30 words of 36 features by the char-LM's: the same numbers, the per-unit definition's, and
    not the pooled std the char-LM used to report."""
    rng = np.random.default_rng(0)
    bias, scale = rng.normal(0, 2, (3, 1, 4, 3, 3)), rng.uniform(0.2, 3, (3, 1, 4, 3, 3))
    outputs = list(bias + scale * rng.normal(size=(3, 30, 4, 3, 3)))
    model = argparse.Namespace(stem=lambda x: x, stages=[_Given(outputs)])
    batches = [(tinyhw.Tensor(np.arange(i, min(i + 7, 30))), None) for i in range(0, 30, 7)]
    conv = estimation.summarise(estimation.accumulate(model, batches), [["b1", "b2", "b3"]])[0]

    words = [a.reshape(30, 36) for a in outputs]
    monkeypatch.setattr(lm_layers, "layer_outputs",
                        lambda setup, ids: ([a[i:i + 11] for a in words] for i in range(0, 30, 11)))
    setup = argparse.Namespace(model=argparse.Namespace(highways=[None] * 3),
                               corpus=argparse.Namespace(ids={"valid": np.arange(30)}))
    lm = lm_layers.estimation_error(setup, None)
    stds, means, a_std = _per_unit(outputs)
    assert lm["a_std"] == pytest.approx(conv["a_std"], rel=1e-12)
    assert lm["a_std"] == pytest.approx(a_std, rel=1e-9)
    for c, w, std, mean in zip(conv["blocks"], lm["layers"], stds, means):
        for key in ("mean", "std", "mean_abs", "rel_std"):
            assert w[key] == pytest.approx(c[key], rel=1e-12, abs=1e-15)
        assert c["std"] == pytest.approx(std, rel=1e-9, abs=1e-12)
        assert c["mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
    pooled = (words[0] - words[-1]).std()
    assert abs(pooled - lm["layers"][0]["std"]) > 0.1 * pooled     # the old LM definition


# ---- lesioning ----------------------------------------------------------------------------------
def test_lesioning_nothing_gives_the_intact_error(env):
    s = _setup(env, "resnet20", limit=3)         # 22 passes of each net: a few images do
    base = _setup(env, "plain20", limit=3)
    result = lesion.compute(s, base)
    for net in (result["net"], result["baseline"]):
        assert net["none_lesioned"] == net["intact"]
        assert len(net["blocks"]) == 9
        assert [b["shape_changing"] for b in net["blocks"]] == [False] * 3 + [True, False,
                                                                             False] * 2
    intact = image.evaluate(s.model, s.loader, "cpu")
    assert result["net"]["intact"]["top1_err"] == intact["top1_err"]


def test_lesion_equals_the_blocks_own_lesioned_flag(env):
    s = _setup(env, "highway20")
    x, _ = _val_batch(s)
    with tinyhw.no_grad():
        for s_i, k in [(0, 1), (1, 0), (2, 2)]:
            block = s.model.stages[s_i][k]
            ours = common.forward(s.model, x, lesioned=[(s_i, k)]).numpy()
            block.lesioned = True
            try:
                theirs = s.model(x).numpy()
            finally:
                block.lesioned = False
            np.testing.assert_array_equal(ours, theirs)


def test_lesioned_plain_block_is_bridged_with_the_right_shape(env):
    s = _setup(env, "plain20")
    x, _ = _val_batch(s)
    with tinyhw.no_grad():
        h = s.model.stem(x)
        for stage in s.model.stages:
            for block in stage:
                assert block.shortcut(h).shape == block(h).shape
                h = block(h)


# ---- shuffling ----------------------------------------------------------------------------------
def test_shuffle_with_zero_swaps_gives_the_intact_error(env):
    s = _setup(env, "resnet20", limit=3)
    result = shuffle.compute(s, orders=2, max_swaps=3, seed=1)
    assert result["summary"][0]["mean"] == result["intact"]["top1_err"]
    assert result["summary"][0]["std"] == 0.0
    assert [len(v) for v in result["movable_blocks"].values()] == [3, 2, 2]
    for t in result["trials"]:
        assert t["blocks"][1][0] == 0 and t["blocks"][2][0] == 0    # shape changers stay first
        assert all(sorted(o) == [0, 1, 2] for o in t["blocks"])
    assert {t["swaps"] for t in result["trials"]} == {0, 1, 2, 3}


def test_kendall_tau_and_displacement():
    assert shuffle.kendall_tau([[0, 1, 2], [0, 1]]) == 1.0
    assert shuffle.kendall_tau([[2, 1, 0]]) == -1.0
    assert shuffle.displaced([[0, 2, 1], [0, 1]]) == 2


# ---- gates -------------------------------------------------------------------------------------
def test_zero_gate_bias_at_init_gives_mean_gate_near_one_half(env, tmp_path):
    tinyhw.manual_seed(0)
    net = build_image_net("highway20", len(CLASSES))
    for block in net.blocks():
        init_gate_bias(block.T, True, 0.0)
    path = tmp_path / "best.npz"
    serialize.save(net.state_dict(), path, meta={"arch": "highway20", "bn": True})
    s = common.setup(_args(env, path), "gates", families=("image",))
    result = gates.compute(s)
    assert len(result["blocks"]) == 9
    for b in result["blocks"]:
        assert abs(b["mean"] - 0.5) < 0.05, b["name"]
        assert 0.0 <= b["frac_open"]["mean"] <= 1.0
        assert sum(b["group_count"]) == len(CLASSES) * PER_CLASS
        assert len(b["unit_mean"]) == b["units"]


def test_gates_of_the_trained_highway_net_and_refusal_without_gates(env):
    result = gates.compute(_setup(env, "highway20"))
    for b in result["blocks"]:
        assert 0.0 < b["mean"] < 1.0
        # The class means average to the overall mean (equal class sizes).
        assert np.mean(b["group_mean"]) == pytest.approx(b["mean"], abs=1e-9)
    with pytest.raises(AnalysisError, match="gates needs a net with gates"):
        gates.compute(_setup(env, "resnet20"))


def test_gates_of_a_c_only_char_lm(tmp_path):
    tinyhw.manual_seed(0)
    path, folder, _ = _tiny_lm_checkpoint(tmp_path, "c_only")
    out = tmp_path / "out"
    analyze.main(["gates", "--checkpoint", str(path), "--data", str(folder), "--limit", "50",
                  "--device", "cpu", "--out", str(out)])
    result = json.loads((out / "gates.json").read_text())
    assert result["gates_present"] == ["C"] and result["gates_absent"] == ["T"]
    assert result["words"] == 50
    (layer,) = result["blocks"]
    # Kim et al.'s +2 offset on the carry gate, weights uniform in +-0.05: C ~ sigmoid(2).
    assert layer["mean"] == pytest.approx(1 / (1 + math.exp(-2)), abs=0.03)
    with pytest.raises(SystemExit, match="--baseline: only for image nets"):
        analyze.main(["lesion", "--checkpoint", str(path), "--data", str(folder),
                      "--baseline", str(path)])


def test_a_bad_baseline_is_named_as_baseline(env, tmp_path):
    resnet = str(env.runs["resnet20"] / "best.npz")
    with pytest.raises(SystemExit, match=r"^error: --baseline: no file at .*nowhere\.npz$"):
        analyze.main(["lesion", "--checkpoint", resnet, "--data", str(env.root), "--device",
                      "cpu", "--baseline", str(tmp_path / "nowhere.npz")])


# ---- iterative inference -------------------------------------------------------------------------
def _loss_from(model, h, y, start):
    """Summed cross-entropy of running blocks[start:] and the head from h."""
    for block in model.blocks()[start:]:
        h = block(h)
    return F.cross_entropy(model.head(h), tinyhw.Tensor(y), "sum")


def _leaf_gradient(model, h, y, start):
    """The gradient at h (an array) of the summed cross-entropy of running blocks[start:] and
    the head from h, from a graph of its own (its logit gradient free of cancellation, as the
    analysis's: a third of these images are classified confidently enough to need it)."""
    leaf = tinyhw.Tensor(h.astype(np.float32), requires_grad=True)
    out = leaf
    for block in model.blocks()[start:]:
        out = block(out)
    gradients.backward_from_logits(model.head(out), y)
    return leaf.grad


def test_iterative_gradients_cosines_and_ratio_match_direct_computations(env):
    s = _setup(env, "resnet20")
    x, y = _val_batch(s)
    acts, saturated = iterative.block_gradients(s.model, x, y)
    assert 0 <= saturated <= len(y)
    assert all(p.requires_grad for p in s.model.parameters())     # restored after the pass
    for k in (4, 3):                                 # s2b2 keeps its shape, s2b1 changes it
        h, f, g_through, g_rest = acts[k]
        block = s.model.blocks()[k]
        with tinyhw.no_grad():
            t = tinyhw.Tensor(h.astype(np.float32))
            shortcut = block.shortcut(t).numpy()
            direct_f = (block(t).numpy() - shortcut).astype(np.float64)
        np.testing.assert_allclose(f, direct_f, rtol=1e-6, atol=1e-6)
        # Through the block: the gradient at its input of the net from block k on.
        np.testing.assert_allclose(g_through, _leaf_gradient(s.model, h, y, k), rtol=1e-5,
                                   atol=1e-6)
        # The rest of the net: the gradient at shortcut(h) of the net from block k + 1 on.
        np.testing.assert_allclose(g_rest, _leaf_gradient(s.model, shortcut, y, k + 1),
                                   rtol=1e-5, atol=1e-6)
        values = iterative.per_sample(h, f, g_through, g_rest)
        for i in range(len(y)):
            fi, hi = f[i].ravel(), h[i].ravel()
            for key, g in (("cos_rest_of_net", g_rest), ("cos_through_block", g_through)):
                if values[key] is None:
                    assert key == "cos_through_block" and block.changes_shape
                    continue
                gi = -g[i].ravel()
                assert values[key][i] == pytest.approx(
                    fi @ gi / np.linalg.norm(fi) / np.linalg.norm(gi), rel=1e-9)
            assert values["norm_ratio"][i] == pytest.approx(
                np.linalg.norm(fi) / np.linalg.norm(hi), rel=1e-9)
    result = iterative.compute(s)
    assert result["headline"] == "cos_rest_of_net"
    assert set(result["definitions"]) >= {"cos_rest_of_net", "cos_through_block"}
    values = iterative.per_sample(*acts[4])
    for key in ("cos_rest_of_net", "cos_through_block", "norm_ratio"):
        assert result["blocks"][4][key]["mean"] == pytest.approx(values[key].mean(), rel=1e-6)
    assert [b["cos_through_block"] is None for b in result["blocks"]] == \
        [False] * 3 + [True, False, False] * 2
    assert all(b["cos_rest_of_net"]["mean"] is not None for b in result["blocks"])


def test_iterative_gradients_match_finite_differences_in_float64(env):
    s = _setup(env, "highway20")
    s.model.double()
    x, y = _val_batch(s)
    x = tinyhw.Tensor(x.data[:2].astype(np.float64))
    y = y[:2]
    k = 7                                                            # s3b2
    h, f, g_through, g_rest = iterative.block_gradients(s.model, x, y)[0][k]
    eps = 1e-6
    with tinyhw.no_grad():
        for start, at, g in ((k, h, g_through), (k + 1, h, g_rest)):   # shortcut(h) = h here
            up = _loss_from(s.model, tinyhw.Tensor(at + eps * f), y, start).item()
            down = _loss_from(s.model, tinyhw.Tensor(at - eps * f), y, start).item()
            assert (up - down) / (2 * eps) == pytest.approx(float((g * f).sum()), rel=1e-4)


def test_cross_entropy_gradient_keeps_the_target_entry_at_a_margin_of_20():
    """Logits with the true class ahead by 20: in float32 the engine's softmax - one-hot loses
    the target entry (exactly 0), so the direction is wrong; the analysis's gradient matches
    float64 to float32 precision, entry by entry and in direction."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1, (6, 10))
    target = np.arange(6) % 10
    z[np.arange(6), target] = z.max(axis=1) + 20.0
    exact = gradients.cross_entropy_gradient(z, target)                       # float64
    z32 = z.astype(np.float32)
    ours = gradients.cross_entropy_gradient(z32, target)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, exact, rtol=1e-5)
    logits = tinyhw.Tensor(z32, requires_grad=True)
    F.cross_entropy(logits, tinyhw.Tensor(target), "sum").backward()
    engine = logits.grad
    assert (engine[np.arange(6), target] == 0).all()                         # the bug
    assert gradients.saturated(z32, target).all()
    assert not gradients.saturated(z, target).any()
    assert gradients.cosines(ours.astype(np.float64), -exact).min() > 1 - 1e-6
    assert gradients.cosines(engine.astype(np.float64), -exact).max() < 0.5   # direction wrong
    # The two agree where nothing cancels.
    small = rng.normal(0, 1, (4, 10)).astype(np.float32)
    logits = tinyhw.Tensor(small, requires_grad=True)
    F.cross_entropy(logits, tinyhw.Tensor(np.arange(4)), "sum").backward()
    np.testing.assert_allclose(gradients.cross_entropy_gradient(small, np.arange(4)),
                               logits.grad, rtol=1e-5, atol=1e-7)


def test_iterative_direction_in_float32_matches_float64_for_confident_images(env):
    """A net made confident (every image's true class ahead by ~20): the per-image gradient
    directions the analysis finds in float32 are those of the float64 net."""
    s = _setup(env, "resnet20")
    x, _ = _val_batch(s)
    x = tinyhw.Tensor(x.data[:4])
    y = np.zeros(4, np.int64)                            # every image labelled class 0
    s.model.fc.weight.data *= 0.01
    s.model.fc.bias.data[:] = [20.0, 0.0, 0.0]
    acts32, saturated = iterative.block_gradients(s.model, x, y)
    assert saturated == 4
    s.model.double()
    acts64, _ = iterative.block_gradients(s.model, tinyhw.Tensor(x.data.astype(np.float64)), y)
    for (_, f32, t32, r32), (_, f64, t64, r64) in zip(acts32, acts64):
        for g32, g64 in ((r32, r64), (t32, t64)):
            if g32.shape != f32.shape:
                continue
            assert gradients.cosines(g32, -g64).min() > 0.999    # cos(g32, g64), per image


def test_iterative_refuses_a_plain_net(env):
    with pytest.raises(AnalysisError, match="iterative needs blocks with a shortcut"):
        iterative.compute(_setup(env, "plain20"))


# ---- extra iterations at test time -------------------------------------------------------------
def test_iterations_without_extra_is_the_intact_net_and_norms_match_numpy(env):
    s = _setup(env, "resnet20", batch_size=5)        # several batches: the sums must add up
    result = iterations.compute(s, extra=1)
    intact = common.score(s)
    assert [b["name"] for b in result["blocks"]] == ["s1b1", "s1b2", "s1b3", "s2b2", "s2b3",
                                                     "s3b2", "s3b3"]
    for b in result["blocks"]:
        assert b["iterations"][0]["top1_err"] == intact["top1_err"]       # exactly
        assert b["iterations"][0]["loss"] == pytest.approx(intact["loss"], rel=1e-12)
        assert [it["extra"] for it in b["iterations"]] == [0, 1]
    x, _ = _val_batch(s)
    with tinyhw.no_grad():
        hs = [s.model.stem(x)]
        for block in s.model.blocks():
            hs.append(block(hs[-1]))
        again = s.model.stages[2][2](hs[-1]).numpy().astype(np.float64)
    assert [n["name"] for n in result["norms"]] == ["stem"] + [n for st in
                                                               common.block_names(s.model)
                                                               for n in st]
    for n, h in zip(result["norms"], hs):
        norms = np.linalg.norm(h.numpy().astype(np.float64).reshape(len(h.data), -1), axis=1)
        assert n["norm_mean"] == pytest.approx(norms.mean(), rel=1e-6)
        assert n["norm_std"] == pytest.approx(norms.std(), rel=1e-4, abs=1e-9)
    last = result["blocks"][-1]["iterations"]
    assert last[0]["norm_mean"] == result["norms"][-1]["norm_mean"]
    assert last[1]["norm_mean"] == pytest.approx(
        np.linalg.norm(again.reshape(len(again), -1), axis=1).mean(), rel=1e-6)


def test_a_repeated_identity_block_leaves_h_and_the_error_unchanged(env):
    s = _setup(env, "highway20", limit=6)
    block = s.model.stages[1][1]
    with nets.lesioned([block]):           # outputs its identity shortcut: h itself
        result = iterations.compute(s, extra=3)
    (b,) = [b for b in result["blocks"] if b["name"] == "s2b2"]
    first = b["iterations"][0]
    for it in b["iterations"][1:]:
        assert (it["top1_err"], it["loss"], it["norm_mean"], it["norm_std"]) == \
            (first["top1_err"], first["loss"], first["norm_mean"], first["norm_std"])


def test_iterations_on_a_shared_net_apply_the_shared_block(env, tmp_path):
    tinyhw.manual_seed(0)
    net = build_image_net("resnet20", len(CLASSES), share_blocks=True, unshared_bn=True)
    # distinct running statistics per batch norm (so per iteration): applying another
    # iteration's block than the right one changes the numbers
    batch_norms = [m for m in net.modules() if isinstance(m, tinyhw.nn.BatchNorm2d)]
    for i, m in enumerate(batch_norms):
        m.running_mean.data[:] = np.random.default_rng(i).normal(0, 0.1, m.running_mean.shape)
    path = tmp_path / "best.npz"
    serialize.save(net.state_dict(), path, meta={"arch": "resnet20", "bn": True,
                                                 "share_blocks": True, "unshared_bn": True})
    s = common.setup(_args(env, path, limit=3), "iterations", families=("image",))
    assert s.model.stages[2][2].H[0].conv is s.model.stages[2][1].H[0].conv
    assert s.info["share_blocks"] and s.info["unshared_bn"]
    result = iterations.compute(s, extra=2)
    # s1b1 is its stage's first block (shape-keeping, not shared); the rest are iterations.
    assert [b["shared_weights"] for b in result["blocks"]] == [False] + [True] * 6
    x, _ = _val_batch(s)
    with tinyhw.no_grad():
        h = s.model.stem(x)
        for block in s.model.blocks():
            h = block(h)
        last = s.model.stages[2][2]
        twice = last(last(h)).numpy().astype(np.float64)
    norms = np.linalg.norm(twice.reshape(len(twice), -1), axis=1)
    assert result["blocks"][-1]["iterations"][2]["norm_mean"] == pytest.approx(norms.mean(),
                                                                               rel=1e-6)


# ---- the command line -----------------------------------------------------------------------------
@pytest.mark.parametrize("command, arch, extra", [   # lesion and shuffle: many passes, few images
    ("estimation-error", "highway20", []),
    ("lesion", "resnet20", ["--baseline", "plain20", "--limit", "3"]),
    ("shuffle", "resnet20", ["--orders", "2", "--max-swaps", "2", "--limit", "3"]),
    ("gates", "highway20", []),
    ("iterative", "resnet20", []),
    ("iterations", "resnet20", ["--extra", "1", "--limit", "3"]),
])
def test_cli_writes_json_csv_and_png(env, tmp_path, capsys, command, arch, extra):
    extra = [str(env.runs[e] / "best.npz") if e in env.runs else e for e in extra]
    out = tmp_path / "out"
    analyze.main([command, "--checkpoint", str(env.runs[arch] / "last.npz"), "--data",
                  str(env.root), "--device", "cpu", "--out", str(out)] + extra)
    name = command.replace("-", "_")
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    if not HAVE_MATPLOTLIB:   # the test extra installs it; without it only the figure is missing
        assert last_line.startswith(f"wrote {name}.json, {name}.csv to {out}; plots skipped")
        return
    assert last_line == f"wrote {name}.json, {name}.csv, {name}.png to {out}"
    result = json.loads((out / f"{name}.json").read_text())
    images = 3 if "--limit" in extra else len(CLASSES) * PER_CLASS
    assert result["analysis"] == name and result["images"] == images
    assert result["command"].startswith(f"python -m train.analyze {command} --checkpoint ")
    with open(out / f"{name}.csv") as f:
        assert len(list(csv.DictReader(f))) > 0
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_numbers_are_written_and_plots_skipped(env, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # `import matplotlib` now fails
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    out = tmp_path / "out"
    analyze.main(["estimation-error", "--checkpoint", str(env.runs["resnet20"] / "best.npz"),
                  "--data", str(env.root), "--device", "cpu", "--out", str(out)])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "plots skipped: matplotlib is not installed" in last_line
    assert json.loads((out / "estimation_error.json").read_text())["stages"]
    assert (out / "estimation_error.csv").is_file()
    assert not (out / "estimation_error.png").exists()


def test_default_out_is_analysis_beside_the_checkpoint(env, capsys):
    analyze.main(["iterative", "--checkpoint", str(env.runs["highway20"] / "best.npz"),
                  "--data", str(env.root), "--device", "cpu", "--limit", "3"])
    assert (env.runs["highway20"] / "analysis" / "iterative.json").is_file()
    assert f"to {env.runs['highway20'] / 'analysis'}" in capsys.readouterr().out.splitlines()[-1]


def _fail_if_computed(monkeypatch):
    """The analysis must not start: a bad --out has to fail before minutes of computing."""
    def computed(*args, **kwargs):
        pytest.fail("the analysis was computed before --out was checked")
    monkeypatch.setattr(estimation, "compute", computed)
    monkeypatch.setattr(lm_layers, "compute", computed)


def test_out_that_is_a_file_fails_before_computing(env, tmp_path, monkeypatch):
    _fail_if_computed(monkeypatch)
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder\n")
    argv = ["estimation-error", "--checkpoint", str(env.runs["resnet20"] / "best.npz"),
            "--data", str(env.root), "--device", "cpu", "--out"]
    with pytest.raises(SystemExit) as error:
        analyze.main(argv + [str(a_file)])
    assert str(error.value) == f"error: --out {a_file}: is a file, not a folder"
    with pytest.raises(SystemExit, match=r"^error: --out .*results\.txt.sub: cannot write "
                                          r"there \(.+\)$"):     # a folder below that file
        analyze.main(argv + [str(a_file / "sub")])
    assert a_file.read_text() == "not a folder\n"


def test_out_that_cannot_be_written_fails_before_computing(lm_checkpoint, tmp_path,
                                                           monkeypatch):
    """A read-only folder; as root (the tests' usual user) chmod cannot make one, so the
    probe file the check creates is refused instead."""
    path, folder = lm_checkpoint
    _fail_if_computed(monkeypatch)

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(common, "tempfile", argparse.Namespace(TemporaryFile=refused))
    out = tmp_path / "read_only"
    with pytest.raises(SystemExit) as error:
        _lm("estimation-error", path, folder, out)
    assert str(error.value) == f"error: --out {out}: cannot write there (Permission denied)"
    with pytest.raises(SystemExit, match="the default output folder .*cannot write there"):
        analyze.main(["estimation-error", "--checkpoint", str(path), "--data", str(folder),
                      "--device", "cpu"])


def test_help_documents_every_analysis(capsys):
    with pytest.raises(SystemExit):
        analyze.main(["--help"])
    text = capsys.readouterr().out
    for name in analyze.ANALYSES:
        assert name in text
    with pytest.raises(SystemExit):
        analyze.main(["shuffle", "--help"])
    assert "--orders" in capsys.readouterr().out



@pytest.mark.parametrize("option, value, expected", [
    ("--limit", "abc", "a positive integer"), ("--limit", "0", "a positive integer"),
    ("--seed", "1.5", "an integer >= 0"), ("--seed", "-1", "an integer >= 0")])
def test_a_bad_count_names_the_option_the_value_and_what_is_expected(capsys, option, value,
                                                                     expected):
    with pytest.raises(SystemExit):
        analyze.main(["shuffle", "--checkpoint", "x.npz", option, value])
    (line,) = [l for l in capsys.readouterr().err.splitlines() if "error:" in l]
    assert line.endswith(f"error: argument {option}: expected {expected}, got {value!r}")

# ---- the char-LM's highway stack ---------------------------------------------------------------
def _tiny_lm_checkpoint(tmp_path, variant, **build_options):
    """(best.npz, PTB folder, model) of an untrained tiny char-LM of `variant` on a corpus of
    its own."""
    folder = _write_corpus(tmp_path / "ptb")
    v = Corpus(folder).vocab
    model = build_lm("tiny", variant, len(v.words), len(v.chars), v.max_word_len,
                     **build_options)
    path = tmp_path / "best.npz"
    serialize.save(model.state_dict(), path, meta={"config": "tiny", "variant": variant,
                                                   "val_ppl": 1.0})
    return path, folder, model


@pytest.fixture
def lm_checkpoint(tmp_path):
    """A tiny char-LM whose `residual` variant has 2 highway layers (a stack to reorder)."""
    tinyhw.manual_seed(0)
    path, folder, _ = _tiny_lm_checkpoint(tmp_path, "residual", init_scale=0.3)
    return path, folder


def _lm(analysis, path, folder, out, *extra):
    analyze.main([analysis, "--checkpoint", str(path), "--data", str(folder), "--device", "cpu",
                  "--out", str(out), *extra])
    return json.loads((out / f"{analysis.replace('-', '_')}.json").read_text())


def test_lm_layers_estimation_error_and_lesion(lm_checkpoint, tmp_path):
    path, folder = lm_checkpoint
    ee = _lm("estimation-error", path, folder, tmp_path / "o")
    assert [l["name"] for l in ee["layers"]] == ["highway1", "highway2"]
    setup = _lm_setup(path, folder, tmp_path, "estimation_error")
    outputs = [np.concatenate(a) for a in zip(*lm_layers.layer_outputs(
        setup, setup.corpus.ids["valid"]))]
    stds, means, a_std = _per_unit(outputs)                 # per feature over words
    assert ee["a_std"] == pytest.approx(a_std, rel=1e-6)
    for layer, std, mean in zip(ee["layers"], stds, means):
        assert layer["std"] == pytest.approx(std, rel=1e-6, abs=1e-9)
        assert layer["mean"] == pytest.approx(mean, rel=1e-6, abs=1e-9)
    last = ee["layers"][-1]
    assert last["mean"] == last["std"] == last["mean_abs"] == 0.0   # A is the last output
    assert ee["layers"][0]["std"] > 0
    assert "note" not in ee                      # two layers: a_1 - A says something
    les = _lm("lesion", path, folder, tmp_path / "o")
    assert les["none_lesioned_ppl"] == les["intact_ppl"]
    assert all(math.isfinite(l["ppl"]) and l["ppl"] != les["intact_ppl"] for l in les["layers"])
    assert les["command"].startswith("python -m train.analyze lesion --checkpoint ")


def test_lm_layers_shuffle_keeps_the_trained_order_first(lm_checkpoint, tmp_path):
    path, folder = lm_checkpoint
    sh = _lm("shuffle", path, folder, tmp_path / "o")
    les = _lm("lesion", path, folder, tmp_path / "o")
    assert [o["order"] for o in sh["orders"]] == [[1, 2], [2, 1]]
    assert sh["orders"][0]["ppl"] == les["intact_ppl"]
    assert sh["orders"][1]["ppl"] != les["intact_ppl"]


def _lm_setup(path, folder, tmp_path, name):
    corpus = Corpus(folder)
    state, meta = serialize.load(path)
    return common.Setup(name=name, family="lm",
                        model=common.build_lm_model(state, meta, path, corpus).eval(),
                        device="cpu", checkpoint=path, meta=meta, out_dir=tmp_path,
                        data_root=folder, corpus=corpus)


def test_lm_layers_iterative_matches_direct_computations(lm_checkpoint, tmp_path):
    """1,500 words make three windows of 20 streams (35, 35 and 4 steps), the LSTM state
    carried from one to the next as train.lm carries it: both cosines and the ratio of each
    layer, recomputed from graphs of their own, window by window."""
    path, folder = lm_checkpoint
    # a valid split long enough for three windows, of words the vocabulary has
    (folder / "valid.txt").write_text((folder / "train.txt").read_text() * 6)
    it = _lm("iterative", path, folder, tmp_path / "o", "--limit", "1500")
    assert it["headline"] == "cos_rest_of_net"
    setup = _lm_setup(path, folder, tmp_path, "iterative")
    model, layers = setup.model, setup.model.highways
    windows = list(lm_layers._windows(setup, 1500))
    assert [inputs.shape[0] for inputs, _ in windows] == [35, 35, 4]

    def gradient_at(h, first_layer, steps, state, target):  # the loss from layers[first_layer:]
        leaf = tinyhw.Tensor(h, requires_grad=True)
        out = leaf
        for layer in layers[first_layer:]:
            out = layer(out)
        gradients.backward_from_logits(lm_layers._logits(model, out, steps, state)[0], target)
        return leaf.grad.astype(np.float64)

    expected = [{"cos_through_block": [], "cos_rest_of_net": [], "norm_ratio": []} for _ in layers]
    state = None
    for inputs, targets in windows:
        steps, target = inputs.shape[0], targets.reshape(-1)
        with tinyhw.no_grad():
            h = lm_layers._features(setup, inputs).data
        for k, layer in enumerate(layers):
            with tinyhw.no_grad():
                out = layer(tinyhw.Tensor(h)).data
            f64, h64 = (out - h).astype(np.float64), h.astype(np.float64)
            expected[k]["cos_through_block"].append(gradients.cosines(
                f64, gradient_at(h, k, steps, state, target)))
            expected[k]["cos_rest_of_net"].append(gradients.cosines(
                f64, gradient_at(h, k + 1, steps, state, target)))
            expected[k]["norm_ratio"].append(np.linalg.norm(f64, axis=1) /
                                             np.linalg.norm(h64, axis=1))
            h = out
        with tinyhw.no_grad():
            state = lm_layers._logits(model, tinyhw.Tensor(h), steps, state)[1]
    words = sum(targets.size for _, targets in windows)
    for layer_result, layer_expected in zip(it["layers"], expected):
        for key, values in layer_expected.items():
            values = np.concatenate(values)
            assert layer_result[key]["mean"] == pytest.approx(values.mean(), rel=1e-5, abs=1e-7)
            assert layer_result[key]["count"] == words == len(values)


def test_lm_with_one_highway_layer_cannot_be_shuffled(tmp_path):
    path, folder, _ = _tiny_lm_checkpoint(tmp_path, "c_only")
    with pytest.raises(SystemExit, match="shuffle needs at least 2"):
        _lm("shuffle", path, folder, tmp_path / "o")


def test_lm_with_one_highway_layer_estimation_error_says_it_is_trivial(tmp_path, capsys):
    path, folder, model = _tiny_lm_checkpoint(tmp_path, "c_only")
    assert len(model.highways) == 1
    ee = _lm("estimation-error", path, folder, tmp_path / "o")
    (layer,) = ee["layers"]
    assert layer["mean"] == layer["std"] == layer["mean_abs"] == 0.0
    assert ee["note"].startswith("one highway layer: its output is the stack's output A, so "
                                 "a_1 - A = 0 by definition")
    assert f"note: {ee['note']}" in capsys.readouterr().out


def test_lm_iterative_refuses_a_plain_char_lm(tmp_path):
    """A plain layer relu(W h + b) has no carry path: layer(h) - h is no increment to h."""
    path, folder, _ = _tiny_lm_checkpoint(tmp_path, "plain")
    with pytest.raises(SystemExit, match="is a plain char-LM, whose layer relu"):
        _lm("iterative", path, folder, tmp_path / "o")
    assert not (tmp_path / "o" / "iterative.json").exists()
