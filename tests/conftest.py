"""Shared fixtures.  `device` runs a test once per backend and CPU path:
  numpy             the CPU with compiled kernels (the default where a C compiler works)
  numpy-evaluator   the CPU with the NumPy evaluator (what runs where none does)
  cl                OpenCL (.ci/run installs PoCL so it runs on the CPU)
Every one must run in CI: on a machine without OpenCL or a C compiler those cases skip with the
reason, except under CI=true, where a missing path is an error."""
import os

import numpy as np
import pytest

BACKENDS = os.environ.get("MINIGRAD_TEST_BACKENDS", "numpy,numpy-evaluator,cl").split(",")


def _opencl_problem():
    try:
        from minigrad.backends import get_backend
        get_backend("cl")
        return None
    except Exception as e:  # OpenCLUnavailable, or a driver that fails to start
        return str(e)


def _missing(what: str, problem: str):
    if os.environ.get("CI"):
        pytest.fail(f"{what} unavailable in CI: {problem}")
    pytest.skip(f"{what} unavailable here: {problem}")


@pytest.fixture(params=BACKENDS)
def device(request):
    if request.param == "cl":
        problem = _opencl_problem()
        if problem:
            _missing("OpenCL backend", problem)
        yield "cl"
        return
    from minigrad.backends import get_backend
    cpu = get_backend("numpy")
    if request.param == "numpy":
        if cpu.compiler is None:
            _missing("compiled CPU kernels", cpu.why_not_compiled)
        yield "numpy"
        return
    compiler, cpu.compiler = cpu.compiler, None          # numpy-evaluator: the same backend, not compiling
    try:
        yield "numpy"
    finally:
        cpu.compiler = compiler


@pytest.fixture
def cl():
    """The OpenCL backend, for tests about OpenCL itself (skipped when MINIGRAD_TEST_BACKENDS
    leaves it out, as the mutation-testing command does)."""
    if "cl" not in BACKENDS:
        pytest.skip("OpenCL is not among MINIGRAD_TEST_BACKENDS")
    problem = _opencl_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"OpenCL backend unavailable in CI: {problem}")
        pytest.skip(f"OpenCL backend unavailable here: {problem}")
    from minigrad.backends import get_backend
    return get_backend("cl")


def find_shakespeare():
    """Tiny Shakespeare for tests: $MINIGRAD_DATA, or the shared/ folder beside the repo."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(os.environ.get("MINIGRAD_DATA", ""), "tinyshakespeare.txt"),
                  os.path.join(here, "..", "..", "shared", "data", "tinyshakespeare.txt")]
    return next((os.path.abspath(p) for p in candidates if os.path.isfile(p)), None)


@pytest.fixture
def shakespeare():
    path = find_shakespeare()
    if path is None:
        message = "Tiny Shakespeare not found: set MINIGRAD_DATA to a folder holding tinyshakespeare.txt"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_sessionfinish(session, exitstatus):
    """Under CI=true a skipped test fails the run: CI must install everything the tests need."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped and exitstatus == 0:
        reporter.write_line(f"CI: {skipped} test(s) skipped; a skip in CI is a failure (install what they need)")
        session.exitstatus = 1


def bench_module(name: str):
    """bench/<name>.py as a module, loaded by its path: bench/ stays off sys.path, where its
    sample.py would shadow the examples' (tests import those by name)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
