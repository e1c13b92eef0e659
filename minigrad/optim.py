"""Optimizers.  step() builds every parameter group's update lazily, then realizes all of them in
one schedule; each group is one flat buffer (see Optimizer), so the whole update of a model is a
handful of fused kernels."""
import math
from typing import Iterable, List, Optional

import numpy as np

from .ops import MovementOps
from .tensor import Tensor, no_grad, realize


def flat(tensors: List[Tensor]) -> Tensor:
    """Every element of `tensors`, one tensor after another, as one 1-D tensor.  When they already
    are consecutive stretches of one buffer (the parameters of an optimizer's group, gradients that
    clip_grad_norm_ scaled, a gradient bucket), that is a view of the buffer and costs nothing;
    else one cat kernel."""
    base, start, end = _consecutive(tensors)
    if base is None:
        return Tensor.cat(*[t.reshape(-1) for t in tensors])
    whole = Tensor(base).reshape(-1)
    return whole if (start, end) == (0, whole.numel()) else whole.shrink(((start, end),))


def _stretches(tensors):
    """(tensor, (start, end)) for each tensor: where it lies in the flat layout of all of them."""
    start = 0
    for t in tensors:
        yield t, (start, start + t.numel())
        start += t.numel()


def _consecutive(tensors):
    """(base, start, end) when every tensor reads its base in order from an offset, each starting
    where the one before ended; else (None, 0, 0)."""
    if not tensors:
        return None, 0, 0
    base = tensors[0].lazydata.base
    start = end = tensors[0].lazydata.view.offset
    for t in tensors:
        lb = t.lazydata
        if lb.base is not base or not lb.view.is_run or lb.view.offset != end:
            return None, 0, 0
        end += lb.size
    return base, start, end


