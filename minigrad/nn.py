"""Layers: Module (a container of parameters), Linear, Conv2d, Embedding, LayerNorm, Dropout."""
import math
from collections import OrderedDict
from typing import Dict, Iterator, List, Tuple

import numpy as np

from . import debug
from .tensor import Tensor


class Module:
    """Holds Tensors with requires_grad (parameters) and sub-Modules as attributes;
    names are found by walking attributes, lists and dicts, so no registration is needed."""
    training = True

    def __call__(self, *args, **kwargs):
        if not debug.tracing():
            return self.forward(*args, **kwargs)
        with debug.module_scope(self):          # minigrad.viz: ops made here belong to this module
            return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def _children(self) -> Iterator[Tuple[str, object]]:
        for name, value in vars(self).items():
            if isinstance(value, (Tensor, Module)):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, (Tensor, Module)):
                        yield f"{name}.{i}", item
            elif isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(item, (Tensor, Module)):
                        yield f"{name}.{key}", item

    def named_parameters(self, prefix: str = "") -> List[Tuple[str, Tensor]]:
        """Every parameter with its dotted name ("blocks.0.attn.c_attn.weight"), each tensor once."""
        out, seen = [], set()
        stack = [(prefix, self)]
        while stack:
            name, obj = stack.pop(0)
            if isinstance(obj, Tensor):
                if obj.requires_grad and id(obj) not in seen:
                    seen.add(id(obj))
                    out.append((name, obj))
                continue
            for child_name, child in obj._children():
                stack.append((f"{name}.{child_name}" if name else child_name, child))
        return out

    def parameters(self) -> List[Tensor]:
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix: str = "") -> List[Tuple[str, "Module"]]:
        """This module and every sub-module with its dotted name ("h.0.attn"), parents first."""
        out, queue = [], [(prefix, self)]
        while queue:
            name, module = queue.pop(0)
            out.append((name, module))
            queue.extend((f"{name}.{child_name}" if name else child_name, child)
                         for child_name, child in module._children() if isinstance(child, Module))
        return out

    def modules(self) -> List["Module"]:
        return [m for _, m in self.named_modules()]

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def state_dict(self) -> Dict[str, np.ndarray]:
        return OrderedDict((name, p.numpy()) for name, p in self.named_parameters())

    def load_state_dict(self, state: Dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into the parameters, checking every name and shape first."""
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, p in params.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {value.shape} in the state dict "
                                 f"but {p.shape} in the model")
        for name, p in params.items():
            if name in state:
                p.lazydata = Tensor(np.asarray(state[name]), dtype=p.dtype, device=p.device).lazydata

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _fan_in_uniform(shape, fan_in: int, bias: bool):
    """PyTorch's default initialization of a layer: weight of `shape` and bias of shape[0], both
    uniform in +-1/sqrt(fan_in); (weight, bias or None) as parameters."""
    bound = 1 / math.sqrt(fan_in)
    weight = Tensor.uniform(*shape, low=-bound, high=bound).realize()
    weight.requires_grad = True
    if not bias:
        return weight, None
    b = Tensor.uniform(shape[0], low=-bound, high=bound).realize()
    b.requires_grad = True
    return weight, b


class Linear(Module):
    """y = x W^T + b, W shaped (out_features, in_features) as in PyTorch, initialized uniform(+-1/sqrt(in))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        self.weight, self.bias = _fan_in_uniform((out_features, in_features), in_features, bias)

    def forward(self, x: Tensor) -> Tensor:
        return x.linear(self.weight, self.bias)


class Conv2d(Module):
    """(N, C, H, W) -> (N, O, Ho, Wo) by Tensor.conv2d; weight (O, C/groups, kh, kw) initialized
    uniform(+-1/sqrt(fan_in)) as in PyTorch, fan_in = C/groups * kh * kw."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.weight, self.bias = _fan_in_uniform((out_channels, in_channels // groups, kh, kw),
                                                 in_channels // groups * kh * kw, bias)

    def forward(self, x: Tensor) -> Tensor:
        return x.conv2d(self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Embedding(Module):
    """A (num_embeddings, dim) table; forward looks up rows by integer ids."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        self.weight = Tensor.randn(num_embeddings, embedding_dim).realize()
        self.weight.requires_grad = True

    def forward(self, idx: Tensor) -> Tensor:
        return self.weight.take(idx, axis=0)


class LayerNorm(Module):
    """Normalize over the last dimension, then scale by gamma (weight) and shift by beta (bias)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        self.eps = eps
        self.weight = Tensor.ones(dim, requires_grad=True).realize()
        self.bias = Tensor.zeros(dim, requires_grad=True).realize() if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return x.layernorm(-1, self.eps, self.weight, self.bias)


class Dropout(Module):
    def __init__(self, p: float = 0.5):
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return x.dropout(self.p, training=self.training)
