"""The CPU backend's pool of freed buffers (minigrad/backends/pool.py): a freed buffer serves the
next allocation of its size, never while a view of it is alive, and the pool never holds more
than the busiest moment needed."""
import gc

import numpy as np

from minigrad import Tensor
from minigrad.backends import get_backend
from minigrad.backends.pool import MIN_POOLED, BufferPool

N = MIN_POOLED // 4                       # float32 elements of a buffer the pool takes


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_a_freed_buffer_serves_the_next_allocation_of_its_size():
    pool = BufferPool()
    a = pool.allocate(N, np.float32)
    where = address(a)
    del a
    gc.collect()
    b = pool.allocate(N, np.float32)
    assert address(b) == where, "the freed buffer was not reused"
    c = pool.allocate(N // 4, np.float32)                 # a quarter of it: too small to take a kept block
    assert address(c) != where


def test_a_view_that_outlives_its_buffer_keeps_the_memory_out_of_use():
    pool = BufferPool()
    a = pool.allocate(N, np.float32)
    a[:] = 1.0
    view = a[10:20]
    del a
    gc.collect()
    b = pool.allocate(N, np.float32)
    b[:] = 5.0
    np.testing.assert_array_equal(view, np.ones(10, np.float32), err_msg="a live view's memory was handed out again")
    assert address(b) != address(view) - 40


def test_the_pool_never_holds_more_than_the_busiest_moment_needed():
    pool = BufferPool()
    sizes = [N, 3 * N, 2 * N, 5 * N, N, 7 * N, 4 * N]
    rng = np.random.default_rng(0)
    live = []
    for step in range(40):
        live.append(pool.allocate(int(sizes[rng.integers(len(sizes))]), np.float32))
        if len(live) > 3 or rng.random() < 0.3:
            live.pop(int(rng.integers(len(live))))
        assert pool.in_use + pool.kept_bytes <= pool.peak, f"step {step}: more held than ever in use"
        assert pool.in_use == sum(x.base.nbytes for x in live)


def test_tensors_on_the_cpu_reuse_freed_buffers_and_keep_their_values():
    """Two rounds of the same computation: the second takes the first's freed buffers, and a
    tensor kept from the first round keeps its values."""
    x = np.random.default_rng(1).standard_normal((N // 64, 64)).astype(np.float32)
    kept = (Tensor(x) * 2).exp().realize()
    for _ in range(2):
        out = ((Tensor(x) + 1).exp() * 3).sum(-1).numpy()
        np.testing.assert_allclose(out, (np.exp(x + 1) * 3).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(kept.numpy(), np.exp(x * 2), rtol=1e-6)


def test_the_jit_gives_back_what_the_pool_kept_once_it_replays():
    from minigrad import jit
    backend = get_backend("numpy")
    w = Tensor(np.ones(N, np.float32)).realize()

    def step(x):
        return ((x * w).exp() + x).sum()
    run = jit(step)
    for i in range(6):
        x = Tensor(np.full(N, 0.001 * i, np.float32))
        np.testing.assert_allclose(run(x).numpy(), (np.exp(x.numpy()) + x.numpy()).sum(), rtol=1e-5)
    assert run.recording is not None and backend.pool.kept_bytes == 0
