"""minigrad.jit: a captured step replayed over its own buffers must give exactly what the
eager step gives: same losses, same weights, same dropout masks, new learning rates seen."""
import numpy as np
import pytest

import minigrad
import minigrad.kernel
from minigrad import Tensor, nn, optim


class MLP(nn.Module):
    def __init__(self):
        self.l1, self.l2 = nn.Linear(6, 16), nn.Linear(16, 3)
        self.drop = nn.Dropout(0.25)

    def forward(self, x):
        return self.l2(self.drop(self.l1(x).gelu()))


def train(device, use_jit, steps=6, valid_counts=None, keep=False):
    """Losses, weights and step count after `steps` AdamW steps; with valid_counts, step i keeps
    valid_counts[i] of its 8 targets and sets the rest to ignore_index.  With keep, the step
    function itself is appended to the losses."""
    Tensor.manual_seed(0)
    model = MLP()
    for p in model.parameters():
        p.lazydata = p.to(device).realize().lazydata
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)

    def step(x, y):
        loss = model(x).cross_entropy(y)
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss

    run = minigrad.jit(step, state=[model, opt]) if use_jit else step
    rng = np.random.default_rng(1)
    losses = []
    for i in range(steps):
        opt.lr = 1e-2 / (i + 1)                       # changes every step: replays must see it
        x = Tensor(rng.standard_normal((8, 6)).astype(np.float32), device=device)
        y = rng.integers(0, 3, 8)
        if valid_counts is not None:
            y[valid_counts[i]:] = -1
        losses.append(run(x, Tensor(y, device=device)).item())
    if keep:
        losses.append(run)
    return losses, [p.numpy() for p in model.parameters()], opt.step_count


def test_jit_replay_equals_eager(device):
    eager_losses, eager_weights, eager_steps = train(device, use_jit=False)
    jit_losses, jit_weights, jit_steps = train(device, use_jit=True)
    np.testing.assert_allclose(jit_losses, eager_losses, rtol=1e-6, atol=1e-7)
    for a, b in zip(jit_weights, eager_weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert jit_steps == eager_steps == 6


def test_jit_with_changing_ignore_index_counts_equals_eager():
    """The count of valid targets differs per batch: a replay must divide by the new count."""
    counts = (8, 1, 4, 0, 3, 8)
    eager, jitted = (train("numpy", use_jit, valid_counts=counts)[0] for use_jit in (False, True))
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)
    assert eager[3] == 0.0                                   # no valid row: 0, not 0/0


def test_jit_replay_runs_no_schedule(monkeypatch):
    """After capture, a call builds no graph: create_schedule is never reached."""
    x = Tensor(np.ones((2, 3), np.float32))
    w = Tensor(np.ones((3, 2), np.float32), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)

    def step(x):
        loss = (x @ w).square().sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    run = minigrad.jit(step, state=[opt])
    before_replay = [run(x).item() for _ in range(4)]     # eager, traced twice, captured
    import minigrad.schedule as schedule
    calls = []
    original = schedule.create_schedule
    monkeypatch.setattr(schedule, "create_schedule", lambda t: calls.append(t) or original(t))
    replayed = run(x).item()
    assert calls == []
    # reference: the same five SGD steps done by hand in numpy
    wn, xn, expected = np.ones((3, 2)), np.ones((2, 3)), []
    for _ in range(5):
        out = xn @ wn
        expected.append((out ** 2).sum())
        wn = wn - 0.1 * (xn.T @ (2 * out))
    np.testing.assert_allclose(before_replay + [replayed], expected, rtol=1e-5)


def test_jit_rejects_new_shapes():
    w = Tensor(np.ones((3,), np.float32), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)

    def step(x):
        loss = (x * w).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    run = minigrad.jit(step, state=[opt])
    for _ in range(3):
        run(Tensor(np.ones((3,), np.float32)))
    with pytest.raises(ValueError, match="captured calls with arguments"):
        run(Tensor(np.ones((2, 3), np.float32)))


def test_jit_reads_state_another_jit_replaces():
    """Data-parallel training splits a step in two jits: one reads the weights and returns the
    gradient, the other applies it.  The reader must see the weights the writer left."""
    w = Tensor(np.ones((3,), np.float32), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    x = Tensor(np.arange(3, dtype=np.float32))

    def gradient(x):
        opt.zero_grad()
        (x * w * w).sum().backward()              # d/dw = 2 x w
        return w.grad

    def update(g):
        w.grad = g
        opt.step()
        return opt.step_tensor

    read, write = minigrad.jit(gradient, state=[w]), minigrad.jit(update, state=[opt])
    wn = np.ones(3)
    for _ in range(5):
        g = read(x)
        np.testing.assert_allclose(g.numpy(), 2 * np.arange(3) * wn, rtol=1e-6)
        write(g)
        wn = wn - 0.1 * 2 * np.arange(3) * wn
    np.testing.assert_allclose(w.numpy(), wn, rtol=1e-6)


def _captured(fn, *args):
    """fn under minigrad.jit, called until it replays; returns the jit and its last result."""
    step = minigrad.jit(fn)
    for _ in range(5):
        out = step(*args)
    return step, out


def test_a_multi_output_kernel_never_reads_an_element_it_has_not_written_yet(device):
    """b reads a backwards (a flip): in one loop, b's element i would read a[n-1-i] before the loop
    wrote it.  Such kernels stay apart; the ones that read a element for element join."""
    x = Tensor(np.arange(1000, dtype=np.float32), device=device)

    def f(x):
        a = x * 2 + 1                      # read twice below, so a kernel of its own
        b = a.flip(0) * a + a              # reads a at n-1-i
        c = b * 3 - a                      # reads a and b at i: may join b's kernel
        return c + c.flip(0)
    step, out = _captured(f, x)
    a = np.arange(1000, dtype=np.float32) * 2 + 1
    b = a[::-1] * a + a
    c = b * 3 - a
    np.testing.assert_array_equal(out.numpy(), c + c[::-1])
    calls = step.recording.calls
    for group in step.launch_groups:                      # no group holds a backwards read of its own writes
        written = {calls[i][1] for i in group}
        for i in group:
            kernel, _, ins = calls[i]
            for load in (n for n in minigrad.kernel.walk(kernel.ast) if isinstance(n, minigrad.kernel.Load)):
                if ins[load.index] in written:
                    assert load.view.is_contiguous, "a kernel in a multi-output group reads its group's output out of order"
