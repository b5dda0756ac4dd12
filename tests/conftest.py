"""Hypothesis profiles: `ci` (derandomized, the default under CI=true), `dev` (the
local default) and `thorough` (many examples). Choose with
`pytest --hypothesis-profile=thorough` or HYPOTHESIS_PROFILE=thorough.

No profile has a deadline: a gradient check on a machine shared with a training run can take
many times its usual time, and that is not a failure.

Cross-checks against PyTorch: every test that calls `pytest.importorskip("torch")` gets the
`torch` marker, so `python -m pytest -m torch` runs exactly them. Without torch they skip;
with TINYHW_REQUIRE_TORCH=1 (set by .ci/run, which installs torch) a skipped torch test is a
failure instead, so the cross-checks cannot silently stop running. Tests of the routes that need
Numba carry the `jit` marker (tests/routes.py) and TINYHW_REQUIRE_JIT=1 does the same for them."""
import inspect
import os

# One BLAS thread unless the caller chose otherwise (the suite passes with OPENBLAS_NUM_THREADS=1
# and =2). The tests' matrices are small: a second OpenBLAS thread gains nothing, and on a
# machine whose cores are busy (a training run beside the tests) its spin-waiting made the
# suite 4-5x slower. Set before numpy is first imported, when OpenBLAS reads it.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tinyhw.ops.fast import jit  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, max_examples=100, print_blob=True, **_common)
settings.register_profile("dev", max_examples=25, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

REQUIRE_TORCH = os.environ.get("TINYHW_REQUIRE_TORCH", "") not in ("", "0")
REQUIRE_JIT = os.environ.get("TINYHW_REQUIRE_JIT", "") not in ("", "0")   # tests/routes.py
_TORCH_CALLS = ('importorskip("torch")', "importorskip('torch')")


def _uses_torch(item):
    try:
        source = inspect.getsource(item.function)   # unwraps Hypothesis's @given
    except (AttributeError, OSError, TypeError):
        return False
    return any(call in source for call in _TORCH_CALLS)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _uses_torch(item):
            item.add_marker(pytest.mark.torch)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped:
        return
    for marker, required, variable, what in (
            ("torch", REQUIRE_TORCH, "TINYHW_REQUIRE_TORCH", "torch cross-check"),
            ("jit", REQUIRE_JIT, "TINYHW_REQUIRE_JIT", "jit test")):
        if marker == "torch" and item.get_closest_marker("jit") is not None and not jit.available:
            continue   # skipped for want of Numba, which only TINYHW_REQUIRE_JIT asks for
        if required and item.get_closest_marker(marker) is not None:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            report.outcome = "failed"
            report.longrepr = f"{variable}=1, yet this {what} was skipped: {reason}"
            return


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
