"""The OpenCL backend: kernels rendered to OpenCL C (opencl_render.py), compiled once per
source, launched through pyopencl.  Buffers come from a pool, so a training step that
repeats the same shapes allocates nothing new after the first step.

Device choice: MINIGRAD_CL_DEVICE="gpu", "cpu", or a substring of a platform or device
name (e.g. "pocl", "nvidia"); by default the first GPU found, else the first other device.
A ":n" suffix ("gpu:1") takes the n-th match: one GPU per process of a multi-GPU job.
"""
import functools
import os
import time
import warnings
from collections import defaultdict

import numpy as np

from .. import debug
from . import Backend
from ..kernel import KernelKind, Load, walk
from ..ops import NORMAL
from .numpy_backend import _check_index, random_values, read
from .opencl_render import render, render_group

INSTALL_HINT = ("install an OpenCL driver: your GPU vendor's, or PoCL to run OpenCL on the CPU "
                "(Debian/Ubuntu: apt-get install pocl-opencl-icd), and the Python binding: pip install pyopencl")


class OpenCLUnavailable(RuntimeError):
    pass


def find_devices():
    """All (platform, device) pairs pyopencl can see; raises OpenCLUnavailable with a fix."""
    try:
        import pyopencl as cl
    except ImportError as e:
        raise OpenCLUnavailable(f"pyopencl is not installed ({e}); {INSTALL_HINT}") from None
    try:
        platforms = cl.get_platforms()
    except Exception as e:  # pyopencl raises LogicError/RuntimeError when no ICD is registered
        raise OpenCLUnavailable(f"no OpenCL platform found ({e}); {INSTALL_HINT}") from None
    pairs = [(p, d) for p in platforms for d in p.get_devices()]
    if not pairs:
        raise OpenCLUnavailable(f"OpenCL platforms exist but hold no devices; {INSTALL_HINT}")
    return pairs


def pick_device(pairs, wish=None):
    """The device MINIGRAD_CL_DEVICE (or `wish`) names.  A ":n" suffix takes the n-th of the
    devices it matches, counting round (so each process of a job can take its own GPU:
    "gpu:1", or ":1" for the default kind)."""
    import pyopencl as cl
    wish = (wish if wish is not None else os.environ.get("MINIGRAD_CL_DEVICE", "")).lower()
    selector, colon, index = wish.rpartition(":")
    if not (colon and index.isdigit()):
        selector, index = wish, "0"
    if selector in ("gpu", "cpu"):
        kind = cl.device_type.GPU if selector == "gpu" else cl.device_type.CPU
        chosen = [pd for pd in pairs if pd[1].type & kind]
        if not chosen:
            raise OpenCLUnavailable(f"MINIGRAD_CL_DEVICE={wish} but no such device among "
                                    f"{[d.name for _, d in pairs]}")
    elif selector:
        chosen = [pd for pd in pairs if selector in pd[0].name.lower() or selector in pd[1].name.lower()]
        if not chosen:
            raise OpenCLUnavailable(f"MINIGRAD_CL_DEVICE={wish!r} matches none of "
                                    f"{[(p.name, d.name) for p, d in pairs]}")
    else:
        chosen = [pd for pd in pairs if pd[1].type & cl.device_type.GPU] or pairs
    return chosen[int(index) % len(chosen)]


class CLBuffer:
    """A device buffer that goes back to its pool when the last reference to it dies.  A sub-buffer
    of a jit's arena knows the arena and where in it it lies (`whole`, `offset`)."""
    __slots__ = ("buf", "nbytes", "pool", "whole", "offset", "__weakref__")

    def __init__(self, buf, nbytes, pool, whole=None, offset=0):
        self.buf, self.nbytes, self.pool = buf, nbytes, pool
        self.whole, self.offset = (whole if whole is not None else buf), offset

    def __del__(self):
        if self.pool is None:                  # a sub-buffer of a jit's arena: not ours to pool
            return
        try:
            self.pool[self.nbytes].append(self.buf)
        except Exception:
            pass


