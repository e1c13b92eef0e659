"""The compiled CPU path (backends/c_render.py, compiler.py, c_runtime.py): kernels as C, against
the NumPy evaluator; results that do not depend on the thread count; the disk cache; and what a
user sees when no compiler works.  (The whole op suite also runs on this path: the `device`
fixture's "numpy" case.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

from minigrad import Tensor
from minigrad.backends import c_render, get_backend
from minigrad.kernel import KernelKind, Load
from minigrad.schedule import create_schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def compiled():
    backend = get_backend("numpy")
    if backend.compiler is None:
        if os.environ.get("CI"):
            pytest.fail(f"compiled CPU kernels unavailable in CI: {backend.why_not_compiled}")
        pytest.skip(f"no compiled CPU kernels here: {backend.why_not_compiled}")
    return backend


def test_equal_kernels_share_one_compiled_function_without_rendering_again(compiled):
    x = Tensor(np.arange(7, dtype=np.float32))
    first = create_schedule([(x * 3.5 + 1).lazydata])
    compiled.prepare(first)
    second = create_schedule([(x * 3.5 + 1).lazydata])
    compiled.prepare(second)
    assert first[0].prepared is not None and second[0].prepared is first[0].prepared
    other = create_schedule([(x * 2.5 + 1).lazydata])          # other numbers: the same C, other arguments
    compiled.prepare(other)
    assert other[0].prepared[0] is first[0].prepared[0] and other[0].prepared[1] != first[0].prepared[1]
    np.testing.assert_allclose((x * 2.5 + 1).numpy(), np.arange(7) * 2.5 + 1)


def _kernel_source(t: Tensor) -> str:
    kernels = [k for k in create_schedule([t.lazydata]) if k.kind in c_render.RENDERERS]
    assert len(kernels) == 1
    k = kernels[0]
    return c_render.render(k, [b.dtype for b in k.inputs])[1]


def test_a_tensor_read_in_order_is_one_loop(compiled):
    a, b = Tensor(np.ones((4, 8, 16), np.float32)), Tensor(np.ones((4, 8, 16), np.float32))
    source = _kernel_source((a * b + 1).exp())
    assert source.count("for (long") == 1 and "< end" in source           # (4, 8, 16) merged into 512
    permuted = _kernel_source(a.permute(0, 2, 1) + b.permute(0, 2, 1))
    assert source.count("for (long") == 1 and permuted.count("for (long") == 3


def test_merge_dims_keeps_padding_and_reduced_axes_apart():
    from minigrad.view import View
    plain = Load(0, View.contiguous((2, 3, 4)), np.dtype(np.float32))
    assert c_render.merge_dims((2, 3, 4), [plain]) == [[0, 1, 2]]
    assert c_render.merge_dims((2, 3, 4), [plain], reduced=(1,)) == [[0], [1], [2]]
    assert c_render.merge_dims((2, 3, 4), [plain], reduced=(1, 2)) == [[0], [1, 2]]
    padded = Load(0, View.contiguous((2, 3, 2)).pad(((0, 0), (0, 0), (1, 1))), np.dtype(np.float32))
    assert c_render.merge_dims((2, 3, 4), [padded]) == [[0, 1], [2]]


@pytest.mark.parametrize("shape,axis", [((37, 1000), 1), ((1000, 37), 0), ((6, 50, 70), 1), ((6, 50, 70), (0, 2))])
def test_reductions_match_numpy_in_float64(compiled, shape, axis):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = Tensor(x).sum(axis=axis).numpy()
    np.testing.assert_allclose(got, x.astype(np.float64).sum(axis=axis), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(Tensor(x).max(axis=axis).numpy(), x.max(axis=axis))


def test_max_propagates_nan_as_numpy_does(compiled):
    x = np.array([1.0, np.nan, 3.0, -1.0], np.float32)
    assert np.isnan(Tensor(x).max().item())
    np.testing.assert_array_equal(Tensor(x).relu().numpy(), np.maximum(x, 0))


def test_results_do_not_depend_on_the_thread_count(compiled):
    """Big enough to be split into chunks, with a length that leaves scalar remainders: exp and
    erf's vector and scalar versions differ in the last bits, so chunks cut by thread count
    would give other bits with other counts."""
    x = Tensor(np.random.default_rng(1).standard_normal((3, 100_003)).astype(np.float32))
    compiler = compiled.compiler
    before = compiler.thread_count()
    results = []
    try:
        for n in (1, 2, 3):
            compiler.set_threads(n)
            y = (x.exp() + x.erf() * x.sin()).sum(axis=0) + x.exp().sum(axis=1, keepdim=True).sum()
            results.append(y.numpy())
    finally:
        compiler.set_threads(before)
    assert results[0].tobytes() == results[1].tobytes() == results[2].tobytes()


def test_the_pool_cuts_a_loop_at_the_same_places_whatever_the_thread_count(compiled):
    """What keeps results independent of --threads on every CPU: the chunks a kernel's loop is cut
    into (and so where each chunk's vector loop ends and its scalar remainder begins) are the
    kernel's choice, not the pool's.  The pool reports each chunk it runs to a Python callback."""
    import ctypes
    compiler = compiled.compiler
    runtime = compiler._runtime()
    body_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_long, ctypes.c_long)
    runtime.mg_parallel.argtypes = [body_type, ctypes.c_void_p, ctypes.c_long, ctypes.c_long]
    before = compiler.thread_count()
    cuts = {}
    try:
        for n in (1, 2, 3):
            compiler.set_threads(n)
            seen = []
            body = body_type(lambda _, start, end: seen.append((start, end)))
            runtime.mg_parallel(body, None, 1003, 7)
            cuts[n] = sorted(seen)
    finally:
        compiler.set_threads(before)
    assert cuts[1] == cuts[2] == cuts[3]
    assert len(cuts[1]) == 7 and cuts[1][0][0] == 0 and cuts[1][-1][1] == 1003
    assert all(a[1] == b[0] for a, b in zip(cuts[1], cuts[1][1:]))      # no gaps, no overlaps


def test_fewer_threads_after_more_are_fewer_threads(compiled):
    """--threads 2 after the pool had 3: the third stays out of the work (it exists, but sleeps)."""
    import ctypes
    import threading
    import time
    compiler = compiled.compiler
    runtime = compiler._runtime()
    body_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_long, ctypes.c_long)
    runtime.mg_parallel.argtypes = [body_type, ctypes.c_void_p, ctypes.c_long, ctypes.c_long]
    before = compiler.thread_count()
    try:
        compiler.set_threads(3)
        compiler.set_threads(2)
        workers = set()

        def chunk(_, start, end):
            workers.add(threading.get_ident())
            time.sleep(0.002)                       # long enough for every awake worker to join in
        body = body_type(chunk)
        for _ in range(5):
            runtime.mg_parallel(body, None, 64, 64)
    finally:
        compiler.set_threads(before)
    assert 1 <= len(workers) <= 2, f"{len(workers)} threads ran chunks with --threads 2"


def test_adamw_updates_run_as_one_multi_output_kernel_and_equal_eager(compiled):
    """On the compiled CPU path a replay runs AdamW's m, v and parameter updates of the whole
    parameter group (elementwise kernels over the group's flat buffers, each reading what the one
    before wrote, element by element) as one launch, with the same bits as the eager step."""
    from test_jit import train
    eager_losses, eager_weights, _ = train("numpy", use_jit=False)
    Tensor.manual_seed(0)
    jit_losses, jit_weights, _ = train("numpy", use_jit=True, keep=True)
    step = jit_losses.pop()
    assert jit_losses == eager_losses
    for a, b in zip(jit_weights, eager_weights):
        np.testing.assert_array_equal(a, b)
    calls = step.recording.calls
    n = sum(p.numel() for p in step.state_objects[0].parameters())
    updates = [g for g in step.launch_groups if len(g) >= 3 and
               all(calls[i][0].kind is KernelKind.ELEMENTWISE and calls[i][0].output.shape == (n,) for i in g)]
    assert len(updates) == 1, "the group's m, v and weight updates should be one launch"


def test_a_value_only_the_group_reads_is_not_written(compiled):
    """An intermediate that only later members of its group read stays in registers: the
    group's C stores just the values read after it."""
    import minigrad
    x = Tensor(np.linspace(-1, 1, 4096, dtype=np.float32))
    y = Tensor(np.linspace(2, 3, 4096, dtype=np.float32))

    def f(x, y):
        s = (x * y).exp()                  # read by two kernels: its own
        u = s * x + s                      # read twice below: its own
        return (s - y) * u + u * 2         # reads s and u element by element
    step = minigrad.jit(f)
    for _ in range(5):
        out = step(x, y)
    xs, ys = x.numpy().astype(np.float64), y.numpy().astype(np.float64)
    s = np.exp(xs * ys)
    u = s * xs + s
    np.testing.assert_allclose(out.numpy(), (s - ys) * u + u * 2, rtol=1e-5, atol=1e-3)   # values up to 770
    assert step.launch_groups == [[0, 1, 2]]
    _, _, stores, _, _ = step._group_spec([0, 1, 2])
    assert stores == [False, False, True], "s and u are read only inside the group: not stored"


def test_a_padded_read_runs_alone_and_a_group_loop_is_vectorized(compiled):
    """A cat joins no multi-output kernel (alone, its loop is cut where the pieces start: no
    branch per element), and a group's loop tells the compiler its members' in-place updates
    carry nothing from one element to the next (`#pragma GCC ivdep`): without it, AdamW's group
    of two outputs was not vectorized, 2 ms instead of 0.2 on the laptop step."""
    a, b = Tensor(np.ones(8, np.float32)).realize(), Tensor(np.ones(8, np.float32)).realize()
    cat = create_schedule([Tensor.cat(a, b).lazydata])[0]
    scale = create_schedule([(Tensor(np.ones(16, np.float32)).realize() * 2).lazydata])[0]
    member = (cat, [("in", 0), ("in", 1)], True)
    assert c_render.render_group([member, (scale, [("in", 2)], True)], [np.float32] * 3) is None
    one = (scale, [("in", 0)], True)
    _, source, _ = c_render.render_group([one, (scale, [("member", 0)], True)], [np.float32])
    lines = source.splitlines()
    loop = next(i for i, line in enumerate(lines) if line.strip().startswith("for (long i0"))
    assert lines[loop - 1].strip() == "#pragma GCC ivdep", source


def _train(steps: int):
    from gpt.model import GPT, GPTConfig
    from gpt.train import make_train_step
    # no biases: the key projection's bias has a gradient of exactly 0 in exact arithmetic (softmax
    # ignores a constant added to every score), so AdamW walks it by rounding noise on any path
    config = GPTConfig(vocab_size=17, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False)
    Tensor.manual_seed(3)
    model = GPT(config)
    optimizer = model.configure_optimizer(weight_decay=0.1, lr=3e-3, betas=(0.9, 0.99))
    step = make_train_step(model, optimizer, grad_clip=1.0, use_jit=True)
    data = np.random.default_rng(5).integers(0, 17, size=(steps, 4, 17))
    losses = [step(Tensor(d[:, :-1]), Tensor(d[:, 1:])).item() for d in data]
    return np.array(losses), [p.numpy() for p in model.parameters()]


def test_twenty_training_steps_match_the_evaluator(compiled):
    """The issue's tolerance: losses and weights after 20 jit steps within 1e-5.  They differ at
    all because C's exp and erf are not numpy's, and sums accumulate in double, not pairwise."""
    fast_losses, fast_weights = _train(20)
    compiler, compiled.compiler = compiled.compiler, None
    try:
        slow_losses, slow_weights = _train(20)
    finally:
        compiled.compiler = compiler
    np.testing.assert_allclose(fast_losses, slow_losses, rtol=0, atol=1e-5)
    for a, b in zip(fast_weights, slow_weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def _python(code: str, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=300)


def test_the_disk_cache_spares_the_second_process_the_compiler(compiled, tmp_path):
    code = ("from minigrad import Tensor; from minigrad.backends import get_backend\n"
            "print((Tensor([1.0, 2.0, 3.0]).exp() * 2).sum().item(), get_backend('numpy').compiler.compiles)")
    first = _python(code, MINIGRAD_CACHE=str(tmp_path))
    second = _python(code, MINIGRAD_CACHE=str(tmp_path))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    value_1, compiles_1 = first.stdout.split()
    value_2, compiles_2 = second.stdout.split()
    assert value_1 == value_2 and float(value_1) == pytest.approx(2 * sum(np.exp([1.0, 2.0, 3.0])), rel=1e-6)
    assert int(compiles_1) >= 1 and int(compiles_2) == 0


def test_without_a_compiler_the_evaluator_runs_and_the_report_says_why(tmp_path):
    env = {"MINIGRAD_CC": "no-such-cc", "MINIGRAD_CACHE": str(tmp_path)}
    run = _python("from minigrad import Tensor; print(Tensor([1.0, 2.0]).exp().sum().item())", **env)
    assert run.returncode == 0 and float(run.stdout) == pytest.approx(np.exp(1) + np.exp(2), rel=1e-6)
    report = subprocess.run([sys.executable, "-m", "minigrad"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **env}, timeout=300)
    assert "CPU kernels: the NumPy evaluator, because no C compiler: 'no-such-cc'" in report.stdout
    assert "install a C compiler" in report.stdout


def test_an_unwritable_kernel_cache_falls_back_to_the_evaluator_and_says_where_to_point_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {"MINIGRAD_CACHE": str(blocker / "cache")}
    run = _python("from minigrad import Tensor; print(Tensor([1.0, 2.0]).exp().sum().item())", **env)
    assert run.returncode == 0 and float(run.stdout) == pytest.approx(np.exp(1) + np.exp(2), rel=1e-6)
    report = subprocess.run([sys.executable, "-m", "minigrad"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **env}, timeout=300)
    assert "CPU kernels: the NumPy evaluator, because the kernel cache" in report.stdout
    assert "set MINIGRAD_CACHE to a writable folder" in report.stdout and "install a C compiler" not in report.stdout


@pytest.mark.parametrize("env,message", [
    ({"MINIGRAD_CPU": "compiled", "MINIGRAD_CC": "no-such-cc"}, "MINIGRAD_CPU=compiled, but no C compiler"),
    ({"MINIGRAD_CPU": "fast"}, "MINIGRAD_CPU='fast' is not a CPU path; choose one of auto, compiled, numpy"),
])
def test_a_path_that_cannot_run_is_one_clear_line(env, message, tmp_path):
    out_dir = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "gpt", "train", "--preset", "quickstart", "--max-iters", "1",
                          "--out-dir", str(out_dir)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, timeout=300)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not out_dir.exists()


def test_random_numbers_are_the_same_bits_compiled_and_evaluated(compiled):
    """Dropout masks come from the counter-based hash (rng.py) in C now: the same bits as numpy's
    (and OpenCL's), in float32 and float64, for a replayed step too."""
    import minigrad
    for dtype in (np.float32, np.float64):
        Tensor.manual_seed(5)
        fast = Tensor.rand(1000, 37, dtype=dtype).numpy()
        compiler, compiled.compiler = compiled.compiler, None
        try:
            Tensor.manual_seed(5)
            slow = Tensor.rand(1000, 37, dtype=dtype).numpy()
        finally:
            compiled.compiler = compiler
        assert fast.dtype == dtype and np.array_equal(fast, slow)
    Tensor.manual_seed(7)
    step = minigrad.jit(lambda x: x.dropout(0.5))
    x = Tensor(np.ones(4096, np.float32))
    masks = [step(x).numpy() for _ in range(6)]                # calls 5 and 6 are replays
    Tensor.manual_seed(7)
    eager = [x.dropout(0.5).numpy() for _ in range(6)]
    assert all(np.array_equal(a, b) for a, b in zip(masks, eager))
    assert not np.array_equal(masks[4], masks[5])             # a fresh mask every replay


def test_the_disk_cache_drops_its_oldest_libraries_past_its_cap(compiled, tmp_path, monkeypatch):
    """Every new shape is a new library: past MAX_CACHED the oldest half is deleted, and a function
    loaded from a deleted library still runs."""
    import ctypes
    import time
    compiler = compiled.compiler
    monkeypatch.setattr(compiler, "folder", str(tmp_path))
    monkeypatch.setattr(compiler, "MAX_CACHED", 2)
    functions = []
    for i in range(5):
        name = f"answer_{i}"
        functions.append(compiler.build({name: f"int {name}(void) {{ return {i * 7}; }}\n"})[name])
        time.sleep(0.01)                                  # distinct write times
        assert len(list(tmp_path.glob("*.so"))) <= 3
    for i, f in enumerate(functions):
        f.restype = ctypes.c_int
        assert f() == i * 7
    assert "libraries" in compiler.cache_summary()
