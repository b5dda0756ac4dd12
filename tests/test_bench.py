"""The benchmark helpers run: bench/memory.py and bench/busy.py on tiny cases, and the tables
written under --out with their command line. Nothing here asserts a time or a size (this
machine's speed varies 2x); --help of every bench is checked in tests/test_help.py."""
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import timing  # noqa: E402  (bench/timing.py)


def _run(*args):
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_report_writes_the_command_line_then_the_table(tmp_path):
    out = timing.Report(tmp_path / "t.txt")
    out("a table row")
    out.close()
    lines = (tmp_path / "t.txt").read_text().splitlines()
    assert lines[0].startswith("$ python ") and lines[-1] == "a table row"


def test_gemm_rate_is_positive_and_kept():
    gemm = timing.Gemm(n=64)
    assert gemm.rate() > 0 and len(gemm.seen) == 1
    assert "GEMM float32 64^3" in gemm.line("now") and "min" in gemm.summary()


def test_run_case_measures_gemm_every_round():
    r = timing.run_case(lambda: np.ones(10).sum(), None, rounds=3, pause=0,
                        gemm=timing.Gemm(n=32))
    assert len(r["gemm_gflops"]) == 3 and r["ratio"] is None


def test_run_case_times_other_versions_of_ours_in_every_round():
    calls = []
    r = timing.run_case(lambda: calls.append("ours"), lambda: calls.append("theirs"), rounds=2,
                        pause=0, min_seconds=0, also={"other": lambda: calls.append("other")})
    # warm-ups, then each round: ours, the other version, theirs
    assert calls == ["ours", "other", "theirs"] + 2 * ["ours", "other", "theirs"]
    assert set(r["also"]) == {"other"} and r["also"]["other"]["ratio"] > 0


def test_image_step_bench_adds_a_one_thread_row():
    out = _run("bench/image_step.py", "--archs", "resnet20", "--batch", "2", "--rounds", "1",
               "--pause", "0", "--one-thread")
    rows = [line.split() for line in out.splitlines() if line.startswith(("resnet20", "  1"))]
    assert [row[:3] for row in rows] == [["resnet20", "2", "269,722"], ["1", "thread", "2"]]


def test_memory_bench_runs_a_tiny_case(tmp_path):
    out = _run("bench/memory.py", "--cases", "resnet20", "--batch", "2", "--steps", "1",
               "--sides", "ours", "--out", str(tmp_path / "m.txt"))
    row = [line for line in out.splitlines() if line.startswith("resnet20")]
    assert len(row) == 1 and float(row[0].split()[-2]) >= 0
    assert (tmp_path / "m.txt").read_text().startswith("$ python bench/memory.py")


def test_busy_bench_runs_and_stops_its_neighbour():
    out = _run("bench/busy.py", "--workloads", "demo", "--rounds", "1", "--steps", "2",
               "--pause", "0")
    assert any(line.startswith("demo      ours") for line in out.splitlines())
    leftover = subprocess.run(["pgrep", "-f", "while os.getppid"], capture_output=True)
    assert leftover.returncode == 1, "the busy bench left its CPU-bound process running"