class OpenCLBackend(Backend):
    name = "cl"

    def __init__(self):
        import pyopencl as cl
        self.cl = cl
        self.platform, self.device = pick_device(find_devices())
        self.context = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.context)
        self.pool = defaultdict(list)          # nbytes -> free cl.Buffers
        self.buffers_created = 0               # device allocations; a warm pool adds none
        self.programs = {}                     # source -> compiled kernel
        self.is_cpu = bool(self.device.type & cl.device_type.CPU)

    def describe(self) -> str:
        return f"{self.device.name.strip()} on {self.platform.name.strip()}"

    # ---- memory ----------------------------------------------------------------------
    def allocate(self, size, dtype):
        nbytes = max(1, int(size)) * np.dtype(dtype).itemsize
        free = self.pool[nbytes]
        if free:
            buf = free.pop()
        else:
            buf = self.cl.Buffer(self.context, self.cl.mem_flags.READ_WRITE, nbytes)
            self.buffers_created += 1
        return CLBuffer(buf, nbytes, self.pool)

    @property
    def alignment(self) -> int:
        return max(64, self.device.mem_base_addr_align // 8)      # sub-buffers must start there

    def as_typed(self, buffer, offset, size, dtype):
        """A sub-buffer of an arena (OpenCL buffers are untyped); it never goes to the pool."""
        nbytes = max(1, size) * np.dtype(dtype).itemsize
        return CLBuffer(buffer.buf.get_sub_region(offset, nbytes), nbytes, None, buffer.whole, buffer.offset + offset)

    def copy_in(self, array):
        array = np.ascontiguousarray(array)
        buffer = self.allocate(array.size, array.dtype)
        self.write(buffer, array)
        return buffer

    def write(self, buffer, array, offset=0):
        array = np.ascontiguousarray(array).reshape(-1)
        if array.size:
            self.cl.enqueue_copy(self.queue, buffer.buf, array, is_blocking=True, dst_offset=offset * array.itemsize)

    def _host(self, buffer, dtype) -> np.ndarray:
        host = np.empty(buffer.nbytes // np.dtype(dtype).itemsize, dtype)
        self.cl.enqueue_copy(self.queue, host, buffer.buf, is_blocking=True)
        return host

    def copy_out(self, buffer, view, dtype):
        return np.array(read(self._host(buffer, dtype), view), copy=True)

    def synchronize(self):
        self.queue.finish()

    # ---- kernels ---------------------------------------------------------------------
    def _compile(self, source: str):
        kernel = self.programs.get(source)
        if kernel is None:
            with warnings.catch_warnings():          # drivers chat in their build logs; DEBUG=3 shows them
                warnings.simplefilter("ignore", self.cl.CompilerWarning)
                program = self.cl.Program(self.context, source).build()
            if debug.DEBUG >= 3:
                log = program.get_build_info(self.device, self.cl.program_build_info.LOG).strip()
                if log:
                    print(f"build log:\n{log}")
            kernel = program.all_kernels()[0]
            self.programs[source] = kernel
        return kernel

    # ---- multi-output kernels (a jit's groups) -------------------------------------------
    def groups_kernel(self, kernel) -> bool:
        """May `kernel` join a multi-output kernel (opencl_render.render_group)?"""
        return kernel.kind is KernelKind.ELEMENTWISE and kernel.output.size > 0

    def _group_program(self, kernels, sources, stores, input_dtypes):
        source, global_size, _, scalars = render_group(list(zip(kernels, sources, stores)), input_dtypes,
                                                       name="group_kernel")
        if debug.DEBUG >= 3:
            print(source)
        return self._compile(source), global_size, [dtype.type(value) for value, dtype in scalars]

    def prepare_groups(self, groups) -> None:
        for kernels, sources, stores, input_dtypes in groups:
            self._group_program(kernels, sources, stores, input_dtypes)

    def bind_group(self, kernels, sources, stores, inputs, outputs):
        """One launch of the group's kernels as one, or None where two of its buffers share bytes
        (sub-buffers of a jit's arena: one kernel doing the work of several would interleave their
        reads and writes) or an output is also an input."""
        spans = sorted((b.whole.int_ptr, b.offset, b.offset + b.nbytes) for b in {id(b): b for b in inputs + outputs}.values())
        if any(w1 == w2 and start < end for (w1, _, end), (w2, start, _) in zip(spans, spans[1:])) or \
                any(o is i for o in outputs for i in inputs):          # (the kernel's pointers are restrict)
            return None
        dtypes = [None] * len(inputs)                  # (OpenCL buffers are untyped: the loads say)
        for kernel, own in zip(kernels, sources):
            for load in (n for n in walk(kernel.ast) if isinstance(n, Load)):
                where, k = own[load.index]
                if where == "in":
                    dtypes[k] = load.dtype
        program, global_size, scalar_args = self._group_program(kernels, sources, stores, dtypes)
        return functools.partial(program, self.queue, global_size, None, *[b.buf for b in outputs],
                                 *[b.buf for b in inputs], *scalar_args)

    def run(self, kernel, out, inputs):
        root = kernel.ast
        kind = kernel.kind
        if kernel.output.size == 0:                    # nothing to compute (and no empty launch)
            return
        if kind is KernelKind.RAND and root.arg.distribution == NORMAL:   # normal numbers (weight init): made on the host
            self.write(out, random_values(root.arg, kernel.output.shape, kernel.output.dtype))
            return
        if kind in (KernelKind.GATHER, KernelKind.SCATTER_ADD):          # check indices on the host: a bad one must not read wild memory
            index_node = root.srcs[1]
            index = read(self._host(inputs[index_node.index], index_node.dtype), index_node.view)
            _check_index(index, root.srcs[0].view.shape[0] if kind is KernelKind.GATHER else root.arg)
        if kernel.prepared is None:                   # render and compile once per Kernel (a jit replays it)
            source, global_size, local_size, scalars = render(kernel, [b.dtype for b in kernel.inputs],
                                                              name=f"{kind}_kernel", cpu_device=self.is_cpu)
            if debug.DEBUG >= 3:
                print(source)
            scalar_args = [dtype.type(value) for value, dtype in scalars]
            kernel.prepared = (self._compile(source), global_size, local_size, scalar_args)
        program, global_size, local_size, scalar_args = kernel.prepared
        t0 = time.perf_counter()
        program(self.queue, global_size, local_size, out.buf, *[b.buf for b in inputs], *scalar_args)
        if debug.DEBUG >= 2:
            self.queue.finish()
            print(f"    cl launch global={global_size} local={local_size} {(time.perf_counter() - t0) * 1e3:.3f} ms")
