"""gpt: a GPT decoder built on minigrad, with char-level data, a training CLI and sampling.

    from gpt import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128))
    logits, loss = model(idx, targets)          # idx, targets: int Tensors (B, T)
"""
from .model import GPT, GPTConfig
from .data import CharTokenizer

__all__ = ["GPT", "GPTConfig", "CharTokenizer"]
