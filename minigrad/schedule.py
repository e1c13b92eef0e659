"""From a lazy graph to an ordered list of Kernels, and running that list.

Fusion comes from a few rules about which nodes get a buffer of their own
("materialized"); every other node is inlined into the expression of its consumer:

  1. what the caller asked for, loads of random numbers and copies are materialized;
  2. reduces and special ops (matmul, gather, scatter-add) are materialized, and so are
     their sources, except that a reduce inlines the elementwise ops feeding it;
  3. an elementwise node used by two or more consumers is materialized, unless it reads at most
     one buffer of its own size and is one op, or a short chain that no consumer broadcasts:
     then each consumer recomputes it;
  4. an elementwise node read through a View that is not a plain reshape of it
     (a permute, an expand, padding) is materialized, unless the View can be pushed down
     to its sources: no padding, and every source a constant or a whole buffer read in
     order (so `mean = sum * (1/D)` broadcast back over D fuses into its consumer; cheap ops
     are recomputed per element read rather than given a buffer and a pass of their own),
     or padding (a piece of a cat) over such a view where the node gives +0, every buffer
     reading 0 there and each constant itself (a + b, x * 1/D, x * onehot; not exp(x) or
     x + 1): then each source is padded alike.  That value is asked again once every buffer
     is decided, since a source given a buffer later reads 0 there (_recheck_padding);
  5. expression trees deeper than MAX_FUSED_DEPTH are cut, so kernels stay small;
  6. a constant becomes a literal in the expression, except where a kernel must read it as
     data: through padding (outside the mask it reads 0, not the constant) or as the input of a
     reduce.  Then it is filled into a one-element buffer (a small kernel with no inputs) that
     the view reads with stride 0: `Tensor.ones(3, 4).sum()` is two kernels, the fill and the sum.
  7. a reduce read only by one materialized elementwise node of its own shape (in order, maybe
     through inlined ones) runs in that node's kernel, the node's ops applied to each reduced
     value before it is stored.

In anomaly mode (debug.detect_anomaly) nothing fuses, so each op can be checked alone.
"""
import math
import time
from typing import Dict, List

import numpy as np

from . import debug
from .graph import postorder
from .kernel import Const, Kernel, KernelKind, Load, Op
from .lazy import LazyBuffer
from .ops import LoadOps, ReduceOps, SpecialOps, apply_numpy, is_elementwise
from .view import View

MAX_FUSED_DEPTH = 48


def _toposort(targets: List[LazyBuffer]) -> List[LazyBuffer]:
    """Unrealized bases reachable from targets, each after its sources (iterative DFS)."""
    # The first target is expanded first: an optimizer realizes its parameters in model order, so
    # every gradient that reads a later parameter is scheduled before that parameter's update
    # (which a jit can then write in place, see jit.Recording.update_in_place).  A node's sources
    # are explored last one first.
    def sources(node):
        return [s.base for s in reversed(node.srcs) if s.base.realized is None]
    return postorder([t.base for t in targets if t.base.realized is None], sources)


def _is_plain_reshape(src: LazyBuffer) -> bool:
    return src.view.is_contiguous and src.view.size == src.base.size


# A chain of at most this many elementwise ops may be recomputed by each of its readers (rule 3).
MAX_RECOMPUTED_OPS = 4


def _cheap_to_recompute(node: LazyBuffer, materialize: set, read_sizes) -> bool:
    """Rule 3's exception: a node is recomputed by each consumer rather than written out when it
    reads at most one buffer as large as itself (the rest broadcasts of smaller ones, like a
    gradient times a clipping factor), and it is either one op, or a short chain of ops (its
    inlined sources included) that no consumer reads more often than it has elements (never
    broadcast to a larger shape; a shrink is fine: the optimizer's groups of a clipped gradient).
    Recomputing reads that buffer once per consumer, which costs no more than writing the node
    out and reading it back, and saves a kernel and the buffer: LayerNorm's x - mean feeds the
    variance and the normalized x, softmax's exp(x - max) its sum and its quotient."""
    ops, large = _inlined_cost(node, materialize, node.size)
    if ops is None or len(large) > 1:
        return False
    return ops == 1 or (ops <= MAX_RECOMPUTED_OPS and all(size <= node.size for size in read_sizes))


def _elements_read(view) -> int:
    """How many elements a read through `view` takes from its source (not those padding fills)."""
    return view.size if view.mask is None else math.prod(max(0, hi - lo) for lo, hi in view.mask)


