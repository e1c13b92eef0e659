"""Tensor: the user-facing API.

A Tensor wraps a LazyBuffer (its data, not yet computed) and, when it was made by a
differentiable op, the Function that made it (`_ctx`), which is all backward() needs.

Sections: creation · reading values · autograd · broadcasting and dtypes · unary ·
binary · reduce · movement · indexing · linear algebra · neural-network helpers.
Only the primitives in function.py touch LazyBuffers; everything here composes them.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import math
from typing import List, Optional, Tuple, Union

import numpy as np

from . import dtypes
from . import function as F
from .backends import canonical_device
from .graph import postorder
from .kernel import KernelKind
from .lazy import LazyBuffer
from .ops import NORMAL, UNIFORM, LoadOps, RandArg
from .schedule import realize as _realize_buffers

Scalar = Union[int, float, bool]


def _normalize_axis(axis: int, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise IndexError(f"axis {axis} is out of range for a tensor with {ndim} dimensions "
                         f"(valid: {-max(ndim, 1)}..{max(ndim, 1) - 1})")
    return axis % max(ndim, 1)


def _normalize_axes(axis, ndim: int) -> Tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = tuple(_normalize_axis(a, ndim) for a in axes)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis} repeats a dimension")
    return out


def _accepts_dim(fn):
    """PyTorch calls an axis `dim`: methods wrapped by this take either keyword."""
    @functools.wraps(fn)
    def wrapper(self, *args, dim=None, **kwargs):
        if dim is not None:
            if "axis" in kwargs:
                raise TypeError(f"{fn.__name__}() takes axis= or dim=, not both")
            kwargs["axis"] = dim
        return fn(self, *args, **kwargs)
    return wrapper


def _shape_arg(shape) -> Tuple[int, ...]:
    """Accept f(2, 3) as well as f((2, 3))."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


