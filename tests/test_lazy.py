"""Laziness and fusion: ops build a graph and compute nothing until a value is needed; the
scheduler fuses elementwise chains (and the elementwise ops feeding a reduction) into one
kernel, never runs movement ops, and computes shared nodes once.  Also: long graphs, anomaly
mode, seeding, gradient accumulation and no_grad."""
import os
import sys

import numpy as np
import pytest

import minigrad
from minigrad import Tensor, nn, optim
from minigrad.backends import get_backend


@pytest.fixture
def launches(device, monkeypatch):
    """The list of kernel kinds the device's backend actually runs during the test."""
    backend = get_backend(device)
    kinds, original = [], backend.run

    def run(kernel, out, inputs):
        kinds.append(kernel.kind)
        return original(kernel, out, inputs)
    monkeypatch.setattr(backend, "run", run)
    return kinds


def realized(rng, *shape, device):
    return Tensor(rng.standard_normal(shape).astype(np.float32), device=device)


def schedule_of(t):
    return minigrad.create_schedule([t.lazydata])


def test_building_a_graph_computes_nothing(device, rng, launches):
    a, b, c = (realized(rng, 3, 4, device=device) for _ in range(3))
    assert all(t.lazydata.is_realized for t in (a, b, c)), "tensors made from numpy arrays hold their data"
    prod = a * b
    out = (prod + c).relu()
    total = (out @ c.T).sum()
    for name, t in [("a * b", prod), ("(a*b+c).relu()", out), ("matmul(...).sum()", total)]:
        assert not t.lazydata.is_realized, f"{name} was computed while building the graph"
    assert launches == [], f"kernels ran before any value was asked for: {launches}"
    a_, b_, c_ = a.numpy(), b.numpy(), c.numpy()
    launches.clear()
    got = total.numpy()
    assert launches, "asking for the value ran no kernel"
    np.testing.assert_allclose(got, (np.maximum(a_ * b_ + c_, 0) @ c_.T).sum(), rtol=1e-5,
                               err_msg="value of the lazy graph (actual) vs numpy (desired)")


def test_fused_elementwise_and_reduce_is_one_kernel(device, rng, launches):
    a, b, c = (realized(rng, 5, 7, device=device) for _ in range(3))
    out = (a * b + c).relu().sum()
    schedule = schedule_of(out)
    assert len(schedule) == 1, f"expected 1 kernel, got {len(schedule)}: {schedule}"
    kernel = schedule[0]
    assert kernel.kind == "reduce", f"kind {kernel.kind!r}"
    assert {"mul", "add", "sum"} <= set(kernel.fused_ops()), f"fused ops {kernel.fused_ops()}"
    expected = np.maximum(a.numpy() * b.numpy() + c.numpy(), 0).sum()
    launches.clear()
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, err_msg="fused kernel (actual) vs numpy (desired)")
    assert launches == ["reduce"], f"launches {launches}"


def test_elementwise_chain_is_one_kernel(device, rng):
    a, b = realized(rng, 4, 6, device=device), realized(rng, 4, 6, device=device)
    out = -(((a + 1) * 2 - b).exp().sqrt() / (b.square() + 1)).maximum(a)
    schedule = schedule_of(out)
    assert len(schedule) == 1, f"expected 1 kernel, got {len(schedule)}: {schedule}"
    assert schedule[0].kind == "elementwise", schedule[0].kind
    for op in ("add", "mul", "sub", "exp", "sqrt", "div", "max", "neg"):
        assert op in schedule[0].fused_ops(), f"{op} missing from {schedule[0].fused_ops()}"
    x, y = a.numpy(), b.numpy()
    expected = -np.maximum(np.sqrt(np.exp((x + 1) * 2 - y)) / (y ** 2 + 1), x)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6,
                               err_msg="fused chain (actual) vs numpy (desired)")


def test_elementwise_over_views_is_one_kernel(device, rng):
    a = realized(rng, 6, 5, device=device)
    b = realized(rng, 5, device=device)
    out = (a.T[1:4] * 2 + b[1:4].reshape(3, 1)).exp()
    schedule = schedule_of(out)
    assert len(schedule) == 1, f"views of realized buffers are read in place: expected 1 kernel, got {schedule}"
    np.testing.assert_allclose(out.numpy(), np.exp(a.numpy().T[1:4] * 2 + b.numpy()[1:4].reshape(3, 1)), rtol=1e-5,
                               err_msg="kernel over views (actual) vs numpy (desired)")