def _inlined_cost(node: LazyBuffer, materialize: set, size: int):
    """(ops, ids of the buffers of at least `size` elements read) of node's expression down to
    buffers; ops None when the expression reaches something that is not elementwise."""
    ops, large = 1, set()
    for s in node.srcs:
        b = s.base
        if b.realized is not None or id(b) in materialize:
            if b.size >= size:
                large.add(id(b))
        elif b.op is not LoadOps.CONST:
            if not is_elementwise(b.op):
                return None, large
            sub_ops, sub_large = _inlined_cost(b, materialize, size)
            if sub_ops is None:
                return None, large
            ops, large = ops + sub_ops, large | sub_large
    return ops, large


def _squeezed(shape) -> tuple:
    return tuple(n for n in shape if n != 1)


def _source_view(s: LazyBuffer, b: LazyBuffer, outer):
    """The View through which source s of inlined elementwise node b is read, when a consumer reads
    b through `outer`; None when no View can say it.  Read in order (a reshape of b), each source is
    reshaped alike; through any other unpadded view, a source that takes the view reads through it
    (rule 4).  Through padding, each source is read through the view of the part inside the
    padding, padded alike (whether b then gives 0 there, _readable asks).  The one place that knows how a view moves down
    through an inlined node."""
    if _is_literal(s):            # one value everywhere (a literal, or rule 6's one-element fill when a
        return View(tuple(outer.shape), (0,) * len(outer.shape))     # reduce reads it too); padding: _readable
    if outer.mask is None:
        if outer.is_contiguous and outer.size == b.size:
            return s.view.reshape(outer.shape) if outer.shape != b.shape else s.view
        return outer if _is_plain_reshape(s) else None        # its base's memory is laid out as b's elements
    inner = _source_view(s, b, outer.unmasked())
    padding = tuple((lo, n - hi) for (lo, hi), n in zip(outer.mask, outer.shape))
    return inner.pad(padding) if inner is not None else None


def _is_literal(s: LazyBuffer) -> bool:
    """A constant read unpadded, not yet given a buffer: a kernel reads it as a literal, the same
    everywhere (a padded constant gets a buffer, rule 6)."""
    return s.base.op is LoadOps.CONST and s.base.realized is None and s.view.mask is None


def _value_in_padding(b: LazyBuffer, materialize: set):
    """What inlined node b computes where it is read through padding: every buffer there reads 0,
    each literal is itself.  x * (1/D) gives 0, exp(x) and x + 1 give 1."""
    values = []
    for s in b.srcs:
        if _is_literal(s):
            values.append(np.full(1, s.base.arg, s.base.dtype))
        elif _is_inlined(s.base, materialize) and is_elementwise(s.base.op):
            values.append(_value_in_padding(s.base, materialize))
        else:
            values.append(np.zeros(1, s.base.dtype))
    with np.errstate(all="ignore"):
        return apply_numpy(b.op, values, b.dtype)


def _is_inlined(b: LazyBuffer, materialize: set) -> bool:
    return b.realized is None and id(b) not in materialize and b.op is not LoadOps.CONST


def _readable(b: LazyBuffer, view, materialize: set, padded: list = None) -> bool:
    """Can a consumer read elementwise base b, inlined, through `view`?  Yes when every source has
    a view (_source_view), each inlined one is readable through it in turn, and, where `view` pads
    b, b gives +0 in the padding (a source inside b padded only by `view` need not: x * onehot is
    0 there, though onehot's 0 == 0 is 1)."""
    if not is_elementwise(b.op):
        return False
    if view.mask is not None:
        if not _is_plus_zero(_value_in_padding(b, materialize)):
            return False
        if padded is not None:
            padded.append(b)                      # judged by its value in padding: _recheck_padding
    return _sources_readable(b, view, materialize, padded)


def _sources_readable(b: LazyBuffer, outer, materialize: set, padded: list = None) -> bool:
    if not is_elementwise(b.op):
        return False
    for s in b.srcs:
        view = _source_view(s, b, outer)
        if view is None:
            return False
        if _is_inlined(s.base, materialize) and not (
                _readable(s.base, view, materialize, padded) if s.view.mask is not None       # padding of its own
                else _sources_readable(s.base, view, materialize, padded)):
            return False
    return True


