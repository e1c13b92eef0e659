"""Capture a training step once, then replay its kernels: no graph building, no scheduling.

A training step builds the same graph every iteration, so it schedules the same kernels
every iteration.  `jit` runs the function normally once (the first call settles lazily
created state such as Adam's moments), traces the next two calls (recording every kernel
they run with its buffers), and from the fourth call on replays the last trace directly
on the backend:

    step = minigrad.jit(train_step, state=[model, optimizer])
    for it in range(iters):
        optimizer.lr = schedule(it)              # lr lives on the device: replays see it
        loss = step(Tensor(x), Tensor(y))        # call 4 onwards: kernels only

What a replay does:
  * the arguments' buffers stand in for the captured arguments' (shapes must match);
  * state tensors (the model's parameters, the optimizer's moments and step count) swap
    between two buffers, one read and one written per replay, and are re-pointed after;
  * random kernels (dropout) draw fresh numbers from the next seed, as an eager step would.

A replay runs no Python, so a value the function takes from Python would be replayed as
it was at capture.  The jit therefore refuses, rather than replay a stale number:
  * non-Tensor arguments: they are part of the call signature, checked on every call (a
    new value, like a new shape, raises: make a new jit);
  * values read back from the device while the graph is built (.numpy(), .item(), bool(t)):
    a traced call that reads any raises, naming the line (compute it on the device);
  * constants and host data the function makes itself (x * scale, Tensor(np.array(...)),
    a tensor attribute replaced between calls): the two traced calls are compared kernel
    by kernel, constant by constant, host buffer by host buffer, and any difference raises.
What no check can see is a Python value that stays the same for the two traced calls and
changes later: pass anything that may change as a Tensor argument (or a device tensor
written in place, like optimizer.lr).  Values returned are copies, safe to keep.
"""
from typing import List

import numpy as np

from .backends import get_backend
from .debug import anomaly_enabled, watch_host_reads
from .kernel import Op
from .lazy import LazyBuffer
from .ops import LoadOps
from .schedule import recorders, run_kernel
from .tensor import Tensor, realize


def _buffer(t: Tensor):
    return t.lazydata.base.realized


def _as_plain_buffer(t: Tensor) -> Tensor:
    """A realized tensor that owns its buffer in order (arguments may arrive as views)."""
    if t.lazydata.base is not t.lazydata:
        t = t.contiguous()
    return t.realize()