def test_elementwise_after_a_reduce_fuses_into_its_broadcast_consumer(device, rng):
    """mean = sum * (1/D) read back through an expand (x - mean) gets no kernel of its own: the
    expand passes through the multiply to the reduce's buffer (rule 4).  A padded read does not."""
    x = realized(rng, 4, 6, device=device)
    centered = x - x.mean(-1, keepdim=True)
    assert [k.kind for k in schedule_of(centered)] == ["reduce", "elementwise"]
    np.testing.assert_allclose(centered.numpy(), x.numpy() - x.numpy().mean(-1, keepdims=True), rtol=1e-5, atol=1e-6)
    scale = (x.sum(-1, keepdim=True) * 0.5 + 1).exp()          # recomputed per element, still one kernel
    out = x * scale
    assert [k.kind for k in schedule_of(out)] == ["reduce", "elementwise"]
    np.testing.assert_allclose(out.numpy(), x.numpy() * np.exp(x.numpy().sum(-1, keepdims=True) * 0.5 + 1), rtol=1e-5)
    padded = (x.sum(-1, keepdim=True) + 1).pad(((0, 0), (1, 0)))   # 1 in the pad would be wrong: materialize
    kernels = schedule_of(padded + x[:, :2])
    # sum + 1 gets a buffer (the padded read), and the sum runs inside its kernel (rule 7)
    assert [(k.kind, k.fused_ops()) for k in kernels] == [("reduce", ["sum", "add"]), ("elementwise", ["add"])], kernels
    np.testing.assert_allclose((padded + x[:, :2]).numpy(), np.pad(x.numpy().sum(-1, keepdims=True) + 1,
                                                                   ((0, 0), (1, 0))) + x.numpy()[:, :2], rtol=1e-5)
    targets = Tensor(np.arange(6).reshape(2, 3), device=device)      # a reshape of a buffer takes any view
    hits = (targets.reshape(6) * 2).reshape(6, 1).expand(6, 4) == Tensor.arange(4, device=device) * 2
    assert [k.kind for k in schedule_of(hits)] == ["elementwise"], schedule_of(hits)
    np.testing.assert_array_equal(hits.numpy(), np.arange(6).reshape(6, 1) == np.arange(4))


@pytest.mark.parametrize("case", ["rows", "columns", "max", "whole"])
def test_a_reduce_runs_inside_the_kernel_of_its_one_elementwise_reader(device, rng, case):
    """Rule 7 (an epilogue): the reader's ops apply to each reduced value before it is stored,
    reading their other inputs at the output's index; one kernel, the reduce's values never stored.
    Rows (a kept axis outside the reduced one), columns (kept axes inside it: a bias gradient), a
    max with NaN in it, and a reduce to one number."""
    x = realized(rng, 6, 8, device=device)
    xs = x.numpy().astype(np.float64)
    if case == "rows":
        w = realized(rng, 6, 1, device=device)
        out = ((x - x.mean(-1, keepdim=True)).square().mean(-1, keepdim=True) + 1e-5).rsqrt() * w
        c = xs - xs.mean(-1, keepdims=True)
        want = 1 / np.sqrt((c * c).mean(-1, keepdims=True) + 1e-5) * w.numpy()
    elif case == "columns":
        w = realized(rng, 1, 8, device=device)
        out = (x.sum(0, keepdim=True) * w + 1).exp()
        want = np.exp(xs.sum(0, keepdims=True) * w.numpy() + 1)
    elif case == "max":
        x = Tensor(np.where(np.arange(48).reshape(6, 8) == 9, np.nan, x.numpy()).astype(np.float32), device=device)
        w = realized(rng, 6, 1, device=device)
        out = x.max(-1, keepdim=True) * 2 - w
        want = np.max(x.numpy(), -1, keepdims=True) * 2 - w.numpy()
    else:
        out = x.square().sum().sqrt() + 1
        want = np.sqrt((xs * xs).sum()) + 1
    kernels = schedule_of(out)
    assert [k.kind for k in kernels] == ["reduce"] * (2 if case == "rows" else 1), \
        f"{case}: the reduce and its reader should be one kernel, got {kernels}"     # rows: the mean, then the rest
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-6, equal_nan=True,
                               err_msg=f"{case}: reduce with an epilogue (actual) vs numpy (desired)")