def _is_plus_zero(value) -> bool:
    """+0 (or False): what a padded buffer reads, so what padding may give (-0 would show in 1/x)."""
    return value.item() == 0 and not (value.dtype.kind == "f" and np.signbit(value).item())


def _decide_materialized(order: List[LazyBuffer], targets) -> set:
    """Apply rules 1-5: the ids of the bases that get their own buffer."""
    materialize = {id(t.base) for t in targets}
    judged = []                                    # inlined nodes judged by their value in padding
    read_sizes: Dict[int, list] = {}               # base -> the size each consumer reads it at
    for node in order:
        for src in node.srcs:
            read_sizes.setdefault(id(src.base), []).append(_elements_read(src.view))
    anomaly = debug.anomaly_enabled()
    depth: Dict[int, int] = {}
    for node in order:
        op = node.op
        if op is LoadOps.CONST:
            depth[id(node)] = 0
            continue
        if not is_elementwise(op) or anomaly:
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
            elif not _readable(b, src.view, materialize, judged):
                materialize.add(id(b))
        reads = read_sizes.get(id(node), ())
        if is_elementwise(op) and len(reads) > 1 and not _cheap_to_recompute(node, materialize, reads):
            materialize.add(id(node))
        inlined = [depth.get(id(s.base), 0) for s in node.srcs
                   if s.base.realized is None and id(s.base) not in materialize]
        depth[id(node)] = 1 + max(inlined, default=0)
        if depth[id(node)] > MAX_FUSED_DEPTH:
            materialize.add(id(node))
            depth[id(node)] = 0
    _recheck_padding(judged, materialize)
    if not anomaly:
        _fuse_epilogues(order, materialize, {id(t.base) for t in targets}, depth)
    return materialize


def _recheck_padding(judged: list, materialize: set) -> None:
    """Rule 4 judged each node read through padding by what it gives there with its sources inlined
    as they were then.  A later rule may have given one of them a buffer, which reads 0 in the
    padding where its expression did not (exp(x) - 1 gives 0 there, but 0 - 1 once exp(x) is a
    buffer): ask each such node again, giving a buffer to any that fails, until none does.  (Only
    the value can change: a source with a buffer is read through any view.)"""
    changed = True
    while changed:
        changed = False
        for b in judged:
            if _is_inlined(b, materialize) and not _is_plus_zero(_value_in_padding(b, materialize)):
                materialize.add(id(b))
                changed = True


def _fuse_epilogues(order: List[LazyBuffer], materialize: set, targets: set, depth: Dict[int, int]) -> None:
    """Rule 7: a reduce whose one reader is an elementwise node with a buffer of its own, of the
    reduce's shape (but for dims of size 1) and reading it in order, gets no buffer: the reader's
    kernel computes the reduce and applies its ops to each reduced value before storing it (an
    epilogue).  LayerNorm's
    1/sqrt(var + eps) is then stored straight from the variance's sum.  One reduce per kernel, the
    two expressions together no deeper than MAX_FUSED_DEPTH (rule 5), and no padded read in the
    reader's part."""
    readers: Dict[int, list] = {}
    for node in order:
        for src in node.srcs:
            readers.setdefault(id(src.base), []).append((node, src))

    def only_reader(node):
        """node's one reader, if it is elementwise, of node's shape and reads node in order."""
        found = readers.get(id(node), ())
        if len(found) == 1 and is_elementwise(found[0][0].op) and _is_plain_reshape(found[0][1]) \
                and _squeezed(found[0][0].shape) == _squeezed(node.shape):
            return found[0][0]
        return None

    def reads_padding(node) -> bool:
        """Does node's expression (down to buffers, the reduce aside) read through padding?  The
        epilogue reads at the output's index, where a padded axis may be one the reduce removed."""
        return any(s.view.mask is not None or (_is_inlined(s.base, materialize) and not isinstance(s.base.op, ReduceOps)
                                               and reads_padding(s.base)) for s in node.srcs)

    taken = set()
    for node in order:
        if not isinstance(node.op, ReduceOps) or id(node) in targets:
            continue
        reader = only_reader(node)
        while reader is not None and id(reader) not in materialize:     # inlined on the way: (sum * 1/D)
            reader = only_reader(reader)
        if reader is not None and id(reader) not in taken and depth[id(reader)] + depth[id(node)] <= MAX_FUSED_DEPTH \
                and not reads_padding(reader):
            materialize.discard(id(node))
            taken.add(id(reader))


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
        # inline an elementwise base, read through `view` (_readable said it can be)
        return expression(b, view)

    def expression(b: LazyBuffer, outer):
        if isinstance(b.op, ReduceOps):           # rule 7: a reduce under its reader, read in order
            return Op(b.op, tuple(load(s, s.view) for s in b.srcs), b.arg, b.dtype, b.shape)
        srcs = []
        for s in b.srcs:
            view = _source_view(s, b, outer)
            assert view is not None, "the schedule inlined a node its reader cannot read (see _readable)"
            srcs.append(load(s, view))
        return Op(b.op, tuple(srcs), b.arg, b.dtype, tuple(outer.shape))

    try:
        if node.op is LoadOps.CONTIGUOUS:         # a copy: the kernel is just its source read in order
            return load(node.srcs[0], node.srcs[0].view)
        if node.op is LoadOps.CONST:              # a constant asked for as a buffer: a fill
            return Const(node.arg, node.dtype)
        return Op(node.op, tuple(load(s, s.view) for s in node.srcs), node.arg, node.dtype, node.shape)
    finally:
        # load and expression call each other, a reference cycle through their closures that
        # would keep `inputs` (and so buffers) alive until Python's cycle collector runs
        load = expression = None


