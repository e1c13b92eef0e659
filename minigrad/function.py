"""The differentiable primitives.  Each one is a small class: `forward` builds the lazy
result from its inputs' LazyBuffers, `backward` turns the gradient of the output into
gradients of the inputs (the chain rule, written next to the forward it undoes).

Everything else a Tensor can do is composed from these in tensor.py, so it gets its
gradient for free.
"""
import math
from . import debug
from .lazy import LazyBuffer
from .ops import BinaryOps, MovementOps, ReduceOps, TernaryOps, UnaryOps


def const_like(lb: LazyBuffer, value) -> LazyBuffer:
    return LazyBuffer.const(value, lb.shape, lb.dtype, lb.device)


class Function:
    scope = None     # under minigrad.viz tracing: the dotted name of the module that made this op

    def __init__(self, *tensors):
        self.needs_input_grad = [t.requires_grad for t in tensors]
        self.requires_grad = any(self.needs_input_grad)
        self.parents = tensors if self.requires_grad else ()

    def forward(self, *args, **kwargs) -> LazyBuffer:
        raise NotImplementedError

    def backward(self, grad: LazyBuffer):
        raise NotImplementedError

    def name(self) -> str:
        """What a graph picture calls this op."""
        return type(self).__name__

    @classmethod
    def apply(cls, *tensors, **kwargs):
        from .tensor import Tensor
        ctx = cls(*tensors)
        result = ctx.forward(*[t.lazydata for t in tensors], **kwargs)
        if not Tensor.grad_enabled or result.dtype.kind != "f":   # comparisons, int casts: no gradient
            ctx.requires_grad, ctx.parents = False, ()
        out = Tensor(result, requires_grad=ctx.requires_grad)
        if ctx.requires_grad:
            out._ctx = ctx
            if debug.tracing():                         # minigrad.viz: which module made this op
                ctx.scope = debug.current_scope()
        return out


# ---- unary ---------------------------------------------------------------------------
class Neg(Function):
    def forward(self, x):
        return x.elementwise(UnaryOps.NEG)

    def backward(self, grad):
        return grad.elementwise(UnaryOps.NEG)


class Exp(Function):
    def forward(self, x):
        self.out = x.elementwise(UnaryOps.EXP)
        return self.out

    def backward(self, grad):                      # d/dx e^x = e^x
        return grad.elementwise(BinaryOps.MUL, self.out)


class Log(Function):
    def forward(self, x):
        self.x = x
        return x.elementwise(UnaryOps.LOG)

    def backward(self, grad):                      # d/dx log x = 1/x
        return grad.elementwise(BinaryOps.DIV, self.x)


class Sqrt(Function):
    def forward(self, x):
        self.out = x.elementwise(UnaryOps.SQRT)
        return self.out

    def backward(self, grad):                      # d/dx sqrt x = 1 / (2 sqrt x)
        return grad.elementwise(BinaryOps.DIV, self.out.elementwise(BinaryOps.MUL, const_like(self.out, 2)))


class Reciprocal(Function):
    def forward(self, x):
        self.out = x.elementwise(UnaryOps.RECIPROCAL)
        return self.out

    def backward(self, grad):                      # d/dx 1/x = -1/x^2
        return grad.elementwise(BinaryOps.MUL, self.out).elementwise(BinaryOps.MUL, self.out).elementwise(UnaryOps.NEG)


class Rsqrt(Function):
    """1 / sqrt(x) as one differentiable step, so its backward reads only its output: LayerNorm
    keeps 1/sqrt(var + eps) (a buffer it needs anyway) and not sqrt(var + eps) beside it, and the
    variance's sum runs inside the kernel that computes it (schedule rule 7)."""
    def forward(self, x):
        self.out = x.elementwise(UnaryOps.SQRT).elementwise(UnaryOps.RECIPROCAL)
        return self.out

    def backward(self, grad):                      # d/dx x^(-1/2) = -x^(-3/2) / 2 = -out^3 / 2
        cube = self.out.elementwise(BinaryOps.MUL, self.out).elementwise(BinaryOps.MUL, self.out)
        return grad.elementwise(BinaryOps.MUL, cube.elementwise(BinaryOps.MUL, const_like(cube, -0.5)))