def test_a_reader_that_reads_padding_keeps_its_reduce_apart(device):
    """The epilogue reads at the output's index, so a reader with a padded read (a cat with an
    empty piece pads a size-1 axis the reduce removed) does not take the reduce in (rule 7)."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.ones((1, 4), np.float32)
    row = Tensor.cat(Tensor(np.zeros((0, 4), np.float32), device=device), Tensor(b, device=device))
    out = Tensor(x, device=device).sum(0, keepdim=True) + row
    np.testing.assert_array_equal(out.numpy(), x.sum(0, keepdims=True) + b)
    one = Tensor.cat(Tensor(np.zeros(0, np.float32), device=device), Tensor(b[0, :1], device=device))
    np.testing.assert_array_equal((Tensor(x, device=device).sum().reshape(1) + one).numpy(), [x.sum() + 1])


def test_a_cat_of_sums_is_one_kernel_unless_an_op_turns_the_padding_into_something(device, rng):
    """Rule 4, padding: a piece of a cat is its node read through padding, which moves down to the
    node's sources when the node gives +0 there, where every buffer reads 0 (a + b, a * b, ...).
    exp(0) = 1 and 0 + 1 = 1 would show in the padding, and 0 * -0.5 = -0 in 1/x, so those pieces
    get a buffer first.  A constant stays a literal where the padding still gives 0: a factor of a
    padded operand (the 1/D of a mean, read broadcast), the branch a padded condition never takes;
    so may a part that is not 0 there, multiplied by one that is (x * onehot: 0 == 0 is 1)."""
    a, b, c = (realized(rng, 3, 4, device=device) for _ in range(3))
    x, y, z = a.numpy(), b.numpy(), c.numpy()
    d, m = realized(rng, 3, 1, device=device), x > 0
    mask = Tensor(m, device=device)
    for out, want, kernels, what in [
            (Tensor.cat(a + b, c * a), np.concatenate([x + y, z * x]), 1, "cat(a + b, c * a)"),
            (Tensor.cat(a.exp(), c), np.concatenate([np.exp(x), z]), 2, "cat(exp(a), c)"),
            (Tensor.cat(a + 1, c, dim=1), np.concatenate([x + 1, z], 1), 2, "cat(a + 1, c)"),
            (Tensor.cat((d * 0.25).expand(3, 4), c), np.concatenate([np.broadcast_to(d.numpy() * 0.25, (3, 4)), z]),
             1, "cat(broadcast(d * 0.25), c)"),
            (Tensor.cat(mask.where(3.0, a), c), np.concatenate([np.where(m, 3.0, x), z]), 1, "cat(where(m, 3, a), c)"),
            (Tensor.cat(mask.where(a, 2.0), c), np.concatenate([np.where(m, x, 2.0), z]), 2, "cat(where(m, a, 2), c)"),
            (Tensor.cat(a * -0.5, c), np.concatenate([x * -0.5, z]), 2, "cat(a * -0.5, c)"),
            (Tensor.cat(a * (b == c), c), np.concatenate([x * (y == z), z]), 1, "cat(a * (b == c), c)")]:
        assert len(schedule_of(out)) == kernels, f"{what}: {schedule_of(out)}"
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-6, err_msg=what)


def test_a_padded_read_is_judged_again_when_a_source_gets_a_buffer(device):
    """exp(y) - 1 gives 0 in padding while exp(y) is inlined, so the cat reads it unbuffered; the
    cat's other piece (a transpose) then gives exp(y) a buffer, which reads 0 there, so 0 - 1 would
    land in the padding.  Rule 4 asks again once every buffer is decided (_recheck_padding); in
    either order of two targets too."""
    y = np.arange(4, dtype=np.float32).reshape(1, 4) / 4
    d = np.exp(np.broadcast_to(y, (4, 4)))
    D = Tensor(y, device=device).expand(4, 4).exp()
    np.testing.assert_allclose(Tensor.cat(D - 1, D.permute(1, 0), dim=1).numpy(), np.concatenate([d - 1, d.T], 1),
                               rtol=1e-6, atol=1e-6)
    w, v = np.ones((4, 8), np.float32), np.ones((4, 4), np.float32)
    for first in (0, 1):
        D = Tensor(y, device=device).expand(4, 4).exp()
        c1 = (D - 1).pad(((0, 0), (0, 4))) + Tensor(w, device=device)
        c2 = D.permute(1, 0) + Tensor(v, device=device)
        minigrad.realize(*([c1, c2] if first == 0 else [c2, c1]))
        np.testing.assert_allclose(c1.numpy(), np.pad(d - 1, ((0, 0), (0, 4))) + w, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(c2.numpy(), d.T + v, rtol=1e-6)


def test_a_constant_filled_for_a_reduce_is_read_alike_everywhere(device):
    """A constant that a reduce also reads gets a one-element buffer (rule 6); an inlined node that
    reads it through a transposed view must read that one element, not step through memory."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    c = Tensor.full((3, 4), 2.0, device=device)
    total = c.sum()
    out = (Tensor(x, device=device) + c).permute(1, 0) * Tensor(np.ones((4, 3), np.float32), device=device)
    minigrad.realize(out, total)
    np.testing.assert_array_equal(out.numpy(), (x + 2).T)
    assert total.item() == 24.0


