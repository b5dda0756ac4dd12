"""Hypothesis profiles: `ci` (derandomized, the default under CI=true), `dev` (the
local default) and `thorough` (many examples). Choose with
`pytest --hypothesis-profile=thorough` or HYPOTHESIS_PROFILE=thorough.

No profile has a deadline: a gradient check on a machine shared with a training run can take
many times its usual time, and that is not a failure."""
import os

# One BLAS thread unless the caller chose otherwise (the suite passes with OPENBLAS_NUM_THREADS=1
# and =2). The tests' matrices are small: a second OpenBLAS thread gains nothing, and on a
# machine whose cores are busy (a training run beside the tests) its spin-waiting made the
# suite 4-5x slower. Set before numpy is first imported, when OpenBLAS reads it.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, max_examples=100, print_blob=True, **_common)
settings.register_profile("dev", max_examples=25, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
