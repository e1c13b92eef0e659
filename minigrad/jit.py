"""Capture a training step once, then replay its kernels: no graph building, no scheduling.

A training step builds the same graph every iteration, so it schedules the same kernels
every iteration.  `jit` runs the function normally once (the first call settles lazily
created state such as Adam's moments), twice more traced and compared (jitcheck.py refuses
what a replay would get wrong), records every kernel the fourth call runs together with its
buffers, and from then on replays that list directly on the backend:

    step = minigrad.jit(train_step, state=[model, optimizer])
    for it in range(iters):
        optimizer.lr = schedule(it)              # lr lives on the device: replays see it
        loss = step(Tensor(x), Tensor(y))        # call 5 onwards: kernels only

What a replay does:
  * it runs the captured kernels on buffers planned once: the step's intermediates share one
    arena by liveness (two share bytes only if one's last reader ran before the other's first
    write), so a replay allocates nothing and holds about what the busiest moment of the step
    needs, not every intermediate at once;
  * the arguments' buffers stand in for the captured arguments' (shapes must match);
  * state tensors (the model's parameters, the optimizer's moments and step count) are
    updated in their own buffers where that cannot change a number (Recording.update_in_place:
    always on NumPy for an optimizer step), and otherwise swap between two buffers, one read
    and one written per replay, re-pointed after;
    state the function only reads is read wherever it is now, so two jits can share it
    (a forward-backward step that reads the weights, an update step that writes them);
  * random kernels (dropout) draw fresh numbers from the next seed, as an eager step would.

A replay cannot see what the function reads from Python: data must come in as Tensor
arguments, and numbers that change (the learning rate) as device tensors.  The traced calls
refuse a function that reads values back while building its graph, or whose constants or
host data differ between them; one whose Python values change only later cannot be seen.
Values returned are copies, safe to keep.
"""
import functools
import math
import weakref
from collections import defaultdict
from typing import Dict, List

import numpy as np

from . import debug
from .backends import get_backend
from .kernel import KernelKind, Load, Op, walk
from .lazy import LazyBuffer
from .ops import LoadOps
from .schedule import prepare, recorders, run_kernel
from .tensor import Tensor, realize
from .jitcheck import CallChecks, check_signature, signature


def _buffer(t: Tensor):
    return t.lazydata.base.realized


def _as_plain_buffer(t: Tensor) -> Tensor:
    """A realized tensor that owns its buffer in order (arguments may arrive as views)."""
    if t.lazydata.base is not t.lazydata:
        t = t.contiguous()
    return t.realize()