def test_max_and_maximum_keep_nan_on_every_device(device):
    """As numpy: a NaN wins max and maximum from either side (OpenCL's fmax dropped it, silently)."""
    a = np.array([[1, np.nan, 3], [4, 5, 6]], np.float32)
    b = np.array([[0, 0, np.nan], [0, 9, 0]], np.float32)
    x, y = Tensor(a, device=device), Tensor(b, device=device)
    np.testing.assert_array_equal(x.max(-1).numpy(), np.max(a, -1), err_msg="max over rows with a NaN")
    np.testing.assert_array_equal(x.maximum(y).numpy(), np.maximum(a, b), err_msg="maximum with NaN on either side")
    np.testing.assert_array_equal(y.maximum(x).numpy(), np.maximum(b, a), err_msg="maximum, sides swapped")


def test_movement_chain_schedules_nothing(device, rng, launches):
    x = rng.standard_normal((4, 6, 8)).astype(np.float32)
    t = Tensor(x, device=device)
    cases = [
        (t.permute(2, 0, 1)[1:5, :, ::2].reshape(4, 4, 3), x.transpose(2, 0, 1)[1:5, :, ::2].reshape(4, 4, 3)),
        (t[:, ::4], x[:, ::4]),                          # a step that does not divide the axis
        (t.reshape(24, 8).T[::3], x.reshape(24, 8).T[::3]),
        (t[1:3, None, 2, -4:].transpose(0, 2), np.swapaxes(x[1:3, None, 2, -4:], 0, 2)),
        (t[:, :1].expand(4, 5, 8).reshape(4, 5, 2, 4), np.broadcast_to(x[:, :1], (4, 5, 8)).reshape(4, 5, 2, 4)),
        (t.pad(((1, 0), (0, 0), (0, 2))).shrink(((0, 3), (1, 4), (2, 10))),
         np.pad(x, ((1, 0), (0, 0), (0, 2)))[0:3, 1:4, 2:10]),
    ]
    for view, expected in cases:
        schedule = schedule_of(view)
        assert schedule == [], f"a view of a realized tensor scheduled kernels: {schedule}"
        assert view.lazydata.is_realized, "a view of a realized buffer counts as realized"
        np.testing.assert_array_equal(view.numpy(), expected, err_msg=f"view {view.shape}: minigrad vs numpy")
    assert launches == [], f"views launched kernels: {launches}"


def test_shared_node_is_computed_once(device, rng):
    a, b = realized(rng, 3, 4, device=device), realized(rng, 3, 4, device=device)
    shared = (a * b).exp()
    out = shared * 2 + shared.sum(1, keepdim=True) - shared.max()
    schedule = schedule_of(out)
    exps = sum(k.fused_ops().count("exp") for k in schedule)
    assert exps == 1, f"exp computed {exps} times in {schedule}"
    e = np.exp(a.numpy() * b.numpy())
    np.testing.assert_allclose(out.numpy(), e * 2 + e.sum(1, keepdims=True) - e.max(), rtol=1e-5,
                               err_msg="shared node result (actual) vs numpy (desired)")


