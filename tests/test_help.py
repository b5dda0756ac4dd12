"""Every entry point answers --help: exit 0 and a usage text that names the program and says
what it does. Run as a user runs them, each in its own process from the repository root."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANALYSES = ("estimation-error", "lesion", "shuffle", "gates", "iterative", "iterations")
COMMANDS = {
    "python -m train.lm": ["-m", "train.lm"],
    "python -m train.image": ["-m", "train.image"],
    "python -m train.analyze": ["-m", "train.analyze"],
    **{f"python -m train.analyze {a}": ["-m", "train.analyze", a] for a in ANALYSES},
    "python -m train.report": ["-m", "train.report"],
    "python -m train.demo": ["-m", "train.demo"],
    **{f"python bench/{b}.py": [f"bench/{b}.py"] for b in ("ops", "lm_step", "image_step",
                                                             "timing", "dist", "memory",
                                                             "busy", "profile_step", "suite")},
}


def test_every_entry_point_has_a_help_text():
    assert sorted(p.name for p in (ROOT / "bench").glob("*.py")) == \
        ["busy.py", "dist.py", "image_step.py", "lm_step.py", "memory.py", "ops.py",
         "profile_step.py", "suite.py", "timing.py"]   # a new one: add it above
    # All at once: each is mostly interpreter start-up and imports.
    running = {name: subprocess.Popen([sys.executable, *args, "--help"], cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, args in COMMANDS.items()}
    for name, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{name} --help: exit {process.returncode}\n{err}"
        assert out.startswith(f"usage: {name} "), f"{name} --help:\n{out}"
        body = out.split("\n\n", 1)[1]              # the description after the usage lines
        assert len(body.split()) >= 40, f"{name} --help says too little:\n{out}"
