"""The GPT decoder written directly in PyTorch from a state dict: the oracle for gpt/model.py
(test-only; minigrad and gpt never import torch)."""
import math

import torch
import torch.nn.functional as F


def torch_sinusoid(T: int, D: int) -> torch.Tensor:
    """W_p[t, 2i] = sin(t / 10000^(2i/D)), W_p[t, 2i+1] = cos(t / 10000^(2i/D)), written per element."""
    W = torch.zeros(T, D, dtype=torch.float64)
    for t in range(T):
        for j in range(D):
            angle = t / 10000 ** ((j - j % 2) / D)
            W[t, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return W


def torch_logits(P: dict, config, idx: torch.Tensor, activation: str = "none") -> torch.Tensor:
    """idx (B, T) -> logits (B, T, V) from parameters P (GPT-2 names, torch tensors).  Without
    wpe.weight the positions are the sinusoid; with lm_head.weight the head is its own W_s."""
    B, T = idx.shape
    D, H, eps = config.n_embd, config.n_head, config.layer_norm_eps
    W_p = P["wpe.weight"][:T] if "wpe.weight" in P else torch_sinusoid(T, D).to(P["wte.weight"].dtype)
    x = P["wte.weight"][idx] + W_p                                              # (B, T, D)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)                   # (T, T): the future
    for i in range(config.n_layer):
        p = lambda n: P.get(f"h.{i}.{n}")  # noqa: E731  (None where the model has no bias)
        z = F.layer_norm(x, (D,), p("ln_1.weight"), p("ln_1.bias"), eps)
        q, k, v = F.linear(z, p("attn.c_attn.weight"), p("attn.c_attn.bias")).split(D, 2)
        q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))   # (B, H, T, D/H)
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(D // H)).masked_fill(mask, float("-inf")).softmax(-1)
        x = x + F.linear((att @ v).transpose(1, 2).reshape(B, T, D), p("attn.c_proj.weight"), p("attn.c_proj.bias"))
        z = F.layer_norm(x, (D,), p("ln_2.weight"), p("ln_2.bias"), eps)
        h = F.gelu(F.linear(z, p("mlp.c_fc.weight"), p("mlp.c_fc.bias")), approximate=activation)
        x = x + F.linear(h, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"))
    x = F.layer_norm(x, (D,), P["ln_f.weight"], P.get("ln_f.bias"), eps)
    return x @ P.get("lm_head.weight", P["wte.weight"]).T                      # (B, T, V)
