"""Shared fixtures.  `device` runs a test once per backend.  Both backends must run in CI
(.ci/run installs PoCL so OpenCL runs on the CPU); on a machine without OpenCL the "cl"
cases skip with the reason, except under CI=true, where a missing backend is an error."""
import os

import numpy as np
import pytest

BACKENDS = os.environ.get("MINIGRAD_TEST_BACKENDS", "numpy,cl").split(",")


def _opencl_problem():
    try:
        from minigrad.backends import get_backend
        get_backend("cl")
        return None
    except Exception as e:  # OpenCLUnavailable, or a driver that fails to start
        return str(e)


@pytest.fixture(params=BACKENDS)
def device(request):
    if request.param == "cl":
        problem = _opencl_problem()
        if problem:
            if os.environ.get("CI"):
                pytest.fail(f"OpenCL backend unavailable in CI: {problem}")
            pytest.skip(f"OpenCL backend unavailable here: {problem}")
    return request.param


@pytest.fixture
def cl():
    """The OpenCL backend, for tests about OpenCL itself."""
    problem = _opencl_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"OpenCL backend unavailable in CI: {problem}")
        pytest.skip(f"OpenCL backend unavailable here: {problem}")
    from minigrad.backends import get_backend
    return get_backend("cl")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
