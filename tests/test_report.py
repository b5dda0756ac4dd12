"""train.report on fake run folders: table rows, paper numbers, files, stopped runs, errors."""
import json
import sys
from argparse import Namespace

import pytest

from train import report


def _write_run(folder, commands, records, tail=""):
    folder.mkdir(parents=True)
    (folder / "command.txt").write_text("".join(c + "\n" for c in commands))
    text = "".join(json.dumps(r) + "\n" for r in records)
    (folder / "metrics.jsonl").write_text(text + tail)
    return folder


def _lm_epoch(epoch, val, words=1000.0):
    return {"epoch": epoch, "step": 10 * epoch, "lr": 1.0, "train_ppl": val + 20,
            "val_ppl": val, "best_val_ppl": val, "seconds": 1800.0, "words_per_s": words}


def _image_epoch(epoch, top1, top5, loss=1.0, images=1234.5):
    return {"epoch": epoch, "step": 100 * epoch, "lr": 0.1, "train_loss": loss,
            "train_top1_err": top1 + 0.05, "val_loss": loss + 0.1, "val_top1_err": top1,
            "val_top5_err": top5, "seconds": 600.0, "images_per_s": images}


@pytest.fixture
def runs(tmp_path):
    """An LM run with a final record, a CIFAR run still going, and a no-BN 50-layer run."""
    lm = _write_run(
        tmp_path / "runs" / "lm_full",
        ["TINYHW_DATA=../shared/data python -m train.lm --variant full --epochs 2 --out x"],
        [_lm_epoch(1, 200.0), _lm_epoch(2, 150.5, words=2345.6),
         {"final": True, "step": 20, "best_val_ppl": 150.5, "test_ppl": 145.678}])
    cifar = _write_run(
        tmp_path / "runs" / "resnet20",
        ["python -m train.image --arch resnet20 --epochs 10"],
        [_image_epoch(1, 0.5, 0.1), _image_epoch(2, 0.3, 0.05), _image_epoch(3, 0.35, 0.04)])
    nobn = _write_run(
        tmp_path / "runs" / "h50_nobn",
        ["python -m train.image --arch highway50 --no-bn --epochs 2 --lr 0.05"],
        [_image_epoch(1, 0.6, 0.3), _image_epoch(2, 0.4, 0.2, images=99.0),
         {"final": True, "step": 200, "epoch": 2, "val_top1_err": 0.4, "val_top5_err": 0.2,
          "best_val_top1_err": 0.4}])
    return lm, cifar, nobn


@pytest.fixture
def no_plots(monkeypatch):
    """For tests about the table: drawing the PNGs is most of a report's time."""
    monkeypatch.setattr(report, "load_figure_class", lambda: None)