def test_realize_several_tensors_shares_work(device, rng, launches):
    a, b = realized(rng, 3, 4, device=device), realized(rng, 3, 4, device=device)
    shared = (a * b).exp()                      # reads two buffers: written once, read by both
    first, second = shared.sum(), shared * shared
    minigrad.realize(first, second)
    assert launches.count("elementwise") == 2 and launches.count("reduce") == 1, \
        f"expected the shared exp once, the product once and the sum once, ran {launches}"
    e = np.exp(a.numpy() * b.numpy())
    np.testing.assert_allclose(first.numpy(), e.sum(), rtol=1e-5, err_msg="sum (actual) vs numpy (desired)")
    np.testing.assert_allclose(second.numpy(), e * e, rtol=1e-5, err_msg="product (actual) vs numpy (desired)")


def test_a_short_chain_over_one_buffer_is_recomputed_by_each_reader(device, rng, launches):
    """Rule 3's exception: exp(3a) reads one buffer, and both readers read it element for element,
    so each recomputes it (2 kernels, no buffer for it); a reader that broadcasts it (a row
    normalized by its own exp) makes it worth a buffer again."""
    a = realized(rng, 3, 4, device=device)
    shared = (a * 3).exp()
    first, second = shared.sum(), shared * shared
    minigrad.realize(first, second)
    assert len(launches) == 2, f"exp(3a) should be recomputed by the sum and the product, ran {launches}"
    e = np.exp(a.numpy() * 3)
    np.testing.assert_allclose(first.numpy(), e.sum(), rtol=1e-5, err_msg="sum (actual) vs numpy (desired)")
    np.testing.assert_allclose(second.numpy(), e * e, rtol=1e-5, err_msg="product (actual) vs numpy (desired)")
    launches.clear()
    row = realized(rng, 3, 1, device=device)
    shared = (row * 3).exp()
    out = shared.expand(3, 4) * a + shared
    np.testing.assert_allclose(out.numpy(), np.exp(row.numpy() * 3) * a.numpy() + np.exp(row.numpy() * 3), rtol=1e-5)
    assert len(launches) == 2, f"exp(3 row), read through a broadcast, should get its own kernel: {launches}"


def test_realized_tensor_schedules_nothing(device, rng, launches):
    a = realized(rng, 3, 4, device=device)
    out = (a.exp() + 1).sum(0)
    assert len(schedule_of(out)) >= 1
    out.realize()
    assert out.lazydata.is_realized, "realize() left the tensor unrealized"
    assert schedule_of(out) == [], f"scheduled again after realize(): {schedule_of(out)}"
    launches.clear()
    np.testing.assert_allclose(out.numpy(), (np.exp(a.numpy()) + 1).sum(0), rtol=1e-5,
                               err_msg="realized value (actual) vs numpy (desired)")
    assert launches == [], f"reading a realized tensor ran kernels: {launches}"


def test_10000_op_chain_backward(device):
    limit = sys.getrecursionlimit()
    x = Tensor(np.array([1.5, -0.5]), dtype=np.float64, device=device, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    loss = y.sum()
    loss.backward()
    assert sys.getrecursionlimit() == limit, "the recursion limit was raised"
    factor = np.prod(np.full(10_000, 1.0001))
    np.testing.assert_allclose(y.numpy(), np.array([1.5, -0.5]) * factor, rtol=1e-10,
                               err_msg="forward of the chain (actual) vs numpy (desired)")
    np.testing.assert_allclose(x.grad.numpy(), np.full(2, factor), rtol=1e-10,
                               err_msg="gradient of the chain (actual) vs 1.0001**10000 (desired)")


def test_detect_anomaly_names_the_op_and_the_line(device):
    with minigrad.detect_anomaly():
        x = Tensor([-1.0, 2.0], device=device)
        out = (x * 2).log().exp()
        with pytest.raises(FloatingPointError, match="log") as info:
            out.numpy()
    message = str(info.value)
    assert os.path.basename(__file__) in message, f"the creation site (this file) is not in: {message}"
    assert "NaN" in message, f"the message does not say NaN: {message}"
    assert "exp" not in message.split("created at")[0], f"blames a later op: {message}"


def test_detect_anomaly_catches_new_inf(device):
    with minigrad.detect_anomaly():
        out = Tensor([0.0, 1.0], device=device).log()
        with pytest.raises(FloatingPointError, match="inf") as info:
            out.numpy()
    assert os.path.basename(__file__) in str(info.value), str(info.value)


def test_anomaly_mode_tells_nan_from_inf_and_passes_inf_it_was_given(device):
    """The message says NaN or inf and the output shape; an inf that came in (as data, or as a
    -inf constant from masked_fill) is not an anomaly; integer kernels are not checked."""
    with minigrad.detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"\['log'\] produced NaN \(output shape \(2,\), input shapes \[\(2,\)\]"):
            Tensor([-1.0, 2.0], device=device).log().numpy()
        with pytest.raises(FloatingPointError, match=r"\['log'\] produced inf \(output shape \(3,\)"):
            Tensor([0.0, 1.0, 2.0], device=device).log().numpy()
        given = Tensor([np.inf, 1.0], device=device)
        np.testing.assert_array_equal((given * 2 + 1).numpy(), [np.inf, 3.0])
        masked = Tensor([1.0, 2.0], device=device).masked_fill(Tensor([True, False], device=device), float("-inf"))
        np.testing.assert_array_equal(masked.numpy(), [-np.inf, 2.0])
        np.testing.assert_array_equal((Tensor([1, 2], device=device) * 3).numpy(), [3, 6])
        with pytest.raises(FloatingPointError, match=r"\['log'\] produced NaN"):   # nothing fuses: log is blamed alone
            (Tensor([-1.0, 2.0], device=device) * 2).log().exp().numpy()


