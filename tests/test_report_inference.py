"""train.report's iterative-inference section (train/report_inference.py) on fake run folders:
per stage, each block's cosines, norm ratio and estimation error, the sign of each mean judged
against twice its standard error, and iterative.json files from before issue 12 (and a plain
char-LM's, whose layer has no carry path) named instead of read."""
import json

from train import report, report_claims, report_inference
from tests.test_report import _lm_epoch, _write_run
from tests.test_report_claims import _body_rows, _image_run


def _summary(mean, std=0.1, count=10000):
    return {"mean": mean, "std": std, "p5": mean - std, "p95": mean + std, "count": count,
            "undefined": 0}


def _analyses(run, cosines, ratios):
    """iterative.json with per stage the blocks' mean cos_rest_of_net (block 1 changes the
    shape in stages after the first), and estimation_error.json with their rel_std."""
    blocks = []
    for s, means in enumerate(cosines, start=1):
        for k, mean in enumerate(means, start=1):
            keeps = s == 1 or k > 1
            blocks.append({"stage": s, "block": k, "name": f"s{s}b{k}", "kind": "residual",
                           "shape_changing": not keeps, "cos_rest_of_net": _summary(mean),
                           "cos_through_block": _summary(mean / 10) if keeps else None,
                           "norm_ratio": _summary(0.5 + k / 10)})
    stages = [{"stage": s, "a_std": 1.0, "blocks": [
        {"block": k, "name": f"s{s}b{k}", "mean": 0.0, "std": r, "mean_abs": r, "rel_std": r}
        for k, r in enumerate(values + [0.0], start=1)]} for s, values in
        enumerate(ratios, start=1)]
    folder = run.path / "analysis"
    folder.mkdir()
    (folder / "iterative.json").write_text(json.dumps(
        {"analysis": "iterative", "headline": "cos_rest_of_net", "blocks": blocks}))
    (folder / "estimation_error.json").write_text(json.dumps(
        {"analysis": "estimation_error", "stages": stages}))


def test_rows_per_stage_with_the_verdicts(tmp_path):
    run = _image_run(tmp_path, "net", "--arch resnet20", [0.5], 0.2)
    # std 0.1 over 10,000 images: a standard error of 0.001, so |mean| <= 0.002 is unclear
    _analyses(run, [[0.04, 0.03, 0.1], [0.05, 0.0015, 0.2], [0.06, -0.01, 0.3]],
              [[0.7, 0.4], [0.6, 0.8], [0.9, 0.9]])
    rows = _body_rows(report_inference.inference_claim([run]))
    assert rows[0] == ["net", "1", "s1b1–s1b3", "0.040 / 0.030 / 0.100",
                       "0.004 / 0.003 / 0.010", "0.60 / 0.70 / 0.80",
                       "supports: positive in every block", "0.70 / 0.40",
                       "yes: it never grows"]
    assert rows[1][4] == "— / 0.000 / 0.020"        # no "-0.000", and — for block 1
    assert rows[1][6:] == ["mixed: not clearly above 0 in s2b2", "0.60 / 0.80",
                           "no: it grows somewhere"]
    assert rows[2][6:] == ["contradicts: negative in s3b2", "0.90 / 0.90", "yes: it never grows"]


def test_sign_needs_twice_the_standard_error():
    assert report_inference.cosine_sign(_summary(0.021, std=0.1, count=100)) == 1
    assert report_inference.cosine_sign(_summary(0.019, std=0.1, count=100)) == 0
    assert report_inference.cosine_sign(_summary(-0.021, std=0.1, count=100)) == -1
    assert report_inference.cosine_sign({"mean": None, "count": 0}) == 0
    assert report_inference.cosine_sign(None) == 0


