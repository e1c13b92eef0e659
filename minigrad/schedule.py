"""From a lazy graph to an ordered list of Kernels, and running that list.

Fusion comes from a few rules about which nodes get a buffer of their own
("materialized"); every other node is inlined into the expression of its consumer:

  1. what the caller asked for, loads of random numbers and copies are materialized;
  2. reduces and special ops (matmul, gather, scatter-add) are materialized, and so are
     their sources, except that a reduce inlines the elementwise ops feeding it;
  3. an elementwise node used by two or more consumers is materialized (no recompute);
  4. an elementwise node read through a View that is not a plain reshape of it
     (a permute, an expand, padding) is materialized: a kernel reads buffers through
     views, it does not push views into the middle of an expression;
  5. expression trees deeper than MAX_FUSED_DEPTH are cut, so kernels stay small;
  6. a constant becomes a literal in the expression, except where a kernel must read it as
     data: through padding (outside the mask it reads 0, not the constant) or as the input of a
     reduce.  Then it is filled into a one-element buffer (a small kernel with no inputs) that
     the view reads with stride 0: `Tensor.ones(3, 4).sum()` is two kernels, the fill and the sum.

In anomaly mode (debug.detect_anomaly) nothing fuses, so each op can be checked alone.
"""
import time
from typing import Dict, List

import numpy as np

from . import debug
from .kernel import Const, Kernel, Load, Op
from .lazy import LazyBuffer
from .ops import LoadOps, ReduceOps, SpecialOps, is_elementwise

MAX_FUSED_DEPTH = 48


def _toposort(targets: List[LazyBuffer]) -> List[LazyBuffer]:
    """Unrealized bases reachable from targets, each after its sources (iterative DFS)."""
    order, seen = [], set()
    stack = [(t.base, False) for t in targets]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen or node.realized is not None:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for src in node.srcs:
            if id(src.base) not in seen and src.base.realized is None:
                stack.append((src.base, False))
    return order


def _is_plain_reshape(src: LazyBuffer) -> bool:
    return src.view.is_contiguous and src.view.size == src.base.size


class _MustMaterialize(Exception):
    def __init__(self, node):
        self.node = node


def _decide_materialized(order: List[LazyBuffer], targets) -> set:
    """Apply rules 1-5: the ids of the bases that get their own buffer."""
    materialize = {id(t.base) for t in targets}
    consumers: Dict[int, int] = {}
    for node in order:
        for src in node.srcs:
            consumers[id(src.base)] = consumers.get(id(src.base), 0) + 1
    anomaly = debug.anomaly_enabled()
    depth: Dict[int, int] = {}
    for node in order:
        op = node.op
        if op is LoadOps.CONST:
            depth[id(node)] = 0
            continue
        if not is_elementwise(op) or anomaly:
            materialize.add(id(node))
        if is_elementwise(op) and consumers.get(id(node), 0) > 1:
            materialize.add(id(node))
        for src in node.srcs:
            b = src.base
            if b.realized is not None:
                continue
            if isinstance(op, SpecialOps) or op is LoadOps.COPY:
                materialize.add(id(b))                 # special ops read whole buffers
            elif b.op is LoadOps.CONST:
                if src.view.mask is not None or isinstance(op, ReduceOps):
                    materialize.add(id(b))             # a padded constant is not a constant
            elif not _is_plain_reshape(src):
                materialize.add(id(b))
        inlined = [depth.get(id(s.base), 0) for s in node.srcs
                   if s.base.realized is None and id(s.base) not in materialize]
        depth[id(node)] = 1 + max(inlined, default=0)
        if depth[id(node)] > MAX_FUSED_DEPTH:
            materialize.add(id(node))
            depth[id(node)] = 0
    return materialize


def _lower(node: LazyBuffer, materialize: set, inputs: List[LazyBuffer]) -> Op:
    """The expression tree computing base `node` from materialized buffers and constants."""

    def load(src: LazyBuffer, view):
        b = src.base
        if b.op is LoadOps.CONST and b.realized is None and id(b) not in materialize:
            return Const(b.arg, b.dtype)
        if b.realized is not None or id(b) in materialize:
            for i, x in enumerate(inputs):
                if x is b:
                    return Load(i, view, b.dtype)
            inputs.append(b)
            return Load(len(inputs) - 1, view, b.dtype)
        # inline an elementwise base read through a plain reshape of it
        return expression(b, view.shape)

    def expression(b: LazyBuffer, shape):
        srcs = []
        for s in b.srcs:
            view = s.view.reshape(shape) if shape != b.shape else s.view
            if view is None:
                raise _MustMaterialize(b)
            srcs.append(load(s, view))
        return Op(b.op, tuple(srcs), b.arg, b.dtype, tuple(shape))

    if node.op is LoadOps.CONTIGUOUS:             # a copy: the kernel is just its source read in order
        return load(node.srcs[0], node.srcs[0].view)
    if node.op is LoadOps.CONST:                  # a constant asked for as a buffer: a fill
        return Const(node.arg, node.dtype)
    return Op(node.op, tuple(load(s, s.view) for s in node.srcs), node.arg, node.dtype, node.shape)


