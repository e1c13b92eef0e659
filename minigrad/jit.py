"""Capture a training step once, then replay its kernels: no graph building, no scheduling.

A training step builds the same graph every iteration, so it schedules the same kernels
every iteration.  `jit` runs the function normally twice (the first call settles lazily
created state such as Adam's moments), records every kernel the second call runs together
with its buffers, and from then on replays that list directly on the backend:

    step = minigrad.jit(train_step, state=[model, optimizer])
    for it in range(iters):
        optimizer.lr = schedule(it)              # lr lives on the device: replays see it
        loss = step(Tensor(x), Tensor(y))        # call 3 onwards: kernels only

What a replay does:
  * the arguments' buffers stand in for the captured arguments' (shapes must match);
  * state tensors (the model's parameters, the optimizer's moments and step count) swap
    between two buffers, one read and one written per replay, and are re-pointed after;
    state the function only reads is read wherever it is now, so two jits can share it
    (a forward-backward step that reads the weights, an update step that writes them);
  * random kernels (dropout) draw fresh numbers from the next seed, as an eager step would.

What it cannot see: anything the function reads from Python that changes between calls.
Data must come in as Tensor arguments, and numbers that change (the learning rate) as
device tensors; host data made inside the function (Tensor(np.arange(T))) is replayed as
captured.  Values returned are copies, safe to keep.
"""
from typing import List

from .backends import get_backend
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
        return self._capture(args)

    # ---- capture -------------------------------------------------------------------
    def _capture(self, args):
        state = self._state_tensors()
        realize(*state)
        before = [_buffer(t) for t in state]
        self.arg_signature = [(a.shape, a.dtype, a.device) if isinstance(a, Tensor) else a for a in args]
        self.arg_buffers = [_buffer(a) for a in args if isinstance(a, Tensor)]
        self.counter_start = Tensor._rng_counter
        recording = []
        recorders.append(recording)
        try:
            result = self.fn(*args)
            outputs = self._outputs(result)
            realize(*outputs)
        finally:
            recorders.remove(recording)
        self.counters_per_call = Tensor._rng_counter - self.counter_start
        after = [_buffer(t) for t in state]
        self.state_pairs = list(zip(before, after))
        self.output_reads = [(_buffer(o), o.lazydata.view, o.dtype, o.device) for o in outputs]
        self.result_is_tuple = isinstance(result, (tuple, list))
        self.kernels = recording
        return result

    @staticmethod
    def _outputs(result) -> List[Tensor]:
        outputs = list(result) if isinstance(result, (tuple, list)) else [result]
        if not all(isinstance(o, Tensor) for o in outputs):
            raise TypeError("a jit function must return a Tensor or a tuple of Tensors")
        return outputs

    # ---- replay --------------------------------------------------------------------
    def _replay(self, args):
        signature = [(a.shape, a.dtype, a.device) if isinstance(a, Tensor) else a for a in args]
        if signature != self.arg_signature:
            raise ValueError(f"jit captured calls with arguments {self.arg_signature}, got {signature}; "
                             f"make a new jit for a new shape")
        state = self._state_tensors()
        if len(state) != len(self.state_pairs):
            raise RuntimeError("the jit's state changed since capture (a parameter was added or removed)")
        swap = {}
        for t, (read_buf, write_buf) in zip(state, self.state_pairs):
            current = _buffer(t)
            if read_buf is write_buf:                  # only read here, but another step may replace it
                if current is not read_buf:
                    swap[id(read_buf)] = current
                continue
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