def _rows(text):
    """{run folder name: [cells]} for every table row of the report."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| [`"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0].split("`")[1].rsplit("/", 1)[-1]] = cells
    return rows


def test_report_rows_files_and_paper_numbers(runs, tmp_path, capsys):
    out = tmp_path / "report"
    text = report.main([str(r) for r in runs] + ["--out", str(out)])
    assert capsys.readouterr().out == text == (out / "report.md").read_text()
    rows = _rows(text)
    # run, config, variant, epochs, best val ppl, test ppl, words/s, train hours, paper test ppl
    assert rows["lm_full"][1:] == ["large", "full", "2 of 2", "150.50", "145.68", "2,346",
                                   "1.00", "79.09"]
    # run, arch, BN, epochs, top-1, top-5, best top-1, images/s, train hours, paper / reference
    assert rows["resnet20"][1:] == ["resnet20", "yes", "3 of 10 (running/stopped)", "35.00", "4.00",
                                    "30.00", "1,234", "0.50", "top-1 8.75 (He et al. ResNet-20)"]
    assert rows["h50_nobn"][1:] == ["highway50", "no", "2 of 2", "40.00", "20.00", "40.00", "99",
                                    "0.33", "top-5 10.03 (Table 1b Highway, no BN)"]
    assert "(running/stopped)" not in " ".join(rows["lm_full"] + rows["h50_nobn"])
    assert "](../runs/resnet20)" in text            # links relative to report.md
    assert "**25 epochs**" in text and "**164 epochs**" in text and "JPEG copy" in text
    pytest.importorskip("matplotlib")
    for name in ("lm_val_ppl.png", "image_val_top1.png", "image_train_loss.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text


def test_without_matplotlib_report_md_is_still_written(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)         # import fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "report"
    text = report.main([str(runs[0]), "--out", str(out)])
    assert (out / "report.md").read_text() == text
    assert "Plots skipped" in text and "145.68" in text
    assert not list(out.glob("*.png"))
    assert "plots skipped" in capsys.readouterr().err


def test_folders_that_are_not_runs_are_skipped_with_a_note(no_plots, runs, tmp_path, capsys):
    """`python -m train.report results/*` meets results/bench and results/report."""
    bench = tmp_path / "runs" / "bench"
    bench.mkdir()
    (bench / "ops.txt").write_text("timings\n")
    stray = tmp_path / "runs" / "notes.txt"
    stray.write_text("a file\n")
    text = report.main([str(runs[0]), str(bench), str(stray), "--out", str(tmp_path / "out")])
    assert list(_rows(text)) == ["lm_full"]
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: skipping {bench}: no metrics.jsonl (not a train.lm / train.image "
                     "run folder, or its first epoch has not ended yet)",
                     f"note: skipping {stray}: not a folder"]


def test_no_run_at_all_or_a_missing_folder_is_an_error(tmp_path):
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(SystemExit, match=r"none of .*empty_run is a run folder"):
        report.main([str(tmp_path / "empty_run"), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="nowhere: no such run folder"):
        report.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_bad_out_and_an_unreadable_analysis_are_one_line_errors(no_plots, runs, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    with pytest.raises(SystemExit, match=r"^error: --out .*a_file: is a file; expected a folder"):
        report.main([str(runs[0]), "--out", str(a_file)])
    with pytest.raises(SystemExit, match=r"^error: --out .*a_file/sub: cannot create the folder"):
        report.main([str(runs[0]), "--out", str(a_file / "sub")])
    (runs[0] / "analysis").mkdir()
    (runs[0] / "analysis" / "iterative.json").write_text('{"analysis": "iterative", ')
    with pytest.raises(SystemExit, match=r"^error: .*iterative\.json: cannot be read as JSON"):
        report.main([str(runs[0]), "--out", str(tmp_path / "out")])
    (runs[0] / "analysis" / "iterative.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match=r"iterative\.json: expected a JSON object, got list"):
        report.main([str(runs[0]), "--out", str(tmp_path / "out")])


def test_default_out_is_runs_report_and_an_existing_report_is_kept(no_plots, runs, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    report.main([str(runs[0])])
    md = tmp_path / "runs" / "report" / "report.md"
    first = md.read_text()
    assert "lm_full" in first and not (tmp_path / "results").exists()
    # A second report into the same folder (e.g. the committed results/report) is refused ...
    with pytest.raises(SystemExit, match=r"report\.md exists; pass --overwrite"):
        report.main([str(runs[1])])
    assert md.read_text() == first
    # ... unless asked for.
    text = report.main([str(runs[1]), "--overwrite"])
    assert md.read_text() == text and "resnet20" in text and "lm_full" not in text


def test_a_run_stopped_by_max_steps_before_an_epoch_ended_is_labelled(no_plots, tmp_path):
    """No epoch ended, so no best.npz: the test perplexity is the last model's."""
    command = ["python -m train.lm --config tiny --max-steps 5"]
    final = {"final": True, "step": 5, "best_val_ppl": None, "test_ppl": 456.7}
    new = _write_run(tmp_path / "new", command, [{**final, "model": "last"}])
    old = _write_run(tmp_path / "old", command, [final])          # written before "model"
    done = _write_run(tmp_path / "done", ["python -m train.lm --config tiny --epochs 1"],
                      [_lm_epoch(1, 500.0), {**final, "model": "best"}])
    rows = _rows(report.main([str(new), str(old), str(done), "--out", str(tmp_path / "out")]))
    for name in ("new", "old"):
        assert rows[name][3] == "0 of 25 (--max-steps 5)"
        assert rows[name][4] == "—"                                  # no best val ppl
        assert rows[name][5] == "456.70 (last model: no epoch ended, no best.npz)"
    assert rows["done"][3] == "1 of 1" and rows["done"][5] == "456.70"