class Erf(Function):
    def forward(self, x):
        self.x = x
        return x.elementwise(UnaryOps.ERF)

    def backward(self, grad):                      # d/dx erf x = 2/sqrt(pi) e^(-x^2)
        x2 = self.x.elementwise(BinaryOps.MUL, self.x).elementwise(UnaryOps.NEG)
        slope = x2.elementwise(UnaryOps.EXP).elementwise(BinaryOps.MUL, const_like(self.x, 2 / math.sqrt(math.pi)))
        return grad.elementwise(BinaryOps.MUL, slope)


class Sin(Function):
    def forward(self, x):
        self.x = x
        return x.elementwise(UnaryOps.SIN)

    def backward(self, grad):                      # d/dx sin x = cos x = sin(pi/2 - x)
        shifted = const_like(self.x, math.pi / 2).elementwise(BinaryOps.SUB, self.x)
        return grad.elementwise(BinaryOps.MUL, shifted.elementwise(UnaryOps.SIN))


class Sigmoid(Function):
    """s = 1 / (1 + e^-x), a primitive of its own for a gradient that stays finite at both ends:
    composed from exp and reciprocal, the chain rule would multiply 0 by e^300 = inf (NaN)."""
    def forward(self, x):
        one = const_like(x, 1)
        self.out = one.elementwise(BinaryOps.ADD, x.elementwise(UnaryOps.NEG).elementwise(UnaryOps.EXP)) \
            .elementwise(UnaryOps.RECIPROCAL)
        return self.out

    def backward(self, grad):                      # ds/dx = s (1 - s), which is 0, not NaN, far out
        one_minus = const_like(self.out, 1).elementwise(BinaryOps.SUB, self.out)
        return grad.elementwise(BinaryOps.MUL, self.out.elementwise(BinaryOps.MUL, one_minus))


class PiecewiseConstant(Function):
    """Ops whose value jumps but is flat in between (sign, floor, ceil, round): the value is
    computed by the caller, and the gradient is 0 almost everywhere, as PyTorch defines it."""
    def forward(self, x, value):
        self.input = x
        return value

    def backward(self, grad):
        return const_like(self.input, 0)


