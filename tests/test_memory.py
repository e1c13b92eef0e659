"""Memory by liveness: a schedule releases each buffer once its last reader has run, backward
frees the graph it used, and a jit replay runs on buffers planned once (intermediates share
memory, nothing is allocated per replay, and a buffer is never read after its planned last use)."""
import weakref

import numpy as np
import pytest

import minigrad
from minigrad import Tensor, optim
from minigrad import debug, schedule
from minigrad.backends.numpy_backend import NumpyBackend


@pytest.fixture
def allocations(monkeypatch):
    """Weak references to every buffer the NumPy backend allocates, in order."""
    made = []
    original = NumpyBackend.allocate

    def allocate(self, size, dtype):
        buffer = original(self, size, dtype)
        made.append(weakref.ref(buffer))
        return buffer
    monkeypatch.setattr(NumpyBackend, "allocate", allocate)
    return made


def _chain(x: Tensor, n: int) -> Tensor:
    """n elementwise steps, each read twice, so each gets a buffer of its own (fusion rule 3)."""
    for _ in range(n):
        x = x * 0.5 + x.exp() * 0.0 + (x * x) * 0.0 + 1
        x = x + x
    return x.sum()


def test_a_schedule_frees_buffers_after_their_last_reader(allocations, monkeypatch):
    peak = []
    original = schedule.run_kernel

    def run_kernel(kernel, out, inputs):
        original(kernel, out, inputs)
        peak.append(sum(ref() is not None for ref in allocations))
    monkeypatch.setattr(schedule, "run_kernel", run_kernel)
    result = _chain(Tensor(np.ones(1000, np.float32)), 30)
    value = result.item()
    assert len(allocations) > 30                          # each step made a buffer...
    assert max(peak) <= 4, f"live buffers per kernel: {peak}"   # ...but only a few lived at once
    expected = np.ones(1000)
    for _ in range(30):
        expected = 2 * (expected * 0.5 + 1)
    assert value == pytest.approx(expected.sum(), rel=1e-6)


def test_backward_frees_the_graph_and_says_so_on_a_second_backward():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()
    z = (x * x * x).sum()
    x.grad = None
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * 3 * np.array([1.0, 4.0]))


