"""LazyBuffer: one node of the lazy graph.

A Tensor's data is a LazyBuffer.  Ops on it do not compute anything: they create new
nodes that remember the op and its sources.  Work happens only at realize(), when the
scheduler (schedule.py) turns the graph into kernels and a backend runs them.

Two kinds of node:
  * a *base* owns (or will own) a buffer: its op is a load, an elementwise op, a reduce
    or a special op, and it is read in order (a contiguous View of its shape);
  * a *view* points at a base and reads it through a View made by movement ops.
    Views never own memory and never run a kernel.

Each base keeps weak references to the nodes that read it (`readers`), so that `assign`, which
overwrites a buffer in place, can first compute every live node that still needs the old values.
"""
import weakref
from math import prod
from typing import Tuple

import numpy as np

from . import dtypes
from .debug import anomaly_enabled, user_frame
from .ops import OPS, LoadOps, MovementOps, ReduceOps, SpecialOps, TernaryOps
from .view import View


class LazyBuffer:
    __slots__ = ("device", "shape", "dtype", "op", "srcs", "arg", "_base", "view", "realized", "created_at",
                 "readers", "__weakref__")

    def __init__(self, device: str, shape, dtype, op, srcs=(), arg=None, base: "LazyBuffer" = None,
                 view: View = None):
        self.device, self.shape, self.dtype = device, tuple(shape), np.dtype(dtype)
        self.op, self.srcs, self.arg = op, tuple(srcs), arg
        self._base = base
        self.view = view if view is not None else View.contiguous(self.shape)
        self.realized = None            # the backend's buffer, once computed (bases only)
        self.created_at = user_frame() if anomaly_enabled() else None
        self.readers = None             # weak references to the nodes reading this base, once one does
        if self.srcs:
            me = weakref.ref(self)
            for src in self.srcs:
                b = src.base
                if b.readers is None:
                    b.readers = [me]
                else:
                    b.readers.append(me)
                    n = len(b.readers)
                    if n >= 64 and n & (n - 1) == 0:      # now and then drop the dead: amortized O(1)
                        b.readers = [r for r in b.readers if r() is not None]

    def __repr__(self):
        kind = "view of " + repr(self._base) if self._base is not None else getattr(self.op, "name", self.op)
        return f"<LazyBuffer {self.device} {self.shape} {self.dtype} {kind}{' realized' if self.realized is not None else ''}>"

    @property
    def base(self) -> "LazyBuffer":
        return self._base if self._base is not None else self

    @property
    def is_realized(self) -> bool:
        return self.base.realized is not None

    @property
    def size(self) -> int:
        return prod(self.shape)

    # ---- loads ---------------------------------------------------------------------
    @staticmethod
    def from_numpy(array: np.ndarray, device: str) -> "LazyBuffer":
        from .backends import get_backend
        lb = LazyBuffer(device, array.shape, array.dtype, LoadOps.BUFFER)
        lb.realized = get_backend(device).copy_in(array)
        return lb

    @staticmethod
    def const(value, shape, dtype, device: str) -> "LazyBuffer":
        """One number, broadcast to `shape` by a zero-stride view: costs no memory."""
        scalar = LazyBuffer(device, (), dtype, LoadOps.CONST, arg=np.dtype(dtype).type(value).item())
        return scalar.movement(MovementOps.RESHAPE, (1,) * len(shape)).movement(MovementOps.EXPAND, tuple(shape))

    @staticmethod
    def rand(shape, dtype, device: str, seed) -> "LazyBuffer":
        """Uniform numbers in [0, 1), drawn when realized from a generator seeded with `seed`."""
        return LazyBuffer(device, shape, dtype, LoadOps.RAND, arg=seed)

    # ---- compute ----------------------------------------------------------------
    def elementwise(self, op, *others: "LazyBuffer", arg=None) -> "LazyBuffer":
        srcs = (self,) + others
        for s in srcs:
            assert s.shape == self.shape, f"elementwise {op} on shapes {[x.shape for x in srcs]}"
        result = OPS[op].result                # the dtype rule of ops.OPS
        out_dtype = dtypes.bool_ if result == "bool" else arg if result == "arg" else \
            srcs[1].dtype if result == "second" else self.dtype
        return LazyBuffer(self.device, self.shape, out_dtype, op, srcs, arg)

    def reduce(self, op: ReduceOps, axes: Tuple[int, ...]) -> "LazyBuffer":
        """Reduce over `axes`, keeping them as size 1."""
        shape = tuple(1 if i in axes else n for i, n in enumerate(self.shape))
        return LazyBuffer(self.device, shape, self.dtype, op, (self,), tuple(sorted(axes)))

    def matmul(self, other: "LazyBuffer") -> "LazyBuffer":
        """(..., M, K) @ (..., K, N) -> (..., M, N); the batch dims already match."""
        shape = self.shape[:-1] + (other.shape[-1],)
        return LazyBuffer(self.device, shape, self.dtype, SpecialOps.MATMUL, (self, other))

    def gather(self, index: "LazyBuffer") -> "LazyBuffer":
        """Rows of a (N, D) table picked by an int index of any shape -> index.shape + (D,)."""
        return LazyBuffer(self.device, index.shape + self.shape[1:], self.dtype, SpecialOps.GATHER, (self, index))

    def scatter_add(self, index: "LazyBuffer", num_rows: int) -> "LazyBuffer":
        """The reverse of gather: add each row of self (index.shape + (D,)) into row index[...] of a (N, D) zero table."""
        shape = (num_rows,) + self.shape[len(index.shape):]
        return LazyBuffer(self.device, shape, self.dtype, SpecialOps.SCATTER_ADD, (self, index), num_rows)

    def contiguous(self) -> "LazyBuffer":
        """A buffer laid out in order; a no-op if this already is one."""
        if self._base is None or (self.view.is_contiguous and self.view.size == self.base.size):
            return self if self._base is None else self.base.movement(MovementOps.RESHAPE, self.shape)
        return LazyBuffer(self.device, self.shape, self.dtype, LoadOps.CONTIGUOUS, (self,))

    def copy_to(self, device: str) -> "LazyBuffer":
        if device == self.device:
            return self
        return LazyBuffer(device, self.shape, self.dtype, LoadOps.COPY, (self,))

    # ---- movement: a new View over the same base ----------------------------------
    def movement(self, op: MovementOps, arg) -> "LazyBuffer":
        view = self.view
        if op is MovementOps.RESHAPE:
            new_view = view.reshape(arg)
            if new_view is None:  # no strided view reads these elements in that order: copy first
                return self.contiguous().movement(op, arg)
        elif op is MovementOps.PERMUTE:
            new_view = view.permute(arg)
        elif op is MovementOps.EXPAND:
            new_view = view.expand(arg)
        elif op is MovementOps.PAD:
            new_view = view.pad(arg)
        elif op is MovementOps.SHRINK:
            new_view = view.shrink(arg)
        elif op is MovementOps.STRIDE:
            new_view = view.stride(arg)
        else:
            raise ValueError(f"unknown movement op {op}")
        base = self.base
        if new_view.shape == base.shape and new_view.is_contiguous:
            return base
        return LazyBuffer(self.device, new_view.shape, self.dtype, base.op, base=base, view=new_view)

    # ---- writing in place -----------------------------------------------------------
    def assign(self, value: "LazyBuffer") -> None:
        """Write `value` (this node's shape and dtype) into the memory this node reads: the base's
        buffer, or the stretch of it this view reads (a parameter in its optimizer group's
        buffer).  Every view of the base sees the new values.

        Values computed before must not change: every live node that reads the base and is not
        computed yet (an inlined `h + b` in a loss graph someone still holds) is computed first,
        from the old values.  Then one elementwise kernel makes the base's new contents, the value
        where this view reads and the old contents elsewhere (selected, not added: -0.0 stays
        -0.0).  Where a kernel may read and write one buffer (the CPU), it writes into the base's
        own buffer, reading it only at the element it writes; elsewhere (OpenCL, whose kernels
        declare their buffers `restrict`) into a new one, which the base then holds."""
        from .backends import get_backend
        from .schedule import create_schedule, realize, run_schedule
        base = self.base
        if base.realized is None:
            realize(base)
        pending = [r for r in (ref() for ref in base.readers or ()) if r is not None and r.realized is None
                   and r.op is not LoadOps.BUFFER]
        if pending:
            realize(*pending)
        if value.base is base:                # a view of the same buffer: copy it out first
            value = LazyBuffer(self.device, value.shape, value.dtype, LoadOps.CONTIGUOUS, (value,))
            realize(value)
        n, total = self.size, base.size
        new = value.movement(MovementOps.RESHAPE, (n,))
        if n != total:                        # the value in [a, a + n), the old contents around it
            a = self.view.offset
            inside = LazyBuffer.const(True, (n,), dtypes.bool_, self.device).movement(MovementOps.PAD, ((a, total - a - n),))
            new = inside.elementwise(TernaryOps.WHERE, new.movement(MovementOps.PAD, ((a, total - a - n),)),
                                     base.movement(MovementOps.RESHAPE, (total,)))
        new = LazyBuffer(self.device, (total,), self.dtype, LoadOps.CONTIGUOUS, (new,))   # a kernel of its own
        schedule = create_schedule([new])
        if get_backend(self.device).updates_in_place:
            new.realized = base.realized      # ... whose output is the base's own buffer
            run_schedule(schedule)
        else:
            run_schedule(schedule)
            base.realized = new.realized

    # ---- running ----------------------------------------------------------------
    def realize(self) -> "LazyBuffer":
        from .schedule import realize
        realize(self)
        return self

    def numpy(self) -> np.ndarray:
        """A fresh numpy array holding this buffer's values (computing them if needed)."""
        from .backends import get_backend
        from .debug import note_host_read
        self.realize()
        note_host_read()
        return get_backend(self.device).copy_out(self.base.realized, self.view, self.dtype)