def test_without_anomaly_mode_nan_is_silent(device):
    got = Tensor([-1.0, 4.0], device=device).log().numpy()
    with np.errstate(invalid="ignore"):
        expected = np.log(np.array([-1.0, 4.0], np.float32))
    np.testing.assert_array_equal(got, expected, err_msg="log without anomaly mode: minigrad vs numpy")


def test_manual_seed_reproducible(device):
    def draw():
        u = Tensor.rand(4, 5, device=device).numpy()
        n = Tensor.randn(3, device=device).numpy()
        d = Tensor.ones(50, device=device).dropout(0.5).numpy()
        return u, n, d
    Tensor.manual_seed(123)
    first = draw()
    Tensor.manual_seed(123)
    second = draw()
    Tensor.manual_seed(124)
    third = draw()
    for name, a, b, c in zip(("rand", "randn", "dropout"), first, second, third):
        np.testing.assert_array_equal(a, b, err_msg=f"{name}: same seed gave different numbers")
        assert not np.array_equal(a, c), f"{name}: seeds 123 and 124 gave the same numbers {a}"
    Tensor.manual_seed(123)
    assert not np.array_equal(Tensor.rand(6, device=device).numpy(), Tensor.rand(6, device=device).numpy()), \
        "two draws after one seed gave the same numbers"
    u = first[0]
    assert (0 <= u).all() and (u < 1).all(), f"rand outside [0, 1): {u}"


class Scale(nn.Module):
    def __init__(self, device):
        self.w = Tensor(np.array([0.5, -2.0, 3.0]), dtype=np.float64, device=device, requires_grad=True)

    def forward(self, x):
        return (self.w * x).square().sum()


def test_grads_accumulate_until_zero_grad(device):
    model = Scale(device)
    x = np.array([1.0, 2.0, -1.0])
    w = model.w.numpy()
    one = 2 * w * x * x                                  # d/dw sum((w x)^2)
    model(Tensor(x, dtype=np.float64, device=device)).backward()
    np.testing.assert_allclose(model.w.grad.numpy(), one, rtol=1e-12, err_msg="first backward (actual) vs formula")
    model(Tensor(x, dtype=np.float64, device=device)).backward()
    np.testing.assert_allclose(model.w.grad.numpy(), 2 * one, rtol=1e-12,
                               err_msg="after two backward() calls (actual) vs twice the gradient (desired)")
    model.zero_grad()
    assert model.w.grad is None, "Module.zero_grad() left a gradient"
    model(Tensor(x, dtype=np.float64, device=device)).backward()
    np.testing.assert_allclose(model.w.grad.numpy(), one, rtol=1e-12, err_msg="after zero_grad (actual) vs formula")
    opt = optim.SGD(model.parameters(), lr=0.0)
    model(Tensor(x, dtype=np.float64, device=device)).backward()
    np.testing.assert_allclose(model.w.grad.numpy(), 2 * one, rtol=1e-12, err_msg="accumulated again")
    opt.zero_grad()
    assert model.w.grad is None, "Optimizer.zero_grad() left a gradient"


def test_shared_leaf_gets_summed_gradient(device):
    x = Tensor(np.array([1.0, -2.0]), dtype=np.float64, device=device, requires_grad=True)
    (x * x + x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([1.0, -2.0]) + 3, rtol=1e-12,
                               err_msg="gradient of a leaf used three times (actual) vs 2x + 3 (desired)")


