"""Optimizers.  step() builds every parameter's update lazily, then realizes all of them in
one schedule, so the whole update of a model is a handful of fused kernels."""
import math
from typing import Iterable, List

import numpy as np

from .tensor import Tensor, no_grad, realize


class Optimizer:
    """Holds parameters and their state.  Numbers that change during training (the learning
    rate, the step count) live on the device as one-element tensors, not as Python floats
    baked into kernels, so a captured step (jit.py) replays correctly with new values."""

    def __init__(self, params: Iterable, lr: float):
        """params: Tensors, or PyTorch-style groups [{"params": [...], "weight_decay": 0.0}, ...]
        whose options override the optimizer's for the tensors in that group."""
        self.params: List[Tensor] = []
        self.overrides: List[dict] = []           # per parameter: the options its group overrides
        for item in params:
            group = item if isinstance(item, dict) else {"params": [item]}
            unknown = set(group) - {"params", "weight_decay"}
            if unknown:
                raise ValueError(f"parameter groups may set only 'weight_decay', got {sorted(unknown)}")
            options = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                if p.requires_grad:
                    self.params.append(p)
                    self.overrides.append(options)
        if not self.params:
            raise ValueError("optimizer got no parameters that require grad")
        device, dtype = self.params[0].device, self.params[0].dtype
        self._lr_tensor = Tensor.zeros(1, dtype=dtype, device=device).contiguous().realize()
        self.lr = lr
        self.step_tensor = Tensor.zeros(1, dtype=dtype, device=device).contiguous().realize()

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
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                updated += self._update(i, p, p.grad.detach())
            realize(*updated)

    def _update(self, i: int, p: Tensor, g: Tensor) -> List[Tensor]:
        """Set p.lazydata (and any state) to the new lazy values; return them for realizing."""
        raise NotImplementedError

    def _option(self, i: int, name: str):
        return self.overrides[i].get(name, getattr(self, name))

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


class SGD(Optimizer):
    """p -= lr * (g + weight_decay * p), with optional (Nesterov) momentum as in PyTorch."""

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.buffers = [None] * len(self.params)

    def _update(self, i, p, g):
        weight_decay = self._option(i, "weight_decay")
        if weight_decay:
            g = g + weight_decay * p.detach()
        out = []
        if self.momentum:
            buf = g if self.buffers[i] is None else self.buffers[i] * self.momentum + g
            self.buffers[i] = buf
            out.append(buf)
            g = g + self.momentum * buf if self.nesterov else buf
        return out + [self._assign(p, p.detach() - self._lr_like(p) * g)]

    def _state(self):
        return [b for b in self.buffers if b is not None]

    def _state_arrays(self):
        return {f"momentum.{i}": b.numpy() for i, b in enumerate(self.buffers) if b is not None}

    def _load_state_arrays(self, arrays):
        for i in range(len(self.params)):
            if f"momentum.{i}" in arrays:
                self.buffers[i] = Tensor(arrays[f"momentum.{i}"], device=self.params[i].device)


class Adam(Optimizer):
    """Adam; weight_decay here is L2 (added to the gradient), as in torch.optim.Adam."""
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.b1, self.b2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = [Tensor.zeros(*p.shape, dtype=p.dtype, device=p.device) for p in self.params]
        self.v = [Tensor.zeros(*p.shape, dtype=p.dtype, device=p.device) for p in self.params]
        self._corrections_of, self._corrections = None, {}     # see _bias_corrections

    def _update(self, i, p, g):
        w = p.detach()
        lr = self._lr_like(p)
        weight_decay = self._option(i, "weight_decay")
        if weight_decay and not self.decoupled:
            g = g + weight_decay * w
        if weight_decay and self.decoupled:               # AdamW: shrink the weight, not the gradient
            w = w * (1 - lr * weight_decay)
        m = self._assign(self.m[i], self.m[i] * self.b1 + g * (1 - self.b1))
        v = self._assign(self.v[i], self.v[i] * self.b2 + g.square() * (1 - self.b2))
        bc1, bc2 = self._bias_corrections(p.dtype)
        m_hat = m / bc1                                   # m and v start at 0: undo that bias
        v_hat = v / bc2
        return [m, v, self._assign(p, w - lr * m_hat / (v_hat.sqrt() + self.eps))]

    def _bias_corrections(self, dtype):
        """1 - beta1^t and 1 - beta2^t, as b^t = exp(t log b) from the step count on the device: one
        pair per step (and dtype) that every parameter's update reads, so the scheduler gives each
        a one-element buffer instead of every update kernel computing two exps per element."""
        step = self.step_tensor.lazydata              # this step's count: a new node every step
        if self._corrections_of is not step:
            self._corrections_of, self._corrections = step, {}
        if dtype not in self._corrections:
            t = self.step_tensor.reshape(()).cast(dtype)
            self._corrections[dtype] = (1 - (t * math.log(self.b1)).exp(), 1 - (t * math.log(self.b2)).exp())
        return self._corrections[dtype]

    def _state(self):
        return self.m + self.v

    def _state_arrays(self):
        arrays = {f"m.{i}": m.numpy() for i, m in enumerate(self.m)}
        arrays.update({f"v.{i}": v.numpy() for i, v in enumerate(self.v)})
        return arrays

    def _load_state_arrays(self, arrays):
        for i, p in enumerate(self.params):
            for name, store in (("m", self.m), ("v", self.v)):
                value = arrays[f"{name}.{i}"]
                if tuple(value.shape) != p.shape:
                    raise ValueError(f"optimizer state {name}.{i} has shape {value.shape}, parameter has {p.shape}")
                store[i] = Tensor(value, dtype=p.dtype, device=p.device)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay before the Adam step
    (the same update as torch.optim.AdamW)."""
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm_(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """Scale all gradients so that their joint L2 norm is at most max_norm; return the norm
    before clipping.  Stays lazy: nothing is computed until the optimizer step realizes."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return Tensor(0.0)
    total = None
    for p in grads:
        sq = p.grad.detach().square().sum()
        total = sq if total is None else total + sq
    norm = total.sqrt()
    scale = (max_norm / (norm + 1e-6)).minimum(1.0)
    for p in grads:
        p.grad = p.grad.detach() * scale
    return norm


def cosine_lr(step: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at decay_iters, then min_lr (nanoGPT's schedule)."""
    if step < warmup_iters:
        return lr * (step + 1) / (warmup_iters + 1)
    if step > decay_iters:
        return min_lr
    ratio = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)