def create_schedule(targets: List[LazyBuffer]) -> List[Kernel]:
    """The kernels, in a valid order, that realize every target."""
    order = _toposort(targets)
    materialize = _decide_materialized(order, targets)
    while True:
        try:
            schedule = []
            for node in order:
                if id(node) in materialize:
                    inputs: List[LazyBuffer] = []
                    schedule.append(Kernel(node, inputs, _lower(node, materialize, inputs)))
            return schedule
        except _MustMaterialize as e:      # a view could not be pushed into an inlined node
            materialize.add(id(e.node))


# A JIT capture (jit.py) appends a list here; every kernel run is then recorded into it
# as (kernel, output buffer, input buffers) so that it can be replayed without Python graphs.
recorders: List[list] = []


def run_kernel(kernel: Kernel, out_buffer, input_buffers) -> None:
    """Run one kernel on explicit buffers (realize passes the graph's; a JIT replay its own)."""
    from .backends import get_backend
    backend = get_backend(kernel.output.device)
    if kernel.kind == "copy":
        src = kernel.inputs[0]
        host = get_backend(src.device).copy_out(input_buffers[0], kernel.ast.srcs[0].view, src.dtype)
        backend.write(out_buffer, host)
    else:
        backend.run(kernel, out_buffer, input_buffers)


def run_schedule(schedule: List[Kernel]) -> None:
    from .backends import get_backend
    start = time.perf_counter()
    for kernel in schedule:
        out = kernel.output
        backend = get_backend(out.device)
        t0 = time.perf_counter()
        if out.realized is None:
            out.realized = backend.allocate(out.size, out.dtype)
        input_buffers = [b.realized for b in kernel.inputs]
        run_kernel(kernel, out.realized, input_buffers)
        for recording in recorders:
            recording.append((kernel, out.realized, input_buffers))
        if debug.DEBUG >= 2 or debug.anomaly_enabled():
            backend.synchronize()
        kernel.time_s = time.perf_counter() - t0
        if debug.DEBUG >= 2:
            print(f"  {kernel.time_s * 1e3:8.3f} ms  {kernel!r}")
        if debug.anomaly_enabled():
            _check_finite(kernel, backend)
    for kernel in schedule:                  # the graph behind a realized buffer is no longer needed
        out = kernel.output
        out.op, out.srcs, out.arg = LoadOps.BUFFER, (), None
    if debug.DEBUG >= 1 and schedule:
        print(f"realize: {len(schedule)} kernels in {(time.perf_counter() - start) * 1e3:.2f} ms")


def _check_finite(kernel: Kernel, backend) -> None:
    out = kernel.output
    if not np.issubdtype(out.dtype, np.floating):
        return
    values = backend.copy_out(out.realized, out.view, out.dtype)
    has_nan = bool(np.isnan(values).any())
    new_inf = bool(np.isinf(values).any()) and not _inputs_have_inf(kernel)
    if has_nan or new_inf:
        what = "NaN" if has_nan else "inf"
        in_shapes = [tuple(b.shape) for b in kernel.inputs]
        raise FloatingPointError(
            f"anomaly: {kernel.fused_ops() or [kernel.kind]} produced {what} "
            f"(output shape {out.shape}, input shapes {in_shapes}); created at {out.created_at}")


def _inputs_have_inf(kernel: Kernel) -> bool:
    from .backends import get_backend
    from .kernel import walk
    for n in walk(kernel.ast):
        if isinstance(n, Const) and isinstance(n.value, float) and np.isinf(n.value):
            return True
    for b in kernel.inputs:
        if np.issubdtype(b.dtype, np.floating):
            vals = get_backend(b.device).copy_out(b.realized, b.view, b.dtype)
            if np.isinf(vals).any():
                return True
    return False


def realize(*buffers: LazyBuffer) -> None:
    """Compute every given buffer (and what it needs) in one schedule."""
    todo = [b for b in buffers if not b.is_realized]
    if todo:
        run_schedule(create_schedule(todo))