class LayerNorm(Function):
    """y = (x - mean) * rstd * w + b over the last axis, rstd = 1 / sqrt(var + eps), with its
    backward written out rather than derived from the pieces:

        x_hat = (x - mean) * rstd,   gw = g * w
        dx = rstd * (gw - mean(gw) - x_hat * mean(gw * x_hat)),   dw = sum(g * x_hat),   db = sum(g)

    It keeps x and two numbers per row (mean, rstd), recomputing x_hat, and takes dx's two row sums
    in one reduce: they are stacked on a new axis of size 2, whose padding moves through their
    products (schedule rule 4), as are dw and db."""
    def forward(self, x, *affine, eps, has_weight, has_bias):
        D, row = x.shape[-1], (len(x.shape) - 1,)
        total = x.reduce(ReduceOps.SUM, row)                                                  # (..., 1)
        mean = total.elementwise(BinaryOps.MUL, const_like(total, 1 / D))
        centered = x.elementwise(BinaryOps.SUB, mean.movement(MovementOps.EXPAND, x.shape))
        var = centered.elementwise(BinaryOps.MUL, centered).reduce(ReduceOps.SUM, row)
        var = var.elementwise(BinaryOps.MUL, const_like(var, 1 / D)).elementwise(BinaryOps.ADD, const_like(var, eps))
        self.rstd = var.elementwise(UnaryOps.SQRT).elementwise(UnaryOps.RECIPROCAL)           # (..., 1)
        self.x, self.mean = x, mean
        self.weight = affine[0] if has_weight else None
        self.has_bias = has_bias
        out = centered.elementwise(BinaryOps.MUL, self.rstd.movement(MovementOps.EXPAND, x.shape))
        if has_weight:
            out = out.elementwise(BinaryOps.MUL, _along(affine[0], x.shape, -1))
        if has_bias:
            out = out.elementwise(BinaryOps.ADD, _along(affine[-1], x.shape, -1))
        return out

    def backward(self, grad):
        x, shape, D = self.x, self.x.shape, self.x.shape[-1]
        lead = shape[:-1]
        rstd = self.rstd.movement(MovementOps.EXPAND, shape)
        x_hat = x.elementwise(BinaryOps.SUB, self.mean.movement(MovementOps.EXPAND, shape)).elementwise(BinaryOps.MUL, rstd)
        gw = grad if self.weight is None else grad.elementwise(BinaryOps.MUL, _along(self.weight, shape, -1))
        sums = _stacked_sums([gw, gw.elementwise(BinaryOps.MUL, x_hat)], axis=len(lead))     # (2, ..., 1)
        sum_gw, sum_gwx = (sums.movement(MovementOps.SHRINK, ((k, k + 1),) + tuple((0, n) for n in lead + (1,)))
                           .movement(MovementOps.RESHAPE, lead + (1,)).movement(MovementOps.EXPAND, shape) for k in (0, 1))
        inv_d = const_like(x, 1 / D)
        dx = gw.elementwise(BinaryOps.SUB, sum_gw.elementwise(BinaryOps.MUL, inv_d)).elementwise(
            BinaryOps.SUB, x_hat.elementwise(BinaryOps.MUL, sum_gwx.elementwise(BinaryOps.MUL, inv_d)))
        grads = [rstd.elementwise(BinaryOps.MUL, dx) if self.needs_input_grad[0] else None]
        parts = ([grad.elementwise(BinaryOps.MUL, x_hat)] if self.weight is not None else []) + \
            ([grad] if self.has_bias else [])
        if parts:                       # dw and db: sums over every row, stacked as dx's are
            rows = math.prod(lead)
            per_column = _stacked_sums([p.movement(MovementOps.RESHAPE, (rows, D)) for p in parts], axis=0)
            for k, wanted in enumerate(self.needs_input_grad[1:]):
                grads.append(per_column.movement(MovementOps.SHRINK, ((k, k + 1), (0, 1), (0, D)))
                             .movement(MovementOps.RESHAPE, (D,)) if wanted else None)
        return tuple(grads)


def _along(v: LazyBuffer, shape, axis: int) -> LazyBuffer:
    """A vector broadcast over `shape`, lying along `axis`: a (D,) weight along the last axis of
    (B, T, D), the (N,) targets along axis 0 of (N, V)."""
    axis %= len(shape)
    lying = tuple(v.shape[0] if k == axis else 1 for k in range(len(shape)))
    return v.movement(MovementOps.RESHAPE, lying).movement(MovementOps.EXPAND, shape)


def _stacked_sums(parts, axis: int) -> LazyBuffer:
    """Sums of several tensors of one shape over one axis, in one reduce: the parts are stacked on
    a new axis of size len(parts) in front and summed together, so the result is (len(parts),) +
    the reduced shape.  Each part is read through padding on the new axis, which moves down
    through + and * (schedule rule 4), so none is written out first."""
    shape = parts[0].shape
    n, stacked = len(parts), None
    for k, p in enumerate(parts):
        piece = p.movement(MovementOps.RESHAPE, (1,) + shape).movement(
            MovementOps.PAD, ((k, n - 1 - k),) + ((0, 0),) * len(shape))
        stacked = piece if stacked is None else stacked.elementwise(BinaryOps.ADD, piece)
    return stacked.reduce(ReduceOps.SUM, (axis + 1,))


