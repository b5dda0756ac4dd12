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
    assert f"({timing.cpu_name()})" in lines[1]   # the CPU on record beside the figures


def test_cpu_name_reads_the_first_processor(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n\n"
                    "processor\t: 1\nmodel name\t: another\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        info if path == "/proc/cpuinfo" else path, *a, **k))
    assert timing.cpu_name() == "AMD EPYC (family 26, model 2)"


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


def test_suite_names_the_state_and_plans_every_bench_into_its_folder(tmp_path):
    import suite  # bench/suite.py
    assert suite.state_of(suite.FAST_GFLOPS) == "fast"
    assert suite.state_of(suite.FAST_GFLOPS - 1) == "slow"
    planned = suite.commands(str(tmp_path), quick=True)
    assert [name for name, _ in planned] == ["image_step.txt", "ops.txt", "lm_step.txt",
                                             "memory.txt", "busy.txt"]
    for name, argv in planned:
        assert argv[1].startswith("bench/") and (ROOT / argv[1]).is_file()
        assert str(tmp_path / name) in argv          # outside the repo: an absolute path
        if "--rounds" in argv:
            assert argv[argv.index("--rounds") + 1] == "2"
    inside = suite.commands(str(ROOT / "results" / "bench" / "x"))
    assert inside[0][1][-1] == "results/bench/x/image_step.txt"   # as the benches run in ROOT


def test_suite_refuses_an_existing_folder(tmp_path):
    done = subprocess.run([sys.executable, "bench/suite.py", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"--out: {tmp_path} exists; the suite never overwrites a folder" in done.stderr


def _proc_state(pid):
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_suite_finds_pauses_and_continues_training_runs():
    import signal
    import time
    import suite
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m",
                            "train.fake"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        found = suite.training_runs()
        assert run.pid in found and other.pid not in found
        suite._signal_all([run.pid], signal.SIGSTOP)
        time.sleep(0.2)
        assert _proc_state(run.pid) == "T"
        suite._signal_all([run.pid], signal.SIGCONT)
        time.sleep(0.2)
        assert _proc_state(run.pid) == "S"
    finally:
        run.kill()
        other.kill()
