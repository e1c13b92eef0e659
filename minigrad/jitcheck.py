"""What a jit replay would freeze, checked before the jit captures.

A replay runs no Python, so every value the function takes from Python is replayed as it was
at capture.  Before capturing, the jit therefore runs the function traced twice (its calls 2
and 3) and refuses, with a message saying what and where, rather than replay a stale number:
  * a traced call that reads tensor values back to Python (.numpy(), .item(), bool(t)): the
    graph would depend on a value read once;
  * two traced calls whose kernels differ, in number or in a constant (x * scale, with scale
    a Python number that changes);
  * two traced calls whose kernels read a buffer that is neither an argument nor state nor
    made by an earlier kernel (host data made inside, Tensor(np.array(...)); a tensor replaced
    from outside, or one the function updates without its being listed in state=), and whose
    values differ.
Once refused, a jit stays refused.  Non-Tensor arguments are part of the call signature,
checked on every call.  What no check can see is a Python value that is the same in both
traced calls and changes later: pass anything that may change as a Tensor argument.
"""
import weakref

from .backends import get_backend
from .debug import anomaly_enabled, watch_host_reads
from .kernel import KernelKind, Op
from .schedule import recorders
from .tensor import Tensor, realize

WHY = "a Python value the jit cannot see changes between calls, and a replay would reuse the old one"
FIX = ("pass it in as a Tensor argument (or a device tensor written in place, like optimizer.lr), "
       "or call the function without jit")


def signature(args) -> list:
    """What must match between calls: each Tensor argument's shape, dtype and device, and every
    other argument's value."""
    return [(a.shape, a.dtype, a.device) if isinstance(a, Tensor) else a for a in args]


def check_signature(captured, got) -> None:
    if got != captured:
        raise ValueError(f"jit captured calls with arguments {captured}, got {got}; "
                         f"make a new jit for a new shape or a new Python value")


def _name(fn) -> str:
    return getattr(fn, "__qualname__", repr(fn))


class TracedCall:
    """One call of the function as a recorder sees it (schedule.recorders): each kernel's
    expression with its constants, and the buffers read that come from outside the call.
    Buffers the call's own kernels write are remembered weakly, so tracing keeps no
    intermediate alive."""

    def __init__(self, args, state):
        self.signature = signature(args)
        self.counter_start = Tensor._rng_counter
        self.fingerprints, self.descriptions = [], []
        self.outside = {}          # (kernel index, input index) -> (buffer, view, dtype, device)
        self._inside = {}          # id(buffer) -> weakref, for buffers this call's kernels wrote
        owned = [_buffer(t) for t in list(state) + [a for a in args if isinstance(a, Tensor)]]
        self._owned = {id(b): b for b in owned}      # held, so that no new buffer takes their ids meanwhile

    def record(self, kernel, out_buffer, input_buffers) -> None:
        i = len(self.fingerprints)
        self.fingerprints.append(_fingerprint(kernel, self.counter_start))
        self.descriptions.append(repr(kernel))
        for j, (buffer, lb) in enumerate(zip(input_buffers, kernel.inputs)):
            if id(buffer) not in self._owned and id(buffer) not in self._inside:
                self.outside[(i, j)] = (buffer, lb.view, lb.dtype, lb.device)
        key = id(out_buffer)
        self._inside[key] = weakref.ref(out_buffer, lambda ref, key=key: self._forget(key, ref))

    def _forget(self, key, ref) -> None:
        if self._inside.get(key) is ref:       # a dead buffer's id may be reused by a new one
            del self._inside[key]


class CallChecks:
    """Runs a jit's calls 2 and 3 traced and refuses what a replay would get wrong (see above)."""

    def __init__(self, fn):
        self.fn = fn
        self.first = None
        self.refusal = None

    def run(self, args, state):
        if self.refusal is not None:
            raise self.refusal
        try:
            return self._traced(args, state)
        except RuntimeError as e:
            if str(e).startswith("minigrad.jit:"):
                self.refusal = e
            raise

    def same_call(self, args) -> None:
        """The call about to be captured has the traced calls' signature."""
        if self.first is not None:
            check_signature(self.first.signature, signature(args))

    def _traced(self, args, state):
        realize(*state)
        call = TracedCall(args, state)
        recorders.append(call)
        try:
            with watch_host_reads() as reads:
                result = self.fn(*args)
            realize(*[o for o in (result if isinstance(result, (tuple, list)) else [result]) if isinstance(o, Tensor)])
        finally:
            recorders.remove(call)
        call.counters_per_call = Tensor._rng_counter - call.counter_start
        if reads and not anomaly_enabled():          # anomaly mode reads only to check values
            raise RuntimeError(f"minigrad.jit: {_name(self.fn)} read tensor values back to Python while building "
                               f"its graph (at {reads[0]}); a replay would reuse the value read then. Keep it a "
                               f"Tensor (compute it on the device), or call the function without jit")
        if self.first is None:
            self.first = call
        else:
            _refuse_differences(self.fn, self.first, call)
        return result


def _buffer(t: Tensor):
    return t.lazydata.base.realized


def _fingerprint(kernel, counter_start: int) -> str:
    """What a kernel computes, constants included; a random kernel's counter is taken
    relative to the call's first one (each call draws new numbers by design)."""
    ast = kernel.ast
    if kernel.kind is KernelKind.RAND:
        ast = Op(ast.op, ast.srcs, ast.arg._replace(counter=ast.arg.counter - counter_start), ast.dtype, ast.shape)
    return repr(ast)


def _values(buffer, view, dtype, device) -> bytes:
    return get_backend(device).copy_out(buffer, view, dtype).tobytes()


def _refuse_differences(fn, first: TracedCall, second: TracedCall) -> None:
    check_signature(first.signature, second.signature)
    if len(first.fingerprints) != len(second.fingerprints) or first.counters_per_call != second.counters_per_call:
        raise RuntimeError(f"minigrad.jit: {_name(fn)} ran {len(first.fingerprints)} kernels in one call and "
                           f"{len(second.fingerprints)} in the next: {WHY}; {FIX}")
    for i, (a, b) in enumerate(zip(first.fingerprints, second.fingerprints)):
        if a != b:
            raise RuntimeError(f"minigrad.jit: kernel {i} of {_name(fn)} ({second.descriptions[i]}) computed with "
                               f"other constants in two calls: {WHY}; {FIX}")
    for (i, j), read in second.outside.items():
        before = first.outside.get((i, j))
        if before is not None and before[0] is read[0]:    # one buffer: replays read its current values
            continue
        if before is None or _values(*before) != _values(*read):
            raise RuntimeError(f"minigrad.jit: kernel {i} of {_name(fn)} ({second.descriptions[i]}) read a buffer "
                               f"that is no argument and not in state=, and it held other values in two calls "
                               f"(host data, or a tensor the function updates: list it in state=): {WHY}; {FIX}")
