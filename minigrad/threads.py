"""How many threads BLAS (numpy's matmul) may use.

BLAS starts one thread per logical CPU.  On a machine with other work running, or with
hyperthreads, that oversubscribes the cores: measured on a 2-core laptop with one other busy
process, training ran 2.6x and sampling 11x slower than with one thread, same losses.  So
the default is the physical cores this process may run on, and `limit_blas_threads(n)`
sets any other count (threadpoolctl, which works for OpenBLAS, MKL and BLIS alike).
"""
import contextlib
import glob
import os
from typing import Optional


def _allowed_cpus() -> set:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):             # not Linux: every CPU the OS reports
        return set(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Cores (not hyperthreads) among the CPUs this process may use; the logical CPU count
    where the topology is unknown."""
    allowed = _allowed_cpus()
    cores = set()
    for cpu in allowed:
        paths = glob.glob(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        if not paths:
            return len(allowed)
        try:
            with open(paths[0]) as f:
                cores.add(f.read().strip())              # hyperthreads of one core share this list
        except OSError:
            return len(allowed)
    return max(1, len(cores))


def blas_threads() -> Optional[int]:
    """The thread count of the BLAS numpy loaded, or None if threadpoolctl cannot tell."""
    import numpy  # noqa: F401  (threadpoolctl finds libraries that are already loaded)
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else None


@contextlib.contextmanager
def limit_blas_threads(n: int):
    """Hold BLAS (threadpoolctl) and the compiled kernels' pool (backends/c_runtime.py) to n threads
    inside the block.  The two take turns on the cores, never run at once, so both get n."""
    if n < 1:
        raise ValueError(f"--threads must be at least 1, got {n}")
    import numpy  # noqa: F401
    from threadpoolctl import threadpool_limits
    compiler = _compiler()
    before = compiler.thread_count() if compiler else None
    if compiler:
        compiler.set_threads(n)
    try:
        with threadpool_limits(limits=int(n), user_api="blas"):
            yield
    finally:
        if compiler:
            compiler.set_threads(before)


def _compiler():
    """The NumPy backend's C compiler, if it compiles kernels (started now if not yet)."""
    from .backends import get_backend
    try:
        return get_backend("numpy").compiler
    except (RuntimeError, ValueError):
        return None