class CrossEntropy(Function):
    """-log softmax(x)[t] for logits x (N, V) and integer targets t (N,), each row's loss
    logsumexp(x) - x[t], with the backward written out:

        logsumexp(x) = m + log(sum(exp(x - m))),  m = max(x)    (no overflow in exp)
        dx = (softmax(x) - onehot(t)) * g,        softmax(x) = exp(x - logsumexp(x))

    A row whose target is ignore_index counts 0 and gets no gradient; a target outside [0, V)
    makes its row NaN (never a silent 0).  reduction "none" gives the rows (N,); "sum" and
    "mean" (over the rows not ignored) take the total in one reduce over (N, V), without the
    rows' picked logits: each row's logsumexp sits in column 0, padded out to V columns, and the
    picked logits come in negated.  So the forward is three reduces (the max, the sum of exps
    with the log on it, the total) and a count, the backward one elementwise kernel."""
    def forward(self, x, targets, classes, ignore_index, reduction):
        N, V = x.shape
        self.x, self.reduction = x, reduction
        hit = _along(targets, (N, V), 0).elementwise(BinaryOps.CMPEQ, _along(classes, (N, V), 1))  # onehot(t)
        const = lambda value, dtype=targets.dtype: LazyBuffer.const(value, (N,), dtype, x.device)  # noqa: E731
        # each use builds its own (N,) masks, so each kernel computes them inline (a shared node
        # read broadcast would get a buffer and a kernel of its own)
        valid = lambda: targets.elementwise(BinaryOps.CMPEQ, const(ignore_index)).elementwise(  # noqa: E731
            BinaryOps.CMPEQ, const(False, hit.dtype))                                           # t != ignore_index
        in_range = lambda: const(-1).elementwise(BinaryOps.CMPLT, targets).elementwise(          # noqa: E731
            BinaryOps.MUL, targets.elementwise(BinaryOps.CMPLT, const(V)))                       # 0 <= t < V
        self.hit = hit.elementwise(UnaryOps.CAST, arg=x.dtype)
        self.counted = valid().elementwise(BinaryOps.MUL, in_range())                    # rows that get a gradient
        peak = x.reduce(ReduceOps.MAX, (1,))                                           # (N, 1)
        e = x.elementwise(BinaryOps.SUB, peak.movement(MovementOps.EXPAND, (N, V))).elementwise(UnaryOps.EXP)
        self.lse = e.reduce(ReduceOps.SUM, (1,)).elementwise(UnaryOps.LOG).elementwise(BinaryOps.ADD, peak)   # (N, 1)
        nan, zero = (LazyBuffer.const(v, (N, 1), x.dtype, x.device) for v in (math.nan, 0.0))
        rows = valid().movement(MovementOps.RESHAPE, (N, 1)).elementwise(TernaryOps.WHERE, in_range().movement(
            MovementOps.RESHAPE, (N, 1)).elementwise(TernaryOps.WHERE, self.lse, nan), zero)   # (N, 1): logsumexp, masked
        picked = _along(valid(), (N, V), 0).elementwise(BinaryOps.MUL, hit).elementwise(
            TernaryOps.WHERE, x, const_like(x, 0.0))                                    # x[t] where counted, else 0
        if reduction == "none":
            return rows.elementwise(BinaryOps.SUB, picked.reduce(ReduceOps.SUM, (1,))).movement(MovementOps.RESHAPE, (N,))
        terms = rows.movement(MovementOps.PAD, ((0, 0), (0, V - 1))).elementwise(BinaryOps.SUB, picked)
        total = terms.reduce(ReduceOps.SUM, (0, 1)).movement(MovementOps.RESHAPE, ())
        if reduction == "sum":
            return total
        self.count = valid().elementwise(UnaryOps.CAST, arg=x.dtype).reduce(ReduceOps.SUM, (0,)).movement(
            MovementOps.RESHAPE, ()).elementwise(BinaryOps.MAX, LazyBuffer.const(1.0, (), x.dtype, x.device))
        return total.elementwise(BinaryOps.DIV, self.count)

    def backward(self, grad):
        shape = self.x.shape
        if self.reduction == "none":
            g = _along(grad, shape, 0)
        else:
            g = grad if self.reduction == "sum" else grad.elementwise(BinaryOps.DIV, self.count)
            g = g.movement(MovementOps.RESHAPE, (1, 1)).movement(MovementOps.EXPAND, shape)
        softmax = self.x.elementwise(BinaryOps.SUB, self.lse.movement(MovementOps.EXPAND, shape)).elementwise(UnaryOps.EXP)
        dx = softmax.elementwise(BinaryOps.SUB, self.hit).elementwise(BinaryOps.MUL, g)
        return _along(self.counted, shape, 0).elementwise(TernaryOps.WHERE, dx, const_like(dx, 0.0)), None, None


