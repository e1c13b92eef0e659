"""A Kernel is plain data: what one backend launch computes.

Its `ast` is a small expression tree over three node types:
  Load(i, view)   read kernel input i through a View
  Const(value)    a number broadcast everywhere
  Op(op, srcs)    an elementwise op, or at the root a reduce or special op; a reduce may also sit
                  under elementwise ops of its output's shape (an epilogue: LayerNorm's
                  1/sqrt(var + eps) applied to the variance's sum before it is stored)
Backends walk this tree: the NumPy backend calls one numpy function per Op, the
OpenCL backend prints it as one line of C per Op.
"""
import functools
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Tuple

import numpy as np

from .graph import postorder
from .ops import ReduceOps, SpecialOps, LoadOps
from .view import View


@dataclass(frozen=True)
class Load:
    index: int          # which of the kernel's inputs
    view: View
    dtype: np.dtype


@dataclass(frozen=True)
class Const:
    value: Any
    dtype: np.dtype


@dataclass(frozen=True)
class Op:
    op: Any
    srcs: Tuple[Any, ...]
    arg: Any
    dtype: np.dtype
    shape: Tuple[int, ...]


def walk(node, stop=()):
    """Every node of an expression tree, sources before the node that uses them; the sources of
    nodes whose id is in `stop` are left out."""
    return postorder([node], lambda n: () if id(n) in stop else getattr(n, "srcs", ()))


def rewrite(node, memo: dict, load, shape=None):
    """The expression tree with every Load replaced by load(Load) and, if `shape` is given, every
    Op's shape by shape(Op's shape).  `memo` maps ids of nodes to what they become (preset entries
    are kept as they are: a reduce under an epilogue)."""
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, Load):
        new = load(node)
    elif isinstance(node, Const):
        new = node
    else:
        new = Op(node.op, tuple(rewrite(s, memo, load, shape) for s in node.srcs), node.arg, node.dtype,
                 node.shape if shape is None else shape(node.shape))
    memo[id(node)] = new
    return new


def find_reduce(node) -> "Op":
    """The reduce in an expression tree (there is at most one), or None."""
    return next((n for n in walk(node) if isinstance(n, Op) and isinstance(n.op, ReduceOps)), None)


class KernelKind(str, Enum):
    """Which template a backend uses for a kernel.  A str, so it prints and compares as its name."""
    ELEMENTWISE = "elementwise"      # one output element per expression evaluation (copies and fills too)
    REDUCE = "reduce"
    MATMUL = "matmul"
    GATHER = "gather"
    SCATTER_ADD = "scatter_add"
    RAND = "rand"
    COPY = "copy"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class BufferSpec:
    """What a backend needs to know of a kernel's output or input without the graph node:
    a jit keeps kernels with these, so it holds no LazyBuffer (and no buffer) alive."""
    device: str
    shape: Tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class Kernel:
    output: Any            # the LazyBuffer (a base) this kernel fills
    inputs: List[Any]      # the LazyBuffers (bases) it reads; Load.index points in here
    ast: Any               # the expression tree; its root's shape is output.shape
    time_s: float = field(default=0.0)
    prepared: Any = field(default=None, repr=False)   # a backend's compiled form, kept for replays

    @functools.cached_property
    def kind(self) -> "KernelKind":
        root = self.ast.op if isinstance(self.ast, Op) else None
        if isinstance(root, (SpecialOps, LoadOps)):
            return KernelKind(root.name.lower())
        if isinstance(root, ReduceOps) or (root is not None and find_reduce(self.ast) is not None):
            return KernelKind.REDUCE
        return KernelKind.ELEMENTWISE

    def detached(self) -> "Kernel":
        """The same kernel (and compiled program) with BufferSpecs instead of graph nodes."""
        def spec(b):
            return BufferSpec(b.device, tuple(b.shape), b.dtype)
        return Kernel(spec(self.output), [spec(b) for b in self.inputs], self.ast, self.time_s, self.prepared)

    def fused_ops(self) -> List[str]:
        return [n.op.name.lower() for n in walk(self.ast) if isinstance(n, Op)]

    def __repr__(self):
        ins = ", ".join(f"{tuple(n.view.shape)}" for n in walk(self.ast) if isinstance(n, Load))
        return (f"{self.kind:<11} {'+'.join(self.fused_ops()) or 'copy':<40} "
                f"out {self.output.shape} {self.output.dtype}  in [{ins}]")