def test_no_grad_records_no_graph(device):
    x = Tensor(np.ones((2, 3), np.float32), device=device, requires_grad=True)
    assert minigrad.Tensor.grad_enabled
    with minigrad.no_grad():
        y = (x * 2).exp().sum()
        z = x @ x.T
    for name, t in [("(x*2).exp().sum()", y), ("x @ x.T", z)]:
        assert not t.requires_grad, f"{name} requires grad inside no_grad()"
        assert t._ctx is None, f"{name} recorded a graph inside no_grad()"
    with pytest.raises(RuntimeError):
        y.backward()
    assert (x * 2).requires_grad, "grad mode was not restored after no_grad()"
    with pytest.raises(KeyError):
        with minigrad.no_grad():
            raise KeyError("inside")
    assert minigrad.Tensor.grad_enabled, "no_grad() did not restore grad mode after an exception"


def test_detach_cuts_the_graph(device):
    x = Tensor(np.array([1.0, 2.0]), dtype=np.float64, device=device, requires_grad=True)
    (x * x.detach()).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.array([1.0, 2.0]), rtol=1e-12,
                               err_msg="d/dx sum(x * stop_gradient(x)) (actual) vs x (desired)")


def test_laptop_recipe_step_kernel_count():
    """A laptop-recipe training step (L4 H4 D128 T64 B12, forward, backward, clip, AdamW) runs
    at most 196 kernels (522 before views passed through elementwise nodes and one-op nodes
    were recomputed; 378 before the optimizer kept each parameter group in one flat buffer, and
    the clipping norm became one reduce over the gradients gathered flat; 278 before short chains
    over one buffer were recomputed by their readers and attention split Q, K, V after the reshape
    into heads; 237 before a reduce ran inside its one reader's kernel; 227 before rsqrt's backward
    read only its output, so LayerNorm's variance runs inside the rsqrt kernel; 218 before padding
    moved through +, * and max, and Adam's two bias corrections shared a kernel; 216 before
    LayerNorm's backward took its two row sums in one reduce; 208 before padding moved through a
    constant factor and broadcasts, and cross-entropy became one Function with its backward
    written out), in at most 192 launches
    on the CPU: a replay runs runs of elementwise kernels as multi-output kernels (AdamW's m, v
    and weights in one).  A ratchet: lower it when fusion improves, never raise it quietly."""
    from conftest import bench_module
    kernels_per_step = bench_module("gpt_step").kernels_per_step
    from gpt.model import GPT, GPTConfig
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False)
    Tensor.manual_seed(0)
    state = GPT(config).state_dict()
    batch = np.random.default_rng(0).integers(0, 65, (2, 12, 64))
    count, launches = kernels_per_step(config, state, (batch[0], batch[1]))
    assert 100 < count <= 196, f"{count} kernels per step"
    from minigrad.backends import get_backend
    if get_backend("numpy").compiler is not None:         # multi-output kernels are the compiled path's
        assert launches <= 192, f"{launches} launches per step"


