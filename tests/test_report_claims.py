"""train.report's claim sections (train/report_claims.py) on fake image run folders: the batch
norm verdicts, the shared-blocks table with ||h|| from iterations.json, and the extra-iterations
verdicts."""
import json

import pytest

from train import report, report_claims
from tests.test_report import _image_epoch, _write_run


def _image_run(root, name, flags, losses, val_err, finished=True, train_err=0.1, epochs=None,
               val_images=None):
    """An image run whose epochs have the given train losses and whose final model has val
    top-1 error val_err (the last epoch scored too), over val_images images if given."""
    epochs = epochs or len(losses)
    records = [dict(_image_epoch(e, val_err, 0.01, loss=loss), train_top1_err=train_err)
               for e, loss in enumerate(losses, start=1)]
    if finished:
        records.append({"final": True, "step": 100 * len(losses), "epoch": len(losses),
                        "val_top1_err": val_err, "val_top5_err": 0.01,
                        "best_val_top1_err": val_err})
        if val_images:
            records[-1]["val_images"] = val_images
    return report.load_run(_write_run(
        root / name, [f"python -m train.image {flags} --epochs {epochs}"], records))


def _body_rows(markdown):
    """The cells of the body rows of every Markdown table in `markdown` (no header rows)."""
    rows, in_body = [], False
    for line in markdown.splitlines():
        if line.startswith("|---"):
            in_body = True
        elif not line.startswith("| "):
            in_body = False
        elif in_body:
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def test_bn_claim_verdicts_follow_the_equal_training_loss_criterion(tmp_path):
    runs = [
        _image_run(tmp_path, "r20", "--arch resnet20 --limit 10000", [0.5, 0.05], 0.30),
        _image_run(tmp_path, "r20_nobn", "--arch resnet20 --limit 10000 --no-bn",
                   [0.9, 0.03], 0.35),                      # fits better, generalises worse
        _image_run(tmp_path, "h20", "--arch highway20 --limit 10000", [0.5, 0.04], 0.28),
        _image_run(tmp_path, "h20_nobn", "--arch highway20 --limit 10000 --no-bn",
                   [0.9, 0.06], 0.40),                      # underfits: no verdict
        _image_run(tmp_path, "h20_nobn_long", "--arch highway20 --limit 10000 --no-bn",
                   [0.9, 0.5, 0.02], 0.26, finished=False, epochs=4),   # still going
        _image_run(tmp_path, "r20_full_nobn", "--arch resnet20 --no-bn", [0.9, 0.01], 0.5),
        _image_run(tmp_path, "r20_short", "--arch resnet20 --limit 10000", [0.9], 0.6),
    ]   # r20_full_nobn: other data, pairs with no one; r20_short: a second twin of r20_nobn
    text = report_claims.bn_claim(runs)
    table, fits = text.split("Without BN, does the Highway net")
    pairs = _body_rows(table)
    assert sorted(r[2].split(" ")[0] for r in pairs) == ["h20", "h20", "r20", "r20_short"]
    r20, r20_short = [r for r in pairs if r[2].startswith("r20")]     # the longer twin first
    assert r20[:3] == ["resnet20", "10,000", "r20 (2 ep.) / r20_nobn (2 ep.)"]
    assert r20[3:] == ["0.0500 / 0.0300", "30.00 / 35.00",
                       "supports: at equal or lower training loss, the no-BN net generalises "
                       "worse"]
    assert r20_short[2:] == ["r20_short (1 ep.) / r20_nobn (2 ep.)", "0.9000 / 0.0300",
                             "60.00 / 35.00", "contradicts: at equal or lower training loss, "
                             "the no-BN net generalises better"]
    verdicts = sorted(r[5] for r in pairs if r[2].startswith("h20"))
    assert verdicts[0] == "in progress"
    assert verdicts[1].startswith("not resolved: without BN the net fits worse (0.0600 > 0.0400)")
    assert _body_rows(fits) == [["h20_nobn / r20_nobn", "10,000", "2", "0.0600 / 0.0300",
                         "40.00 / 35.00", "contradicts: the Residual net fits as well or better"]]