class Tensor:
    __slots__ = ("lazydata", "requires_grad", "grad", "_ctx", "__weakref__")
    grad_enabled = True          # switched off by minigrad.no_grad()
    _seed = 0                    # Tensor.manual_seed sets it; each random op draws a fresh sub-seed
    _rng_counter = 0

    def __init__(self, data, requires_grad: bool = False, dtype=None, device=None):
        dtype = dtypes.as_dtype(dtype)
        if isinstance(data, LazyBuffer):
            lazydata = data if dtype is None or data.dtype == dtype else data.elementwise(F.UnaryOps.CAST, arg=dtype)
        else:
            if isinstance(data, Tensor):
                data = data.numpy()
            array = _to_numpy(data, dtype)
            lazydata = LazyBuffer.from_numpy(array, canonical_device(device))
        self.lazydata: LazyBuffer = lazydata
        self.requires_grad = bool(requires_grad)
        if self.requires_grad and not dtypes.is_float(lazydata.dtype):
            raise TypeError(f"only float tensors can require gradients, not {lazydata.dtype}")
        self.grad: Optional[Tensor] = None
        self._ctx = None

    # ---- creation --------------------------------------------------------------------
    @staticmethod
    def full(shape, value: Scalar, dtype=None, device=None, requires_grad=False) -> Tensor:
        shape = _shape_arg((shape,)) if isinstance(shape, (tuple, list)) else (int(shape),)
        if dtype is None:
            dtype = dtypes.bool_ if isinstance(value, bool) else dtypes.default_int if isinstance(value, int) \
                else dtypes.default_float
        lb = LazyBuffer.const(value, shape, dtypes.as_dtype(dtype), canonical_device(device))
        return Tensor(lb, requires_grad=requires_grad)

    @staticmethod
    def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
        return Tensor.full(_shape_arg(shape), 0.0, dtype, device, requires_grad)

    @staticmethod
    def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
        return Tensor.full(_shape_arg(shape), 1.0, dtype, device, requires_grad)

    def full_like(self, value: Scalar, **kw) -> Tensor:
        return Tensor.full(self.shape, value, dtype=kw.pop("dtype", self.dtype), device=kw.pop("device", self.device), **kw)

    def zeros_like(self, **kw) -> Tensor:
        return self.full_like(0, **kw)

    def ones_like(self, **kw) -> Tensor:
        return self.full_like(1, **kw)

    @staticmethod
    def empty(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
        """A tensor whose values you will overwrite; here it holds zeros (a constant costs no memory)."""
        return Tensor.zeros(*shape, dtype=dtype, device=device, requires_grad=requires_grad)

    @staticmethod
    def arange(start, stop=None, step=1, dtype=None, device=None) -> Tensor:
        if stop is None:
            start, stop = 0, start
        if dtype is None and all(isinstance(v, int) for v in (start, stop, step)):
            dtype = dtypes.default_int
        return Tensor(np.arange(start, stop, step), dtype=dtype or dtypes.default_float, device=device)

    @staticmethod
    def eye(n: int, m: Optional[int] = None, dtype=None, device=None) -> Tensor:
        return Tensor(np.eye(n, m), dtype=dtype or dtypes.default_float, device=device)

    @staticmethod
    def manual_seed(seed: int = 0) -> None:
        """Make rand/randn/dropout reproducible: the same seed gives the same numbers."""
        Tensor._seed, Tensor._rng_counter = int(seed), 0

    @staticmethod
    def _next_seed() -> Tuple[int, int]:
        Tensor._rng_counter += 1
        return (Tensor._seed, Tensor._rng_counter)

    @staticmethod
    def rand(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
        """Uniform in [0, 1)."""
        lb = LazyBuffer.rand(_shape_arg(shape), dtypes.as_dtype(dtype) or dtypes.default_float,
                             canonical_device(device), RandArg(*Tensor._next_seed(), UNIFORM))
        return Tensor(lb, requires_grad=requires_grad)

    @staticmethod
    def randn(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
        """Standard normal."""
        lb = LazyBuffer.rand(_shape_arg(shape), dtypes.as_dtype(dtype) or dtypes.default_float,
                             canonical_device(device), RandArg(*Tensor._next_seed(), NORMAL))
        return Tensor(lb, requires_grad=requires_grad)

    @staticmethod
    def uniform(*shape, low=0.0, high=1.0, **kw) -> Tensor:
        return (Tensor.rand(*shape, **kw) * (high - low) + low).detach()

    @staticmethod
    def normal(*shape, mean=0.0, std=1.0, **kw) -> Tensor:
        return (Tensor.randn(*shape, **kw) * std + mean).detach()

    def multinomial(self, num_samples: int = 1, replacement: bool = False) -> Tensor:
        """Draw indices from the rows of self (weights, not necessarily normalized): (V,) or (N, V)
        -> (num_samples,) or (N, num_samples).  Each draw counts the entries of the running sum
        (the CDF) that lie below a uniform number, so it is one lazy comparison."""
        if self.ndim not in (1, 2):
            raise ValueError(f"multinomial needs weights of shape (V,) or (N, V), got {self.shape}")
        if num_samples < 1:
            raise ValueError(f"multinomial needs num_samples >= 1, got {num_samples}")
        if not replacement and num_samples > 1:
            raise ValueError("multinomial without replacement draws one sample only; pass replacement=True")
        weights = self.detach() if self.ndim == 2 else self.detach().unsqueeze(0)
        cdf = weights._as_float().cumsum(1)
        cdf = cdf / cdf[:, -1:]                                                # (N, V)
        u = Tensor.rand(weights.shape[0], num_samples, 1, dtype=cdf.dtype, device=self.device)
        picked = (cdf.unsqueeze(1) <= u).cast(dtypes.default_int).sum(2)      # (N, num_samples)
        picked = picked.minimum(weights.shape[1] - 1)                          # u just below 1 with rounding
        return picked if self.ndim == 2 else picked.squeeze(0)

    # ---- reading values ----------------------------------------------------------------
    @property
    def shape(self) -> Tuple[int, ...]:
        return self.lazydata.shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.lazydata.dtype

    @property
    def device(self) -> str:
        return self.lazydata.device

    def numel(self) -> int:
        return self.lazydata.size

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def realize(self) -> Tensor:
        """Compute this tensor now (ops only build a graph until something needs the values)."""
        self.lazydata.realize()
        return self

    def numpy(self) -> np.ndarray:
        return self.lazydata.numpy()

    def __array__(self, dtype=None, copy=None):
        """Lets numpy and matplotlib take a Tensor directly (np.asarray(t), plt.plot(t))."""
        array = self.numpy()
        return array.astype(dtype) if dtype is not None else array

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def explain(self, source: bool = False) -> str:
        """What realizing this tensor would run, without running it: one line per kernel
        (its kind, the ops fused into it, its shapes), and with source=True the OpenCL C
        each kernel becomes (rendered as text; no OpenCL needed)."""
        from .backends.opencl_render import render
        from .schedule import create_schedule
        schedule = create_schedule([self.lazydata])
        lines = [f"{len(schedule)} kernel(s) to realize {self.shape} {self.dtype}:"]
        for i, kernel in enumerate(schedule):
            lines.append(f"[{i}] {kernel!r}")
            if not source:
                continue
            if kernel.kind is KernelKind.COPY or (kernel.kind is KernelKind.RAND and kernel.ast.arg.distribution == NORMAL):
                lines.append("(no kernel: made on the host and copied in)\n")
            else:
                lines.append(render(kernel, [b.dtype for b in kernel.inputs], name=f"kernel{i}")[0])
        return "\n".join(lines)

    def assign(self, value) -> Tensor:
        """Write `value` into this tensor's memory, in place (tinygrad's and PyTorch's copy_):
        every tensor viewing the same buffer sees the new values, and values computed from the
        old ones keep them.  `value` is a Tensor of this dtype (or a number) that broadcasts to
        this shape.  It has no gradient: under autograd (a tensor that requires grad, outside
        no_grad()) it is refused.  Returns self."""
        if not isinstance(value, Tensor):
            if not isinstance(value, (int, float, bool, np.number)):
                raise TypeError(f"assign takes a Tensor or a number, not {type(value).__name__}")
            value = Tensor.full(self.shape, value, dtype=self.dtype, device=self.device)
        if value.dtype != self.dtype:
            raise TypeError(f"assign of {value.dtype} into a {self.dtype} tensor: cast it first (value.cast({self.dtype}))")
        if value.device != self.device:
            raise RuntimeError(f"assign from {value.device} into a tensor on {self.device}: move it first with .to()")
        if Tensor.grad_enabled and (self.requires_grad or value.requires_grad):
            raise RuntimeError("assign writes in place and has no gradient: call it under minigrad.no_grad() "
                               "(as an optimizer's update is)")
        try:
            value = value._broadcast_to(self.shape)
        except ValueError:
            raise ValueError(f"assign of shape {value.shape} into a tensor of shape {self.shape}: "
                             f"the value must broadcast to it") from None
        if self.lazydata.base.op is LoadOps.CONST and self.lazydata.base.realized is None:
            raise ValueError("assign into a constant that has no buffer yet (Tensor.zeros, ones, full and empty "
                             "make none): give the tensor one first, t = t.contiguous().realize(), then assign")
        if not self.lazydata.view.is_run:
            raise ValueError(f"assign needs a tensor that reads one stretch of its buffer in order; this one is a "
                             f"{self.shape} view with strides {self.lazydata.view.strides} (permuted, strided, "
                             f"padded or broadcast): assign to the tensor it views instead")
        self.lazydata.assign(value.lazydata)
        return self

    def detach(self) -> Tensor:
        """The same data with no link to the graph that made it."""
        return Tensor(self.lazydata)

    def to(self, device) -> Tensor:
        device = canonical_device(device)
        if device == self.device:
            return self
        return F.Copy.apply(self, device=device)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = f", device='{self.device}'" if self.device != "numpy" else ""
        body = np.array2string(self.numpy(), separator=", ", prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{dev}{grad})"

    def __hash__(self):
        return id(self)

    def __bool__(self):
        if self.numel() != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; use .any() or .all()")
        return bool(self.item())

    # ---- autograd ----------------------------------------------------------------------
    def backward(self, gradient: Optional[Tensor] = None, retain_graph: bool = False) -> None:
        """Fill .grad of every tensor that requires it, by the chain rule from this one back.

        The graph is walked in reverse topological order with an explicit stack, so chains
        of any length work.  Gradients add up in .grad until zero_grad().  Afterwards the graph
        is freed, as in PyTorch: the values its ops saved for backward (activations) are then
        held only by the lazy gradients, so realizing those releases each one after its last
        use.  retain_graph=True keeps it for a second backward."""
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(f"backward() on a tensor of shape {self.shape} needs a gradient of that shape; "
                                   f"reduce it to a scalar first (e.g. .sum()) or pass gradient=")
            gradient = Tensor.ones(*self.shape, dtype=self.dtype, device=self.device)
        elif not isinstance(gradient, Tensor):
            gradient = Tensor(gradient, dtype=self.dtype, device=self.device)
        if gradient.shape != self.shape:
            raise ValueError(f"gradient shape {gradient.shape} does not match tensor shape {self.shape}")
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of the computation had requires_grad=True")
        grads = {id(self): gradient.lazydata}
        for node in reversed(self._toposort()):
            grad = grads.pop(id(node), None)
            if grad is None:
                continue
            if node._ctx is not None and node._ctx.scope is not None:   # traced by minigrad.viz: keep it
                node._ctx.out_grad = grad
            if node._ctx is None:                      # a leaf: accumulate into .grad
                g = Tensor(grad)
                node.grad = g if node.grad is None else Tensor(node.grad.lazydata.elementwise(F.BinaryOps.ADD, grad))
                continue
            ctx = node._ctx
            parent_grads = ctx.backward(grad)
            if not retain_graph and ctx.scope is None:     # a graph traced by minigrad.viz stays drawable
                node._ctx = _FREED_GRAPH
            if not isinstance(parent_grads, tuple):
                parent_grads = (parent_grads,)
            for parent, g in zip(ctx.parents, parent_grads):
                if g is None or not parent.requires_grad:
                    continue
                assert g.shape == parent.shape, f"{type(ctx).__name__} grad {g.shape} != {parent.shape}"
                grads[id(parent)] = g if id(parent) not in grads else grads[id(parent)].elementwise(F.BinaryOps.ADD, g)

    def _toposort(self, every_input: bool = False):
        """Tensors this one was made from, each after its inputs: those requiring a gradient
        (what backward needs), or with every_input all of them (what minigrad.viz draws)."""
        def parents(node):                   # pushed in order: the last parent is explored first
            if node._ctx is None:
                return ()
            return [p for p in reversed(node._ctx.parents) if every_input or p.requires_grad]
        return postorder([self], parents)

    # ---- broadcasting and dtypes --------------------------------------------------------
    def _broadcasted(self, other, reverse=False) -> Tuple[Tensor, Tensor]:
        """Bring self and other (a Tensor or Python number) to one shape and one dtype."""
        x = self
        if isinstance(other, Tensor):
            y = other
            if y.device != x.device:
                raise RuntimeError(f"tensors on different devices: {x.device} and {y.device}; move one with .to()")
            dtype = dtypes.promote(x.dtype, y.dtype)
        elif isinstance(other, (int, float, bool, np.number, np.bool_)):
            other = other.item() if isinstance(other, (np.number, np.bool_)) else other
            dtype = dtypes.scalar_dtype(other, x.dtype)
            x = x if x.dtype == dtype else x.cast(dtype)
            y = Tensor(LazyBuffer.const(other, x.shape, dtype, x.device))   # already x's shape: no broadcast ops
            return (y, x) if reverse else (x, y)
        else:
            raise TypeError(f"cannot combine a Tensor with {type(other).__name__}")
        if x.dtype != dtype:
            x = x.cast(dtype)
        if y.dtype != dtype:
            y = y.cast(dtype)
        shape = broadcast_shape(x.shape, y.shape)
        x, y = x._broadcast_to(shape), y._broadcast_to(shape)
        return (y, x) if reverse else (x, y)

    def _broadcast_to(self, shape) -> Tensor:
        if self.shape == tuple(shape):
            return self
        padded = self.reshape((1,) * (len(shape) - self.ndim) + self.shape) if self.ndim < len(shape) else self
        return padded.expand(shape)

    def cast(self, dtype) -> Tensor:
        dtype = dtypes.as_dtype(dtype)
        return self if dtype == self.dtype else F.Cast.apply(self, dtype=dtype)

    def float(self) -> Tensor:
        return self.cast(dtypes.float32)

    def double(self) -> Tensor:
        return self.cast(dtypes.float64)

    def int(self) -> Tensor:
        return self.cast(dtypes.int32)

    def long(self) -> Tensor:
        return self.cast(dtypes.int64)

    def bool(self) -> Tensor:
        return self.cast(dtypes.bool_)

    def _as_float(self) -> Tensor:
        return self if dtypes.is_float(self.dtype) else self.cast(dtypes.default_float)

    def contiguous(self) -> Tensor:
        return F.Contiguous.apply(self)

    # ---- unary -------------------------------------------------------------------------
    def __neg__(self):
        return F.Neg.apply(self) if self.dtype != dtypes.bool_ else self.logical_not()

    def exp(self):
        return F.Exp.apply(self._as_float())

    def log(self):
        return F.Log.apply(self._as_float())

    def sqrt(self):
        return F.Sqrt.apply(self._as_float())

    def reciprocal(self):
        return F.Reciprocal.apply(self._as_float())

    def erf(self):
        return F.Erf.apply(self._as_float())

    def relu(self):
        return F.Relu.apply(self)

    def sin(self):
        return F.Sin.apply(self._as_float())

    def cos(self):
        return (math.pi / 2 - self._as_float()).sin()

    def tan(self):
        return self.sin() / self.cos()

    def exp2(self):
        return (self._as_float() * math.log(2)).exp()

    def log2(self):
        return self.log() * (1 / math.log(2))

    def rsqrt(self):
        return F.Rsqrt.apply(self._as_float())

    def sigmoid(self):
        return F.Sigmoid.apply(self._as_float())

    def tanh(self):
        """tanh x = 2 sigmoid(2x) - 1: the sigmoid's gradient keeps it finite for any x."""
        return 2 * (2 * self).sigmoid() - 1

    def abs(self):
        return self.relu() + (-self).relu()

    def square(self):
        return self * self

    # Tensors of at least this many elements (4 MB of float32) are worth recomputing in backward
    # rather than keeping every intermediate: the shakespeare-char model's GELU inputs are 25 M.
    # Smaller ones are kept, which is faster (the laptop recipe's are 0.4 M).
    RECOMPUTE_FROM = 1 << 20

    def _recomputed_if_large(self, fn, *others) -> Tensor:
        """fn(self, *others), through F.Recompute (backward keeps only the inputs) when self is large."""
        if self.numel() >= Tensor.RECOMPUTE_FROM:
            return F.Recompute.apply(self, *others, fn=fn)
        return fn(self, *others)

    def _piecewise_constant(self, value: Tensor) -> Tensor:
        """`value` (computed from self) with the gradient 0 back to self, not a detached result."""
        return F.PiecewiseConstant.apply(self, value=value.lazydata)

    def sign(self):
        value = (self > 0).cast(self.dtype) - (self < 0).cast(self.dtype)
        return self._piecewise_constant(value) if dtypes.is_float(self.dtype) else value

    def trunc(self):
        """Round towards zero.  Floats of magnitude >= 2^23 (float32; 2^52 for float64) are already
        whole numbers, and are passed through rather than cast to an integer that could overflow."""
        if not dtypes.is_float(self.dtype):
            return self
        exact = 2.0 ** (np.finfo(self.dtype).nmant)
        whole = self.cast(dtypes.int64).cast(self.dtype)
        return self._piecewise_constant((self.abs() < exact).where(whole, self).detach())

    def floor(self):
        t = self.trunc().detach()
        return self._piecewise_constant(t - (t > self).cast(self.dtype)) if dtypes.is_float(self.dtype) else self

    def ceil(self):
        t = self.trunc().detach()
        return self._piecewise_constant(t + (t < self).cast(self.dtype)) if dtypes.is_float(self.dtype) else self

    def round(self):
        """Round half to even, as numpy and PyTorch do (2.5 -> 2, 3.5 -> 4)."""
        if not dtypes.is_float(self.dtype):
            return self
        f = self.floor().detach()
        diff = self.detach() - f
        f_is_odd = (f - 2 * (f * 0.5).floor()) == 1
        up = (diff > 0.5) | ((diff == 0.5) & f_is_odd)
        return self._piecewise_constant(f + up.cast(self.dtype))

    def clip(self, min_=None, max_=None):
        out = self
        if min_ is not None:
            out = out.maximum(min_)
        if max_ is not None:
            out = out.minimum(max_)
        return out

    clamp = clip

    def gelu(self, approximate: str = "none"):
        """GELU(x) = x * Phi(x).  "none": Phi exactly, through erf; "tanh": GPT-2's approximation.
        On large tensors recomputed in backward (F.Recompute), so only x is kept for it."""
        def gelu(x):
            return 0.5 * x * (1 + (x * (1 / math.sqrt(2))).erf())

        def gelu_tanh(x):
            return 0.5 * x * (1 + (math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)).tanh())
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
        return self._recomputed_if_large(gelu if approximate == "none" else gelu_tanh)

    # activations: each is composed from the primitives, so its gradient comes for free; the
    # choice of composition (where, not a product with a step) keeps gradients finite far out
    def leakyrelu(self, neg_slope: float = 0.01):
        return (self > 0).where(self, self * neg_slope)

    def elu(self, alpha: float = 1.0):
        negative = (self > 0).where(0.0, self)          # exp only ever sees x <= 0: no inf, no NaN
        return (self > 0).where(self, alpha * (negative.exp() - 1))

    def celu(self, alpha: float = 1.0):
        negative = (self > 0).where(0.0, self)
        return (self > 0).where(self, alpha * ((negative / alpha).exp() - 1))

    def hardtanh(self, min_val: float = -1.0, max_val: float = 1.0):
        """Clamp to [min_val, max_val]; the gradient is 0 at and beyond the edges, as in PyTorch."""
        return (self <= min_val).where(min_val, (self >= max_val).where(max_val, self))

    def relu6(self):
        return self.hardtanh(0.0, 6.0)

    def hardsigmoid(self):
        return (self + 3).relu6() * (1 / 6)

    def hardswish(self):
        return self * (self + 3).relu6() * (1 / 6)

    def softplus(self, beta: float = 1.0):
        """log(1 + e^(beta x)) / beta, as max(x, 0) + log(1 + e^-|x|): e^ never overflows."""
        x = self * beta if beta != 1 else self
        out = x.maximum(0) + (1 + (-x.abs()).exp()).log()
        return out * (1 / beta) if beta != 1 else out

    def softsign(self):
        return self / (1 + self.abs())

    def mish(self):
        return self * self.softplus().tanh()

    def silu(self):
        return self * self.sigmoid()

    swish = silu

    def quick_gelu(self):
        return self * (1.702 * self).sigmoid()

    def logsigmoid(self):
        return -(-self).softplus()

    def logical_not(self):
        return self == False  # noqa: E712  (elementwise)

    def __invert__(self):
        return self.logical_not() if self.dtype == dtypes.bool_ else -self - 1

    def __and__(self, other):
        x, y = self._broadcasted(other)
        return (x.bool().cast(dtypes.int32) * y.bool().cast(dtypes.int32)).bool()

    def __or__(self, other):
        x, y = self._broadcasted(other)
        return (x.bool().cast(dtypes.int32) + y.bool().cast(dtypes.int32)).bool()

    # ---- binary ------------------------------------------------------------------------
    def add(self, other, reverse=False):
        return F.Add.apply(*self._broadcasted(other, reverse))

    def sub(self, other, reverse=False):
        return F.Sub.apply(*self._broadcasted(other, reverse))

    def mul(self, other, reverse=False):
        return F.Mul.apply(*self._broadcasted(other, reverse))

    def div(self, other, reverse=False):
        """True division: ints become floats, as in Python 3 and PyTorch."""
        x, y = self._broadcasted(other, reverse)
        return F.Div.apply(x._as_float(), y._as_float())

    def pow(self, exponent, reverse=False):
        if reverse:                                   # number ** tensor
            return (self * math.log(exponent)).exp()
        if isinstance(exponent, Tensor):
            x, y = self._broadcasted(exponent)
            return (x.log() * y).exp()
        if isinstance(exponent, (int, float)) and float(exponent).is_integer() and abs(exponent) <= 16:
            n = int(exponent)
            result, base, k = None, self, abs(n)
            while k:                                  # square-and-multiply
                if k & 1:
                    result = base if result is None else result * base
                base, k = base * base, k >> 1
            result = self.ones_like() if result is None else result
            return result.reciprocal() if n < 0 else result
        if exponent == 0.5:
            return self.sqrt()
        x, y = self._broadcasted(exponent)
        return (x.log() * y).exp()

    def maximum(self, other):
        return F.Maximum.apply(*self._broadcasted(other))

    def minimum(self, other):
        x, y = self._broadcasted(other)
        return -F.Maximum.apply(-x, -y)

    def __lt__(self, other):
        return F.Less.apply(*self._broadcasted(other))

    def __gt__(self, other):
        return F.Less.apply(*self._broadcasted(other, reverse=True))

    def __le__(self, other):
        return (self > other).logical_not()

    def __ge__(self, other):
        return (self < other).logical_not()

    def __eq__(self, other):
        return F.Equal.apply(*self._broadcasted(other))

    def __ne__(self, other):
        return (self == other).logical_not()

    def where(self, x, y):
        """cond.where(x, y): x where cond is true, else y (x and y may be numbers)."""
        cond = self if self.dtype == dtypes.bool_ else self != 0
        if not isinstance(x, Tensor) and not isinstance(y, Tensor):
            dtype = dtypes.scalar_dtype(x, dtypes.default_float if isinstance(x, float) or isinstance(y, float)
                                        else dtypes.default_int)
            x = Tensor(LazyBuffer.const(x, (), dtype, cond.device))
        if not isinstance(x, Tensor):
            x = Tensor(LazyBuffer.const(x, (), dtypes.scalar_dtype(x, y.dtype), y.device))
        if not isinstance(y, Tensor):
            y = Tensor(LazyBuffer.const(y, (), dtypes.scalar_dtype(y, x.dtype), x.device))
        x, y = x._broadcasted(y)
        shape = broadcast_shape(cond.shape, x.shape)
        return F.Where.apply(cond._broadcast_to(shape), x._broadcast_to(shape), y._broadcast_to(shape))

    __add__ = add
    __sub__ = sub
    __mul__ = mul
    __truediv__ = div
    __pow__ = pow

    def __radd__(self, other):
        return self.add(other, reverse=True)

    def __rsub__(self, other):
        return self.sub(other, reverse=True)

    def __rmul__(self, other):
        return self.mul(other, reverse=True)

    def __rtruediv__(self, other):
        return self.div(other, reverse=True)

    def __rpow__(self, other):
        return self.pow(other, reverse=True)

    def __matmul__(self, other):
        return self.matmul(other)

    def __rmatmul__(self, other):
        return Tensor(other, dtype=self.dtype, device=self.device).matmul(self)

    # ---- reduce ------------------------------------------------------------------------
    def _reduce(self, fn, axis, keepdim) -> Tensor:
        axes = _normalize_axes(axis, self.ndim)
        x = self if self.dtype != dtypes.bool_ else self.cast(dtypes.default_int)
        if self.ndim == 0:
            return x
        out = fn.apply(x, axes=axes)
        if keepdim:
            return out
        return out.reshape(tuple(n for i, n in enumerate(self.shape) if i not in axes))

    def _count(self, axis) -> int:
        """How many elements each output of a reduction over `axis` combines."""
        return math.prod(self.shape[a] for a in _normalize_axes(axis, self.ndim))

    @_accepts_dim
    def sum(self, axis=None, keepdim=False):
        return self._reduce(F.Sum, axis, keepdim)

    @_accepts_dim
    def max(self, axis=None, keepdim=False):
        return self._reduce(F.Max, axis, keepdim)

    @_accepts_dim
    def min(self, axis=None, keepdim=False):
        return -((-self).max(axis, keepdim))

    @_accepts_dim
    def mean(self, axis=None, keepdim=False):
        count = self._count(axis)
        return self._as_float().sum(axis, keepdim) * (1.0 / count if count else float("nan"))  # empty: NaN, as numpy

    @_accepts_dim
    def var(self, axis=None, keepdim=False, correction=1):
        """Variance, dividing by N - correction (1: the unbiased estimate, as PyTorch's default)."""
        x = self._as_float()
        n = self._count(axis)
        centered = x - x.mean(axis, keepdim=True)
        return centered.square().sum(axis, keepdim) * (1.0 / max(0, n - correction) if n > correction else float("nan"))

    @_accepts_dim
    def std(self, axis=None, keepdim=False, correction=1):
        return self.var(axis, keepdim, correction).sqrt()

    @_accepts_dim
    def any(self, axis=None, keepdim=False):
        return self.bool().cast(dtypes.default_int).max(axis, keepdim).bool()

    @_accepts_dim
    def all(self, axis=None, keepdim=False):
        return self.bool().logical_not().any(axis, keepdim).logical_not()

    @_accepts_dim
    def logsumexp(self, axis=-1, keepdim=False):
        """log(sum(exp(x))), shifted by the max so large inputs do not overflow."""
        m = self.max(axis, keepdim=True).detach()
        out = (self - m).exp().sum(axis, keepdim=True).log() + m
        return out if keepdim else out.squeeze(axis)

    @_accepts_dim
    def softmax(self, axis=-1):
        """exp(x - max) / sum(exp(x - max)): subtracting the max keeps exp() from overflowing.
        One primitive (F.Softmax), whose backward reads only its output."""
        x = self._as_float()
        if x.ndim == 0:
            return x.ones_like()
        return F.Softmax.apply(x, axis=_normalize_axis(axis, x.ndim))

    @_accepts_dim
    def log_softmax(self, axis=-1):
        shifted = self - self.max(axis, keepdim=True).detach()
        return shifted - shifted.exp().sum(axis, keepdim=True).log()

    @_accepts_dim
    def argmax(self, axis=None, keepdim=False):
        """Index of the first maximum (flattened when axis is None)."""
        if axis is None:
            return self.flatten().argmax(0)
        axis = _normalize_axis(axis, self.ndim)
        n = self.shape[axis]
        is_max = self == self.max(axis, keepdim=True)
        countdown = Tensor.arange(n, 0, -1, device=self.device).reshape((n,) + (1,) * (self.ndim - axis - 1))
        first = (is_max.cast(dtypes.default_int) * countdown).max(axis, keepdim)
        return n - first

    @_accepts_dim
    def argmin(self, axis=None, keepdim=False):
        return (-self).argmax(axis, keepdim)

    # ---- movement (views: no copies) -----------------------------------------------------
    def reshape(self, *shape_args, shape=None) -> Tensor:
        """reshape(2, 3), reshape((2, 3)) or reshape(shape=(2, 3)); one dimension may be -1."""
        shape = _shape_arg(shape_args) if shape is None else _shape_arg((shape,))
        if shape.count(-1) > 1:
            raise ValueError(f"reshape to {shape}: only one dimension can be -1")
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            if known == 0 or self.numel() % known:
                raise ValueError(f"cannot reshape tensor of shape {self.shape} ({self.numel()} elements) into {shape}")
            shape = tuple(self.numel() // known if s == -1 else s for s in shape)
        if any(s < 0 for s in shape) or math.prod(shape) != self.numel():
            raise ValueError(f"cannot reshape tensor of shape {self.shape} ({self.numel()} elements) "
                             f"into {shape} ({math.prod(shape)} elements)")
        return self if shape == self.shape else F.Reshape.apply(self, shape=shape)

    view = reshape

    def permute(self, *order_args, order=None) -> Tensor:
        order = _shape_arg(order_args) if order is None else _shape_arg((order,))
        if sorted(_normalize_axis(a, self.ndim) for a in order) != list(range(self.ndim)):
            raise ValueError(f"permute order {order} is not a permutation of the {self.ndim} axes of {self.shape}")
        order = tuple(_normalize_axis(a, self.ndim) for a in order)
        return self if order == tuple(range(self.ndim)) else F.Permute.apply(self, order=order)

    def transpose(self, dim0=-2, dim1=-1) -> Tensor:
        order = list(range(self.ndim))
        a, b = _normalize_axis(dim0, self.ndim), _normalize_axis(dim1, self.ndim)
        order[a], order[b] = order[b], order[a]
        return self.permute(order)

    @property
    def T(self) -> Tensor:
        return self.permute(tuple(reversed(range(self.ndim))))

    def expand(self, *shape_args, shape=None) -> Tensor:
        shape = _shape_arg(shape_args) if shape is None else _shape_arg((shape,))
        if len(shape) < self.ndim:
            raise ValueError(f"cannot expand shape {self.shape} to {shape}: fewer dimensions")
        x = self.reshape((1,) * (len(shape) - self.ndim) + self.shape) if len(shape) > self.ndim else self
        shape = tuple(old if new == -1 else new for old, new in zip(x.shape, shape))
        for old, new in zip(x.shape, shape):
            if old != new and old != 1:
                raise ValueError(f"cannot expand shape {self.shape} to {shape}: "
                                 f"only dimensions of size 1 can grow")
        return x if shape == x.shape else F.Expand.apply(x, shape=shape)

    def flatten(self, start=0, end=-1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        start, end = _normalize_axis(start, self.ndim), _normalize_axis(end, self.ndim)
        return self.reshape(self.shape[:start] + (math.prod(self.shape[start:end + 1]),) + self.shape[end + 1:])

    @_accepts_dim
    def squeeze(self, axis=None) -> Tensor:
        if axis is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        axes = _normalize_axes(axis, self.ndim)
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if not (i in axes and n == 1)))

    @_accepts_dim
    def unsqueeze(self, axis) -> Tensor:
        axis = _normalize_axis(axis, self.ndim + 1)
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def pad(self, padding, value=0.0) -> Tensor:
        """padding: one (before, after) pair per dimension; None for a dimension leaves it alone,
        and a negative width crops instead (as PyTorch's F.pad)."""
        try:
            padding = tuple((0, 0) if p is None else (int(p[0]), int(p[1])) for p in padding)
            wrong_pairs = len(padding) != self.ndim
        except (TypeError, ValueError, IndexError):
            wrong_pairs = True
        if wrong_pairs or any(-a - b > n for (a, b), n in zip(padding, self.shape)):
            raise ValueError(f"pad needs one (before, after) pair for each of the {self.ndim} dimensions of "
                             f"{self.shape} (negative widths crop, at most the whole axis), got {padding}")
        if any(a < 0 or b < 0 for a, b in padding):
            self = self.shrink(tuple((max(0, -a), n - max(0, -b)) for (a, b), n in zip(padding, self.shape)))
            padding = tuple((max(0, a), max(0, b)) for a, b in padding)
        if all(p == (0, 0) for p in padding):
            return self
        out = F.Pad.apply(self, padding=padding)
        if value == 0:
            return out
        inside = F.Pad.apply(Tensor.full(self.shape, True, dtype=dtypes.bool_, device=self.device), padding=padding)
        return inside.where(out, value)

    def pad2d(self, padding, value=0.0) -> Tensor:
        """Pad the last len(padding)/2 dims, PyTorch's F.pad order: (left, right, top, bottom, ...)."""
        padding = tuple(int(p) for p in padding)
        if len(padding) % 2 or len(padding) // 2 > self.ndim:
            raise ValueError(f"pad2d needs (before, after) pairs for at most {self.ndim} dims, got {padding}")
        pairs = [(padding[2 * k], padding[2 * k + 1]) for k in reversed(range(len(padding) // 2))]
        return self.pad([None] * (self.ndim - len(pairs)) + pairs, value)

    def split(self, sizes, dim: int = 0) -> List[Tensor]:
        """Pieces along `dim`: of `sizes` each (the last may be shorter), or of the listed sizes."""
        dim = _normalize_axis(dim, self.ndim)
        n = self.shape[dim]
        if isinstance(sizes, (int, np.integer)):
            if sizes <= 0:
                raise ValueError(f"split size must be positive, got {sizes}")
            sizes = [min(int(sizes), n - start) for start in range(0, n, int(sizes))] or [0]
        if sum(sizes) != n:
            raise ValueError(f"split sizes {list(sizes)} do not add up to {n}, the length of dim {dim}")
        pieces, start = [], 0
        for size in sizes:
            pieces.append(self.shrink(tuple((start, start + size) if a == dim else (0, m)
                                            for a, m in enumerate(self.shape))))
            start += size
        return pieces

    def chunk(self, chunks: int, dim: int = 0) -> List[Tensor]:
        """`chunks` pieces along `dim` of ceil(n / chunks) each, as PyTorch (fewer when it divides unevenly)."""
        if chunks <= 0:
            raise ValueError(f"chunk needs chunks >= 1, got {chunks}")
        n = self.shape[_normalize_axis(dim, self.ndim)]
        return self.split(max(1, -(-n // chunks)), dim)

    def shrink(self, bounds) -> Tensor:
        """bounds: one (start, end) pair per dimension."""
        bounds = tuple((int(a), int(b)) for a, b in bounds)
        if bounds == tuple((0, n) for n in self.shape):
            return self
        return F.Shrink.apply(self, bounds=bounds)

    @_accepts_dim
    def flip(self, axis) -> Tensor:
        """Reverse the order along `axis` (an int or several): a view with negative strides."""
        axes = _normalize_axes(axis, self.ndim)
        return F.Stride.apply(self, steps=tuple(-1 if i in axes else 1 for i in range(self.ndim))) if axes else self

    def repeat(self, *repeats) -> Tensor:
        """Tile the tensor repeats[k] times along axis k (PyTorch's repeat, numpy's tile):
        (a, b).repeat(2, 3) = reshape (1, a, 1, b) -> expand (2, a, 3, b) -> reshape (2a, 3b)."""
        repeats = _shape_arg(repeats)
        if len(repeats) < self.ndim:
            raise ValueError(f"repeat needs at least {self.ndim} counts for shape {self.shape}, got {repeats}")
        base = self.reshape((1,) * (len(repeats) - self.ndim) + self.shape)
        interleaved = [n for size in base.shape for n in (1, size)]
        expanded = [n for r, size in zip(repeats, base.shape) for n in (r, size)]
        return base.reshape(interleaved).expand(expanded).reshape(tuple(r * n for r, n in zip(repeats, base.shape)))

    def _diagonal_mask(self, k: int, upper: bool) -> Tensor:
        rows, cols = self.shape[-2:]
        r = Tensor.arange(rows, device=self.device).reshape(rows, 1)
        c = Tensor.arange(cols, device=self.device).reshape(1, cols)
        return (c - r >= k) if upper else (c - r <= k)

    def tril(self, diagonal: int = 0) -> Tensor:
        """Keep the elements on and below the k-th diagonal of the last two axes, zero the rest."""
        return self._diagonal_mask(diagonal, upper=False).where(self, self.zeros_like())

    def triu(self, diagonal: int = 0) -> Tensor:
        return self._diagonal_mask(diagonal, upper=True).where(self, self.zeros_like())

    @_accepts_dim
    def cumsum(self, axis=0) -> Tensor:
        """Running sum along `axis`, as one matrix product with an upper-triangular matrix of ones
        (x @ U, U[i, j] = 1 for i <= j): BLAS does the work, and the gradient is the product with U^T."""
        if self.ndim == 0:
            return self
        axis = _normalize_axis(axis, self.ndim)
        n = self.shape[axis]
        upper = Tensor.ones(n, n, dtype=self._as_float().dtype, device=self.device).triu()
        out = self.transpose(axis, -1)._as_float() @ upper
        out = out.transpose(axis, -1)
        return out if dtypes.is_float(self.dtype) else out.round().cast(self.dtype if self.dtype != dtypes.bool_
                                                                          else dtypes.default_int)

    # ---- indexing ----------------------------------------------------------------------
    def __getitem__(self, index) -> Tensor:
        """numpy's indexing: ints, slices (any step, negative too), None, Ellipsis, and int tensors
        (or lists) on one or more axes.  The basic part is a view (shrink, stride, reshape); the
        tensor indices then pick elements with one take() over the indexed axes flattened."""
        if not isinstance(index, tuple):
            index = (index,)
        index = tuple(Tensor(i, device=self.device) if isinstance(i, (list, np.ndarray)) else i for i in index)
        if sum(i is Ellipsis for i in index) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        used = sum(1 for i in index if i is not None and i is not Ellipsis)
        if used > self.ndim:
            raise IndexError(f"too many indices ({used}) for a tensor of shape {self.shape}")
        if any(i is Ellipsis for i in index):
            at = next(k for k, i in enumerate(index) if i is Ellipsis)
            index = index[:at] + (slice(None),) * (self.ndim - used) + index[at + 1:]
        else:
            index = index + (slice(None),) * (self.ndim - used)
        bounds, steps, final_shape, picks, dim = [], [], [], [], 0
        advanced = any(isinstance(i, Tensor) for i in index)
        for item in index:
            if item is None:
                final_shape.append(1)
                continue
            n = self.shape[dim]
            if isinstance(item, (bool, np.bool_)):
                raise IndexError("a bool index is not supported; use .where() or an int tensor of positions")
            if isinstance(item, (int, np.integer)):
                if not -n <= item < n:
                    raise IndexError(f"index {item} is out of range for axis {dim} with size {n}")
                item = int(item) % n
                if not advanced:
                    bounds.append((item, item + 1)); steps.append(1)
                else:                                   # beside tensor indices an int is one too (numpy)
                    picks.append((len(final_shape), Tensor(item, device=self.device), n))
                    bounds.append((0, n)); steps.append(1)
                    final_shape.append(n)
            elif isinstance(item, slice):
                picked = range(*item.indices(n))
                if not picked:
                    bounds.append((0, 0)); steps.append(1)
                elif picked.step > 0:
                    bounds.append((picked[0], picked[-1] + 1)); steps.append(picked.step)
                else:                                   # walk back from picked[0] down to picked[-1]
                    bounds.append((picked[-1], picked[0] + 1)); steps.append(picked.step)
                final_shape.append(len(picked))
            elif isinstance(item, Tensor):
                if item.dtype.kind not in "iu":
                    raise TypeError(f"indexing needs an integer index tensor, got dtype {item.dtype} "
                                    f"(a bool mask would give a data-dependent shape: use .where())")
                picks.append((len(final_shape), item, n))
                bounds.append((0, n)); steps.append(1)
                final_shape.append(n)
            else:
                raise IndexError(f"unsupported index {item!r} of type {type(item).__name__}")
            dim += 1
        out = self.shrink(bounds)
        if any(s != 1 for s in steps):
            out = F.Stride.apply(out, steps=tuple(steps))
        out = out.reshape(tuple(final_shape))
        return out._take_at(picks) if picks else out

    def _take_at(self, picks) -> Tensor:
        """Advanced indexing: picks = [(axis, int tensor, size)].  The indexed axes move to the
        front and flatten into one, the tensors combine into one flat index (row-major), and one
        take() reads it; as in numpy, the result's indexed dims stay in place when the indexed
        axes are adjacent, and come first otherwise."""
        axes = [axis for axis, _, _ in picks]
        shape = functools.reduce(broadcast_shape, [t.shape for _, t, _ in picks])
        flat, scale = None, 1
        for _, t, n in reversed(picks):
            t = (t < 0).where(t + n, t)._broadcast_to(shape)     # negative indices count from the end
            flat = t * scale if flat is None else flat + t * scale
            scale *= n
        rest = [a for a in range(self.ndim) if a not in axes]
        front = self.permute(axes + rest).reshape((scale,) + tuple(self.shape[a] for a in rest))
        out = front.take(flat, axis=0)                             # shape + rest
        if axes == list(range(axes[0], axes[0] + len(axes))) and axes[0] > 0:
            k, at = len(shape), axes[0]
            order = list(range(k, k + at)) + list(range(k)) + list(range(k + at, out.ndim))
            out = out.permute(order)
        return out

    def take(self, index, axis: int = 0) -> Tensor:
        """Slices of self along `axis` picked by an int tensor, numpy's take: an embedding lookup
        when axis=0.  out.shape = self.shape[:axis] + index.shape + self.shape[axis+1:]."""
        if not isinstance(index, Tensor):
            index = Tensor(index, device=self.device)
        if index.dtype.kind not in "iu":
            raise TypeError(f"take needs an integer index tensor, got dtype {index.dtype}")
        if index.device != self.device:
            raise RuntimeError(f"the index is on {index.device} and the tensor it picks from on {self.device}; "
                               f"move one with .to()")
        axis = _normalize_axis(axis, self.ndim)
        if axis != 0:
            order = (axis,) + tuple(i for i in range(self.ndim) if i != axis)
            picked = self.permute(order).take(index, 0)                   # index.shape + rest
            k = index.ndim
            back = tuple(range(k, k + axis)) + tuple(range(k)) + tuple(range(k + axis, picked.ndim))
            return picked.permute(back)
        table = self.reshape(self.shape[0], -1) if self.ndim != 2 else self
        out = F.Gather.apply(table, index)
        return out.reshape(index.shape + self.shape[1:])

    def gather(self, dim, index) -> Tensor:
        """PyTorch's gather: out[i][j][k] = self[i][index[i][j][k]][k] for dim=1.  index has
        self's number of dims and fits inside it off `dim`; out has index's shape.  Built as a
        one-hot comparison summed over `dim`, so the gradient is free.  For rows of a table
        by index (an embedding lookup) use take()."""
        if isinstance(dim, Tensor) and not isinstance(index, Tensor):   # tinygrad's old order (index, dim)
            dim, index = index, dim
        if not isinstance(index, Tensor):
            index = Tensor(index, device=self.device)
        if index.dtype.kind not in "iu":
            raise TypeError(f"gather needs an integer index tensor, got dtype {index.dtype}")
        dim = _normalize_axis(dim, self.ndim)
        if index.ndim != self.ndim or any(i > n for a, (i, n) in enumerate(zip(index.shape, self.shape)) if a != dim):
            raise ValueError(f"gather along dim {dim}: index of shape {index.shape} must have the {self.ndim} dims "
                             f"of {self.shape} and fit inside it off dim {dim}")
        n, m = self.shape[dim], index.shape[dim]
        source = self.shrink(tuple((0, n) if a == dim else (0, i) for a, i in enumerate(index.shape)))
        source = source.unsqueeze(dim).expand(index.shape[:dim] + (m, n) + index.shape[dim + 1:])
        source = source.permute([a for a in range(source.ndim) if a != dim + 1] + [dim + 1])  # index.shape + (n,)
        one_hot = index.unsqueeze(-1) == Tensor.arange(n, device=self.device)                 # index.shape + (n,)
        return one_hot.where(source, 0).sum(-1)

    # ---- combining ---------------------------------------------------------------------
    def cat(self, *others, axis=0, dim=None) -> Tensor:
        """Join tensors along an existing axis: Tensor.cat(a, b), Tensor.cat([a, b], dim=1) or
        a.cat(b, c).  Each piece is padded with zeros to the full length and the pieces are
        added: one fused kernel, and each piece's gradient is a shrink of the output's."""
        tensors, axis = _joined(self, others, axis, dim)
        if not tensors:
            raise ValueError("cat needs at least one tensor")
        if not all(isinstance(t, Tensor) for t in tensors):
            raise TypeError(f"cat joins Tensors, got {[type(t).__name__ for t in tensors]}")
        first = tensors[0]
        if any(t.ndim == 0 for t in tensors):
            raise ValueError("cat cannot join 0-d tensors (they have no axis); use Tensor.stack")
        axis = _normalize_axis(axis, first.ndim)
        for t in tensors[1:]:
            if t.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis):
                raise ValueError(f"cat along axis {axis}: shapes {first.shape} and {t.shape} differ off that axis")
        total = sum(t.shape[axis] for t in tensors)
        pieces, offset = [], 0
        for t in tensors:
            pad = [(0, 0)] * first.ndim
            pad[axis] = (offset, total - offset - t.shape[axis])
            pieces.append(t.pad(pad))
            offset += t.shape[axis]
        while len(pieces) > 1:        # added pairwise: the sum is log2(n) deep, so a cat of many is one kernel
            pieces = [a + b for a, b in zip(pieces[::2], pieces[1::2])] + pieces[len(pieces) - len(pieces) % 2:]
        return pieces[0]

    def stack(self, *others, axis=0, dim=None) -> Tensor:
        """Join equal-shaped tensors along a new axis: Tensor.stack([a, b], dim=0) or a.stack(b)."""
        tensors, axis = _joined(self, others, axis, dim)
        if not tensors:
            raise ValueError("stack needs at least one tensor")
        for t in tensors[1:]:
            if t.shape != tensors[0].shape:
                raise ValueError(f"stack needs equal shapes, got {tensors[0].shape} and {t.shape}")
        axis = _normalize_axis(axis, tensors[0].ndim + 1)
        return Tensor.cat(*[t.unsqueeze(axis) for t in tensors], axis=axis)

    # ---- linear algebra ------------------------------------------------------------------
    def matmul(self, other) -> Tensor:
        """Matrix product with numpy's rules: 1-D operands are vectors, batch dims broadcast."""
        if not isinstance(other, Tensor):
            other = Tensor(other, dtype=self.dtype, device=self.device)
        if self.ndim == 0 or other.ndim == 0:
            raise ValueError(f"matmul needs at least 1-D operands, got shapes {self.shape} and {other.shape}")
        a = self.unsqueeze(0) if self.ndim == 1 else self
        b = other.unsqueeze(-1) if other.ndim == 1 else other
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul shapes {self.shape} and {other.shape} do not fit: "
                             f"inner dimensions {a.shape[-1]} and {b.shape[-2]} differ")
        dtype = dtypes.promote(a.dtype, b.dtype)
        a, b = a.cast(dtype), b.cast(dtype)
        if not dtypes.is_float(dtype):
            a, b = a.float(), b.float()
        if b.ndim == 2 and a.ndim > 2 and a.lazydata.view.reshape((math.prod(a.shape[:-1]), a.shape[-1])):
            # (..., M, K) @ (K, N): fold the batch into M, so one large matrix product runs
            # (and the weight's gradient is one product too, not a batch of them summed)
            out = F.Matmul.apply(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + (b.shape[-1],))
            return out.squeeze(-1) if other.ndim == 1 else out
        batch = broadcast_shape(a.shape[:-2], b.shape[:-2])
        a = a._broadcast_to(batch + a.shape[-2:])
        b = b._broadcast_to(batch + b.shape[-2:])
        out = F.Matmul.apply(a, b)
        if self.ndim == 1:
            out = out.squeeze(-2)
        if other.ndim == 1:
            out = out.squeeze(-1)
        return out

    def dot(self, other) -> Tensor:
        """numpy's dot for 1-D and 2-D operands: the same as matmul there."""
        return self.matmul(other)

    def linear(self, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        """x @ W^T + b, with W shaped (out, in) as in PyTorch."""
        out = self @ weight.T
        return out + bias if bias is not None else out

    # ---- neural-network helpers --------------------------------------------------------------
    def masked_fill(self, mask: Tensor, value) -> Tensor:
        return mask.where(value, self)

    def dropout(self, p: float = 0.5, training: bool = True) -> Tensor:
        """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        if not training or p == 0:
            return self
        keep = Tensor.rand(*self.shape, dtype=self.dtype, device=self.device) >= p
        return keep.where(self * (1 / (1 - p)), 0.0)

    def layernorm(self, axis=-1, eps: float = 1e-5, weight: Optional[Tensor] = None,
                  bias: Optional[Tensor] = None) -> Tensor:
        """(x - mean) / sqrt(var + eps) over `axis`, with the biased variance (divide by N), then
        * weight + bias when given.  Over the last axis (a transformer's) it is F.LayerNorm, whose
        backward is written out and keeps only x and two numbers per row; over another axis it is
        composed, and on large tensors recomputed in backward (F.Recompute)."""
        affine = [t for t in (weight, bias) if t is not None]
        if self.ndim and axis in (-1, self.ndim - 1) and dtypes.is_float(self.dtype) and \
                all(t.shape == self.shape[-1:] and t.dtype == self.dtype for t in affine):
            return F.LayerNorm.apply(self, *affine, eps=eps, has_weight=weight is not None, has_bias=bias is not None)

        def layernorm(x, *affine):
            centered = x - x.mean(axis, keepdim=True)
            var = centered.square().mean(axis, keepdim=True)
            out = centered * (var + eps).rsqrt()
            out = out * affine[0] if weight is not None else out
            return out + affine[-1] if bias is not None else out
        return self._recomputed_if_large(layernorm, *affine)

    def one_hot(self, num_classes: int) -> Tensor:
        if self.dtype.kind not in "iu":
            raise TypeError(f"one_hot needs an integer tensor, got {self.dtype}")
        classes = Tensor.arange(num_classes, device=self.device, dtype=self.dtype)
        return (self.unsqueeze(-1) == classes).cast(dtypes.default_float)

    def cross_entropy(self, targets: Tensor, ignore_index: int = -1, reduction: str = "mean") -> Tensor:
        """Mean of -log softmax(logits)[target] over the rows whose target is not ignore_index.
        logits (N, V), targets (N,) of ints in [0, V).

        Nothing here reads the device: the count of valid rows stays a device value (so a
        jit replay with another count is right), and a target outside [0, V) turns its row's
        loss into NaN (never a silent 0).  Under detect_anomaly(), where reads are allowed,
        such a target raises an IndexError naming it."""
        if not isinstance(targets, Tensor):
            targets = Tensor(targets, device=self.device)
        if self.ndim != 2 or targets.ndim != 1 or targets.shape[0] != self.shape[0]:
            raise ValueError(f"cross_entropy needs logits (N, V) and targets (N,), got {self.shape} and {targets.shape}")
        if targets.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy targets must be integers, got {targets.dtype}")
        from .debug import anomaly_enabled
        num_classes = self.shape[1]
        if anomaly_enabled():
            values = targets.numpy()
            bad = values[(values != ignore_index) & ((values < 0) | (values >= num_classes))]
            if bad.size:
                raise IndexError(f"target {bad[0]} is out of range for {num_classes} classes")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        classes = Tensor.arange(num_classes, device=self.device, dtype=targets.dtype)
        return F.CrossEntropy.apply(self._as_float(), targets, classes, ignore_index=ignore_index, reduction=reduction)

    def binary_crossentropy(self, targets: Tensor) -> Tensor:
        """Mean of -(y log p + (1 - y) log(1 - p)) for probabilities p = self; logs are clamped at
        -100 as PyTorch does, so p = 0 or 1 gives a large loss, not inf."""
        targets = targets if isinstance(targets, Tensor) else Tensor(targets, dtype=self.dtype, device=self.device)
        log_p, log_not_p = self.log().maximum(-100), (1 - self).log().maximum(-100)
        return -(targets * log_p + (1 - targets) * log_not_p).mean()

    def binary_crossentropy_logits(self, targets: Tensor) -> Tensor:
        """binary_crossentropy(sigmoid(self)) in the stable form softplus(x) - x y: no log of 0."""
        targets = targets if isinstance(targets, Tensor) else Tensor(targets, dtype=self.dtype, device=self.device)
        return (self.softplus() - self * targets).mean()

    def attention_weights(self, key: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                          scale: Optional[float] = None) -> Tensor:
        """softmax(Q K^T * scale + mask) with self as Q (..., T_q, d) and key (..., T_k, d): row i says how
        much query i reads from each key.  attn_mask: bool (True = may attend, PyTorch's meaning) or
        float (added to the scores); is_causal: query i sees keys 0..i.  scale defaults to 1/sqrt(d)."""
        scores = (self @ key.transpose(-2, -1)) * (scale if scale is not None else 1 / math.sqrt(self.shape[-1]))
        if is_causal:
            if attn_mask is not None:
                raise ValueError("attention takes attn_mask or is_causal, not both")
            attn_mask = Tensor.ones(self.shape[-2], key.shape[-2], dtype=dtypes.bool_, device=self.device).tril()
        if attn_mask is not None:
            scores = attn_mask.where(scores, float("-inf")) if attn_mask.dtype == dtypes.bool_ else scores + attn_mask
        return scores.softmax(-1)

    def scaled_dot_product_attention(self, key: Tensor, value: Tensor, attn_mask: Optional[Tensor] = None,
                                     is_causal: bool = False, dropout_p: float = 0.0, scale: Optional[float] = None,
                                     training: bool = True) -> Tensor:
        """softmax(Q K^T / sqrt(d) + mask) V (PyTorch's F.scaled_dot_product_attention), value (..., T_k, d_v),
        with dropout on the weights while training.  The one place attention is computed (the GPT
        calls it), so a fused kernel can later replace it for every caller."""
        weights = self.attention_weights(key, attn_mask, is_causal, scale)
        return weights.dropout(dropout_p, training) @ value

    # ---- convolution and pooling: sliding windows are views, the arithmetic one matmul ---------
    def _windows(self, kernel: Tuple[int, ...], stride: Tuple[int, ...], dilation: Tuple[int, ...]) -> Tensor:
        """(N, C, *spatial) -> (N, C, prod(kernel), *out_spatial): for each kernel tap (i, j, ...),
        the strided view x[:, :, i*d :: s, j*d :: s, ...] of the (already padded) input, stacked.
        This is im2col built from movement ops only; the stack is one fused kernel."""
        sizes = []
        for n, k, s, d in zip(self.shape[2:], kernel, stride, dilation):
            sizes.append((n - d * (k - 1) - 1) // s + 1)
            if sizes[-1] <= 0:
                raise ValueError(f"a window of {kernel} (dilation {dilation}) does not fit an input of "
                                 f"{self.shape[2:]} (after padding)")
        taps = []
        for tap in itertools.product(*(range(k) for k in kernel)):
            index = tuple(slice(t * d, t * d + s * (m - 1) + 1, s)
                          for t, d, s, m in zip(tap, dilation, stride, sizes))
            taps.append(self[(slice(None), slice(None)) + index])
        return Tensor.stack(taps, axis=2)

    def _pad_spatial(self, padding, value=0.0) -> Tensor:
        """Pad (or, negative, crop) the spatial dims of (N, C, *spatial): padding is one int for
        all, one int per dim, or PyTorch's F.pad order (last dim first: left, right, top, bottom, ...)."""
        dims = self.ndim - 2
        if isinstance(padding, (int, np.integer)):
            pairs = [(int(padding), int(padding))] * dims
        elif len(padding) == dims:
            pairs = [(int(p), int(p)) for p in padding]
        elif len(padding) == 2 * dims:
            pairs = [(int(padding[2 * k]), int(padding[2 * k + 1])) for k in reversed(range(dims))]
        else:
            raise ValueError(f"padding {padding} fits neither {dims} spatial dims nor their {2 * dims} edges")
        return self.pad(((0, 0), (0, 0)) + tuple(pairs), value)

    def conv2d(self, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0, dilation=1,
               groups: int = 1) -> Tensor:
        """Convolution (cross-correlation, as PyTorch) over any number of spatial dims, despite the
        name (conv1d, conv3d are the same call): input (N, C, *spatial), weight (O, C/groups, *kernel)
        -> (N, O, *out_spatial).  im2col (windows as views), then one matrix product per group."""
        if self.ndim < 3 or weight.ndim != self.ndim:
            raise ValueError(f"conv needs input (N, C, *spatial) and weight (O, C/groups, *kernel) with as many dims, "
                             f"got {self.shape} and {weight.shape}")
        n, c = self.shape[:2]
        out_channels, per_group, *kernel = weight.shape
        dims = len(kernel)
        if c % groups or out_channels % groups or per_group * groups != c:
            raise ValueError(f"conv: input has {c} channels, weight expects {per_group} per group x {groups} groups")
        cols = self._pad_spatial(padding)._windows(tuple(kernel), _tuple(stride, dims), _tuple(dilation, dims))
        out_spatial = cols.shape[3:]                                     # cols: (N, C, prod(kernel), *out_spatial)
        cols = cols.reshape(n, groups, per_group * math.prod(kernel), math.prod(out_spatial))     # (N, G, C/G*K, L)
        w = weight.reshape(groups, out_channels // groups, per_group * math.prod(kernel))         # (G, O/G, C/G*K)
        out = (w @ cols).reshape((n, out_channels) + out_spatial)                                 # (N, G, O/G, L)
        return out + bias.reshape((1, -1) + (1,) * dims) if bias is not None else out

    def conv_transpose2d(self, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0,
                         output_padding=0, dilation=1, groups: int = 1) -> Tensor:
        """The gradient of conv2d with respect to its input, as a layer, over any number of spatial
        dims: input (N, C, *spatial), weight (C, O/groups, *kernel).  Spread the input out by the
        stride (zeros between pixels), pad by dilation*(k-1) - padding, and convolve with the kernel
        flipped and its channel axes swapped."""
        if self.ndim < 3 or weight.ndim != self.ndim:
            raise ValueError(f"conv_transpose needs input (N, C, *spatial) and weight (C, O/groups, *kernel) with as "
                             f"many dims, got {self.shape} and {weight.shape}")
        n, c, *spatial = self.shape
        in_channels, per_group, *kernel = weight.shape
        dims = len(kernel)
        strides, pads, extras, dilations = (_tuple(v, dims) for v in (stride, padding, output_padding, dilation))
        if in_channels != c or c % groups:
            raise ValueError(f"conv_transpose: input has {c} channels, weight {weight.shape} expects {in_channels}")
        x = self
        if any(s > 1 for s in strides):            # each dim (n,) -> (n, 1) -> pad to (n, s) -> (n*s,) -> crop
            x = x.reshape((n, c) + tuple(v for m in spatial for v in (m, 1)))
            x = x.pad(((0, 0), (0, 0)) + tuple(p for s in strides for p in ((0, 0), (0, s - 1))))
            x = x.reshape((n, c) + tuple(m * s for m, s in zip(spatial, strides)))
            x = x[(slice(None), slice(None)) + tuple(slice(0, (m - 1) * s + 1) for m, s in zip(spatial, strides))]
        edges = tuple((d * (k - 1) - p, d * (k - 1) - p + e) for k, d, p, e in zip(kernel, dilations, pads, extras))
        x = x.pad(((0, 0), (0, 0)) + edges)
        w = weight.reshape((groups, c // groups, per_group) + tuple(kernel)).transpose(1, 2)
        w = w.reshape((groups * per_group, c // groups) + tuple(kernel)).flip(tuple(range(2, 2 + dims)))
        return x.conv2d(w, bias, stride=1, padding=0, dilation=dilations, groups=groups)

    def max_pool2d(self, kernel_size=2, stride=None, padding=0, dilation=1) -> Tensor:
        """The largest value in each window (N, C, H, W) -> (N, C, Ho, Wo); stride defaults to the
        kernel size; padding counts as -inf, so it never wins."""
        kernel = _tuple(kernel_size, 2)
        windows = self._pad_spatial(padding, float("-inf"))._windows(kernel, _tuple(stride or kernel_size, 2),
                                                                     _tuple(dilation, 2))
        return windows.max(axis=2)

    def avg_pool2d(self, kernel_size=2, stride=None, padding=0) -> Tensor:
        """The mean of each window; padded zeros count (PyTorch's count_include_pad=True)."""
        kernel = _tuple(kernel_size, 2)
        return self._pad_spatial(padding)._windows(kernel, _tuple(stride or kernel_size, 2), (1, 1)).mean(axis=2)

    def sequential(self, layers) -> Tensor:
        x = self
        for layer in layers:
            x = layer(x)
        return x


def _joined(first, others, axis, dim):
    """cat's and stack's arguments, however they were spelled: Tensor.cat(a, b), a.cat(b, c),
    Tensor.cat([a, b], 1), Tensor.cat([a, b], dim=1) -> ([a, b, ...], axis)."""
    tensors = list(first) if isinstance(first, (list, tuple)) else [first]
    others = list(others)
    if others and isinstance(others[-1], (int, np.integer)) and not isinstance(others[-1], bool):
        axis = others.pop()
    for o in others:
        tensors.extend(o if isinstance(o, (list, tuple)) else [o])
    return tensors, (axis if dim is None else dim)


def _tuple(value, dims: int) -> Tuple[int, ...]:
    """conv and pooling sizes: 3 means (3, 3) in 2-D."""
    return (int(value),) * dims if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)


class _FreedGraph:
    """What a non-leaf tensor's _ctx becomes after backward() has used it: no parents, and a
    clear error (not a silent no-op) for a second backward through it."""
    parents = ()
    scope = None

    def backward(self, grad):
        raise RuntimeError("backward() through the same graph a second time: its saved values were freed by "
                           "the first backward(); pass retain_graph=True to the first call, or redo the forward")


_FREED_GRAPH = _FreedGraph()


def broadcast_shape(a: Tuple[int, ...], b: Tuple[int, ...]) -> Tuple[int, ...]:
    """numpy's broadcasting rule, with an error that shows both shapes."""
    out = []
    for x, y in zip(((1,) * (len(b) - len(a))) + tuple(a), ((1,) * (len(a) - len(b))) + tuple(b)):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"shapes {tuple(a)} and {tuple(b)} cannot be broadcast together")
        out.append(max(x, y) if x != 0 and y != 0 else 0)
    return tuple(out)


def _to_numpy(data, dtype) -> np.ndarray:
    if isinstance(data, np.ndarray):
        array = data
    else:
        try:
            array = np.array(data)
        except ValueError as e:
            raise ValueError(f"cannot make a tensor from {type(data).__name__}: {e}") from None
        if dtype is None and array.dtype == np.float64:
            array = array.astype(dtypes.default_float)
    if array.dtype.kind in "OSUV":
        raise TypeError(f"cannot make a tensor from data of numpy dtype {array.dtype}")
    if dtype is None:
        if array.dtype.kind == "f" and array.dtype not in dtypes.SUPPORTED:
            dtype = dtypes.float32
        elif array.dtype.kind in "iu" and array.dtype not in dtypes.SUPPORTED:
            dtype = dtypes.int64
    return array.astype(dtype) if dtype is not None and array.dtype != dtype else array


@contextlib.contextmanager
def enable_grad():
    """Ops inside this block record a graph even inside no_grad (F.Recompute's backward)."""
    previous = Tensor.grad_enabled
    Tensor.grad_enabled = True
    try:
        yield
    finally:
        Tensor.grad_enabled = previous


@contextlib.contextmanager
def no_grad():
    """Ops inside this block record no graph: for evaluation and the optimizer's update."""
    previous = Tensor.grad_enabled
    Tensor.grad_enabled = False
    try:
        yield
    finally:
        Tensor.grad_enabled = previous


def realize(*tensors: Tensor) -> None:
    """Compute several tensors in one schedule (shared work is done once)."""
    _realize_buffers(*[t.lazydata for t in tensors])
