"""`python -m minigrad`: what works on this machine, what runs by default, and how to fix the rest.
It never raises: every probe reports its own failure."""
import os
import platform
import sys
import time


def _numpy_report(lines):
    import numpy as np
    lines.append(f"numpy {np.__version__} on Python {platform.python_version()} ({platform.machine()})")
    try:
        from threadpoolctl import threadpool_info
        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                lines.append(f"  BLAS: {pool.get('internal_api')} {pool.get('version')} "
                             f"({pool.get('architecture', '?')}), {pool.get('num_threads')} threads")
    except ImportError:
        config = getattr(np, "show_config", None)
        try:
            info = np.show_config(mode="dicts") if config else {}
            blas = info.get("Build Dependencies", {}).get("blas", {})
            lines.append(f"  BLAS: {blas.get('name', '?')} {blas.get('version', '')} "
                         f"(threads: see OPENBLAS_NUM_THREADS/OMP_NUM_THREADS; pip install threadpoolctl for more)")
        except Exception as e:
            lines.append(f"  BLAS: unknown ({e})")
    from .threads import physical_cores
    lines.append(f"  threads: {physical_cores()} physical core(s) usable here: the default of `gpt train/sample "
                 f"--threads N` (use fewer when other work shares the machine)")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE",
                "MINIGRAD_CPU", "MINIGRAD_CC", "MINIGRAD_CACHE"):
        if os.environ.get(var):
            lines.append(f"  {var}={os.environ[var]}")


def _compiled_report(lines) -> None:
    """Which CPU path runs elementwise and reduce kernels here, and how to get the faster one."""
    try:
        from .backends import get_backend
        backend = get_backend("numpy")
    except Exception as e:                      # a bad MINIGRAD_CPU, or MINIGRAD_CPU=compiled without a compiler
        lines.append(f"  CPU kernels: {e}")
        return
    if backend.compiler is None:
        lines.append(f"  CPU kernels: the NumPy evaluator, because {backend.why_not_compiled}.")
        if os.environ.get("MINIGRAD_CPU", "auto") != "numpy" and "MINIGRAD_CACHE" not in str(backend.why_not_compiled):
            lines.append("    For compiled kernels (2-3x faster training steps on small models), install a C compiler "
                         "(Debian/Ubuntu: apt-get install gcc; macOS: xcode-select --install)")
        return
    try:
        from .tensor import Tensor
        t0 = time.perf_counter()
        got = (Tensor([1.0, 2.0, 3.0]) * 2).sum().item()
        smoke = f"smoke test {'ok' if got == 12.0 else f'WRONG ({got})'} in {time.perf_counter() - t0:.2f} s"
    except Exception as e:
        smoke = f"smoke test failed: {type(e).__name__}: {e}"
    lines.append(f"  CPU kernels: compiled ({backend.compiler.describe()}); {smoke}")
    lines.append(f"    cache: {backend.compiler.folder} ({backend.compiler.cache_summary()}); "
                 f"MINIGRAD_CPU=numpy runs the NumPy evaluator instead")


def _opencl_report(lines) -> bool:
    try:
        from .backends.opencl import OpenCLUnavailable, find_devices, pick_device
    except Exception as e:
        lines.append(f"OpenCL: cannot load the backend ({e})")
        return False
    try:
        pairs = find_devices()
    except OpenCLUnavailable as e:
        lines.append(f"OpenCL: unavailable: {e}")
        return False
    except Exception as e:
        lines.append(f"OpenCL: probing failed: {e}")
        return False
    lines.append("OpenCL platforms and devices:")
    for p, d in pairs:
        lines.append(f"  {p.name.strip()}: {d.name.strip()} ({'GPU' if d.type & 4 else 'CPU' if d.type & 2 else 'other'}, "
                     f"{d.global_mem_size // 2**20} MiB, {d.max_compute_units} compute units)")
    try:
        p, d = pick_device(pairs)
        lines.append(f"  minigrad would use: {d.name.strip()} on {p.name.strip()} "
                     f"(set MINIGRAD_CL_DEVICE=gpu|cpu|<name> to choose)")
    except Exception as e:
        lines.append(f"  device choice failed: {e}")
        return False
    try:
        from .tensor import Tensor
        t0 = time.perf_counter()
        got = (Tensor([1.0, 2.0, 3.0], device="cl") * 2).sum().item()
        ok = got == 12.0
        lines.append(f"  smoke test (a tiny kernel): {'ok' if ok else f'WRONG ({got})'} in {time.perf_counter() - t0:.2f} s")
        return ok
    except Exception as e:
        lines.append(f"  smoke test failed: {type(e).__name__}: {e}")
        return False


def report() -> str:
    lines = ["minigrad device report", ""]
    try:
        _numpy_report(lines)
        lines.append("  NumPy backend: works (always available)")
        _compiled_report(lines)
    except Exception as e:
        lines.append(f"NumPy backend: probe failed: {e}")
    lines.append("")
    cl_ok = _opencl_report(lines)
    lines.append("")
    wanted = os.environ.get("MINIGRAD_DEVICE")
    if wanted:
        lines.append(f"Default device: {wanted} (from MINIGRAD_DEVICE)")
    else:
        lines.append("Default device: numpy (set MINIGRAD_DEVICE=cl, pass --device cl, or Tensor(..., device='cl') "
                     "to use OpenCL)")
    if not cl_ok:
        lines.append("To enable OpenCL: pip install pyopencl; then a driver: your GPU vendor's OpenCL driver, "
                     "or PoCL on the CPU (apt-get install pocl-opencl-icd)")
    return "\n".join(lines)


def doctor() -> None:
    print(report())


def main() -> int:
    try:
        doctor()
    except Exception as e:  # the report must never crash
        print(f"minigrad doctor failed unexpectedly: {e}", file=sys.stderr)
    return 0
