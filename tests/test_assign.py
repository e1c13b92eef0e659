"""Tensor.assign: a write into a tensor's own memory.  Checked against NumPy doing the same writes:
views of the buffer see the new values, values computed from the old ones keep them (even when
still lazy), bad input is one clear error, autograd refuses it, and a jit replays it."""
import numpy as np
import pytest

import minigrad
from minigrad import Tensor


def realized(array, device):
    return Tensor(np.asarray(array, np.float32), device=device).realize()


def test_assign_writes_in_place_and_every_view_sees_it(device):
    x = realized(np.arange(6), device)
    buffer = x.lazydata.base.realized
    as_matrix = x.reshape(2, 3)
    x.assign(Tensor(np.full(6, 4, np.float32), device=device))
    if device != "cl":                           # OpenCL's kernels may not write a buffer they read: a new one
        assert x.lazydata.base.realized is buffer, "assign made a new buffer instead of writing into the old one"
    np.testing.assert_array_equal(x.numpy(), np.full(6, 4, np.float32))
    np.testing.assert_array_equal(as_matrix.numpy(), np.full((2, 3), 4, np.float32), err_msg="a view of x")


def test_values_computed_from_the_old_contents_keep_them(device):
    """The bug a naive in-place write has: a lazy node reading the old buffer (here h + b inside a
    loss that is still lazy, as after backward and before .item()) must not see the new values."""
    b = realized([1.0, 2.0, 3.0], device)
    h = realized([10.0, 20.0, 30.0], device)
    loss = ((h + b) * 2).sum()                   # lazy: h + b is inlined, nothing computed yet
    also = b * 3                                 # another lazy reader
    b.assign(Tensor(np.zeros(3, np.float32), device=device))
    assert loss.item() == pytest.approx(2 * (60 + 6)), "a lazy loss saw the assigned values"
    np.testing.assert_array_equal(also.numpy(), [3, 6, 9], err_msg="b * 3 built before the assign")
    np.testing.assert_array_equal((b * 3).numpy(), [0, 0, 0], err_msg="b * 3 built after the assign")


def test_assign_into_a_stretch_leaves_the_rest_of_the_buffer(device):
    w = realized(np.arange(10), device)
    part, rest = w[2:5], w[5:]
    old_part = part + 1                          # lazy, reads the stretch
    part.assign(Tensor(np.full(3, 7, np.float32), device=device))
    want = np.arange(10, dtype=np.float32)
    want[2:5] = 7
    np.testing.assert_array_equal(w.numpy(), want, err_msg="the whole buffer after assigning w[2:5]")
    np.testing.assert_array_equal(rest.numpy(), want[5:], err_msg="w[5:], which shares the buffer")
    np.testing.assert_array_equal(old_part.numpy(), [3, 4, 5], err_msg="w[2:5] + 1 built before the assign")


def test_negative_zeros_survive_an_assign_into_a_stretch(device):
    w = Tensor(np.array([-0.0, -0.0, 1.0, 2.0], np.float32), device=device).realize()
    w[2:4].assign(Tensor(np.array([-0.0, 5.0], np.float32), device=device))
    np.testing.assert_array_equal(np.signbit(w.numpy()), [True, True, True, False],
                                  err_msg="the sign of zero, inside and outside the stretch")


def test_a_constant_without_a_buffer_is_refused_until_it_has_one(device):
    """Tensor.zeros(2, 2) holds no buffer, and its row e[1] looks exactly like a fresh
    Tensor.zeros(2): writing into a new buffer for e[1] would leave e unchanged, silently.
    So both are refused, and after contiguous().realize() the write lands where it should."""
    e = Tensor.empty(2, 2, device=device)
    with pytest.raises(ValueError, match="no buffer yet"):
        e[1].assign(Tensor(np.array([7.0, 8.0], np.float32), device=device))
    e = e.contiguous().realize()
    e[1].assign(Tensor(np.array([7.0, 8.0], np.float32), device=device))
    np.testing.assert_array_equal(e.numpy(), [[0, 0], [7, 8]])