def test_image_run_scored_every_other_epoch(no_plots, tmp_path):
    """train.image --val-every 2: epochs without val keys are read, the row shows the last
    scored epoch, and curves take the scored epochs only; a record with some val keys but not
    all is an error."""
    unscored = {k: v for k, v in _image_epoch(3, 0.2, 0.02).items() if not k.startswith("val_")}
    run = _write_run(tmp_path / "sparse", ["python -m train.image --epochs 10 --val-every 2"],
                     [_image_epoch(2, 0.4, 0.1), unscored])
    rows = _rows(report.main([str(run), "--out", str(tmp_path / "out")]))
    assert rows["sparse"][3] == "3 of 10 (running/stopped)" and rows["sparse"][4] == "40.00"
    read = report.load_run(run)
    assert read.curve("val_top1_err", 100) == ([2], [40.0])
    assert read.curve("train_loss") == ([2, 3], [1.0, 1.0])
    partial = {k: v for k, v in unscored.items()}
    partial["val_top1_err"] = 0.3
    bad = _write_run(tmp_path / "partial", ["python -m train.image --epochs 10"], [partial])
    with pytest.raises(SystemExit, match=r"partial[/\\]metrics\.jsonl:1: epoch record lacks "
                                         r"val_loss, val_top5_err"):
        report.main([str(bad), "--out", str(tmp_path / "out2")])


def test_bad_json_line_names_file_and_line(tmp_path):
    run = _write_run(tmp_path / "bad", ["python -m train.lm"], [_lm_epoch(1, 200.0)],
                     tail="{not json\n" + json.dumps(_lm_epoch(2, 150.0)) + "\n")
    with pytest.raises(SystemExit, match=r"bad[/\\]metrics\.jsonl:2: not valid JSON"):
        report.main([str(run), "--out", str(tmp_path / "out")])


def test_partly_written_last_line_is_skipped(no_plots, tmp_path, capsys):
    run = _write_run(tmp_path / "busy", ["python -m train.lm --config small"],
                     [_lm_epoch(1, 200.0)], tail='{"epoch": 2, "val_')
    rows = _rows(report.main([str(run), "--out", str(tmp_path / "out")]))
    assert rows["busy"][3] == "1 of 25 (running/stopped)" and rows["busy"][5] == "—"
    assert "busy/metrics.jsonl:2: skipping" in capsys.readouterr().err.replace("\\", "/")


def test_resumed_history_keeps_the_latest_epochs_and_final(no_plots, tmp_path):
    """Stopped after epoch 1 (final), resumed: epoch 2 logged twice, no final yet."""
    records = [_lm_epoch(1, 200.0), {"final": True, "step": 10, "best_val_ppl": 200.0,
                                     "test_ppl": 190.0},
               _lm_epoch(2, 170.0), _lm_epoch(2, 160.0)]
    run = _write_run(tmp_path / "resumed", ["python -m train.lm --epochs 1",
                                            "python -m train.lm --epochs 3 --resume"], records)
    loaded = report.load_run(run)
    assert [r["val_ppl"] for r in loaded.epochs] == [200.0, 160.0] and not loaded.finished
    row = _rows(report.main([str(run), "--out", str(tmp_path / "out")]))["resumed"]
    assert row[3] == "2 of 3 (running/stopped)" and row[5] == "190.00 (after epoch 1)"
    # a restart from scratch in the same folder drops the old history and its final record
    restarted = report.Run(run, "lm", None)
    report.add_records(restarted, list(enumerate(records + [_lm_epoch(1, 300.0)], 1)), run)
    assert [r["val_ppl"] for r in restarted.epochs] == [300.0] and restarted.final is None


def test_unparsable_command_is_an_error(tmp_path):
    run = _write_run(tmp_path / "odd", ["python -m train.lm --variant bogus"], [_lm_epoch(1, 9.0)])
    with pytest.raises(SystemExit, match=r"command\.txt: cannot parse the last command"):
        report.main([str(run), "--out", str(tmp_path / "out")])