def create_schedule(targets: List[LazyBuffer]) -> List[Kernel]:
    """The kernels, in a valid order, that realize every target."""
    order = _toposort(targets)
    materialize = _decide_materialized(order, targets)
    schedule = []
    for node in order:
        if id(node) in materialize:
            inputs: List[LazyBuffer] = []
            schedule.append(Kernel(node, inputs, _lower(node, materialize, inputs)))
    return schedule


# A JIT capture (jit.py) appends a Recording here; every kernel run is then recorded into it
# with its output and input buffers, so that it can be replayed without Python graphs.
recorders: List[list] = []


def run_kernel(kernel: Kernel, out_buffer, input_buffers) -> None:
    """Run one kernel on explicit buffers (realize passes the graph's; a JIT replay its own)."""
    from .backends import get_backend
    backend = get_backend(kernel.output.device)
    if kernel.kind is KernelKind.COPY:
        src = kernel.inputs[0]
        host = get_backend(src.device).copy_out(input_buffers[0], kernel.ast.srcs[0].view, src.dtype)
        backend.write(out_buffer, host)
    else:
        backend.run(kernel, out_buffer, input_buffers)


def prepare(kernels: List[Kernel]) -> None:
    """Let each backend compile its kernels in one go before the first runs (Backend.prepare)."""
    from .backends import get_backend
    for device in {k.output.device for k in kernels}:
        get_backend(device).prepare([k for k in kernels if k.output.device == device])


def run_schedule(schedule: List[Kernel]) -> None:
    """Run the kernels in order.  Memory is freed by liveness, through Python's reference counts:
    once a kernel has run, it is dropped from the list and its output forgets the graph that made
    it, so a buffer that no later kernel and no live Tensor reads is released right then, not at
    the end of the schedule (a training step's intermediates never all exist at once)."""
    from .backends import get_backend
    start = time.perf_counter()
    count = len(schedule)
    prepare(schedule)
    for position, kernel in enumerate(schedule):
        out = kernel.output
        backend = get_backend(out.device)
        t0 = time.perf_counter()
        if out.realized is None:
            out.realized = backend.allocate(out.size, out.dtype)
        input_buffers = [b.realized for b in kernel.inputs]
        run_kernel(kernel, out.realized, input_buffers)
        for recording in recorders:
            recording.record(kernel, out.realized, input_buffers)
        if debug.DEBUG >= 2 or debug.anomaly_enabled():
            backend.synchronize()
        kernel.time_s = time.perf_counter() - t0
        if debug.DEBUG >= 2:
            print(f"  {kernel.time_s * 1e3:8.3f} ms  {kernel!r}")
        if debug.anomaly_enabled():
            _check_finite(kernel, backend)
        out.op, out.srcs, out.arg = LoadOps.BUFFER, (), None     # the graph behind it is no longer needed
        schedule[position] = kernel = input_buffers = None          # nor the kernel, nor its inputs
    if debug.DEBUG >= 1 and count:
        print(f"realize: {count} kernels in {(time.perf_counter() - start) * 1e3:.2f} ms")


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