def test_numpy_backend_blocks_equal_whole_evaluation(monkeypatch, rng):
    """Large elementwise and reduce kernels run block by block on the NumPy backend; with tiny
    blocks every kind of read (a transpose, a broadcast, padding, a step) and every reduce axis
    must give what numpy gives for the whole tensor."""
    import minigrad.backends.numpy_backend as numpy_backend
    monkeypatch.setattr(numpy_backend, "CHUNK", 3)
    a = realized(rng, 7, 6, 5, device="numpy")
    b = realized(rng, 6, 1, device="numpy")
    an, bn = a.numpy(), b.numpy()
    cases = [
        ((a * 2 + b).exp(), np.exp(an * 2 + bn)),
        (a.permute(2, 0, 1).abs().sqrt(), np.sqrt(np.abs(an.transpose(2, 0, 1)))),
        (a.pad(((1, 0), (0, 2), (1, 1))) + 1, np.pad(an, ((1, 0), (0, 2), (1, 1))) + 1),
        (a[::2, 1:, ::-2] * 3, an[::2, 1:, ::-2] * 3),
        ((a > 0).where(a, b), np.where(an > 0, an, bn)),
        (a.sum(0), an.sum(0)), (a.sum(1), an.sum(1)), (a.max(2), an.max(2)), (a.sum((0, 2)), an.sum((0, 2))),
        ((a * b).sum(), (an * bn).sum()),
        (a.softmax(-1), np.exp(an - an.max(-1, keepdims=True)) / np.exp(an - an.max(-1, keepdims=True)).sum(-1,
                                                                                                            keepdims=True)),
    ]
    for ours, expected in cases:
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_constants_are_literals_unless_padded_or_reduced():
    """schedule.py rule 6: a constant is a literal in its consumer's expression; padded or
    reduced, it is first filled into a one-element buffer (one small kernel, no inputs)."""
    plain = schedule_of(Tensor.ones(3, 4) * 2 + 1)
    assert len(plain) == 1 and plain[0].inputs == [], plain
    for name, t, consumer in [("sum", Tensor.ones(3, 4).sum(), "reduce"),
                              ("pad", Tensor.ones(3, 4).pad(((1, 1), (0, 0))) * 2, "elementwise")]:
        fill, use = schedule_of(t)
        assert fill.inputs == [] and fill.output.size == 1, f"{name}: first kernel {fill}"
        assert use.kind == consumer and use.inputs == [fill.output], f"{name}: second kernel {use}"
    np.testing.assert_array_equal(Tensor.ones(3, 4).sum().numpy(), 12.0)
    np.testing.assert_array_equal(Tensor.ones(1, 2).pad(((1, 0), (0, 1)), value=0).numpy(), [[0, 0, 0], [1, 1, 0]])


def test_fusion_depth_counts_only_inlined_ops(rng):
    """Rule 5: a chain of up to MAX_FUSED_DEPTH elementwise ops is one kernel, and the depth
    restarts after a materialized node (here a reduce)."""
    from minigrad.schedule import MAX_FUSED_DEPTH
    x = realized(rng, 4, 5, device="numpy")
    chain = x
    for _ in range(MAX_FUSED_DEPTH - 8):
        chain = chain * 1.01
    assert len(schedule_of(chain)) == 1, "a chain shorter than MAX_FUSED_DEPTH was cut"
    after = chain.sum(1)                                     # a reduce: materialized, fusing the chain
    for _ in range(MAX_FUSED_DEPTH - 8):
        after = after + 0.5
    kinds = [k.kind for k in schedule_of(after)]
    assert kinds == ["reduce", "elementwise"], kinds
    expected = (x.numpy() * 1.01 ** (MAX_FUSED_DEPTH - 8)).sum(1) + 0.5 * (MAX_FUSED_DEPTH - 8)
    np.testing.assert_allclose(after.numpy(), expected, rtol=1e-4)
    long = x
    for _ in range(3 * MAX_FUSED_DEPTH):
        long = long * 1.0
    assert 3 <= len(schedule_of(long)) <= 4, "a long chain is cut into kernels of MAX_FUSED_DEPTH ops"


def test_reshape_that_cannot_reach_an_inlined_source_materializes_it(rng):
    """(x.T + 1).reshape(12): the reshape cannot be pushed through the permuted read of x, so
    x.T + 1 gets its own kernel (the _MustMaterialize retry in create_schedule)."""
    x = realized(rng, 3, 4, device="numpy")
    out = (x.T + 1).reshape(12) * 2
    assert [k.kind for k in schedule_of(out)] == ["elementwise", "elementwise"]
    np.testing.assert_allclose(out.numpy(), (x.numpy().T + 1).reshape(12) * 2, rtol=1e-6)


def test_debug_levels_print_realizes_and_timed_kernels(rng, capsys):
    x = realized(rng, 3, 4, device="numpy")
    minigrad.set_debug(1)
    try:
        (x * 2).realize()
    finally:
        minigrad.set_debug(0)
    line = capsys.readouterr().out.strip()
    assert line.startswith("realize: 1 kernels in ") and line.endswith(" ms"), line
    assert 0 <= float(line.split()[-2]) < 60_000, line
    schedule = minigrad.create_schedule([(x + 3).lazydata])
    kernel = schedule[0]                              # run_schedule may drop the list's references
    minigrad.set_debug(2)
    try:
        from minigrad.schedule import run_schedule
        run_schedule(schedule)
    finally:
        minigrad.set_debug(0)
    printed = capsys.readouterr().out
    assert 0 < kernel.time_s < 60, kernel.time_s
    assert f"{kernel.time_s * 1e3:8.3f} ms  elementwise" in printed, printed