def test_bn_claim_contradicted_and_absent(tmp_path):
    runs = [_image_run(tmp_path, "a", "--arch resnet20", [0.1], 0.30),
            _image_run(tmp_path, "b", "--arch resnet20 --no-bn", [0.1], 0.29)]
    assert "| contradicts: at equal or lower training loss" in report_claims.bn_claim(runs)
    twin = _image_run(tmp_path, "c", "--arch resnet20", [0.2], 0.31)   # a second BN run
    assert [r[2] for r in _body_rows(report_claims.bn_claim(runs + [twin]))] == [
        "a (1 ep.) / b (1 ep.)", "c (1 ep.) / b (1 ep.)"]
    assert report_claims.bn_claim(runs[:1]) is None
    assert report_claims.sharing_claim(runs) is None
    assert report_claims.iterations_claim(runs) is None
    assert report_claims.sections(runs)[0][0].startswith("Batch norm at equal training loss")


def test_bn_verdict_calls_a_difference_within_the_binomial_noise_no_difference(tmp_path):
    flags = "--arch resnet20 --limit 10000"
    bn = _image_run(tmp_path, "bn", flags, [0.49], 0.2534)
    nobn = _image_run(tmp_path, "nobn", flags + " --no-bn", [0.25], 0.2505)
    # without a val image count the comparison is mechanical
    assert report_claims.val_images(bn) is None
    assert report_claims.bn_verdict(bn, nobn).startswith("contradicts")
    # the count from train.image's first log line (older runs), or from the final record
    (bn.path / "log.txt").write_text("resnet20: 269,722 parameters; /d/cifar10: 10,000 train / "
                                     "10,000 val images, 10 classes; device cpu; out x\n")
    nobn.final["val_images"] = 10000
    assert report_claims.val_images(bn) == report_claims.val_images(nobn) == 10000
    # 2 x sqrt(p(1-p)/n) per run, combined: 2 x sqrt(0.2534*0.7466 + 0.2505*0.7495) / 100
    noise = report_claims.val_difference_noise(bn, nobn)
    assert noise == pytest.approx(200 * ((0.2534 * 0.7466 + 0.2505 * 0.7495) / 1e4) ** 0.5)
    assert 1.2 < noise < 1.25
    assert report_claims.bn_verdict(bn, nobn) == f"no difference (within ±{noise:.2f})"
    worse = _image_run(tmp_path, "nobn_worse", flags + " --no-bn", [0.25], 0.28)
    worse.final["val_images"] = 10000
    assert report_claims.bn_verdict(bn, worse).startswith("supports: at equal or lower")


def test_bn_pairs_keep_the_longest_twin_and_the_shorter_one_nearest_equal_loss(tmp_path):
    flags = "--arch resnet20 --limit 10000"
    runs = [_image_run(tmp_path, "nobn", flags + " --no-bn", [0.9, 0.5, 0.3, 0.25], 0.25),
            _image_run(tmp_path, "bn4", flags, [0.5, 0.3, 0.1, 0.02], 0.20),
            _image_run(tmp_path, "bn1", flags, [0.9], 0.60),       # above 0.25, but farther
            _image_run(tmp_path, "bn2", flags, [0.6, 0.3], 0.24),  # nearest at or above 0.25
            _image_run(tmp_path, "bn3", flags, [0.5, 0.3, 0.2], 0.22),   # below 0.25
            _image_run(tmp_path, "bn3_going", flags, [0.5], 0.4, finished=False, epochs=3)]
    assert [(bn.path.name, nobn.path.name) for bn, nobn in report_claims.bn_pairs(runs)] == [
        ("bn4", "nobn"), ("bn2", "nobn"), ("bn3_going", "nobn")]
    verdicts = [r[5] for r in _body_rows(report_claims.bn_claim(runs))]
    assert verdicts[0].startswith("not resolved") and verdicts[2] == "in progress"
    assert verdicts[1].startswith("supports")          # no BN 25.00 against BN 24.00


def test_bn_pairs_only_runs_of_the_same_weight_decay(tmp_path):
    flags = "--arch resnet20 --limit 10000"
    runs = [_image_run(tmp_path, "bn", flags, [0.02], 0.20),
            _image_run(tmp_path, "bn_wd", flags + " --weight-decay 1e-4", [0.01], 0.22),
            _image_run(tmp_path, "nobn_wd", flags + " --no-bn --weight-decay 1e-4", [0.005],
                       0.25)]
    assert [r[2] for r in _body_rows(report_claims.bn_claim(runs))] == [
        "bn_wd (1 ep.) / nobn_wd (1 ep.)"]
    assert report.image_variants(runs[2].args) == ["--limit 10,000", "weight decay 0.0001"]
    assert report.image_variants(runs[0].args) == ["--limit 10,000"]


