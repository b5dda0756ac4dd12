"""Route names as pytest parameters. A route that needs Numba ("jit", the `fast` extra) gets
the `jit` marker and skips without Numba; with TINYHW_REQUIRE_JIT=1 (set by .ci/run once it
has installed the extra) such a skip is a failure instead (tests/conftest.py)."""
import pytest

from tinyhw.ops.fast import jit

JIT_ROUTES = ("jit",)
needs_jit = [pytest.mark.jit,
             pytest.mark.skipif(not jit.available, reason=f"the jit route {jit.INSTALL_HINT}")]


def params(routes):
    """routes as parametrize values, the jit ones marked."""
    return [pytest.param(r, marks=needs_jit, id=r) if r in JIT_ROUTES else r for r in routes]


def jit_test(test):
    """Mark a whole test as one of the jit route's."""
    for mark in needs_jit:
        test = mark(test)
    return test
