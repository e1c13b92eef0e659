"""C expressions shared by every renderer of C-like code (OpenCL C for devices, plain C for the
compiled CPU path): one place for each op's C spelling and for a View's index arithmetic.

  index_expr      a View read at per-dimension indices: offset + sum(index_k * stride_k), plus the
                  padding mask as a validity condition
  ExpressionRenderer
                  an elementwise expression tree as C statements, one temporary per node

The code uses OpenCL's spellings (uchar, uint, long; exp() on any float type); the plain-C
renderer's prelude defines those for a C compiler.  Each op's C is its entry in ops.OPS.
"""
import math
from typing import List, Sequence, Tuple

import numpy as np

from ..kernel import Const, Load, walk
from ..ops import OPS, UnaryOps
from ..view import View

C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int32): "int",
           np.dtype(np.int64): "long", np.dtype(np.bool_): "uchar", np.dtype(np.uint32): "uint"}

# max on floats as numpy has it: NaN wins, from either side (C's and OpenCL's fmax drop it).
MAXNAN = "#define maxnan(a, b) (((a) != (a) || (a) > (b)) ? (a) : (b))\n"


def c_type(dtype) -> str:
    return C_TYPES[np.dtype(dtype)]


def c_literal(value, dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        if math.isnan(value):
            return "NAN"
        if math.isinf(value):
            return "INFINITY" if value > 0 else "(-INFINITY)"
        text = repr(float(value))
        return f"{text}f" if dtype == np.float32 else text
    if dtype == np.bool_:
        return "1" if value else "0"
    return f"{int(value)}L" if dtype == np.int64 else str(int(value))


def identity(reduce_op, dtype) -> str:
    """A reduce's start value in C (ops.OPS): 0, or the lowest value of the dtype."""
    return "0" if OPS[reduce_op].identity == "0" else lowest(dtype)


def lowest(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return "(-INFINITY)"
    if dtype == np.bool_:
        return "0"
    if dtype == np.int64:                       # -9223372036854775808L would overflow before the minus
        return "(-9223372036854775807L-1)"
    return f"({np.iinfo(dtype).min})"


def unravel(flat: str, shape: Sequence[int], names: Sequence[str]) -> List[str]:
    """C statements splitting a flat index into one index per dimension (row-major)."""
    lines, stride = [], 1
    strides = []
    for n in reversed(shape):
        strides.append(stride)
        stride *= n
    strides.reverse()
    for name, n, st in zip(names, shape, strides):
        if n == 1:
            lines.append(f"const int {name} = 0;")
        else:
            lines.append(f"const int {name} = ({flat} / {st}) % {n};" if st > 1 else f"const int {name} = {flat} % {n};")
    return lines


def index_expr(view: View, idx: Sequence[str]) -> Tuple[str, str]:
    """(offset, valid) C expressions for reading `view` at per-dimension indices `idx`."""
    terms = [str(view.offset)] if view.offset else []
    for i, st, n in zip(idx, view.strides, view.shape):
        if st != 0 and n != 1:
            # "a*s + n0+j", not "... + (n0+j)": the flat sum lets the compiler see that
            # consecutive j read consecutive addresses, and vectorize
            terms.append(f"({i})*{st}" if st != 1 else i)
    valid = []
    if view.mask is not None:
        for i, (lo, hi), n in zip(idx, view.mask, view.shape):
            if (lo, hi) != (0, n):
                valid.append(f"({i}>={lo} && {i}<{hi})" if lo > 0 else f"({i}<{hi})")
    return (" + ".join(terms) or "0"), (" && ".join(valid) or "1")


def epilogue_view(view: View, reduce_shape, in_shape) -> View:
    """A reduce's epilogue reads at the output's index (`view` is over the kernel's output, a
    reshape of reduce_shape); the same read over the reduce's input shape, stride 0 on the reduced
    axes, so it can be indexed by the reduce's own loop variables."""
    return view.reshape(tuple(reduce_shape)).expand(tuple(in_shape))


def load_expr(name: str, view: View, idx: Sequence[str], dtype) -> str:
    offset, valid = index_expr(view, idx)
    if valid == "1":
        return f"{name}[{offset}]"
    return f"(({valid}) ? {name}[{offset}] : ({c_type(dtype)})0)"


class ExpressionRenderer:
    """Prints an elementwise expression tree as C statements, one temporary per node.

    Finite nonzero float constants become kernel arguments (c0, c1, ...) rather than literals, so a
    kernel whose numbers change every step (a learning rate, Adam's bias correction) keeps
    the same source and is compiled once.  `scalars` collects their (value, dtype).
    Each op's C is its entry in ops.OPS; `overrides` lets a renderer spell some differently (the
    CPU's clamped exp)."""
    overrides: dict = {}

    def __init__(self, idx: Sequence[str], scalars: list):
        self.idx, self.lines, self.names, self.count = list(idx), [], {}, 0
        self.scalars = scalars

    def render(self, node) -> str:
        """The C name of node's value; its lines are appended to self.lines.  A node already in
        self.names (a reduce's accumulated value, set by the reduce's renderer) is used as named."""
        for n in walk(node, stop=set(self.names)):
            if id(n) in self.names:
                continue
            self.names[id(n)] = self._render_one(n)
        return self.names[id(node)]

    def _render_one(self, n) -> str:
        if isinstance(n, Const):
            if n.dtype.kind == "f" and math.isfinite(n.value) and n.value != 0:
                self.scalars.append((n.value, n.dtype))
                return f"c{len(self.scalars) - 1}"
            return c_literal(n.value, n.dtype)             # zero (a padded load's value) is no variable
        name = f"v{self.count}"
        self.count += 1
        if isinstance(n, Load):
            expr = load_expr(f"in{n.index}", n.view, self.idx, n.dtype)
        else:
            src = [self.names[id(s)] for s in n.srcs]
            if n.op is UnaryOps.CAST and n.dtype == np.bool_:     # a C cast keeps 0.5; a bool is x != 0
                expr = f"((uchar)({src[0]}!=0))"
            else:
                expr = self.overrides.get(n.op, OPS[n.op].c).format(*src, t=c_type(n.dtype))
        self.lines.append(f"{c_type(n.dtype)} {name} = {expr};")
        return name
