"""Tensor: the user-facing API.

A Tensor wraps a LazyBuffer (its data, not yet computed) and, when it was made by a
differentiable op, the Function that made it (`_ctx`), which is all backward() needs.

Sections: creation · reading values · autograd · broadcasting and dtypes · unary ·
binary · reduce · movement · indexing · linear algebra · neural-network helpers.
Only the primitives in function.py touch LazyBuffers; everything here composes them.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from . import dtypes
from . import function as F
from .backends import canonical_device
from .lazy import LazyBuffer
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

    def zeros_like(self, **kw) -> Tensor:
        return Tensor.full(self.shape, 0, dtype=kw.pop("dtype", self.dtype), device=kw.pop("device", self.device), **kw)

    def ones_like(self, **kw) -> Tensor:
        return Tensor.full(self.shape, 1, dtype=kw.pop("dtype", self.dtype), device=kw.pop("device", self.device), **kw)

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
                             canonical_device(device), Tensor._next_seed() + (0,))
        return Tensor(lb, requires_grad=requires_grad)

    @staticmethod
    def randn(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
        """Standard normal."""
        lb = LazyBuffer.rand(_shape_arg(shape), dtypes.as_dtype(dtype) or dtypes.default_float,
                             canonical_device(device), Tensor._next_seed() + (1,))
        return Tensor(lb, requires_grad=requires_grad)

    @staticmethod
    def uniform(*shape, low=0.0, high=1.0, **kw) -> Tensor:
        return (Tensor.rand(*shape, **kw) * (high - low) + low).detach()

    @staticmethod
    def normal(*shape, mean=0.0, std=1.0, **kw) -> Tensor:
        return (Tensor.randn(*shape, **kw) * std + mean).detach()

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
            if kernel.kind == "copy" or (kernel.kind == "rand" and kernel.ast.arg[2] == 1):
                lines.append("(no kernel: made on the host and copied in)\n")
            else:
                lines.append(render(kernel, [b.dtype for b in kernel.inputs], name=f"kernel{i}")[0])
        return "\n".join(lines)

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
    def backward(self, gradient: Optional[Tensor] = None) -> None:
        """Fill .grad of every tensor that requires it, by the chain rule from this one back.

        The graph is walked in reverse topological order with an explicit stack, so chains
        of any length work.  Gradients add up in .grad until zero_grad()."""
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
            parent_grads = node._ctx.backward(grad)
            if not isinstance(parent_grads, tuple):
                parent_grads = (parent_grads,)
            for parent, g in zip(node._ctx.parents, parent_grads):
                if g is None or not parent.requires_grad:
                    continue
                assert g.shape == parent.shape, f"{type(node._ctx).__name__} grad {g.shape} != {parent.shape}"
                grads[id(parent)] = g if id(parent) not in grads else grads[id(parent)].elementwise(F.BinaryOps.ADD, g)

    def _toposort(self, every_input: bool = False):
        """Tensors this one was made from, each after its inputs: those requiring a gradient
        (what backward needs), or with every_input all of them (what minigrad.viz draws)."""
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                for parent in node._ctx.parents:
                    if id(parent) not in seen and (every_input or parent.requires_grad):
                        stack.append((parent, False))
        return order

    # ---- broadcasting and dtypes --------------------------------------------------------
    def _const(self, value, dtype=None) -> Tensor:
        return Tensor(LazyBuffer.const(value, self.shape, dtype or self.dtype, self.device))

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

    def sigmoid(self):
        return (1 + (-self).exp()).reciprocal()

    def tanh(self):
        return 2 * (2 * self).sigmoid() - 1

    def abs(self):
        return self.relu() + (-self).relu()

    def square(self):
        return self * self

    def sign(self):
        return (self > 0).cast(self.dtype) - (self < 0).cast(self.dtype)

    def clip(self, min_=None, max_=None):
        out = self
        if min_ is not None:
            out = out.maximum(min_)
        if max_ is not None:
            out = out.minimum(max_)
        return out

    clamp = clip

    def gelu(self, approximate: str = "none"):
        """GELU(x) = x * Phi(x).  "none": Phi exactly, through erf; "tanh": GPT-2's approximation."""
        if approximate == "none":
            return 0.5 * self * (1 + (self * (1 / math.sqrt(2))).erf())
        if approximate == "tanh":
            return 0.5 * self * (1 + (math.sqrt(2 / math.pi) * (self + 0.044715 * self * self * self)).tanh())
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")

    def logical_not(self):
        return self == False  # noqa: E712  (elementwise)

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

    def sum(self, axis=None, keepdim=False):
        return self._reduce(F.Sum, axis, keepdim)

    def max(self, axis=None, keepdim=False):
        return self._reduce(F.Max, axis, keepdim)

    def min(self, axis=None, keepdim=False):
        return -((-self).max(axis, keepdim))

    def mean(self, axis=None, keepdim=False):
        count = self._count(axis)
        return self._as_float().sum(axis, keepdim) * (1.0 / count if count else float("nan"))  # empty: NaN, as numpy

    def var(self, axis=None, keepdim=False, correction=1):
        """Variance, dividing by N - correction (1: the unbiased estimate, as PyTorch's default)."""
        x = self._as_float()
        n = self._count(axis)
        centered = x - x.mean(axis, keepdim=True)
        return centered.square().sum(axis, keepdim) * (1.0 / max(0, n - correction) if n > correction else float("nan"))

    def std(self, axis=None, keepdim=False, correction=1):
        return self.var(axis, keepdim, correction).sqrt()

    def any(self, axis=None, keepdim=False):
        return self.bool().cast(dtypes.default_int).max(axis, keepdim).bool()

    def all(self, axis=None, keepdim=False):
        return self.bool().logical_not().any(axis, keepdim).logical_not()

    def logsumexp(self, axis=-1, keepdim=False):
        """log(sum(exp(x))), shifted by the max so large inputs do not overflow."""
        m = self.max(axis, keepdim=True).detach()
        out = (self - m).exp().sum(axis, keepdim=True).log() + m
        return out if keepdim else out.squeeze(axis)

    def softmax(self, axis=-1):
        """exp(x - max) / sum(exp(x - max)): subtracting the max keeps exp() from overflowing."""
        shifted = self - self.max(axis, keepdim=True).detach()
        e = shifted.exp()
        return e / e.sum(axis, keepdim=True)

    def log_softmax(self, axis=-1):
        shifted = self - self.max(axis, keepdim=True).detach()
        return shifted - shifted.exp().sum(axis, keepdim=True).log()

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

    def argmin(self, axis=None, keepdim=False):
        return (-self).argmax(axis, keepdim)

    # ---- movement (views: no copies) -----------------------------------------------------
    def reshape(self, *shape) -> Tensor:
        shape = _shape_arg(shape)
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

    def permute(self, *order) -> Tensor:
        order = _shape_arg(order)
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

    def expand(self, *shape) -> Tensor:
        shape = _shape_arg(shape)
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

    def squeeze(self, axis=None) -> Tensor:
        if axis is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        axes = _normalize_axes(axis, self.ndim)
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if not (i in axes and n == 1)))

    def unsqueeze(self, axis) -> Tensor:
        axis = _normalize_axis(axis, self.ndim + 1)
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def pad(self, padding, value=0.0) -> Tensor:
        """padding: one (before, after) pair per dimension."""
        padding = tuple((int(a), int(b)) for a, b in padding)
        if len(padding) != self.ndim or any(a < 0 or b < 0 for a, b in padding):
            raise ValueError(f"pad needs one non-negative (before, after) pair for each of the {self.ndim} "
                             f"dimensions of {self.shape}, got {padding}")
        if all(p == (0, 0) for p in padding):
            return self
        out = F.Pad.apply(self, padding=padding)
        if value == 0:
            return out
        inside = F.Pad.apply(Tensor.full(self.shape, True, dtype=dtypes.bool_, device=self.device), padding=padding)
        return inside.where(out, value)

    def shrink(self, bounds) -> Tensor:
        """bounds: one (start, end) pair per dimension."""
        bounds = tuple((int(a), int(b)) for a, b in bounds)
        if bounds == tuple((0, n) for n in self.shape):
            return self
        return F.Shrink.apply(self, bounds=bounds)

    # ---- indexing ----------------------------------------------------------------------
    def __getitem__(self, index) -> Tensor:
        """Basic indexing: ints, slices (any step), None, Ellipsis; or an int Tensor for axis 0."""
        if isinstance(index, Tensor):
            return self.gather(index, axis=0)
        if not isinstance(index, tuple):
            index = (index,)
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
        bounds, steps, final_shape, dim = [], [], [], 0
        for item in index:
            if item is None:
                final_shape.append(1)
                continue
            n = self.shape[dim]
            if isinstance(item, (int, np.integer)):
                if not -n <= item < n:
                    raise IndexError(f"index {item} is out of range for axis {dim} with size {n}")
                item = int(item) % n
                bounds.append((item, item + 1)); steps.append(1)
            elif isinstance(item, slice):
                start, stop, step = item.indices(n)
                if step <= 0:
                    raise IndexError("slices with a negative step are not supported; use flip-free indexing")
                stop = max(stop, start)
                bounds.append((start, stop)); steps.append(step)
                final_shape.append(len(range(start, stop, step)))
            elif isinstance(item, Tensor):
                raise IndexError("a Tensor index is only supported alone (t[idx]); use .gather(idx, axis)")
            else:
                raise IndexError(f"unsupported index {item!r} of type {type(item).__name__}")
            dim += 1
        out = self.shrink(bounds)
        if any(s != 1 for s in steps):
            out = F.Stride.apply(out, steps=tuple(steps))
        return out.reshape(tuple(final_shape))

    def gather(self, index: Tensor, axis: int = 0) -> Tensor:
        """Slices of self along `axis` picked by an int tensor: an embedding lookup when axis=0
        (numpy's take: out.shape = self.shape[:axis] + index.shape + self.shape[axis+1:])."""
        if not isinstance(index, Tensor):
            index = Tensor(index, device=self.device)
        if index.dtype.kind not in "iu":
            raise TypeError(f"gather needs an integer index tensor, got dtype {index.dtype}")
        axis = _normalize_axis(axis, self.ndim)
        if axis != 0:
            order = (axis,) + tuple(i for i in range(self.ndim) if i != axis)
            picked = self.permute(order).gather(index, 0)                 # index.shape + rest
            k = index.ndim
            back = tuple(range(k, k + axis)) + tuple(range(k)) + tuple(range(k + axis, picked.ndim))
            return picked.permute(back)
        table = self.reshape(self.shape[0], -1) if self.ndim != 2 else self
        out = F.Gather.apply(table, index)
        return out.reshape(index.shape + self.shape[1:])

    # ---- combining ---------------------------------------------------------------------
    @staticmethod
    def cat(*tensors, axis=0) -> Tensor:
        if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
            tensors = tuple(tensors[0])
        if not tensors:
            raise ValueError("cat needs at least one tensor")
        first = tensors[0]
        axis = _normalize_axis(axis, first.ndim)
        for t in tensors[1:]:
            if t.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis):
                raise ValueError(f"cat along axis {axis}: shapes {first.shape} and {t.shape} differ off that axis")
        total = sum(t.shape[axis] for t in tensors)
        out, offset = None, 0
        for t in tensors:
            pad = [(0, 0)] * first.ndim
            pad[axis] = (offset, total - offset - t.shape[axis])
            piece = t.pad(pad)
            out = piece if out is None else out + piece
            offset += t.shape[axis]
        return out

    @staticmethod
    def stack(tensors: Sequence[Tensor], axis=0) -> Tensor:
        tensors = list(tensors)
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

    def layernorm(self, axis=-1, eps: float = 1e-5) -> Tensor:
        """(x - mean) / sqrt(var + eps) over `axis`, with the biased variance (divide by N)."""
        centered = self - self.mean(axis, keepdim=True)
        var = centered.square().mean(axis, keepdim=True)
        return centered * (var + eps).sqrt().reciprocal()

    def one_hot(self, num_classes: int) -> Tensor:
        if self.dtype.kind not in "iu":
            raise TypeError(f"one_hot needs an integer tensor, got {self.dtype}")
        classes = Tensor.arange(num_classes, device=self.device, dtype=self.dtype)
        return (self.unsqueeze(-1) == classes).cast(dtypes.default_float)

    def cross_entropy(self, targets: Tensor, ignore_index: int = -1, reduction: str = "mean") -> Tensor:
        """Mean of -log softmax(logits)[target] over the rows whose target is not ignore_index.
        logits (N, V), targets (N,) of ints in [0, V)."""
        if not isinstance(targets, Tensor):
            targets = Tensor(targets, device=self.device)
        if self.ndim != 2 or targets.ndim != 1 or targets.shape[0] != self.shape[0]:
            raise ValueError(f"cross_entropy needs logits (N, V) and targets (N,), got {self.shape} and {targets.shape}")
        if targets.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy targets must be integers, got {targets.dtype}")
        values = targets.numpy()
        valid_values = values[values != ignore_index]
        num_classes = self.shape[1]
        if valid_values.size and (valid_values.min() < 0 or valid_values.max() >= num_classes):
            bad = valid_values[(valid_values < 0) | (valid_values >= num_classes)][0]
            raise IndexError(f"target {bad} is out of range for {num_classes} classes")
        valid = targets != ignore_index
        safe_targets = valid.where(targets, 0)
        picked = (self.log_softmax(-1) * safe_targets.one_hot(num_classes).cast(self.dtype)).sum(-1)   # (N,)
        losses = valid.where(-picked, 0.0)
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum()
        if reduction != "mean":
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        return losses.sum() * (1.0 / max(1, int((values != ignore_index).sum())))

    def sequential(self, layers) -> Tensor:
        x = self
        for layer in layers:
            x = layer(x)
        return x


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