def _iterations_json(run, stage_norms, deltas, images=None):
    """analysis/iterations.json with intact-net norms per stage and, per stage, shape-keeping
    blocks whose error grows by the given amounts after 2 extra applications."""
    norms = [{"stage": 0, "block": 0, "name": "stem", "norm_mean": 1.0, "norm_std": 0.1}]
    blocks = []
    for s, values in enumerate(stage_norms, start=1):
        norms += [{"stage": s, "block": k, "name": f"s{s}b{k}", "norm_mean": v, "norm_std": 0.1}
                  for k, v in enumerate(values, start=1)]
    for s, growth in enumerate(deltas, start=1):
        for k, d in enumerate(growth, start=2):
            blocks.append({"stage": s, "block": k, "name": f"s{s}b{k}", "iterations": [
                {"extra": j, "top1_err": 0.2 + j * d / 2, "loss": 1.0, "norm_mean": 1.0,
                 "norm_std": 0.1} for j in range(3)]})
    folder = run.path / "analysis"
    folder.mkdir()
    result = {"analysis": "iterations", "extra": 2, "blocks": blocks, "norms": norms}
    if images:
        result["images"] = images
    (folder / "iterations.json").write_text(json.dumps(result))


def test_sharing_table_orders_the_three_nets_and_reads_the_norms(tmp_path):
    flags = "--arch resnet32"
    runs = [_image_run(tmp_path, "ubn", flags + " --share-blocks --unshared-bn", [0.6], 0.20,
                       train_err=0.15, epochs=3),
            _image_run(tmp_path, "plain", flags, [0.5], 0.18, train_err=0.14, epochs=3),
            _image_run(tmp_path, "shared", flags + " --share-blocks", [0.7], 0.25,
                       train_err=0.12, finished=False, epochs=3),
            _image_run(tmp_path, "other", "--arch resnet20", [0.5], 0.2)]   # no shared twin
    _iterations_json(runs[2], [[2.0, 8.0], [3.0, 30.0]], [[0.01], [0.02]])
    text = report_claims.sharing_claim(runs)
    rows = _body_rows(text)
    assert [r[1:3] for r in rows] == [["unshared", "plain"], ["shared", "shared"],
                                      ["shared, unshared BN", "ubn"]]
    assert rows[1][3] == "in progress (epoch 1 of 3)"
    assert rows[1][4:] == ["25.00", "0.7000", "12.00", "13.00", "2 → 8; 3 → 30"]
    assert rows[0][8] == "—"


