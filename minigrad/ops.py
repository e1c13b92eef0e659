"""The primitive operations: the whole instruction set a backend must implement.

Every Tensor method, however fancy (softmax, layernorm, cross-entropy), is built
from these.  They are grouped in families because the scheduler treats each
family differently: elementwise ops fuse into one kernel, a reduction absorbs the
elementwise ops that feed it, movement ops never run at all (they only change a
View), and the "special" ops (matmul, gather, scatter-add) get kernels of their own.
"""
from enum import Enum, auto
from typing import NamedTuple

import numpy as np


class UnaryOps(Enum):
    NEG = auto()
    EXP = auto()
    LOG = auto()
    SQRT = auto()
    RECIPROCAL = auto()
    ERF = auto()      # for the exact GELU, 0.5 * x * (1 + erf(x / sqrt(2)))
    SIN = auto()      # cos and tan are built from it: cos x = sin(pi/2 - x)
    CAST = auto()     # arg: the target dtype


class BinaryOps(Enum):
    ADD = auto()
    SUB = auto()
    MUL = auto()
    DIV = auto()
    MAX = auto()
    CMPLT = auto()    # a < b, result is bool
    CMPEQ = auto()    # a == b, result is bool


class TernaryOps(Enum):
    WHERE = auto()    # cond ? a : b


class ReduceOps(Enum):
    SUM = auto()
    MAX = auto()


class MovementOps(Enum):
    """Only change how a buffer is read (a View); they never copy data."""
    RESHAPE = auto()
    PERMUTE = auto()
    EXPAND = auto()
    PAD = auto()
    SHRINK = auto()
    STRIDE = auto()   # keep every k-th element along each axis (slicing with a step)


class SpecialOps(Enum):
    """Ops that are not elementwise and get a kernel of their own."""
    MATMUL = auto()       # (..., M, K) @ (..., K, N): BLAS on the NumPy backend
    GATHER = auto()       # table (N, D)[index (...)] -> (..., D): embedding lookup
    SCATTER_ADD = auto()  # the gradient of GATHER: add rows of (..., D) into (N, D)


class LoadOps(Enum):
    """Where data comes from."""
    BUFFER = auto()       # already in memory (copied from the host, or realized)
    CONST = auto()        # one number, broadcast to any shape for free
    RAND = auto()         # uniform [0, 1) numbers from a seed, made on demand
    COPY = auto()         # bring a buffer over from another device
    CONTIGUOUS = auto()   # force the source to be materialized in its own buffer


class RandArg(NamedTuple):
    """What a RAND load draws: the stream (seed, counter) and which distribution."""
    seed: int
    counter: int
    distribution: int      # UNIFORM, or NORMAL (weight initialization, made on the host)


UNIFORM, NORMAL = 0, 1


class OpInfo(NamedTuple):
    """What every part of the engine needs to know of one op, in one place (a new backend reads
    this table; it does not hunt through the others)."""
    c: str                  # C and OpenCL C: {0} {1} {2} the operands, {t} the result's C type
    numpy: str              # the numpy function the evaluator calls ("erf": numpy has none, erf below)
    result: str = "same"    # the result's dtype: "same" as the operands, "bool", "arg" (CAST's), "second" (WHERE's)
    identity: str = ""      # a reduce's start value: "0", or "lowest" (the dtype's -inf or least integer)


OPS = {
    UnaryOps.NEG: OpInfo("(-{0})", "negative"),
    UnaryOps.EXP: OpInfo("exp({0})", "exp"),
    UnaryOps.LOG: OpInfo("log({0})", "log"),
    UnaryOps.SQRT: OpInfo("sqrt({0})", "sqrt"),
    UnaryOps.RECIPROCAL: OpInfo("((({t})1)/{0})", "reciprocal"),
    UnaryOps.ERF: OpInfo("erf({0})", "erf"),
    UnaryOps.SIN: OpInfo("sin({0})", "sin"),
    UnaryOps.CAST: OpInfo("(({t})({0}))", "astype", result="arg"),     # to bool in C: ((uchar)(x != 0))
    BinaryOps.ADD: OpInfo("({0}+{1})", "add"),
    BinaryOps.SUB: OpInfo("({0}-{1})", "subtract"),
    BinaryOps.MUL: OpInfo("({0}*{1})", "multiply"),
    BinaryOps.DIV: OpInfo("({0}/{1})", "divide"),
    BinaryOps.MAX: OpInfo("maxnan({0},{1})", "maximum"),                # NaN wins, as in numpy (c_like.MAXNAN)
    BinaryOps.CMPLT: OpInfo("(({t})({0}<{1}))", "less", result="bool"),
    BinaryOps.CMPEQ: OpInfo("(({t})({0}=={1}))", "equal", result="bool"),
    TernaryOps.WHERE: OpInfo("({0} ? {1} : {2})", "where", result="second"),
    ReduceOps.SUM: OpInfo("({0}+{1})", "add", identity="0"),            # folds value {1} into accumulator {0}
    ReduceOps.MAX: OpInfo("maxnan({0},{1})", "maximum", identity="lowest"),
}


def erf(x: np.ndarray, out=None) -> np.ndarray:
    """erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7): numpy has no erf.
    erf(x) = sign(x) (1 - t (a1 + t (a2 + ... )) e^(-x^2)),  t = 1 / (1 + p |x|)"""
    a = np.abs(x)
    t = 1.0 + 0.3275911 * a
    np.reciprocal(t, out=t)
    poly = 1.061405429 * t
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += coefficient
        poly *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a
    np.subtract(1.0, poly, out=poly)
    result = np.copysign(poly, x, out=out)
    return result.astype(x.dtype, copy=False)


# each elementwise op's numpy function, as OPS names it; erf is the one numpy lacks (above)
UFUNCS = {op: erf if info.numpy == "erf" else getattr(np, info.numpy) for op, info in OPS.items()
          if not isinstance(op, ReduceOps) and info.numpy not in ("astype", "where")}


def apply_numpy(op, values, dtype):
    """Elementwise op `op` on numpy values, its result of `dtype`: how the NumPy evaluator runs
    it, and how the scheduler learns what an expression gives in padding (schedule rule 4)."""
    if op is UnaryOps.CAST:
        return values[0].astype(dtype)
    if op is TernaryOps.WHERE:
        return np.where(values[0], values[1], values[2])
    return UFUNCS[op](*values)


ELEMENTWISE = (UnaryOps, BinaryOps, TernaryOps)


def is_elementwise(op) -> bool:
    return isinstance(op, ELEMENTWISE)
