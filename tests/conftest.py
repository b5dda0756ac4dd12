"""Hypothesis profiles: `ci` (derandomized, the default under CI=true), `dev` (the
local default) and `thorough` (many examples). Choose with
`pytest --hypothesis-profile=thorough` or HYPOTHESIS_PROFILE=thorough."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, max_examples=100, print_blob=True, **_common)
settings.register_profile("dev", max_examples=25, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