def _mlp_step(device="numpy"):
    rng = np.random.default_rng(0)
    w1 = Tensor(rng.standard_normal((8, 32)).astype(np.float32) * 0.3, requires_grad=True, device=device)
    w2 = Tensor(rng.standard_normal((32, 4)).astype(np.float32) * 0.3, requires_grad=True, device=device)
    opt = optim.AdamW([w1, w2], lr=1e-2)

    def step(x, y):
        h = (x @ w1).gelu().dropout(0.25)
        loss = (h @ w2).cross_entropy(y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss
    batches = [(Tensor(rng.standard_normal((16, 8)).astype(np.float32), device=device),
                Tensor(rng.integers(0, 4, 16), device=device)) for _ in range(8)]
    return step, [opt], batches


def _losses(use_jit: bool, device="numpy"):
    Tensor.manual_seed(7)
    step, state, batches = _mlp_step(device)
    run = minigrad.jit(step, state=state) if use_jit else step
    return [run(x, y).item() for x, y in batches], run


def test_jit_plan_shares_buffers_and_replays_equal_eager_with_freed_buffers_poisoned(monkeypatch):
    eager, _ = _losses(use_jit=False)
    monkeypatch.setattr(debug, "POISON_FREED", True)     # a buffer read after its planned last use is NaN
    replayed, run = _losses(use_jit=True)
    np.testing.assert_allclose(replayed, eager, rtol=1e-6)
    assert np.isfinite(replayed).all()
    recording = run.recording
    intermediates = [n for n, ref in enumerate(recording.refs) if ref() is None and run.buffers[n] is not None]

    def block(array):                                    # the memory a (typed view of a) buffer lives in
        while array.base is not None:
            array = array.base
        return array
    distinct = {id(block(run.buffers[n])): block(run.buffers[n]).nbytes for n in intermediates}
    assert len(intermediates) > 10
    all_bytes = sum(run.buffers[n].nbytes for n in intermediates)
    assert len(distinct) < len(intermediates) and sum(distinct.values()) < 0.75 * all_bytes, \
        (len(distinct), len(intermediates), sum(distinct.values()), all_bytes)


def test_a_replayed_step_allocates_no_buffer(allocations):
    Tensor.manual_seed(7)
    step, state, batches = _mlp_step()
    run = minigrad.jit(step, state=state)
    for x, y in batches[:4]:                             # eager, two traced calls, capture
        run(x, y)
    assert run.recording is not None
    before = len(allocations)
    for x, y in batches[4:]:
        run(x, y)
    assert len(allocations) == before


def test_opencl_replay_on_an_arena_of_sub_buffers_equals_eager(cl, monkeypatch):
    """The same plan on OpenCL, where the arena's pieces are sub-buffers."""
    eager, _ = _losses(use_jit=False, device="cl")
    monkeypatch.setattr(debug, "POISON_FREED", True)
    replayed, _ = _losses(use_jit=True, device="cl")
    np.testing.assert_allclose(replayed, eager, rtol=1e-6)


def test_replays_update_state_in_place_on_numpy(monkeypatch):
    """After capture the parameters and Adam's moments live in one buffer each (the NumPy
    backend updates them in place), the same buffers from replay to replay, and the replays
    still equal eager steps.  The two weights are views of their group's one flat buffer."""
    eager, _ = _losses(use_jit=False)
    monkeypatch.setattr(debug, "POISON_FREED", True)
    replayed, run = _losses(use_jit=True)
    np.testing.assert_allclose(replayed, eager, rtol=1e-6)
    pairs = run.state_pairs
    assert len(pairs) == 5 and all(read is written for read, written in pairs), \
        "the step count, two weights, the group's flat m and v: every one updated in place"
    assert pairs[1][0] is pairs[2][0], "the two weights share their group's buffer"
    state = run._state_tensors()
    buffers = [t.lazydata.base.realized for t in state]
    x, y = _mlp_step()[2][0]
    run(x, y)
    assert all(a is b for a, b in zip(buffers, [t.lazydata.base.realized for t in state]))


def test_a_state_read_after_its_update_is_not_updated_in_place():
    """A step that still reads a weight's old value after the optimizer wrote the new one (here a
    lazy 2*w built before opt.step() and returned) keeps two buffers for that weight: in place,
    the replay would return twice the new value."""
    def make():
        w = Tensor(np.arange(4, dtype=np.float32), requires_grad=True)
        opt = optim.SGD([w], lr=0.5)

        def step(x):
            twice_old = w.detach() * 2
            loss = (x * w).sum()
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss, twice_old
        return step, opt
    eager_step, _ = make()
    eager = [eager_step(Tensor(np.ones(4, np.float32)))[1].numpy() for _ in range(6)]
    jit_step, opt = make()
    run = minigrad.jit(jit_step, state=[opt])
    replayed = [run(Tensor(np.ones(4, np.float32)))[1].numpy() for _ in range(6)]
    np.testing.assert_array_equal(replayed, eager)
    weight_pair = run.state_pairs[1]
    assert weight_pair[0] is not weight_pair[1]


def test_backward_keeps_inputs_not_intermediates_of_gelu_layernorm_and_softmax(allocations, monkeypatch):
    """F.Recompute (GELU, LayerNorm) and F.Softmax keep only what their backward reads.  In one
    training-style realize (forward, backward, gradient) of LayerNorm -> GELU -> softmax over
    (64, 512), at most 5 full-size buffers are alive at once (the composed ops: 6; on the
    shakespeare-char model the peak of live buffers went from 5.5 to 3.5 GB)."""
    monkeypatch.setattr(Tensor, "RECOMPUTE_FROM", 64 * 512)      # these count as large here
    peak = []
    original = schedule.run_kernel

    def run_kernel(kernel, out, inputs):
        original(kernel, out, inputs)
        peak.append(sum(ref() is not None and ref().size == 64 * 512 for ref in allocations))
    monkeypatch.setattr(schedule, "run_kernel", run_kernel)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((64, 512)).astype(np.float32), requires_grad=True)
    w = Tensor(np.ones(512, np.float32), requires_grad=True)
    y = x.layernorm(weight=w).gelu().softmax(-1)
    (y * Tensor(rng.standard_normal((64, 512)).astype(np.float32))).sum().backward()
    del y
    x.grad.realize()
    assert np.isfinite(x.grad.numpy()).all()
    assert max(peak) <= 5, f"full-size buffers alive per kernel: {peak}"


def test_numpy_backend_asks_malloc_to_keep_freed_memory():
    """On Linux with glibc (CI's machine) the NumPy backend fixes malloc's thresholds, so buffers
    freed mid-schedule are reused instead of returned to the system and faulted in again."""
    import sys
    from minigrad.backends import get_backend
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt is a Linux matter")
    assert get_backend("numpy").keeps_freed_memory
