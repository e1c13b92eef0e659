"""minigrad.jit refuses, rather than replays a stale number, a function whose Python values
change between calls or that reads values back while building its graph (minigrad/jitcheck.py);
values passed in as Tensor arguments are seen by every replay."""
import numpy as np
import pytest

import minigrad
from minigrad import Tensor, optim


def scaled_step(w, make_scale):
    """A step whose loss is scaled by what make_scale(x) gives (see the tests below)."""
    opt = optim.SGD([w], lr=0.1)

    def step(x, *rest):
        loss = (x * w).sum() * make_scale(x, *rest)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss
    return step, opt


@pytest.mark.parametrize("how", ["host tensor", "python constant"])
def test_jit_refuses_a_python_value_that_changes_between_calls(how):
    calls = {"n": 0}

    def make_scale(x):
        calls["n"] += 1
        return Tensor(np.array([calls["n"]], np.float32)) if how == "host tensor" else float(calls["n"])

    step, opt = scaled_step(Tensor(np.ones(3, np.float32), requires_grad=True), make_scale)
    run = minigrad.jit(step, state=[opt])
    x = Tensor(np.ones(3, np.float32))
    run(x), run(x)
    with pytest.raises(RuntimeError, match="changes between calls, and a replay would reuse the old one"):
        run(x)


def test_jit_sees_host_values_passed_as_arguments():
    """The same changing scale passed in as a Tensor argument: replays equal eager."""
    results = []
    for use_jit in (False, True):
        w = Tensor(np.ones(3, np.float32), requires_grad=True)
        step, opt = scaled_step(w, lambda x, scale: scale)
        run = minigrad.jit(step, state=[opt]) if use_jit else step
        results.append([run(Tensor(np.ones(3, np.float32)), Tensor(np.array([i], np.float32))).item()
                        for i in range(1, 7)])
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)
    assert len(set(results[0])) == 6
    with pytest.raises(ValueError, match="new Python value"):   # a Python argument is checked every call
        step, opt = scaled_step(Tensor(np.ones(3, np.float32), requires_grad=True), lambda x, s: s)
        run2 = minigrad.jit(step, state=[opt])
        for s in (1.0, 1.0, 1.0, 2.0):
            run2(Tensor(np.ones(3, np.float32)), s)


def test_jit_refuses_a_function_that_reads_values_back():
    w = Tensor(np.ones(3, np.float32), requires_grad=True)
    step, opt = scaled_step(w, lambda x: 1.0 / max(1.0, float(x.sum().item())))
    run = minigrad.jit(step, state=[opt])
    run(Tensor(np.ones(3, np.float32)))
    with pytest.raises(RuntimeError, match=r"read tensor values back to Python .*test_jit_checks.py:\d+"):
        run(Tensor(np.ones(3, np.float32)))
