"""Shared fixtures.  `device` runs a test once per backend; every backend listed here must
work in CI (.ci/run installs PoCL so OpenCL runs on the CPU)."""
import os

import numpy as np
import pytest

BACKENDS = ["numpy"]
if os.environ.get("MINIGRAD_TEST_BACKENDS"):
    BACKENDS = os.environ["MINIGRAD_TEST_BACKENDS"].split(",")


@pytest.fixture(params=BACKENDS)
def device(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)