def test_missing_estimation_and_stale_iterative(tmp_path):
    run = _image_run(tmp_path, "net", "--arch resnet20", [0.5], 0.2)
    _analyses(run, [[0.04, 0.03, 0.1]], [[0.7, 0.4]])
    (run.path / "analysis" / "estimation_error.json").unlink()
    old = _image_run(tmp_path, "old", "--arch resnet20", [0.5], 0.2)
    (old.path / "analysis").mkdir()
    (old.path / "analysis" / "iterative.json").write_text(json.dumps(
        {"analysis": "iterative", "blocks": [{"stage": 1, "block": 1, "name": "s1b1",
                                              "cosine": _summary(0.0)}]}))
    text = report_inference.inference_claim([run, old])
    assert [r[0] for r in _body_rows(text)] == ["net"]
    assert _body_rows(text)[0][7:] == ["—", "—"]
    assert text.endswith("with only the cosine through the block and the float32-cancelled "
                         "loss gradient): old. `train.analyze iterative` on the checkpoint again "
                         "replaces it.")
    assert "| old |" not in report_inference.inference_claim([old])
    bare = _image_run(tmp_path, "bare", "--arch resnet20", [0.5], 0.2)
    assert report_inference.inference_claim([bare]) is None
    titles = [s[1] for s in report_claims.sections([run])]
    assert titles == ["inference"]


def test_char_lm_stack_is_one_stage_and_the_report_shows_it(tmp_path):
    folder = _write_run(tmp_path / "lm_residual", ["python -m train.lm --variant residual"],
                        [_lm_epoch(1, 200.0)])
    (folder / "analysis").mkdir()
    layers = [{"layer": k, "name": f"highway{k}", "cos_rest_of_net": _summary(mean),
               "cos_through_block": _summary(0.0), "norm_ratio": _summary(0.9)}
              for k, mean in ((1, 0.04), (2, -0.0004))]
    (folder / "analysis" / "iterative.json").write_text(json.dumps(
        {"analysis": "iterative", "headline": "cos_rest_of_net", "layers": layers}))
    (folder / "analysis" / "estimation_error.json").write_text(json.dumps(
        {"analysis": "estimation_error", "layers": [
            {"layer": 1, "name": "highway1", "rel_std": 0.82},
            {"layer": 2, "name": "highway2", "rel_std": 0.0}]}))
    lm = report.load_run(folder)
    assert _body_rows(report_inference.inference_claim([lm])) == [[
        "lm_residual", "highway stack", "highway1–highway2", "0.040 / 0.000", "0.000 / 0.000",
        "0.90 / 0.90", "mixed: not clearly above 0 in highway2", "0.82", "—"]]
    text, _ = report.build_report([lm], tmp_path / "out", None, "python -m train.report")
    assert "## Iterative inference and estimation inside each stage" in text
    assert "| lm_residual | highway stack |" in text


def test_runs_of_the_same_folder_name_are_told_apart(tmp_path):
    old = _image_run(tmp_path / "results", "net", "--arch resnet20", [0.5], 0.2)
    new = _image_run(tmp_path / "results" / "issue12", "net", "--arch resnet20", [0.5], 0.2)
    _analyses(new, [[0.04, 0.03, 0.1]], [[0.7, 0.4]])
    (old.path / "analysis").mkdir()
    (old.path / "analysis" / "iterative.json").write_text(json.dumps(
        {"analysis": "iterative", "blocks": []}))
    text, _ = report.build_report([old, new], tmp_path / "out", None, "python -m train.report")
    assert [old.name, new.name] == ["results/net", "issue12/net"]
    assert "| issue12/net | 1 | s1b1–s1b3 |" in text
    assert "replaces it" in text and "stale" in text and ": results/net." in text


def test_a_plain_char_lm_is_named_not_read(tmp_path):
    """An iterative.json of a plain char-LM (written before `iterative` refused it) gets no row
    and no verdict: its layer has no carry path."""
    folder = _write_run(tmp_path / "lm_plain", ["python -m train.lm --variant plain"],
                        [_lm_epoch(1, 200.0)])
    (folder / "analysis").mkdir()
    (folder / "analysis" / "iterative.json").write_text(json.dumps(
        {"analysis": "iterative", "headline": "cos_rest_of_net", "variant": "plain",
         "layers": [{"layer": 1, "name": "highway1", "cos_rest_of_net": _summary(0.04),
                     "cos_through_block": _summary(0.0), "norm_ratio": _summary(1.3)}]}))
    text = report_inference.inference_claim([report.load_run(folder)])
    assert _body_rows(text) == []
    assert text.endswith("refuses such a checkpoint now): lm_plain.")