class Recording:
    """The kernels a capture ran, with their buffers numbered in order of first appearance.

    A buffer that existed before its first use (a parameter, an argument) is held strongly.
    One that a captured kernel made is held weakly, so the capture frees intermediates exactly
    as an eager step does; the ones that died by the end are the step's intermediates, which
    plan() lays out on shared buffers by liveness."""

    def __init__(self):
        self.calls = []                       # (detached kernel, output number, input numbers)
        self.specs = []                       # number -> (size, dtype, device)
        self.refs = []                        # number -> the buffer, or a weakref to it
        self._numbers: Dict[int, int] = {}    # id(buffer) -> number, for buffers alive now

    def _number(self, buffer, spec, made_here: bool) -> int:
        key = id(buffer)
        if key in self._numbers:
            return self._numbers[key]
        n = len(self.refs)
        self._numbers[key] = n
        self.specs.append(spec)
        if made_here:
            self.refs.append(weakref.ref(buffer, lambda _, key=key: self._numbers.pop(key, None)))
        else:
            self.refs.append(lambda buffer=buffer: buffer)
        return n

    def record(self, kernel, out_buffer, input_buffers) -> None:
        ins = [self._number(b, (lb.size, lb.dtype, lb.device), made_here=False)
               for b, lb in zip(input_buffers, kernel.inputs)]
        out = self._number(out_buffer, (kernel.output.size, kernel.output.dtype, kernel.output.device),
                           made_here=True)
        self.calls.append((kernel.detached(), out, ins))

    def update_in_place(self, read_buffer, written_buffer) -> bool:
        """Let replays update a state tensor in its own buffer instead of alternating two: reads of
        the old value go to the new value's buffer, which then holds one copy of the state.
        Only when that cannot be told apart: one elementwise kernel writes the new value, it reads
        the old one element for element (the same index it writes), no kernel reads the old value
        after it, and the backend runs such kernels safely in place (NumPy's ufuncs do; OpenCL
        kernels declare their buffers `restrict`).  Returns whether it did."""
        old, new = self._numbers.get(id(read_buffer)), self._numbers.get(id(written_buffer))
        if old is None or new is None or old == new:
            return False
        writers = [i for i, (_, out, _) in enumerate(self.calls) if out == new]
        if len(writers) != 1 or any(out == old for _, out, _ in self.calls):
            return False
        w = writers[0]
        kernel, _, ins = self.calls[w]
        size, _, device = self.specs[old]
        if kernel.kind is not KernelKind.ELEMENTWISE or not get_backend(device).updates_in_place:
            return False
        if any(old in later_ins for _, _, later_ins in self.calls[w + 1:]):
            return False
        reads = [n for n in walk(kernel.ast) if isinstance(n, Load) and ins[n.index] == old]
        if not all(load.view.is_contiguous and load.view.size == size for load in reads):
            return False
        self.calls = [(k, out, [new if n == old else n for n in call_ins]) for k, out, call_ins in self.calls]
        self.refs[old] = lambda: None                    # nothing reads the old buffer now: let it go
        return True

    def plan(self):
        """(buffers, last uses): every number's buffer for replays.  Live ones keep theirs.  The
        dead ones (intermediates) get places in one arena per device: each lives from its first
        write to its last read, and two whose lives overlap never share bytes.  Largest first,
        each takes the lowest offset that is free for its whole life, so the arena comes out
        close to the most memory the step ever holds at once."""
        buffers = [ref() for ref in self.refs]
        first, last = {}, {}
        for i, (_, out, ins) in enumerate(self.calls):
            for n in [out] + ins:
                first.setdefault(n, i)
                last[n] = i
        ends = defaultdict(list)                  # call index -> dead numbers whose last use it is
        by_device = defaultdict(list)
        for n in first:
            if buffers[n] is None:
                ends[last[n]].append(n)
                by_device[self.specs[n][2]].append(n)
        for device, numbers in by_device.items():
            backend = get_backend(device)
            nbytes = {n: -(-max(1, self.specs[n][0]) * np.dtype(self.specs[n][1]).itemsize // backend.alignment)
                      * backend.alignment for n in numbers}
            placed, offset = [], {}               # (start, end, first, last) of placed buffers
            for n in sorted(numbers, key=lambda n: (-nbytes[n], first[n])):
                clashes = sorted((a, b) for a, b, f, l in placed if f <= last[n] and first[n] <= l)
                at = 0
                for a, b in clashes:              # the lowest gap that fits
                    if at + nbytes[n] <= a:
                        break
                    at = max(at, b)
                offset[n] = at
                placed.append((at, at + nbytes[n], first[n], last[n]))
            backend.release_kept()                # what the eager calls freed: the arena takes its place
            arena = backend.allocate(max(b for _, b, _, _ in placed), np.uint8)
            for n in numbers:
                size, dtype, _ = self.specs[n]
                buffers[n] = backend.as_typed(arena, offset[n], size, dtype)
        return buffers, dict(ends)

class jit:
    def __init__(self, fn, state=()):
        self.fn = fn
        self.state_objects = list(state)
        self.calls = 0
        self.recording = None        # a Recording, once captured
        self.replayed = False

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
        if self.recording is not None:
            return self._replay(args)
        if self.calls == 1:
            return self.fn(*args)
        if self.calls == 2:
            self.checks = CallChecks(self.fn)
        if self.calls <= 3 or self.checks.refusal is not None:
            return self.checks.run(args, self._state_tensors())
        self.checks.same_call(args)
        return self._capture(args)

    # ---- capture -------------------------------------------------------------------
    def _capture(self, args):
        state = self._state_tensors()
        realize(*state)
        before = [_buffer(t) for t in state]
        self.arg_signature = [(a.shape, a.dtype, a.device) if isinstance(a, Tensor) else a for a in args]
        self.arg_buffers = [_buffer(a) for a in args if isinstance(a, Tensor)]
        self.counter_start = Tensor._rng_counter
        recording = Recording()
        recorders.append(recording)
        try:
            result = self.fn(*args)
            outputs = self._outputs(result)
            realize(*outputs)
        finally:
            recorders.remove(recording)
        self.counters_per_call = Tensor._rng_counter - self.counter_start
        after = [_buffer(t) for t in state]
        self.state_pairs = [(a, a) if recording.update_in_place(b, a) else (b, a) for b, a in zip(before, after)]
        self.state_views = [(t.lazydata.view, t.lazydata.base.shape) for t in state]  # a parameter is a view of its group's buffer
        self.output_reads = [(_buffer(o), o.lazydata.view, o.dtype, o.device) for o in outputs]
        self.result_is_tuple = isinstance(result, (tuple, list))
        self.buffers, self.released_after = recording.plan()
        self.recording = recording
        return result

    @staticmethod
    def _outputs(result) -> List[Tensor]:
        outputs = list(result) if isinstance(result, (tuple, list)) else [result]
        if not all(isinstance(o, Tensor) for o in outputs):
            raise TypeError("a jit function must return a Tensor or a tuple of Tensors")
        return outputs

    # ---- replay --------------------------------------------------------------------
    def _replay(self, args):
        check_signature(self.arg_signature, signature(args))
        if not self.replayed:                      # the buffers the eager calls freed and a backend kept
            self.replayed = True                   # for reuse: replays use the arena instead
            for device in {spec[2] for spec in self.recording.specs}:
                get_backend(device).release_kept()
        state = self._state_tensors()
        if len(state) != len(self.state_pairs):
            raise RuntimeError("the jit's state changed since capture (a parameter was added or removed)")
        swap, stale = {}, []
        for t, (read_buf, write_buf), captured in zip(state, self.state_pairs, self.state_views):
            current = _buffer(t)
            if current is read_buf:
                continue
            if current is write_buf:                   # last replay wrote here: swap roles
                swap[id(read_buf)], swap[id(write_buf)] = write_buf, read_buf
            elif read_buf is write_buf and current is not None and _whole(t.lazydata.view, t.lazydata.base.shape) \
                    and _whole(*captured) and t.lazydata.base.shape == captured[1]:
                swap[id(read_buf)] = current           # it lives in another buffer now: read (and update) it there
            else:                                      # replaced from outside (e.g. a checkpoint load)
                stale.append((t, read_buf, captured[0]))
        for t, read_buf, view in stale:                # into its stretch of the buffer this replay reads
            get_backend(t.device).write(swap.get(id(read_buf), read_buf), t.numpy(), offset=view.offset)
        for captured, a in zip(self.arg_buffers, (a for a in args if isinstance(a, Tensor))):
            swap[id(captured)] = _buffer(a)
        counter_shift = Tensor._rng_counter - self.counter_start
        Tensor._rng_counter += self.counters_per_call
        buffers = [swap.get(id(b), b) for b in self.buffers]
        if debug.POISON_FREED:                    # debug: a buffer read after its planned last use reads NaN
            for i, (kernel, out, ins) in enumerate(self.recording.calls):
                if kernel.kind is KernelKind.RAND:
                    kernel = _reseeded(kernel, counter_shift)
                run_kernel(kernel, buffers[out], [buffers[n] for n in ins])
                for n in self.released_after.get(i, ()):
                    _poison(buffers[n], self.recording.specs[n])
        else:
            self.counter_shift = counter_shift
            for call in self._bound_calls(buffers):
                call()
        bases = {}                                 # one base per buffer: views of one stay views of one
        for t, (_, write_buf), view in zip(state, self.state_pairs, self.state_views):
            buffer = swap.get(id(write_buf), write_buf)
            if buffer is not _buffer(t):
                t.lazydata = _wrap(buffer, t, view, bases)
        outputs = []
        for buffer, view, dtype, device in self.output_reads:
            values = get_backend(device).copy_out(swap.get(id(buffer), buffer), view, dtype)
            outputs.append(Tensor(values, device=device))
        return tuple(outputs) if self.result_is_tuple else outputs[0]


    def _bound_calls(self, buffers) -> list:
        """The replay as a flat list of launches, each bound to its buffers once (Backend.bind: on
        the CPU a compiled kernel's function with its pointers, or np.matmul on fixed views), so a
        replay is one Python call per launch.  A launch is one kernel, or a run of elementwise
        kernels of one shape that the backend runs as one multi-output kernel (_launch_groups).
        Only launches whose buffers changed since the last replay are bound again: those reading
        the arguments, or state replaced from outside."""
        calls = self.recording.calls
        if getattr(self, "launch_groups", None) is None:
            prepare([k for k, _, _ in calls])                          # compile the step's kernels in one go
            self.launch_groups = _launch_groups(calls)
            self._dead_after = {n: i for i, numbers in self.released_after.items() for n in numbers}
            specs = defaultdict(list)
            for group in self.launch_groups:
                if len(group) > 1:
                    kernels, sources, stores, inputs, _ = self._group_spec(group)
                    specs[kernels[0].output.device].append((kernels, sources, stores,
                                                            [self.recording.specs[n][1] for n in inputs]))
            for device, groups in specs.items():                       # and their multi-output kernels
                get_backend(device).prepare_groups(groups)
            self._launches, self._bound_to = [None] * len(self.launch_groups), [None] * len(buffers)
            self._users = defaultdict(list)       # buffer number -> the launches that use it
            for g, group in enumerate(self.launch_groups):
                for n in {n for i in group for n in (calls[i][1], *calls[i][2])}:
                    self._users[n].append(g)
        stale = set()
        for n, (now, before) in enumerate(zip(buffers, self._bound_to)):
            if now is not before:
                stale.update(self._users[n])
                self._bound_to[n] = now
        for g in stale:
            self._launches[g] = self._bind_launch(self.launch_groups[g], buffers)
        return self._launches

    def _group_spec(self, group):
        """What a backend needs to run calls `group` as one kernel: the kernels; for each, where
        its inputs come from (("in", k): the group's input k; ("member", j): the value member j
        computes); whether each value is stored (not if no later call reads it and it is a step
        intermediate); the group's input and stored output buffer numbers."""
        calls = self.recording.calls
        written_by, inputs, sources, stores, outputs = {}, [], [], [], []
        for m, i in enumerate(group):
            kernel, out, ins = calls[i]
            mine = []
            for n in ins:
                if n in written_by:
                    mine.append(("member", written_by[n]))
                else:
                    if n not in inputs:
                        inputs.append(n)
                    mine.append(("in", inputs.index(n)))
            sources.append(mine)
            written_by[out] = m
            store = not (out in self._dead_after and self._dead_after[out] <= group[-1])
            stores.append(store)
            if store:
                outputs.append(out)
        return [calls[i][0] for i in group], sources, stores, inputs, outputs

    def _bind_launch(self, group, buffers):
        calls = self.recording.calls
        if len(group) > 1:
            kernels, sources, stores, inputs, outputs = self._group_spec(group)
            backend = get_backend(kernels[0].output.device)
            bound = backend.bind_group(kernels, sources, stores, [buffers[n] for n in inputs],
                                       [buffers[n] for n in outputs])
            if bound is not None:
                return bound                      # else one after another, each writing its output
            return functools.partial(_run_each, [self._bind_launch([i], buffers) for i in group])
        kernel, out, ins = calls[group[0]]
        if kernel.kind is KernelKind.RAND:         # a fresh seed every replay: bound to this jit
            return functools.partial(self._run_random, kernel, buffers[out], [buffers[n] for n in ins])
        return _bind(kernel, buffers[out], [buffers[n] for n in ins])

    def _run_random(self, kernel, out, ins) -> None:
        run_kernel(_reseeded(kernel, self.counter_shift), out, ins)


# Elementwise kernels in a row that one loop may run (at most this many, to keep its C small).
MAX_GROUP = 8


def _launch_groups(calls) -> List[List[int]]:
    """Runs of consecutive calls that may run as one multi-output kernel: elementwise, one output
    shape, a backend that fuses them, each output written once, and every read of a buffer the
    run writes at the element being written (in one loop the kernels' reads and writes
    interleave element by element, so any other access would see the wrong value).  Every other
    call is a group of its own."""
    groups: List[List[int]] = []
    for i, (kernel, out, ins) in enumerate(calls):
        group = groups[-1] if groups else None
        if group and len(group) < MAX_GROUP and _may_join(calls, group, i):
            group.append(i)
        else:
            groups.append([i])
    return groups


def _may_join(calls, group, i) -> bool:
    kernel, out, ins = calls[i]
    first = calls[group[0]][0]
    backend = get_backend(kernel.output.device)
    if kernel.output.device != first.output.device or kernel.output.shape != first.output.shape:
        return False
    if not (backend.groups_kernel(kernel) and backend.groups_kernel(first)):
        return False
    written = {calls[j][1] for j in group}
    if out in written:
        return False
    size = kernel.output.size

    def same_element(load):
        return load.view.is_contiguous and load.view.size == size
    for load in (n for n in walk(kernel.ast) if isinstance(n, Load)):
        if (ins[load.index] in written or ins[load.index] == out) and not same_element(load):
            return False
    for j in group:
        member, _, member_ins = calls[j]
        for load in (n for n in walk(member.ast) if isinstance(n, Load)):
            if member_ins[load.index] == out and not same_element(load):
                return False
    return True


def _run_each(calls) -> None:
    for call in calls:
        call()


def _bind(kernel, out, ins):
    if kernel.kind is KernelKind.COPY:             # between devices: run_kernel knows how
        return functools.partial(run_kernel, kernel, out, ins)
    return get_backend(kernel.output.device).bind(kernel, out, ins)


def _reseeded(kernel, counter_shift: int):
    """The same random kernel with the seed an eager call would have drawn at this point."""
    from .kernel import Kernel
    root = kernel.ast
    arg = root.arg._replace(seed=Tensor._seed, counter=root.arg.counter + counter_shift)
    ast = Op(root.op, root.srcs, arg, root.dtype, root.shape)
    return Kernel(kernel.output, kernel.inputs, ast)


def _poison(buffer, spec) -> None:
    size, dtype, device = spec
    if np.dtype(dtype).kind == "f":
        get_backend(device).write(buffer, np.full(size, np.nan, dtype))


def _whole(view, base_shape) -> bool:
    """Does `view` read all of a base of `base_shape`, in order?"""
    return view.is_contiguous and view.size == math.prod(base_shape)


def _wrap(buffer, like: Tensor, captured, bases: dict) -> LazyBuffer:
    """A graph node for `buffer` read as `like` was captured, `captured` = (its view, its base's
    shape): a view of a base shared by every state tensor of that buffer (an optimizer finds its
    parameters to be consecutive views of one buffer, and reads them with no copy)."""
    view, base_shape = captured
    base = bases.get(id(buffer))
    if base is None:
        base = bases[id(buffer)] = LazyBuffer(like.device, base_shape, like.dtype, LoadOps.BUFFER)
        base.realized = buffer
    if view.shape == base_shape and view.is_contiguous:
        return base
    return LazyBuffer(like.device, view.shape, like.dtype, LoadOps.BUFFER, base=base, view=view)