class Recompute(Function):
    """fn(*inputs) whose backward keeps only the inputs: the forward runs without a graph, and
    backward runs fn again with one and differentiates it.  For chains of cheap elementwise ops
    (GELU, LayerNorm) this trades a few recomputed passes for not holding every intermediate
    until backward: a GPT block then keeps its activations, not five copies of them."""
    def forward(self, *xs, fn):
        from .tensor import Tensor, no_grad
        self.xs, self.fn = xs, fn
        with no_grad():
            return fn(*[Tensor(x) for x in xs]).lazydata

    def backward(self, grad):
        from .tensor import Tensor, enable_grad
        inputs = [Tensor(x, requires_grad=need) for x, need in zip(self.xs, self.needs_input_grad)]
        with enable_grad():
            self.fn(*inputs).backward(Tensor(grad))
        return tuple(t.grad.lazydata if t.grad is not None else None for t in inputs)

    def name(self) -> str:
        return f"Recompute({self.fn.__name__})"


class Softmax(Function):
    """s = exp(x - max) / sum(exp(x - max)) along one axis, with the backward that needs only s:
    dx = s * (g - sum(g * s)).  Composed from exp and a division, autograd would keep exp(x - max)
    as well, a second (B, H, T, T) tensor per attention layer."""
    def forward(self, x, axis):
        self.axis = (axis,)
        peak = x.reduce(ReduceOps.MAX, self.axis).movement(MovementOps.EXPAND, x.shape)
        e = x.elementwise(BinaryOps.SUB, peak).elementwise(UnaryOps.EXP)
        total = e.reduce(ReduceOps.SUM, self.axis).movement(MovementOps.EXPAND, x.shape)
        self.out = e.elementwise(BinaryOps.DIV, total)
        return self.out

    def backward(self, grad):
        weighted = grad.elementwise(BinaryOps.MUL, self.out).reduce(ReduceOps.SUM, self.axis)
        weighted = weighted.movement(MovementOps.EXPAND, self.out.shape)
        return self.out.elementwise(BinaryOps.MUL, grad.elementwise(BinaryOps.SUB, weighted))


class Relu(Function):
    def forward(self, x):
        self.out = x.elementwise(BinaryOps.MAX, const_like(x, 0))
        return self.out

    def backward(self, grad):                      # passes the gradient where x > 0
        positive = const_like(self.out, 0).elementwise(BinaryOps.CMPLT, self.out)
        return positive.elementwise(TernaryOps.WHERE, grad, const_like(grad, 0))


class Cast(Function):
    def forward(self, x, dtype):
        self.input_dtype = x.dtype
        return x.elementwise(UnaryOps.CAST, arg=dtype)

    def backward(self, grad):
        return grad.elementwise(UnaryOps.CAST, arg=self.input_dtype)


class Copy(Function):
    """Move data to another device; the gradient moves back."""
    def forward(self, x, device):
        self.source_device = x.device
        return x.copy_to(device)

    def backward(self, grad):
        return grad.copy_to(self.source_device)


class Contiguous(Function):
    def forward(self, x):
        return x.contiguous()

    def backward(self, grad):
        return grad


# ---- binary --------------------------------------------------------------------------
class Add(Function):
    def forward(self, x, y):
        return x.elementwise(BinaryOps.ADD, y)

    def backward(self, grad):
        return grad, grad


class Sub(Function):
    def forward(self, x, y):
        return x.elementwise(BinaryOps.SUB, y)

    def backward(self, grad):
        return grad, (grad.elementwise(UnaryOps.NEG) if self.needs_input_grad[1] else None)


class Mul(Function):
    def forward(self, x, y):
        self.x, self.y = x, y
        return x.elementwise(BinaryOps.MUL, y)

    def backward(self, grad):                      # d(xy) = y dx + x dy
        return (grad.elementwise(BinaryOps.MUL, self.y) if self.needs_input_grad[0] else None,
                grad.elementwise(BinaryOps.MUL, self.x) if self.needs_input_grad[1] else None)


