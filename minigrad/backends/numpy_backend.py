"""The NumPy backend, the CPU: buffers are numpy arrays and every matmul goes to BLAS (np.matmul).

Elementwise and reduce kernels run one of two ways:
  compiled    rendered to C (c_render.py), compiled in one go per schedule by the system C
              compiler (compiler.py), run on a thread pool (c_runtime.py), called through ctypes
              on the arrays' memory.  The default wherever a C compiler works.
  evaluator   the expression tree evaluated bottom-up with vectorized numpy calls (a table from
              primitive op to numpy function), the root writing straight into the output
              (`out=`).  Needs nothing but numpy.
MINIGRAD_CPU=numpy forces the evaluator, MINIGRAD_CPU=compiled the compiler (an error where none
works); `python -m minigrad` says which runs here and why.
"""
import ctypes
import functools
import math
import os
import sys

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..kernel import Const, KernelKind, Load, Op, find_reduce, walk
from .. import rng
from ..rng import uniform
from ..ops import NORMAL, OPS, UFUNCS, LoadOps, ReduceOps, SpecialOps, apply_numpy
from .. import debug
from . import Backend, c_render
from .compiler import Compiler
from .pool import BufferPool


REDUCERS = {op: getattr(np, info.numpy).reduce for op, info in OPS.items() if isinstance(op, ReduceOps)}