def test_sharing_verdicts_on_finished_analysed_runs(tmp_path):
    flags = "--arch resnet32 --limit 10000"
    plain = _image_run(tmp_path, "unshared", flags, [0.1], 0.20, train_err=0.02,
                       val_images=10000)
    shared = _image_run(tmp_path, "shared", flags + " --share-blocks", [0.3], 0.30,
                        train_err=0.05, val_images=10000)   # gap 25 points against 18
    fixed = _image_run(tmp_path, "ubn", flags + " --share-blocks --unshared-bn", [0.2], 0.289,
                       train_err=0.04, val_images=10000)    # 1.1 points better: noise
    # ||h|| growth per stage: unshared 2, 1.5, 1; shared 4, 3, 0.5; unshared BN 2, 4, 0.25
    _iterations_json(plain, [[1.0, 2.0], [2.0, 3.0], [4.0, 4.0]], [], images=10000)
    _iterations_json(shared, [[1.0, 4.0], [2.0, 6.0], [4.0, 2.0]], [], images=10000)
    _iterations_json(fixed, [[1.0, 2.0], [2.0, 8.0], [4.0, 1.0]], [], images=10000)
    verdicts = report_claims.sharing_claim([plain, shared, fixed]).split(
        "Jastrzebski et al.'s statements")[1]
    rows = _body_rows(verdicts)
    assert [r[1] for r in rows] == ["shared / unshared"] * 2 + ["ubn / shared"] * 2
    assert rows[0][2:] == ["‖h‖ growth per stage: 4.00; 3.00; 0.50 / 2.00; 1.50; 1.00",
                           "mixed: ‖h‖ grows more in the shared net in stages 1, 2 only"]
    assert rows[1][2] == "gap 25.00 / 18.00 points; val top-1 30.00 / 20.00"
    assert rows[1][3] == "supports: the shared net's gap is larger"
    # twice the standard error of the difference of two errors over 10,000 images each,
    # 1.29 points: 1.1 points is no difference (twice one error's standard error, 0.92, would
    # have called it one)
    noise = 200 * ((0.3 * 0.7 + 0.289 * 0.711) / 10000) ** 0.5
    assert 1.28 < noise < 1.3
    assert rows[2][3] == f"no difference (within ±{noise:.2f})"
    assert rows[3][3] == "mixed: ‖h‖ grows less with unshared BN in stages 1, 3 only"
    # a run still going, or one without its analysis, gives no verdict on its statements
    going = _image_run(tmp_path, "going", flags + " --share-blocks", [0.3], 0.3, finished=False)
    text = report_claims.sharing_claim([plain, going, fixed])
    assert "Jastrzebski et al.'s statements" not in text
    unanalysed = _image_run(tmp_path, "bare", flags + " --share-blocks --unshared-bn", [0.2], 0.1)
    rows = _body_rows(report_claims.sharing_claim([plain, shared, unanalysed]).split(
        "Jastrzebski et al.'s statements")[1])
    assert [r[0].split(" ")[0] for r in rows] == ["naive", "naive"]
    assert report_claims._growth_verdict({1: 2.0, 2: 3.0}, {1: 1.0, 2: 1.0}, "x") == \
        "supports: x in every stage"
    assert report_claims._growth_verdict({1: 1.0}, {1: 1.0}, "x") == "contradicts: x in no stage"


def test_extra_iterations_verdict_compares_first_and_last_blocks(tmp_path):
    run = _image_run(tmp_path, "net", "--arch resnet20", [0.5], 0.2)
    # stage 1: first block +1.0 point, last +0.2 (supports); stage 2: +0.0 then +2.0
    # (contradicts); stage 3: one shape-keeping block (no comparison)
    _iterations_json(run, [[1.0, 2.0, 3.0]] * 3, [[0.01, 0.002], [0.0, 0.02], [0.05]])
    rows = _body_rows(report_claims.iterations_claim([run]))
    assert rows == [["net", "1", "2", "s1b2: +1.00", "s1b3: +0.20", "supports"],
                    ["net", "2", "2", "s2b2: +0.00", "s2b3: +2.00", "contradicts"],
                    ["net", "3", "2", "s3b2: +5.00", "s3b2: +5.00", "—"]]
    # over 100 images, an intact error of 20% has a standard error of 4 points: a 0.8 or 2
    # point difference between the blocks is no difference
    other = _image_run(tmp_path, "few_images", "--arch resnet20", [0.5], 0.2)
    _iterations_json(other, [[1.0, 2.0, 3.0]] * 2, [[0.01, 0.002], [0.0, 0.02]], images=100)
    assert [r[5] for r in _body_rows(report_claims.iterations_claim([other]))] == [
        "no difference (within ±8.00)"] * 2
    # in a net with shared blocks, blocks 2.. of a stage are one map: no comparison, unless
    # the stage's first shape-keeping block is its own block 1 (stage 1 of a CIFAR ResNet)
    shared = _image_run(tmp_path, "shared", "--arch resnet32 --share-blocks", [0.5], 0.2)
    _iterations_json(shared, [[1.0, 2.0, 3.0]], [[0.01, 0.01]])
    blocks = json.loads((shared.path / "analysis" / "iterations.json").read_text())
    first_stage = dict(blocks["blocks"][0], block=1, name="s1b1", iterations=[
        dict(it, top1_err=0.2 + j * 0.05) for j, it in enumerate(blocks["blocks"][0]["iterations"])])
    blocks["blocks"].insert(0, first_stage)
    (shared.path / "analysis" / "iterations.json").write_text(json.dumps(blocks))
    assert [r[3:] for r in _body_rows(report_claims.iterations_claim([shared]))] == [
        ["s1b1: +10.00", "s1b3: +1.00", "supports"]]
    for b in blocks["blocks"]:
        b["stage"] = 2 if b["block"] > 1 else 1
    (shared.path / "analysis" / "iterations.json").write_text(json.dumps(blocks))
    assert [r[5] for r in _body_rows(report_claims.iterations_claim([shared]))] == [
        "—", "— (shared blocks: the same map, so the same change)"]
    # with unshared BN the iterations of the shared convolutions each have their own batch
    # norm: different maps, compared as in an unshared net
    for flags, verdict in ((" --unshared-bn", "supports"),
                           ("", "— (shared blocks: the same map, so the same change)")):
        net = _image_run(tmp_path, f"twin{flags}", "--arch resnet32 --share-blocks" + flags,
                         [0.5], 0.2)
        _iterations_json(net, [[1.0, 2.0, 3.0]], [[0.01, 0.002]])   # blocks 2 and 3
        assert [r[5] for r in _body_rows(report_claims.iterations_claim([net]))] == [verdict]
    # a plain net has no shortcut: no prediction, its rows are the control
    plain = _image_run(tmp_path, "plain", "--arch plain20", [0.5], 0.2)
    _iterations_json(plain, [[1.0, 2.0, 3.0]], [[0.01, 0.002]])
    assert [r[5] for r in _body_rows(report_claims.iterations_claim([plain]))] == [
        "— (plain net, no shortcut: the control)"]