class Div(Function):
    def forward(self, x, y):
        self.x, self.y = x, y
        return x.elementwise(BinaryOps.DIV, y)

    def backward(self, grad):                      # d(x/y) = dx / y - x dy / y^2
        dx = grad.elementwise(BinaryOps.DIV, self.y) if self.needs_input_grad[0] else None
        dy = None
        if self.needs_input_grad[1]:
            y2 = self.y.elementwise(BinaryOps.MUL, self.y)
            dy = grad.elementwise(BinaryOps.MUL, self.x).elementwise(BinaryOps.DIV, y2).elementwise(UnaryOps.NEG)
        return dx, dy


class Maximum(Function):
    def forward(self, x, y):
        self.x, self.y = x, y
        return x.elementwise(BinaryOps.MAX, y)

    def backward(self, grad):
        """The gradient goes to the larger input; on a tie it is split in half (as PyTorch does)."""
        x_wins = self.y.elementwise(BinaryOps.CMPLT, self.x)
        tie = self.x.elementwise(BinaryOps.CMPEQ, self.y)
        half = grad.elementwise(BinaryOps.MUL, const_like(grad, 0.5))
        zero = const_like(grad, 0)
        to_x = x_wins.elementwise(TernaryOps.WHERE, grad, tie.elementwise(TernaryOps.WHERE, half, zero))
        y_wins = self.x.elementwise(BinaryOps.CMPLT, self.y)
        to_y = y_wins.elementwise(TernaryOps.WHERE, grad, tie.elementwise(TernaryOps.WHERE, half, zero))
        return to_x, to_y


class Less(Function):
    def forward(self, x, y):
        return x.elementwise(BinaryOps.CMPLT, y)


class Equal(Function):
    def forward(self, x, y):
        return x.elementwise(BinaryOps.CMPEQ, y)


class Where(Function):
    def forward(self, cond, x, y):
        self.cond = cond
        return cond.elementwise(TernaryOps.WHERE, x, y)

    def backward(self, grad):
        zero = const_like(grad, 0)
        return (None,
                self.cond.elementwise(TernaryOps.WHERE, grad, zero) if self.needs_input_grad[1] else None,
                self.cond.elementwise(TernaryOps.WHERE, zero, grad) if self.needs_input_grad[2] else None)


# ---- reduce (the output keeps the reduced axes as size 1) -------------------------------
class Sum(Function):
    def forward(self, x, axes):
        self.input_shape = x.shape
        return x.reduce(ReduceOps.SUM, axes)

    def backward(self, grad):                      # every input element got the same gradient
        return grad.movement(MovementOps.EXPAND, self.input_shape)


class Max(Function):
    def forward(self, x, axes):
        self.x, self.out = x, x.reduce(ReduceOps.MAX, axes)
        self.axes = axes
        return self.out

    def backward(self, grad):
        """The gradient is shared equally by the elements that reached the max."""
        is_max = self.x.elementwise(BinaryOps.CMPEQ, self.out.movement(MovementOps.EXPAND, self.x.shape))
        is_max = is_max.elementwise(UnaryOps.CAST, arg=grad.dtype)
        count = is_max.reduce(ReduceOps.SUM, self.axes).movement(MovementOps.EXPAND, self.x.shape)
        share = grad.movement(MovementOps.EXPAND, self.x.shape).elementwise(BinaryOps.DIV, count)
        return is_max.elementwise(BinaryOps.MUL, share)


# ---- movement: views, and their gradients are views or reductions ------------------------
class Reshape(Function):
    def forward(self, x, shape):
        self.input_shape = x.shape
        return x.movement(MovementOps.RESHAPE, shape)

    def backward(self, grad):
        return grad.movement(MovementOps.RESHAPE, self.input_shape)


class Permute(Function):
    def forward(self, x, order):
        self.order = order
        return x.movement(MovementOps.PERMUTE, order)

    def backward(self, grad):
        inverse = tuple(sorted(range(len(self.order)), key=lambda i: self.order[i]))
        return grad.movement(MovementOps.PERMUTE, inverse)