class jit:
    def __init__(self, fn, state=()):
        self.fn = fn
        self.state_objects = list(state)
        self.calls = 0
        self.kernels = None          # [(kernel, output buffer, input buffers)] once captured
        self.first_trace = None      # what the first traced call would freeze, compared with the second

    def _state_tensors(self) -> List[Tensor]:
        found, seen = [], set()
        for obj in self.state_objects:
            if isinstance(obj, Tensor):
                tensors = [obj]
            elif hasattr(obj, "state_tensors"):          # an optimizer
                tensors = obj.state_tensors()
            elif hasattr(obj, "parameters"):             # a module
                tensors = obj.parameters()
            else:
                raise TypeError(f"jit state must be Tensors, Modules or optimizers, not {type(obj).__name__}")
            for t in tensors:
                if id(t) not in seen:
                    seen.add(id(t))
                    found.append(t)
        return found

    def __call__(self, *args):
        args = tuple(_as_plain_buffer(a) if isinstance(a, Tensor) else a for a in args)
        self.calls += 1
        if self.kernels is not None:
            return self._replay(args)
        if self.calls == 1:
            return self.fn(*args)
        result, trace = self._trace(args)
        if self.first_trace is None:
            self.first_trace = _Repeatable(trace)
            return result
        _refuse_differences(self.fn, self.first_trace, _Repeatable(trace))
        self.first_trace = None
        self._adopt(trace)
        return result

    # ---- capture -------------------------------------------------------------------
    def _trace(self, args):
        """Run the function once, recording its kernels and buffers; refuse host reads."""
        state = self._state_tensors()
        realize(*state)
        trace = _Trace()
        trace.state_before = [_buffer(t) for t in state]
        trace.signature = _signature(args)
        trace.arg_buffers = [_buffer(a) for a in args if isinstance(a, Tensor)]
        trace.counter_start = Tensor._rng_counter
        recorders.append(trace.kernels)
        try:
            with watch_host_reads() as reads:
                result = self.fn(*args)
            outputs = self._outputs(result)
            realize(*outputs)
        finally:
            recorders.remove(trace.kernels)
        if reads and not anomaly_enabled():          # anomaly mode reads only to check values
            raise RuntimeError(f"minigrad.jit: {_name(self.fn)} read tensor values back to Python while "
                               f"building its graph (at {reads[0]}); a replay would reuse the value read "
                               f"now. Keep it a Tensor (compute it on the device), or call the function "
                               f"without jit")
        trace.counters_per_call = Tensor._rng_counter - trace.counter_start
        trace.state_after = [_buffer(t) for t in state]
        trace.outputs = outputs
        trace.result_is_tuple = isinstance(result, (tuple, list))
        return result, trace

    def _adopt(self, trace):
        self.arg_signature = trace.signature
        self.arg_buffers = trace.arg_buffers
        self.counter_start = trace.counter_start
        self.counters_per_call = trace.counters_per_call
        self.state_pairs = list(zip(trace.state_before, trace.state_after))
        self.output_reads = [(_buffer(o), o.lazydata.view, o.dtype, o.device) for o in trace.outputs]
        self.result_is_tuple = trace.result_is_tuple
        self.kernels = trace.kernels

    @staticmethod
    def _outputs(result) -> List[Tensor]:
        outputs = list(result) if isinstance(result, (tuple, list)) else [result]
        if not all(isinstance(o, Tensor) for o in outputs):
            raise TypeError("a jit function must return a Tensor or a tuple of Tensors")
        return outputs

    # ---- replay --------------------------------------------------------------------
    def _replay(self, args):
        _check_signature(self.arg_signature, _signature(args))
        state = self._state_tensors()
        if len(state) != len(self.state_pairs):
            raise RuntimeError("the jit's state changed since capture (a parameter was added or removed)")
        swap = {}
        for t, (read_buf, write_buf) in zip(state, self.state_pairs):
            if read_buf is write_buf:
                continue
            current = _buffer(t)
            if current is write_buf:                   # last replay wrote here: swap roles
                swap[id(read_buf)], swap[id(write_buf)] = write_buf, read_buf
            elif current is not read_buf:              # replaced from outside (e.g. a checkpoint load)
                get_backend(t.device).write(read_buf, t.numpy())
        for captured, a in zip(self.arg_buffers, (a for a in args if isinstance(a, Tensor))):
            swap[id(captured)] = _buffer(a)
        counter_shift = Tensor._rng_counter - self.counter_start
        Tensor._rng_counter += self.counters_per_call
        for kernel, out_buffer, input_buffers in self.kernels:
            if kernel.kind == "rand":
                kernel = _reseeded(kernel, counter_shift)
            run_kernel(kernel, swap.get(id(out_buffer), out_buffer), [swap.get(id(b), b) for b in input_buffers])
        for t, (_, write_buf) in zip(state, self.state_pairs):
            buffer = swap.get(id(write_buf), write_buf)
            if buffer is not _buffer(t):
                t.lazydata = _wrap(buffer, t)
        outputs = []
        for buffer, view, dtype, device in self.output_reads:
            values = get_backend(device).copy_out(swap.get(id(buffer), buffer), view, dtype)
            outputs.append(Tensor(values, device=device))
        return tuple(outputs) if self.result_is_tuple else outputs[0]


class _Trace:
    """One traced call: its kernels [(kernel, output buffer, input buffers)] and buffers."""

    def __init__(self):
        self.kernels = []


def _name(fn) -> str:
    return getattr(fn, "__qualname__", repr(fn))


def _signature(args) -> list:
    return [(a.shape, a.dtype, a.device) if isinstance(a, Tensor) else a for a in args]