class Optimizer:
    """Holds parameters and their state.  Numbers that change during training (the learning
    rate, the step count) live on the device as one-element tensors, not as Python floats
    baked into kernels, so a captured step (jit.py) replays correctly with new values.

    Each group of parameters (same options, dtype and device) lives in one flat buffer: every
    parameter becomes a view of its stretch of it, and the group's state (Adam's moments) is flat
    too.  So a step updates a whole group in one elementwise kernel per state, whatever the number
    of parameters, and a jit replays it as one launch:

        W = [W_e | W_p | W_qkv,1 | ...]      one buffer;  p = W[a:b].reshape(p.shape)
        W' = W - lr * m_hat / (sqrt(v_hat) + eps)    one kernel over all of W

    A parameter replaced from outside (load_state_dict) is gathered back into its group with one
    cat kernel at the next step; nothing else changes."""

    def __init__(self, params: Iterable, lr: float):
        """params: Tensors, or PyTorch-style groups [{"params": [...], "weight_decay": 0.0}, ...]
        whose options override the optimizer's for the tensors in that group."""
        self.params: List[Tensor] = []
        self.groups: List[tuple] = []             # (indices into params, options the group overrides)
        option_groups = []                        # consecutive plain tensors share one, with no options
        for item in params:
            if isinstance(item, dict):
                unknown = set(item) - {"params", "weight_decay"}
                if unknown:
                    raise ValueError(f"parameter groups may set only 'weight_decay', got {sorted(unknown)}")
                option_groups.append(({k: v for k, v in item.items() if k != "params"}, list(item["params"])))
            elif option_groups and option_groups[-1][2:]:
                option_groups[-1][1].append(item)
            else:
                option_groups.append(({}, [item], "plain"))
        seen = set()
        for options, tensors, *_ in option_groups:
            layouts = {}                            # (dtype, device) -> indices: one flat buffer each
            for p in tensors:
                if not p.requires_grad:
                    continue
                if id(p) in seen:
                    raise ValueError("a parameter appears twice in the optimizer's parameters; give each once")
                seen.add(id(p))
                layouts.setdefault((p.dtype, p.device), []).append(len(self.params))
                self.params.append(p)
            self.groups += [(indices, options) for indices in layouts.values()]
        if not self.params:
            raise ValueError("optimizer got no parameters that require grad")
        for indices, _ in self.groups:
            self._lay_out(indices)
        device, dtype = self.params[0].device, self.params[0].dtype
        self._lr_tensor = Tensor.zeros(1, dtype=dtype, device=device).contiguous().realize()
        self.lr = lr
        self.step_tensor = Tensor.zeros(1, dtype=dtype, device=device).contiguous().realize()

    def _lay_out(self, indices: List[int]) -> None:
        """Give the group one flat buffer and make each parameter a view of its stretch."""
        group = [self.params[i] for i in indices]
        with no_grad():
            weights = flat([p.detach() for p in group]).contiguous().realize()
        self._as_views(group, weights)

    @staticmethod
    def _as_views(group: List[Tensor], weights: Tensor) -> None:
        for p, stretch in _stretches(group):
            p.lazydata = weights.lazydata.movement(MovementOps.SHRINK, (stretch,)).movement(MovementOps.RESHAPE, p.shape)

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        """Setting lr writes the new value straight into its device buffer."""
        if value < 0:
            raise ValueError(f"learning rate must be >= 0, got {value}")
        from .backends import get_backend
        self._lr = float(value)
        lb = self._lr_tensor.lazydata
        get_backend(lb.device).write(lb.base.realized, np.array([self._lr], dtype=lb.dtype))

    @property
    def step_count(self) -> int:
        return int(self.step_tensor.item())

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        with no_grad():
            self._assign(self.step_tensor, self.step_tensor + 1)
            updated = [self.step_tensor]
            for g, (indices, options) in enumerate(self.groups):
                group = [self.params[i] for i in indices]
                if all(p.grad is None for p in group):
                    continue
                weights = flat([p.detach() for p in group])
                state = self._group_state(g, weights)
                if all(p.grad is not None for p in group):
                    new_weights, new_state = self._update(options, weights, flat([p.grad.detach() for p in group]), state)
                else:                                # update only the stretches that have a gradient
                    new_weights, new_state = self._update_parts(options, group, weights, state)
                new_weights = new_weights.cast(weights.dtype).contiguous()
                self._as_views(group, new_weights)
                self._set_group_state(g, new_state)
                updated += [new_weights] + new_state
            # per-step numbers first, so each group's updates are consecutive kernels (one launch)
            realize(*updated[:1], *self._step_scalars(), *updated[1:])

    def _update_parts(self, options, group, weights, state):
        pieces, state_pieces = [], [[] for _ in state]
        for p, stretch in _stretches(group):
            w, s = weights.shrink((stretch,)), [t.shrink((stretch,)) for t in state]
            if p.grad is not None:
                w, s = self._update(options, w, p.grad.detach().reshape(-1), s)
            pieces.append(w)
            for k, t in enumerate(s):
                state_pieces[k].append(t)
        return Tensor.cat(*pieces), [Tensor.cat(*ts) for ts in state_pieces]

    def _update(self, options: dict, w: Tensor, g: Tensor, state: List[Tensor]):
        """(new weights, new state) of one group, all flat (or one parameter's stretch of them)."""
        raise NotImplementedError

    def _group_state(self, g: int, weights: Tensor) -> List[Tensor]:
        return []

    def _step_scalars(self) -> List[Tensor]:
        """Numbers of this step that every group's update reads (Adam's bias corrections)."""
        return []

    def _set_group_state(self, g: int, state: List[Tensor]) -> None:
        pass

    def _option(self, options: dict, name: str):
        return options.get(name, getattr(self, name))

    def _lr_like(self, like: Tensor) -> Tensor:
        return self._lr_tensor.reshape(()).cast(like.dtype)

    @staticmethod
    def _assign(target: Tensor, value: Tensor) -> Tensor:
        target.lazydata = value.cast(target.dtype).lazydata
        return target

    def state_tensors(self) -> List[Tensor]:
        """Every tensor a step replaces: what a JIT must carry from one replay to the next."""
        return [self.step_tensor] + self.params + self._state()

    def _state(self) -> List[Tensor]:
        return []

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "lr": self.lr, "state": self._state_arrays()}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.step_tensor = Tensor([float(state["step_count"])], dtype=self.step_tensor.dtype,
                                  device=self.step_tensor.device)
        self._load_state_arrays(state["state"])

    def _state_arrays(self) -> dict:
        return {}

    def _load_state_arrays(self, arrays: dict) -> None:
        pass

    def _per_parameter(self, name: str, flats: List[Tensor]) -> dict:
        """A flat state per group, as one array per parameter (the checkpoint's format): {name.i: array}."""
        arrays = {}
        for (indices, _), state in zip(self.groups, flats):
            if state is None:
                continue
            values = state.numpy()
            for i, (p, (a, b)) in zip(indices, _stretches([self.params[i] for i in indices])):
                arrays[f"{name}.{i}"] = values[a:b].reshape(p.shape)
        return arrays

    def _grouped(self, name: str, arrays: dict, required: bool = True) -> List[Tensor]:
        """The reverse of _per_parameter: {name.i: array} -> a flat state Tensor per group.  When
        not required, a group with none of them is None and a parameter missing from a group
        that has some is zeros (SGD saved momentum only for parameters it had updated)."""
        flats = []
        for indices, _ in self.groups:
            present = [f"{name}.{i}" in arrays for i in indices]
            if not any(present) and not required:
                flats.append(None)
                continue
            parts = []
            for i in indices:
                p = self.params[i]
                if f"{name}.{i}" not in arrays and required:
                    raise ValueError(f"optimizer state has no {name}.{i} (parameter of shape {p.shape})")
                value = np.asarray(arrays.get(f"{name}.{i}", np.zeros(p.shape, p.dtype)))
                if tuple(value.shape) != p.shape:
                    raise ValueError(f"optimizer state {name}.{i} has shape {value.shape}, parameter has {p.shape}")
                parts.append(value.reshape(-1).astype(p.dtype))
            first = self.params[indices[0]]
            flats.append(Tensor(np.concatenate(parts), dtype=first.dtype, device=first.device))
        return flats