class Expand(Function):
    def forward(self, x, shape):
        self.input_shape = x.shape
        return x.movement(MovementOps.EXPAND, shape)

    def backward(self, grad):                      # a broadcast input collects the sum of its copies' gradients
        axes = tuple(i for i, (a, b) in enumerate(zip(self.input_shape, grad.shape)) if a != b)
        return grad.reduce(ReduceOps.SUM, axes) if axes else grad


class Pad(Function):
    def forward(self, x, padding):
        self.bounds = tuple((before, before + n) for (before, _), n in zip(padding, x.shape))
        return x.movement(MovementOps.PAD, padding)

    def backward(self, grad):
        return grad.movement(MovementOps.SHRINK, self.bounds)


class Shrink(Function):
    def forward(self, x, bounds):
        self.padding = tuple((start, n - end) for (start, end), n in zip(bounds, x.shape))
        return x.movement(MovementOps.SHRINK, bounds)

    def backward(self, grad):
        return grad.movement(MovementOps.PAD, self.padding)


class Stride(Function):
    """Every step-th element along each axis; a negative step walks the axis backwards
    (step -1 is a flip), as in x[::-2]."""
    def forward(self, x, steps):
        self.input_shape, self.steps = x.shape, steps
        return x.movement(MovementOps.STRIDE, steps)

    def backward(self, grad):
        """Undo the flip first (a flip is its own inverse), then put each gradient back at its
        place, zeros in between: per axis, (c,) -> (c, 1) -> pad to (c, step) -> (c*step,) -> the first n."""
        if any(step < 0 for step in self.steps):
            grad = grad.movement(MovementOps.STRIDE, tuple(-1 if step < 0 else 1 for step in self.steps))
        for axis, (n, step) in enumerate(zip(self.input_shape, (abs(s) for s in self.steps))):
            if step == 1:
                continue
            c = grad.shape[axis]
            grad = grad.movement(MovementOps.RESHAPE, grad.shape[:axis + 1] + (1,) + grad.shape[axis + 1:])
            padding = tuple((0, step - 1) if i == axis + 1 else (0, 0) for i in range(len(grad.shape)))
            grad = grad.movement(MovementOps.PAD, padding)
            grad = grad.movement(MovementOps.RESHAPE, grad.shape[:axis] + (c * step,) + grad.shape[axis + 2:])
            grad = grad.movement(MovementOps.SHRINK, tuple((0, n) if i == axis else (0, s)
                                                           for i, s in enumerate(grad.shape)))
        return grad


# ---- special ---------------------------------------------------------------------------
def _transpose_last(lb: LazyBuffer) -> LazyBuffer:
    order = tuple(range(len(lb.shape) - 2)) + (len(lb.shape) - 1, len(lb.shape) - 2)
    return lb.movement(MovementOps.PERMUTE, order)


class Matmul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a.matmul(b)

    def backward(self, grad):                      # dA = dC B^T,  dB = A^T dC
        return (_product_like(self.a, grad, _transpose_last(self.b)) if self.needs_input_grad[0] else None,
                _product_like(self.b, _transpose_last(self.a), grad) if self.needs_input_grad[1] else None)


def _product_like(operand: LazyBuffer, x: LazyBuffer, y: LazyBuffer) -> LazyBuffer:
    """x @ y, the gradient of `operand`, laid out as operand's own buffer is.  For a transposed
    view (Linear's W^T, W stored (out, in)) that is (y^T @ x^T)^T: the product comes out in W's
    order, so W's gradient needs no transposing copy (an optimizer reads it as one flat run)."""
    if len(operand.shape) >= 2 and _transpose_last(operand).view.is_run:
        return _transpose_last(_transpose_last(y).matmul(_transpose_last(x)))
    return x.matmul(y)



class Gather(Function):
    def forward(self, table, index):
        self.index, self.num_rows = index, table.shape[0]
        return table.gather(index)

    def backward(self, grad):                      # each picked row sends its gradient home
        return grad.scatter_add(self.index, self.num_rows), None
