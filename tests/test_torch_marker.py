"""The `torch` marker and TINYHW_REQUIRE_TORCH of tests/conftest.py, on which .ci/run relies:
run on a throwaway test folder (this project's conftest and pytest settings) in a subprocess."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Spelled in two pieces: written whole here, the conftest would mark this very file as a
# torch cross-check.
IMPORT_TORCH = "pytest.importorskip(" + '"torch")'

CROSS_CHECKS = f'''
import sys
import pytest


def test_against_torch():
    sys.modules["torch"] = None      # as if torch were not installed
    {IMPORT_TORCH}


def test_without_torch():
    pass
'''


def _start_pytest(folder, require):
    env = {k: v for k, v in os.environ.items() if k != "TINYHW_REQUIRE_TORCH"}
    if require:
        env["TINYHW_REQUIRE_TORCH"] = "1"
    return subprocess.Popen([sys.executable, "-m", "pytest", "-m", "torch", "-p",
                             "no:cacheprovider", "-q"], cwd=folder, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_torch_tests_are_marked_and_must_not_skip_when_required(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)               # markers, --strict-markers
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests")
    (tmp_path / "tests" / "test_cross.py").write_text(CROSS_CHECKS)

    plain, required = (_start_pytest(tmp_path, require) for require in (False, True))
    out = plain.communicate(timeout=300)[0]
    assert plain.returncode == 0, out
    assert "1 skipped, 1 deselected" in out                     # -m torch: only the marked one
    out = required.communicate(timeout=300)[0]
    assert required.returncode == 1, out
    assert "1 failed, 1 deselected" in out
    assert "TINYHW_REQUIRE_TORCH=1, yet this torch cross-check was skipped" in out