def test_reference_numbers():
    image = report.image_reference
    assert image(Namespace(arch="highway_full50", bn=True)).startswith("top-5 7.29 ")
    assert image(Namespace(arch="resnet50", bn=False)).startswith("top-5 9.40 ")
    assert image(Namespace(arch="resnet110", bn=True)).startswith("top-1 6.43 ")
    assert image(Namespace(arch="resnet20", bn=False)) == "—"     # He et al. used BN
    assert image(Namespace(arch="highway20", bn=True)) == "—"
    assert report.lm_reference(Namespace(config="large", variant="plain")) == "92.60"
    # Kim et al. (2015) Table 7, small model: one highway layer 92.3 (LSTM-Char-Small as
    # published), two highway layers 90.1, one MLP layer 111.2 (100.3 is no highway layer)
    assert "one highway layer: 92.3" in report.lm_reference(Namespace(config="small",
                                                                     variant="c_only"))
    assert "one MLP layer: 111.2" in report.lm_reference(Namespace(config="small",
                                                                  variant="plain"))
    assert "two highway layers: 90.1" in report.lm_reference(Namespace(config="small",
                                                                      variant="residual"))
    assert report.lm_reference(Namespace(config="tiny", variant="full")) == "—"


def _small_run(root, variant, seed, epochs_done, test=None, epochs=25):
    records = [_lm_epoch(e, 200.0 - e) for e in range(1, epochs_done + 1)]
    if test is not None:
        records.append({"final": True, "step": 10 * epochs_done, "model": "best",
                        "best_val_ppl": 200.0 - epochs_done, "test_ppl": test})
    return _write_run(root / f"{variant}_{seed}", [
        f"python -m train.lm --config small --variant {variant} --seed {seed} "
        f"--epochs {epochs}"], records)


def test_table_1a_gives_seed_spread_ranks_and_never_shows_a_run_in_progress_as_final(tmp_path):
    runs = [report.load_run(p) for p in (
        _small_run(tmp_path, "coupled", 0, 25, test=95.0),
        _small_run(tmp_path, "coupled", 1, 25, test=97.0),
        _small_run(tmp_path, "residual", 0, 25, test=101.0),
        _small_run(tmp_path, "c_only", 0, 7),                       # still training
        _small_run(tmp_path, "plain", 0, 3, test=150.0),           # stopped early, scored
        _small_run(tmp_path, "full", 0, 2, test=180.0, epochs=2),  # finished, but a short run
    )]
    rows = {line.split(" | ")[0].strip("| "): [c.strip() for c in line.strip("|").split(" | ")]
            for line in report.table_1a(runs, "small").splitlines()[2:]}
    assert rows["coupled"][1:4] == ["95.00, 97.00", "96.00 ± 1.00", "1"]
    assert rows["residual"][1:4] == ["101.00", "101.00", "2"]
    assert rows["c_only"][1:5] == ["—", "—", "—", "seed 0: epoch 7 of 25, val 193.00"]
    assert rows["plain"][1] == "—" and "epoch 3 of 25" in rows["plain"][4]
    assert rows["full"][1:5] == ["—", "—", "—", "seed 0: epoch 2 of 2 (a shorter run), val 198.00"]
    assert rows["t_only"][1:5] == ["—", "—", "—", "—"]
    assert rows["coupled"][5:] == ["79.13", "2", "92.3 (one highway layer)"]
    assert rows["plain"][5:] == ["92.60", "6", "111.2 (one MLP layer)"]
    assert report.table_1a(runs, "large") is None


def test_table_1a_gaps_are_set_against_the_largest_seed_spread(tmp_path):
    runs = [report.load_run(p) for p in (
        _small_run(tmp_path, "coupled", 0, 25, test=95.0),
        _small_run(tmp_path, "coupled", 1, 25, test=96.0),
        _small_run(tmp_path, "residual", 0, 25, test=101.0),
        _small_run(tmp_path, "residual", 1, 25, test=104.0),   # the largest spread: 3.00
        _small_run(tmp_path, "c_only", 0, 25, test=97.0),
        _small_run(tmp_path, "plain", 0, 12),                    # in progress: not compared
    )]
    text = report.table_1a_gaps(runs, "small")
    assert "(residual 3.00 over 2 seeds, coupled 1.00 over 2 seeds); the largest, residual" in text
    rows = [[c.strip() for c in line.strip("|").split(" | ")]
            for line in text.splitlines() if line.startswith("| ")][1:]
    # means: coupled 95.5, c_only 97.0, residual 102.5; paper: c_only 79.15, coupled 79.13
    assert rows == [["coupled < c_only", "1.50", "+0.02", "3.00", "no: within the seed spread"],
                    ["c_only < residual", "5.50", "+12.17", "3.00", "yes"]]
    # one seed per variant: no spread to compare with, so no table
    assert report.table_1a_gaps(runs[::2], "small") is None
    assert report.table_1a_gaps(runs[:2], "small") is None      # a single variant
    assert report.table_1a_gaps(runs, "large") is None