def _check_signature(captured, got) -> None:
    if got != captured:
        raise ValueError(f"jit captured calls with arguments {captured}, got {got}; "
                         f"make a new jit for a new shape or a new Python value")


def _fingerprint(kernel, counter_start: int) -> str:
    """What a kernel computes, constants included; a random kernel's counter is taken
    relative to the call's first one (each call draws new numbers by design)."""
    ast = kernel.ast
    if kernel.kind == "rand":
        seed, counter, distribution = ast.arg
        ast = Op(ast.op, ast.srcs, (seed, counter - counter_start, distribution), ast.dtype, ast.shape)
    return repr(ast)


class _Repeatable:
    """What a replay of a traced call would freeze: its kernels with their constants, and the
    buffers it read that are neither arguments nor state.  The first traced call keeps only
    this (not its intermediate buffers) until the second can be compared with it."""

    def __init__(self, trace: _Trace):
        self.signature, self.counters_per_call = trace.signature, trace.counters_per_call
        self.fingerprints = [_fingerprint(kernel, trace.counter_start) for kernel, _, _ in trace.kernels]
        self.descriptions = [repr(kernel) for kernel, _, _ in trace.kernels]
        self.outside_inputs = {}       # (kernel index, input index) -> LazyBuffer: constants, host data, ...
        known = {id(b) for b in trace.arg_buffers + trace.state_before}
        for i, (kernel, out_buffer, input_buffers) in enumerate(trace.kernels):
            for j, b in enumerate(input_buffers):
                if id(b) not in known:
                    self.outside_inputs[(i, j)] = kernel.inputs[j]
            known.add(id(out_buffer))


def _refuse_differences(fn, first: _Repeatable, second: _Repeatable) -> None:
    """Raise if two traced calls differ in anything a replay would freeze (see the docstring)."""
    _check_signature(first.signature, second.signature)
    why = "a Python value the jit cannot see changes between calls, and a replay would reuse the old one"
    fix = ("pass it in as a Tensor argument (or a device tensor written in place, like optimizer.lr), "
           "or call the function without jit")
    if len(first.fingerprints) != len(second.fingerprints) or first.counters_per_call != second.counters_per_call:
        raise RuntimeError(f"minigrad.jit: {_name(fn)} ran {len(first.fingerprints)} kernels in one call and "
                           f"{len(second.fingerprints)} in the next: {why}; {fix}")
    for i, (a, b) in enumerate(zip(first.fingerprints, second.fingerprints)):
        if a != b:
            raise RuntimeError(f"minigrad.jit: kernel {i} of {_name(fn)} ({second.descriptions[i]}) computed with "
                               f"other constants in two calls: {why}; {fix}")
    for (i, j), lb in second.outside_inputs.items():
        before = first.outside_inputs.get((i, j))
        if before is not None and before.realized is lb.realized:   # one buffer: replays read its current values
            continue
        if before is None or not np.array_equal(_host_copy(before), _host_copy(lb), equal_nan=True):
            raise RuntimeError(f"minigrad.jit: kernel {i} of {_name(fn)} ({second.descriptions[i]}) read a buffer "
                               f"of shape {lb.shape} that is no argument and not in state=, and it differs between "
                               f"two calls (host data, or a tensor the function updates: list it in state=): "
                               f"{why}; {fix}")


def _host_copy(lb: LazyBuffer) -> np.ndarray:
    return get_backend(lb.device).copy_out(lb.realized, lb.view, lb.dtype)


def _reseeded(kernel, counter_shift: int):
    """The same random kernel with the seed an eager call would have drawn at this point."""
    from .kernel import Kernel
    root = kernel.ast
    _, counter, distribution = root.arg
    ast = Op(root.op, root.srcs, (Tensor._seed, counter + counter_shift, distribution), root.dtype, root.shape)
    return Kernel(kernel.output, kernel.inputs, ast)


def _wrap(buffer, like: Tensor) -> LazyBuffer:
    lb = LazyBuffer(like.device, like.shape, like.dtype, LoadOps.BUFFER)
    lb.realized = buffer
    return lb