class SGD(Optimizer):
    """p -= lr * (g + weight_decay * p), with optional (Nesterov) momentum as in PyTorch."""

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.buffers: List[Optional[Tensor]] = [None] * len(self.groups)    # flat momentum, per group

    def _group_state(self, g, weights):
        if not self.momentum:
            return []
        if self.buffers[g] is None:          # 0 * momentum + g is g: the same as PyTorch's first step
            self.buffers[g] = Tensor.zeros(weights.numel(), dtype=weights.dtype, device=weights.device)
        return [self.buffers[g]]

    def _set_group_state(self, g, state):
        if state:
            self.buffers[g] = self._assign(self.buffers[g], state[0])

    def _update(self, options, w, g, state):
        weight_decay = self._option(options, "weight_decay")
        if weight_decay:
            g = g + weight_decay * w
        if self.momentum:
            buf = state[0] * self.momentum + g
            g = g + self.momentum * buf if self.nesterov else buf
            state = [buf]
        return w - self._lr_like(w) * g, state

    def _state(self):
        return [b for b in self.buffers if b is not None]

    def _state_arrays(self):
        return self._per_parameter("momentum", self.buffers)

    def _load_state_arrays(self, arrays):
        self.buffers = self._grouped("momentum", arrays, required=False)


class Adam(Optimizer):
    """Adam; weight_decay here is L2 (added to the gradient), as in torch.optim.Adam.

    A parameter whose grad is None in a step is skipped (its weights, m and v stay), as in
    PyTorch.  The bias corrections use the optimizer's one step count, where PyTorch counts steps
    per parameter: they differ only for a parameter that skipped steps and then is updated again."""
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.b1, self.b2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m, self.v = [], []                   # flat moments, one of each per group
        for indices, _ in self.groups:
            first, n = self.params[indices[0]], sum(self.params[i].numel() for i in indices)
            self.m.append(Tensor.zeros(n, dtype=first.dtype, device=first.device))
            self.v.append(Tensor.zeros(n, dtype=first.dtype, device=first.device))
        self._corrections_of, self._corrections, self._log_betas = None, {}, {}     # see _bias_corrections

    def _group_state(self, g, weights):
        return [self.m[g], self.v[g]]

    def _set_group_state(self, g, state):
        self._assign(self.m[g], state[0])
        self._assign(self.v[g], state[1])

    def _update(self, options, w, g, state):
        m, v = state
        lr = self._lr_like(w)
        weight_decay = self._option(options, "weight_decay")
        if weight_decay and not self.decoupled:
            g = g + weight_decay * w
        if weight_decay and self.decoupled:               # AdamW: shrink the weight, not the gradient
            w = w * (1 - lr * weight_decay)
        m = m * self.b1 + g * (1 - self.b1)
        v = v * self.b2 + g.square() * (1 - self.b2)
        bc1, bc2 = self._bias_corrections(w.dtype)
        m_hat = m / bc1                                   # m and v start at 0: undo that bias
        v_hat = v / bc2
        return w - lr * m_hat / (v_hat.sqrt() + self.eps), [m.cast(w.dtype).contiguous(), v.cast(w.dtype).contiguous()]

    def _bias_corrections(self, dtype):
        """1 - beta1^t and 1 - beta2^t, as b^t = exp(t log b) from the step count on the device: one
        pair per step (and dtype) that every group's update reads, so the scheduler gives them a
        two-element buffer (one kernel) instead of every update kernel computing two exps per element."""
        step = self.step_tensor.lazydata              # this step's count: a new node every step
        if self._corrections_of is not step:
            self._corrections_of, self._corrections = step, {}
        if dtype not in self._corrections:            # both in one kernel: [1 - b1^t, 1 - b2^t]
            t = self.step_tensor.reshape(()).cast(dtype)
            if dtype not in self._log_betas:          # made once: a replay reads the same buffer
                self._log_betas[dtype] = Tensor(np.array([math.log(self.b1), math.log(self.b2)]), dtype=dtype,
                                                device=self.step_tensor.device).realize()
            both = 1 - (t * self._log_betas[dtype]).exp()
            self._corrections[dtype] = (both[0], both[1])
        return self._corrections[dtype]

    def _step_scalars(self):
        return [self._bias_corrections(dtype)[0] for dtype in {self.params[indices[0]].dtype for indices, _ in self.groups}]

    def _state(self):
        return self.m + self.v

    def _state_arrays(self):
        return {**self._per_parameter("m", self.m), **self._per_parameter("v", self.v)}

    def _load_state_arrays(self, arrays):
        self.m, self.v = self._grouped("m", arrays), self._grouped("v", arrays)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay before the Adam step
    (the same update as torch.optim.AdamW)."""
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm_(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """Scale all gradients so that their joint L2 norm is at most max_norm; return the norm
    before clipping.  Stays lazy: nothing is computed until the optimizer step realizes.

    The gradients are gathered into one flat tensor per dtype and device (one cat kernel), the
    norm is one reduce over it, and each gradient becomes a view of the scaled flat tensor, so
    an optimizer that lays its groups out in the same order reads them with no copy (pass it
    optimizer.params)."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return Tensor(0.0)
    kinds = {}
    for p in grads:
        kinds.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    with no_grad():
        flats = {key: flat([p.grad.detach() for p in ps]) for key, ps in kinds.items()}
        total = None
        for g in flats.values():
            sq = g.square().sum()
            total = sq if total is None else total + sq
        norm = total.sqrt()
        scale = (max_norm / (norm + 1e-6)).minimum(1.0)
        for key, ps in kinds.items():
            scaled = flats[key] * scale.cast(key[0])
            for p, stretch in _stretches(ps):
                p.grad = scaled.shrink((stretch,)).reshape(p.shape)
    return norm


def cosine_lr(step: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at decay_iters, then min_lr (nanoGPT's schedule)."""
    if step < warmup_iters:
        return lr * (step + 1) / (warmup_iters + 1)
    if step > decay_iters:
        return min_lr
    ratio = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)