def test_report_has_the_claim_sections(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "load_figure_class", lambda: None)
    a = _write_run(tmp_path / "a", ["python -m train.image --arch resnet20 --epochs 1"],
                   [_image_epoch(1, 0.3, 0.01, loss=0.2),
                    {"final": True, "step": 1, "epoch": 1, "val_top1_err": 0.3,
                     "val_top5_err": 0.01, "best_val_top1_err": 0.3}])
    text = report.main([str(a), "--out", str(tmp_path / "out")])
    assert "## Batch norm at equal training loss" not in text
    b = _write_run(tmp_path / "b", ["python -m train.image --arch resnet20 --no-bn --epochs 1"],
                   [_image_epoch(1, 0.4, 0.01, loss=0.1),
                    {"final": True, "step": 1, "epoch": 1, "val_top1_err": 0.4,
                     "val_top5_err": 0.01, "best_val_top1_err": 0.4}])
    text = report.main([str(a), str(b), "--out", str(tmp_path / "out2")])
    section = text.split("## Batch norm at equal training loss")[1]
    assert "| supports: at equal or lower training loss" in section
    assert "## Shared blocks" not in text and "## Extra iterations" not in text


def test_report_draws_the_norms_of_the_sharing_runs(tmp_path):
    pytest.importorskip("matplotlib")
    flags = "--arch resnet32 --limit 10000"
    runs = [_image_run(tmp_path, "unshared", flags, [0.1], 0.2),
            _image_run(tmp_path, "shared", flags + " --share-blocks", [0.3], 0.3),
            _image_run(tmp_path, "alone", "--arch resnet20", [0.3], 0.3)]   # not a sharing run
    _iterations_json(runs[1], [[1.0, 4.0], [2.0, 6.0]], [])
    _iterations_json(runs[2], [[1.0, 2.0]], [])
    assert report_claims.sharing_norm_lines(runs) == [
        ("shared (shared)", ["stem", "s1b1", "s1b2", "s2b1", "s2b2"], [1.0, 1.0, 4.0, 2.0, 6.0])]
    out = tmp_path / "out"
    text = report.main([str(r.path) for r in runs] + ["--out", str(out)])
    assert (out / "sharing_norms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shared_section = text.split("## Shared blocks")[1].split("\n## ")[0]
    assert "](sharing_norms.png)" in shared_section
    assert not (out / "bn_curves.png").exists()     # no BN pair among these runs


def test_report_draws_the_batch_norm_pairs(tmp_path):
    pytest.importorskip("matplotlib")
    runs = [_image_run(tmp_path, "bn", "--arch resnet20", [0.5, 0.1], 0.2),
            _image_run(tmp_path, "nobn", "--arch resnet20 --no-bn", [0.9, 0.3], 0.3)]
    assert [(a.path.name, b.path.name) for a, b in report_claims.bn_pairs(runs)] == [
        ("bn", "nobn")]
    out = tmp_path / "out"
    text = report.main([str(r.path) for r in runs] + ["--out", str(out)])
    assert (out / "bn_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bn_section = text.split("## Batch norm at equal training loss")[1].split("\n## ")[0]
    assert "](bn_curves.png)" in bn_section