def read(buffer: np.ndarray, view, dtype=None) -> np.ndarray:
    """The numpy array a View describes: a strided window on the buffer, no copy unless padded."""
    if view.size == 0:
        return np.zeros(view.shape, buffer.dtype)
    if view.mask is None:
        if view.offset == 0 and view.size == buffer.size and view.is_contiguous:
            return buffer.reshape(view.shape)          # the common case: the whole buffer in order
        item = buffer.itemsize
        return as_strided(buffer[view.offset:], view.shape, tuple(s * item for s in view.strides), writeable=False)
    out = np.zeros(view.shape, buffer.dtype)
    inside = tuple(slice(start, end) for start, end in view.mask)
    if all(end > start for start, end in view.mask):
        out[inside] = read(buffer, view.unmasked())
    return out


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the system.

    A schedule frees each buffer right after its last reader (and numpy frees its temporaries at
    once); by default glibc then returns those pages to the system and faults fresh ones in for
    the next buffer, which made the laptop recipe's eager step 50% slower (the realize: 88 ms,
    and 59 ms with this).  Fixed thresholds stop that: blocks under 32 MB come from the heap, and
    up to 256 MB freed at its top is kept.  Buffers of 1 MB and more the backend keeps itself
    (pool.py), for every platform.  Elsewhere (macOS, musl) this does nothing; MINIGRAD_KEEP_FREED=0 turns it off."""
    if os.environ.get("MINIGRAD_KEEP_FREED", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 256 << 20))
    except (OSError, AttributeError):
        return False


CPU_PATHS = ("auto", "compiled", "numpy")
C_ARGUMENT = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double,
              np.dtype(np.uint32): ctypes.c_uint}


def cpu_path() -> str:
    """MINIGRAD_CPU: "auto" (compiled where a C compiler works), "compiled" or "numpy"."""
    path = os.environ.get("MINIGRAD_CPU", "auto").lower() or "auto"
    if path not in CPU_PATHS:
        raise ValueError(f"MINIGRAD_CPU={path!r} is not a CPU path; choose one of {', '.join(CPU_PATHS)}")
    return path


class NumpyBackend(Backend):
    name = "numpy"
    # A ufunc reads each element before it writes that element, and so does a compiled kernel:
    # its loop reads the inputs at index i, then writes out[i] (no `restrict`, so the compiler
    # keeps that order wherever out is an input).
    updates_in_place = True

    def __init__(self):
        self.keeps_freed_memory = keep_freed_memory()
        self.pool = BufferPool()
        self.compiler, self.why_not_compiled = None, "MINIGRAD_CPU=numpy"
        path = cpu_path()
        if path != "numpy":
            self.compiler = Compiler.find()
            self.why_not_compiled = Compiler.why_not
            if self.compiler is None and path == "compiled":
                raise ValueError(f"MINIGRAD_CPU=compiled, but {Compiler.why_not}")
        self.functions = {}                  # C function name -> ctypes function, this process
        self.prepared = {}                   # a kernel's expression -> (function, scalar arguments)
        self.groups = {}                     # a jit's group of kernels -> its rendered C (or None)

    def describe(self) -> str:
        if self.compiler is None:
            return f"NumPy evaluator ({self.why_not_compiled})"
        return f"compiled kernels, {self.compiler.describe()}"

    # ---- the compiled path ---------------------------------------------------------------
    MAX_REMEMBERED = 1 << 14

    def compiles(self, kernel) -> bool:
        if kernel.kind is KernelKind.RAND and kernel.ast.arg.distribution == NORMAL:
            return False                                  # weight init: numpy's normal generator
        return self.compiler is not None and kernel.kind in c_render.RENDERERS and kernel.output.size > 0

    def prepare(self, kernels) -> None:
        """Compile what these kernels need, all in one compiler run (a warm disk cache skips it):
        kernel.prepared = (function, scalar args).  Kernels are remembered by their expression,
        so the next step's equal kernels find theirs without rendering C.  Every kernel is
        compiled, even one that runs once: which path computes a value must not depend on what
        ran before, or a resumed run would differ from an uninterrupted one in the last bits."""
        todo = []
        for k in kernels:
            if k.prepared is not None or not self.compiles(k):
                continue
            key = _kernel_key(k)
            known = self.prepared.get(key)
            if known is not None:
                k.prepared = known
            else:
                todo.append((key, k))
        if not todo:
            return
        rendered = [c_render.render(k, [b.dtype for b in k.inputs]) for _, k in todo]
        if debug.DEBUG >= 3:
            for name, source, _ in rendered:
                print(source)
        self._compile(rendered)
        if len(self.prepared) > self.MAX_REMEMBERED:        # kernels whose numbers change each time
            self.prepared.clear()
        for (key, kernel), (name, _, scalars) in zip(todo, rendered):
            function = self._function(name, 1 + len(kernel.inputs), scalars)
            kernel.prepared = self.prepared[key] = (function, tuple(float(v) for v, _ in scalars))

    def _compile(self, rendered) -> None:
        """Build the rendered (name, source, scalars) functions this process has not loaded yet,
        in one compiler run."""
        missing = {name: source for name, source, _ in rendered if name not in self.functions}
        if missing:
            self.functions.update(self.compiler.build(missing, c_render.PRELUDE))

    def _function(self, name: str, pointers: int, scalars):
        """A loaded C function, told its arguments: `pointers` buffers, then the scalars."""
        function = self.functions[name]
        if function.argtypes is None:
            function.argtypes = [ctypes.c_void_p] * pointers + [C_ARGUMENT[d] for _, d in scalars]
            function.restype = None
        return function

    # ---- multi-output kernels (a jit's groups) -------------------------------------------
    def groups_kernel(self, kernel) -> bool:
        """May `kernel` join a multi-output group (c_render.render_group)?"""
        return kernel.kind is KernelKind.ELEMENTWISE and self.compiles(kernel)

    def _render_group(self, kernels, sources, stores, input_dtypes):
        key = (tuple(_kernel_key(k) for k in kernels), tuple(map(tuple, sources)), tuple(stores), tuple(input_dtypes))
        if key not in self.groups:
            if len(self.groups) > self.MAX_REMEMBERED:
                self.groups.clear()
            self.groups[key] = c_render.render_group(list(zip(kernels, sources, stores)), input_dtypes)
        return self.groups[key]

    def prepare_groups(self, groups) -> None:
        """Compile the C of these groups [(kernels, sources, stores, input dtypes)] in one run."""
        rendered = [r for r in (self._render_group(*g) for g in groups) if r is not None]
        if debug.DEBUG >= 3:
            for _, source, _ in rendered:
                print(source)
        self._compile(rendered)

    def bind_group(self, kernels, sources, stores, inputs, outputs):
        """One call running the group's kernels as one loop, or None where it cannot: the loops
        differ (render_group says), or two of the buffers share memory without being the same
        buffer (a jit's arena puts buffers that are never live together on the same bytes, and
        one loop doing the work of several kernels would interleave their reads and writes)."""
        rendered = self._render_group(kernels, sources, stores, [b.dtype for b in inputs])
        if rendered is None or _overlapping(inputs + outputs):
            return None
        self._compile([rendered])
        name, _, scalars = rendered
        function = self._function(name, len(outputs) + len(inputs), scalars)
        return functools.partial(function, *[b.ctypes.data for b in outputs], *[b.ctypes.data for b in inputs],
                                 *[float(v) for v, _ in scalars])

    def bind(self, kernel, out, inputs):
        """A call that runs `kernel` on these buffers, with everything that does not change between
        calls worked out once (a jit replays it): the compiled function with its pointers, or
        np.matmul on views fixed in advance."""
        if self.compiles(kernel) and kernel.kind not in (KernelKind.SCATTER_ADD, KernelKind.RAND):   # (checked or seeded per run)
            if kernel.prepared is None:
                self.prepare([kernel])
            function, scalars = kernel.prepared
            return functools.partial(function, out.ctypes.data, *[b.ctypes.data for b in inputs], *scalars)
        root = kernel.ast
        if kernel.kind is KernelKind.MATMUL and all(isinstance(s, Load) and s.view.mask is None for s in root.srcs):
            a, b = (read(inputs[s.index], s.view) for s in root.srcs)
            return functools.partial(np.matmul, a, b, out=out.reshape(kernel.output.shape))
        return super().bind(kernel, out, inputs)

    def allocate(self, size, dtype):
        return self.pool.allocate(size, dtype)

    def release_kept(self):
        self.pool.clear()

    def as_typed(self, buffer, offset, size, dtype):
        return buffer[offset:offset + size * np.dtype(dtype).itemsize].view(dtype)

    def copy_in(self, array):
        return np.array(array, copy=True, order="C").reshape(-1)

    def write(self, buffer, array, offset=0):
        array = np.asarray(array).reshape(-1)
        buffer[offset:offset + array.size] = array

    def copy_out(self, buffer, view, dtype):
        return np.array(read(buffer, view), dtype=dtype, copy=True)

    def run(self, kernel, out, inputs):
        if kernel.kind is KernelKind.RAND and kernel.prepared is None and self.compiles(kernel):
            self.prepare([kernel])                        # a jit's reseeded copy: the same function
        if kernel.prepared is not None and self.compiler is not None:     # compiled by prepare()
            if kernel.kind is KernelKind.RAND:
                kernel.prepared[0](out.ctypes.data, *rng.keys(kernel.ast.arg.seed, kernel.ast.arg.counter))
                return
            if kernel.kind is KernelKind.SCATTER_ADD:
                index = kernel.ast.srcs[1]
                _check_index(read(inputs[index.index], index.view), kernel.ast.arg)
            function, scalars = kernel.prepared
            function(out.ctypes.data, *[b.ctypes.data for b in inputs], *scalars)
            return
        with np.errstate(all="ignore"):      # inf and NaN are values here; anomaly mode reports them
            self._run(kernel, out, inputs)

    def _run(self, kernel, out, inputs):
        root = kernel.ast
        out = out.reshape(kernel.output.shape)
        op = root.op if isinstance(root, Op) else None
        if kernel.kind is KernelKind.REDUCE:
            reduce = find_reduce(root)
            src = reduce.srcs[0]
            shape = src.shape if isinstance(src, Op) else src.view.shape
            sums = out if reduce is root else np.empty(reduce.shape, reduce.dtype)
            for bounds in _blocks(shape, skip=reduce.arg):
                values = self._eval(src, inputs, bounds)
                region_shape = _region_shape(shape, bounds)
                if values.shape != region_shape:            # an expression of constants is 0-d
                    values = np.broadcast_to(values, region_shape)
                REDUCERS[reduce.op](values, axis=reduce.arg, keepdims=True, out=_region(sums, bounds, reduce.arg))
            if reduce is not root:                          # the epilogue, on the reduced values
                self._eval(root, inputs, out=out, given={id(reduce): sums.reshape(out.shape)})
        elif op is SpecialOps.MATMUL:
            np.matmul(self._eval(root.srcs[0], inputs), self._eval(root.srcs[1], inputs), out=out)
        elif op is SpecialOps.GATHER:
            table, index = self._eval(root.srcs[0], inputs), self._eval(root.srcs[1], inputs)
            _check_index(index, table.shape[0])
            np.take(table, index, axis=0, out=out)
        elif op is SpecialOps.SCATTER_ADD:
            rows, index = self._eval(root.srcs[0], inputs), self._eval(root.srcs[1], inputs)
            _check_index(index, root.arg)
            out[...] = 0
            np.add.at(out, index.reshape(-1), rows.reshape((-1,) + out.shape[1:]))
        elif op is LoadOps.RAND:
            out[...] = random_values(root.arg, out.shape, out.dtype)
        else:                                          # elementwise, a copy, a fill: block by block
            for bounds in _blocks(out.shape):
                self._eval(root, inputs, bounds, out=_region(out, bounds))

    def _eval(self, node, inputs, bounds=None, out=None, given=None):
        """Evaluate an expression tree bottom-up (the scheduler caps its depth), over the block
        `bounds` of its shape (all of it when None); nodes in `given` (by id) have those values."""
        if given and id(node) in given:
            values = given[id(node)]
        elif isinstance(node, Load):
            values = read(inputs[node.index], node.view if bounds is None else node.view.shrink(bounds))
        elif isinstance(node, Const):
            values = np.array(node.value, dtype=node.dtype)
        else:
            values = [self._eval(s, inputs, bounds, given=given) for s in node.srcs]
            op = node.op
            if op in UFUNCS and out is not None and out.shape == (node.shape if bounds is None else _region_shape(node.shape, bounds)):
                return UFUNCS[op](*values, out=out)
            values = apply_numpy(op, values, node.dtype)
        if out is not None:
            out[...] = values
            return out
        return values


# Elements per block of an elementwise or reduce kernel over a large tensor (more than 4 blocks):
# its numpy temporaries are then a few blocks, not a few copies of the whole tensor (the
# attention scores of the shakespeare-char model are 100 MB each).  Blocks cost a little Python
# per block, so smaller kernels run whole.
CHUNK = 1 << 20


def _blocks(shape, skip=()):
    """Bounds ((start, end) per axis) that tile `shape` in blocks of about CHUNK elements, cut
    along the first axis that is not in `skip` (a reduce's axes stay whole); just None, the
    whole shape, for a tensor of at most 4 blocks."""
    total = math.prod(shape)                   # per kernel: math.prod, not a numpy reduction
    axis = next((i for i, n in enumerate(shape) if n > 1 and i not in skip), None)
    if axis is None or total <= 4 * CHUNK:
        yield None
        return
    step = max(1, CHUNK * shape[axis] // total)
    for start in range(0, shape[axis], step):
        yield tuple((start, min(start + step, n)) if i == axis else (0, n) for i, n in enumerate(shape))


def _region_shape(shape, bounds):
    return shape if bounds is None else tuple(b - a for a, b in bounds)


def _region(out, bounds, reduced=()):
    """The part of `out` a block writes (a reduce's reduced axes are 1 in `out`)."""
    if bounds is None:
        return out
    return out[tuple(slice(0, 1) if i in reduced else slice(a, b) for i, (a, b) in enumerate(bounds))]


def _kernel_key(kernel) -> tuple:
    """What makes two kernels the same C with the same arguments: the expression (Views, ops,
    constants), the output's shape (a Const has none) and the dtypes.  Constants also by their
    repr, since -0.0 == 0.0 and NaN != NaN.  A random kernel's seed is an argument per call."""
    if kernel.kind is KernelKind.RAND:
        return ("rand", kernel.output.shape, kernel.output.dtype)
    consts = tuple(repr(n.value) for n in walk(kernel.ast) if isinstance(n, Const))
    return (kernel.ast, consts, kernel.output.shape, kernel.output.dtype, tuple(b.dtype for b in kernel.inputs))


def _overlapping(buffers) -> bool:
    """Do two different arrays among `buffers` share bytes?  (The same array twice is fine.)"""
    spans = sorted({id(b): (b.ctypes.data, b.ctypes.data + b.nbytes) for b in buffers}.values())
    return any(start < previous_end for (_, previous_end), (start, _) in zip(spans, spans[1:]))


def random_values(arg, shape, dtype) -> np.ndarray:
    """What a RAND kernel holds: uniform numbers from the counter-based hash (rng.py), the same
    bits on every backend; normal ones (weight init only) from numpy's generator."""
    if arg.distribution == NORMAL:
        return np.random.default_rng((arg.seed, arg.counter)).standard_normal(shape, dtype=dtype)
    return uniform(int(np.prod(shape)), arg.seed, arg.counter, dtype).reshape(shape)


def _check_index(index: np.ndarray, num_rows: int) -> None:
    if index.size and (index.min() < 0 or index.max() >= num_rows):
        bad = index[(index < 0) | (index >= num_rows)]
        raise IndexError(f"index {int(bad.flat[0])} is out of range for a table of {num_rows} rows "
                         f"(valid: 0..{num_rows - 1})")
