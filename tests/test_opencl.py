"""OpenCL-specific behaviour: launches, generated source, buffer reuse, device choice and errors.
(The op-by-op correctness of the OpenCL backend is covered by the shared op tests, which run on
every backend through the `device` fixture.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

import minigrad
from minigrad import Tensor
from minigrad.backends.opencl_render import render


class LaunchCounter:
    """Counts the kernels a backend actually runs."""

    def __init__(self, backend):
        self.backend, self.kinds = backend, []

    def __enter__(self):
        self.original = self.backend.run

        def run(kernel, out, inputs):
            self.kinds.append(kernel.kind)
            return self.original(kernel, out, inputs)
        self.backend.run = run
        return self

    def __exit__(self, *exc):
        self.backend.run = self.original


def test_fused_chain_is_one_launch(cl, rng):
    a, b, c = (Tensor(rng.standard_normal((5, 7)).astype(np.float32), device="cl") for _ in range(3))
    expected = np.maximum(a.numpy() * b.numpy() + c.numpy(), 0).sum()
    with LaunchCounter(cl) as counter:
        got = (a * b + c).relu().sum().numpy()
    assert counter.kinds == ["reduce"], counter.kinds
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_views_launch_nothing(cl, rng):
    x = rng.standard_normal((4, 6, 8)).astype(np.float32)
    t = Tensor(x, device="cl")
    with LaunchCounter(cl) as counter:
        view = t.permute(2, 0, 1)[1:5, :, ::2].reshape(4, 4, 3)
        got = view.numpy()
    assert counter.kinds == [], counter.kinds
    np.testing.assert_array_equal(got, x.transpose(2, 0, 1)[1:5, :, ::2].reshape(4, 4, 3))


def test_view_feeds_kernel_as_index_arithmetic(cl, rng):
    x = rng.standard_normal((6, 5)).astype(np.float32)
    t = Tensor(x, device="cl")
    with LaunchCounter(cl) as counter:
        got = (t.T[1:4] * 2).numpy()
    assert counter.kinds == ["elementwise"], counter.kinds
    np.testing.assert_allclose(got, x.T[1:4] * 2, rtol=1e-6)


def test_changing_constants_do_not_recompile(cl, rng):
    t = Tensor(rng.standard_normal(16).astype(np.float32), device="cl")
    (t * 0.5 + 1.0).realize()
    compiled = len(cl.programs)
    for lr in (0.1, 0.01, 0.001):
        np.testing.assert_allclose((t * lr + 1.0).numpy(), t.numpy() * lr + 1.0, rtol=1e-6)
    assert len(cl.programs) == compiled


def test_buffers_are_reused(cl):
    """Once a result of some size has been dropped, the next one of that size takes its buffer:
    the pool creates no new device buffer."""
    x = Tensor(np.ones(1000, np.float32), device="cl")
    np.testing.assert_array_equal((x + 1).numpy(), 2)   # warm the pool with a buffer of this size
    created = cl.buffers_created
    for k in range(5):
        np.testing.assert_array_equal((x + k).numpy(), 1 + k)
    assert cl.buffers_created == created, f"{cl.buffers_created - created} new buffers for 5 same-size results"


def test_training_steps_allocate_nothing_after_the_first(cl, rng):
    """A repeated step (forward, backward, update) gets every buffer from the pool once the
    first steps have filled it.  (gc.collect() after each step: the autograd graph holds
    reference cycles, whose buffers return to the pool when Python's collector runs.)"""
    import gc
    from minigrad import nn, optim
    layer = nn.Linear(8, 4)
    layer.weight, layer.bias = (Tensor(t.numpy(), device="cl", requires_grad=True) for t in (layer.weight, layer.bias))
    opt = optim.AdamW([layer.weight, layer.bias], lr=1e-2)
    x = Tensor(rng.standard_normal((16, 8)).astype(np.float32), device="cl")
    losses, created = [], []
    for _ in range(6):
        loss = layer(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        del loss
        gc.collect()
        created.append(cl.buffers_created)
    assert created[3] == created[4] == created[5], f"buffers created after each step: {created}"
    assert losses[-1] < losses[0], losses


def test_debug3_prints_kernel_source(cl, capsys):
    t = Tensor(np.arange(4, dtype=np.float32), device="cl")
    minigrad.set_debug(3)
    try:
        (t * 3 + 1).realize()
    finally:
        minigrad.set_debug(0)
    printed = capsys.readouterr().out
    assert "__kernel void" in printed and "get_global_id" in printed
    assert "launch global=" in printed and "realize: 1 kernels" in printed


def test_to_moves_between_devices(cl, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    on_cl = Tensor(x).to("cl")
    assert on_cl.device == "cl"
    back = (on_cl * 2).to("numpy")
    assert back.device == "numpy"
    np.testing.assert_allclose(back.numpy(), x * 2, rtol=1e-6)


def test_mixing_devices_is_a_clear_error(cl):
    with pytest.raises(RuntimeError, match="different devices: numpy and cl"):
        Tensor([1.0]) + Tensor([1.0], device="cl")


def test_source_renders_without_running(rng):
    """explain(source=True) needs no OpenCL: it only prints text."""
    a = Tensor(rng.standard_normal((4, 8)).astype(np.float32))
    text = (a.exp() * 2).sum(axis=1).explain(source=True)
    assert "__kernel void kernel0" in text and "exp(" in text and "acc = (acc+" in text


def test_matmul_templates_agree(cl, rng):
    """The GPU (local-memory tiles) and CPU (register blocks) matmul templates render different
    code for the same kernel; run each on this device and compare both with numpy's matmul."""
    a = rng.standard_normal((2, 70, 33)).astype(np.float32)
    b = rng.standard_normal((2, 33, 65)).astype(np.float32)
    kernel = minigrad.create_schedule([(Tensor(a) @ Tensor(b)).lazydata])[0]
    gpu_src = render(kernel, [np.dtype(np.float32)] * 2, cpu_device=False)[0]
    cpu_src = render(kernel, [np.dtype(np.float32)] * 2, cpu_device=True)[0]
    assert "__local" in gpu_src and "barrier" in gpu_src
    assert "__local" not in cpu_src
    results = {}
    saved = cl.is_cpu
    try:
        for template, is_cpu in (("gpu", False), ("cpu", True)):
            cl.is_cpu = is_cpu
            results[template] = (Tensor(a, device="cl") @ Tensor(b, device="cl")).numpy()
    finally:
        cl.is_cpu = saved
    for template, got in results.items():
        np.testing.assert_allclose(got, a @ b, rtol=1e-4, atol=1e-4, err_msg=f"{template} template vs numpy")
    np.testing.assert_allclose(results["gpu"], results["cpu"], rtol=1e-5, atol=1e-5,
                               err_msg="gpu template vs cpu template")


def test_bad_device_choice_names_the_devices(cl):
    from minigrad.backends.opencl import OpenCLUnavailable, find_devices, pick_device
    with pytest.raises(OpenCLUnavailable, match="matches none of"):
        pick_device(find_devices(), wish="no-such-device-xyz")


def test_missing_opencl_gives_install_hint():
    """With no OpenCL driver registered, asking for device='cl' explains how to get one."""
    code = ("from minigrad import Tensor\n"
            "try:\n    Tensor([1.0], device='cl')\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    env = dict(os.environ, OCL_ICD_VENDORS="/nonexistent-minigrad-test", OPENCL_VENDOR_PATH="/nonexistent")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "OpenCLUnavailable" in out.stdout, out.stdout + out.stderr
    assert "pocl-opencl-icd" in out.stdout


def test_doctor_never_raises_and_reports(cl):
    """The report names the OpenCL device minigrad would use and passes its smoke test."""
    out = subprocess.run([sys.executable, "-m", "minigrad"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "NumPy backend: works" in out.stdout and "Default device" in out.stdout
    assert f"minigrad would use: {cl.device.name.strip()} on {cl.platform.name.strip()}" in out.stdout, out.stdout
    assert "smoke test (a tiny kernel): ok" in out.stdout, out.stdout
    assert "To enable OpenCL" not in out.stdout, out.stdout


def test_doctor_reports_missing_opencl():
    env = dict(os.environ, OCL_ICD_VENDORS="/nonexistent-minigrad-test", OPENCL_VENDOR_PATH="/nonexistent")
    out = subprocess.run([sys.executable, "-m", "minigrad"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0
    assert "OpenCL: unavailable" in out.stdout and "To enable OpenCL" in out.stdout, out.stdout
    assert "NumPy backend: works" in out.stdout


def test_random_numbers_are_the_same_on_every_backend(cl):
    """Uniform numbers come from a counter-based hash (rng.py): the OpenCL kernel and numpy
    compute the same bits, so dropout masks agree across backends."""
    def draw(device):
        Tensor.manual_seed(7)
        return Tensor.rand(1000, 3, device=device).numpy(), Tensor.ones(4000, device=device).dropout(0.25).numpy()
    (u_np, d_np), (u_cl, d_cl) = draw("numpy"), draw("cl")
    np.testing.assert_array_equal(u_cl, u_np)
    np.testing.assert_array_equal(d_cl, d_np)
    assert 0 <= u_np.min() and u_np.max() < 1
    assert abs(u_np.mean() - 0.5) < 4 * np.sqrt(1 / 12 / u_np.size)      # within 4 sigma of a uniform's mean
    assert abs(u_np.var() - 1 / 12) < 0.01
    assert abs((d_np == 0).mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / d_np.size)


def test_device_index_suffix_takes_the_nth_match():
    """A job's processes each take their own GPU with MINIGRAD_CL_DEVICE=gpu:<local rank>,
    counting round when there are more processes than GPUs."""
    import pyopencl
    from types import SimpleNamespace as NS
    from minigrad.backends.opencl import pick_device
    platform = NS(name="Vendor OpenCL")
    gpus = [(platform, NS(name=f"GPU {i}", type=pyopencl.device_type.GPU)) for i in range(3)]
    cpu = (NS(name="Portable Computing Language"), NS(name="cpu-x86", type=pyopencl.device_type.CPU))
    pairs = [cpu] + gpus
    assert pick_device(pairs, wish="gpu:1") is gpus[1]
    assert pick_device(pairs, wish=":2") is gpus[2]              # the default kind: GPUs first
    assert pick_device(pairs, wish="gpu:4") is gpus[1]           # 4 processes on 3 GPUs: round
    assert pick_device(pairs, wish="portable:1") is cpu          # one match: every index takes it
    assert pick_device(pairs, wish="gpu") is gpus[0]


def test_a_jit_replay_runs_adamw_and_elementwise_runs_as_multi_output_kernels(cl):
    """As on the compiled CPU path, a replay runs consecutive elementwise kernels of one shape as
    one kernel with several outputs (opencl_render.render_group): AdamW's m, v and weights of a
    whole parameter group in one launch, a value read only inside the run kept in a register."""
    from minigrad.kernel import KernelKind
    from test_jit import train
    eager_losses, eager_weights, _ = train("cl", use_jit=False)
    Tensor.manual_seed(0)
    jit_losses, jit_weights, _ = train("cl", use_jit=True, keep=True)
    step = jit_losses.pop()
    np.testing.assert_allclose(jit_losses, eager_losses, rtol=1e-6)
    for a, b in zip(jit_weights, eager_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    calls = step.recording.calls
    n = sum(p.numel() for p in step.state_objects[0].parameters())
    assert [g for g in step.launch_groups if len(g) >= 3 and all(
        calls[i][0].kind is KernelKind.ELEMENTWISE and calls[i][0].output.shape == (n,) for i in g)], \
        "the group's m, v and weight updates should be one launch"

    x = Tensor(np.linspace(-1, 1, 4096, dtype=np.float32), device="cl")
    y = Tensor(np.linspace(2, 3, 4096, dtype=np.float32), device="cl")

    def f(x, y):
        s = (x * y).exp()
        u = s * x + s
        return (s - y) * u + u * 2
    run = minigrad.jit(f)
    for _ in range(5):
        out = run(x, y)
    xs, ys = x.numpy().astype(np.float64), y.numpy().astype(np.float64)
    s = np.exp(xs * ys)
    np.testing.assert_allclose(out.numpy(), (s - ys) * (s * xs + s) + (s * xs + s) * 2, rtol=1e-5, atol=1e-3)
    assert run.launch_groups == [[0, 1, 2]]
    source = render_group_source(run)
    assert source.count("out0[gid]") == 1 and "out1" not in source, "s and u stay in registers"


def render_group_source(run) -> str:
    from minigrad.backends.opencl_render import render_group
    kernels, sources, stores, inputs, _ = run._group_spec([0, 1, 2])
    return render_group(list(zip(kernels, sources, stores)), [np.dtype(np.float32)] * len(inputs), "g")[0]