def test_table_1a_figure_has_the_protocol_runs_in_the_papers_order(tmp_path):
    """One curve per run of the protocol's length (finished or going, never a shorter run),
    the variants in the paper's order with one colour each, seed 1 dashed; the figure sits in
    its config's Table 1a section only."""
    paths = [_small_run(tmp_path, "residual", 0, 25, test=101.0),
             _small_run(tmp_path, "coupled", 1, 25, test=97.0),
             _small_run(tmp_path, "coupled", 0, 25, test=95.0),
             _small_run(tmp_path, "c_only", 0, 7),                         # still training
             _small_run(tmp_path, "full", 0, 2, test=180.0, epochs=2)]    # a shorter run
    lines = report.table_1a_lines([report.load_run(p) for p in paths], "small")
    assert [(label, colour, dashed) for label, _, _, colour, dashed in lines] == [
        ("coupled, seed 0", "C1", False), ("coupled, seed 1", "C1", True),
        ("c_only, seed 0 (epoch 7 of 25, in progress)", "C2", False),
        ("residual, seed 0", "C4", False)]
    assert lines[2][1:3] == ([1, 2, 3, 4, 5, 6, 7], [199.0, 198.0, 197.0, 196.0, 195.0, 194.0,
                                                     193.0])
    assert report.table_1a_lines([report.load_run(p) for p in paths], "large") == []
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    text = report.main([str(p) for p in paths] + ["--out", str(out)])
    assert (out / "lm_table1a_small.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "lm_table1a_large.png").exists()
    small = text.split("## Table 1a, small model")[1].split("\n## ")[0]
    assert "](lm_table1a_small.png)" in small and "lm_val_ppl.png" not in small
    assert text.count("](lm_table1a_small.png)") == 1


def test_shared_no_bn_and_subset_image_runs_are_labelled_apart(no_plots, tmp_path):
    """--share-blocks, --unshared-bn, --no-bn and --limit runs of one arch: a row each, told
    apart in the arch and BN cells and in the curves' labels; only the plain run gets He et
    al.'s reference number."""
    commands = {"plain": "", "nobn": " --no-bn", "shared": " --share-blocks",
                "ubn": " --share-blocks --unshared-bn", "subset": " --limit 10000"}
    runs = [_write_run(tmp_path / name,
                       [f"python -m train.image --arch resnet20 --epochs 1{flags}"],
                       [_image_epoch(1, 0.5, 0.1)]) for name, flags in commands.items()]
    text = report.main([str(r) for r in runs] + ["--out", str(tmp_path / "report")])
    rows = _rows(text)
    cells = {name: (rows[name][1], rows[name][2], rows[name][-1]) for name in commands}
    assert cells == {
        "plain": ("resnet20", "yes", "top-1 8.75 (He et al. ResNet-20)"),
        "nobn": ("resnet20", "no", report.DASH),
        "shared": ("resnet20, shared blocks", "yes", report.DASH),
        "ubn": ("resnet20, shared blocks, unshared BN", "yes", report.DASH),
        "subset": ("resnet20, --limit 10,000", "yes", report.DASH)}
    labels = [report.run_label(report.load_run(r)) for r in runs]
    assert labels == ["resnet20, BN", "resnet20, no BN", "resnet20, BN, shared blocks",
                      "resnet20, BN, shared blocks, unshared BN", "resnet20, BN, --limit 10,000"]


def test_train_hours_sums_the_epochs_that_have_seconds(tmp_path):
    run = report.Run(tmp_path, "image", None,
                     epochs=[{"epoch": 1, "seconds": 1800.0}, {"epoch": 2},
                             {"epoch": 3, "seconds": 5400}])
    assert report.train_hours(run) == 2.0
    assert report.train_hours(report.Run(tmp_path, "image", None, epochs=[{"epoch": 1}])) is None