def test_a_value_that_reads_the_target_is_computed_from_the_old_values(device):
    p = realized(np.arange(4), device)
    p.assign(p * 0.5 + 1)
    np.testing.assert_array_equal(p.numpy(), np.arange(4) * 0.5 + 1)
    z = realized(np.arange(6), device)
    z[1:4].assign(z[0:3])                        # overlapping stretches of one buffer, like numpy's z[1:4] = z[0:3]
    want = np.arange(6, dtype=np.float32)
    want[1:4] = want[0:3].copy()
    np.testing.assert_array_equal(z.numpy(), want)
    z.assign(7)                                  # a number broadcasts
    np.testing.assert_array_equal(z.numpy(), np.full(6, 7))
    row = realized([1.0, 2.0, 3.0], device)
    m = realized(np.zeros((2, 3)), device)
    m.assign(row)                                # a row broadcasts to every row
    np.testing.assert_array_equal(m.numpy(), [[1, 2, 3], [1, 2, 3]])


@pytest.mark.parametrize("case, error, words", [
    ("dtype", TypeError, "cast it first"),
    ("shape", ValueError, "must broadcast"),
    ("view", ValueError, "one stretch of its buffer"),
    ("grad", RuntimeError, "no_grad"),
    ("type", TypeError, "Tensor or a number"),
])
def test_bad_assign_is_one_clear_error_and_changes_nothing(case, error, words):
    x = realized(np.arange(6), "numpy")
    target, value = {
        "dtype": (x, Tensor(np.ones(6))),                              # float64 into float32
        "shape": (x, Tensor(np.ones(5, np.float32))),
        "view": (x.reshape(2, 3).T, 1.0),                              # a transposed view
        "grad": (Tensor(np.ones(6, np.float32), requires_grad=True), 2.0),
        "type": (x, "one"),
    }[case]
    with pytest.raises(error) as info:
        target.assign(value)
    assert words in str(info.value) and "\n" not in str(info.value), str(info.value)
    np.testing.assert_array_equal(x.numpy(), np.arange(6), err_msg=f"a refused assign ({case}) changed x")


def test_under_no_grad_a_parameter_can_be_assigned_and_its_next_gradient_uses_the_new_values():
    p = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    with minigrad.no_grad():
        p.assign(Tensor(np.array([3.0, -1.0], np.float32)))
    (p * p).sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), [6.0, -2.0], err_msg="d/dp sum(p^2) = 2p after the assign")


def test_a_jit_replays_an_assign_into_the_same_buffer(device):
    """A hand-written SGD step with assign: captured and replayed, it equals the eager steps, and
    the weight stays in its one buffer."""
    def run(use_jit):
        w = realized(np.linspace(-1, 1, 8), device)
        w.requires_grad = True

        def step(x):
            loss = ((w * x).sum() - 1).square()
            loss.backward()
            with minigrad.no_grad():
                w.assign(w.detach() - w.grad * 0.1)
            w.grad = None
            return loss
        fn = minigrad.jit(step, state=[w]) if use_jit else step
        buffer = w.lazydata.base.realized
        losses = [fn(Tensor(np.full(8, 0.1 * (i + 1), np.float32), device=device)).item() for i in range(8)]
        return losses, w.numpy(), w.lazydata.base.realized is buffer
    eager, eager_w, _ = run(False)
    replayed, jit_w, same_buffer = run(True)
    np.testing.assert_allclose(replayed, eager, rtol=1e-6, err_msg="losses: jit (actual) vs eager (desired)")
    np.testing.assert_allclose(jit_w, eager_w, rtol=1e-6, err_msg="weights after 8 steps")
    assert same_buffer or device == "cl", "the jit moved the assigned weight to another buffer"
