"""A GPT decoder written with minigrad's Tensor ops only.

Notation follows the reference texts: B batch, T sequence length, D embedding width,
H heads (each of width D/H), V vocabulary size, L blocks.  One block maps X to

    Z1 = LN(X)                  pre-LayerNorm
    Z2 = MaskedMultiHead(Z1)    every position mixes in the values of itself and earlier ones
    Z3 = X + Z2                 residual
    Z4 = LN(Z3)
    Z5 = FFN(Z4)                D -> 4D -> D with GELU, applied to each position alone
    out = Z3 + Z5               residual

Two choices are options of GPTConfig.  Positions: GPT-2 learns a table (wpe); the seed texts
add the fixed sinusoidal W_p.  Head: GPT-2 reuses the token table (W_s = W_e^T, "tied"); the
seed texts learn W_s (D x V) of its own.  The `seed` preset of the CLI picks the seeds' pair.

Parameter names are GPT-2's (wte, wpe, h.{i}.attn.c_attn, ..., lm_head when untied), so
state_dict() lines up with Hugging Face checkpoints (see gpt/hf.py for the loader).
"""
import math
from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

import numpy as np

from minigrad import Tensor, no_grad, realize
from minigrad.nn import Dropout, Embedding, LayerNorm, Linear, Module
from minigrad.optim import AdamW

ACTIVATIONS = ("gelu", "gelu_tanh")
POSITION_EMBEDDINGS = ("learned", "sinusoidal")
KVCache = List[Tuple[Tensor, Tensor]]   # one (K, V) pair per block, each (B, H, block_size, D/H)


@dataclass
class GPTConfig:
    vocab_size: int            # V
    block_size: int            # the longest context, so the position table W_p has this many rows
    n_layer: int               # L
    n_head: int                # H
    n_embd: int                # D
    dropout: float = 0.0
    bias: bool = True          # biases in the Linear and LayerNorm layers
    activation: str = "gelu"   # "gelu": exact, through erf; "gelu_tanh": GPT-2's tanh approximation
    layer_norm_eps: float = 1e-5
    position_embedding: str = "learned"   # "learned": a trained table (GPT-2); "sinusoidal": the seeds' fixed W_p
    tie_word_embeddings: bool = True      # True: the head is W_e^T (GPT-2); False: a learned W_s of its own

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                             f"each head gets D/H dimensions")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding must be one of {POSITION_EMBEDDINGS}, "
                             f"got {self.position_embedding!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CacheSlot:
    """One block's view of a static KV cache during one decoding step.  The cache holds
    block_size positions from the start, so every step has the same shapes (a compiling
    backend builds its kernels once); `slot` says where this step's K and V go."""
    k: Tensor              # (B, H, block_size, D/H), positions 0..position-1 filled
    v: Tensor              # (B, H, block_size, D/H)
    slot: Tensor           # (1, 1, block_size, 1) bool, True at the new position
    written: Tensor        # (1, block_size) bool, True up to the new position: what the query may read


_MASKS = {}


def sinusoidal_positions(T: int, D: int) -> np.ndarray:
    """The seeds' fixed W_p (T, D): W_p[t, 2i] = sin(t / 10000^(2i/D)), W_p[t, 2i+1] = cos(same angle).
    Each pair of columns turns at its own frequency, from one radian per position down to
    1/10000, so nearby positions get similar rows and no two positions get the same row."""
    t = np.arange(T, dtype=np.float64)[:, None]                                 # (T, 1)
    two_i = np.arange(0, D, 2, dtype=np.float64)[None, :]                       # (1, ceil(D/2))
    angles = t / 10000.0 ** (two_i / D)                                         # (T, ceil(D/2))
    W_p = np.empty((T, D), dtype=np.float32)
    W_p[:, 0::2] = np.sin(angles)
    W_p[:, 1::2] = np.cos(angles[:, :D // 2])                                   # odd D: one sine more
    return W_p


class SinusoidalPositions(Embedding):
    """The seeds' W_p, looked up by position like the learned table, but a constant: its weight
    needs no gradient, so it is no parameter (not in state_dict, not in the optimizer)."""

    def __init__(self, T: int, D: int, device: Optional[str] = None):
        self.weight = Tensor(sinusoidal_positions(T, D), device=device).realize()       # (T, D)


def causal_mask(T: int, device: str) -> Tensor:
    """(T, T) bool, True where query t may read key t' <= t; the other scores become -inf,
    so after the softmax their weights are exactly 0."""
    if (T, device) not in _MASKS:
        past = np.tril(np.ones((T, T), dtype=bool))                                  # (T, T)
        _MASKS[T, device] = Tensor(past, device=device).realize()
    return _MASKS[T, device]


def slot_masks(S: int, position: int, device: str) -> Tuple[Tensor, Tensor]:
    """The host-made masks for writing position `position` of an S-position cache: `slot`
    (1, 1, S, 1), True there, and `written` (1, S), True up to it."""
    slots = np.arange(S)
    slot = Tensor((slots == position).reshape(1, 1, S, 1), device=device)            # (1, 1, S, 1)
    written = Tensor((slots <= position).reshape(1, S), device=device)                # (1, S)
    return slot, written


def cache_slots(cache: KVCache, position: int, device: str) -> List[CacheSlot]:
    """Each block's CacheSlot for writing position `position` (one slot and mask shared by all blocks)."""
    slot, written = slot_masks(cache[0][0].shape[2], position, device)
    return [CacheSlot(k, v, slot, written) for k, v in cache]


class _ShapeKeyed:
    """One captured function per shape of its first argument (a jit keeps the shapes it captured)."""

    def __init__(self, make):
        self.make, self.by_shape = make, {}

    def __call__(self, first, *rest):
        if first.shape not in self.by_shape:
            self.by_shape[first.shape] = self.make()
        return self.by_shape[first.shape](first, *rest)


class CausalSelfAttention(Module):
    """Masked multi-head self-attention: position t may only read positions <= t."""

    def __init__(self, config: GPTConfig):
        D = config.n_embd
        self.n_head = config.n_head
        self.c_attn = Linear(D, 3 * D, bias=config.bias)    # Q, K and V projections side by side
        self.c_proj = Linear(D, D, bias=config.bias)        # merges the heads back into D
        self.attn_dropout = Dropout(config.dropout)
        self.resid_dropout = Dropout(config.dropout)
        self.keep_weights = False        # when True, the last attention weights stay in .weights
        self.weights: Optional[Tensor] = None

    def forward(self, x: Tensor, cache: Optional[CacheSlot] = None):
        """x (B, T, D) -> (y (B, T, D), (K, V)).  With a `cache`, x is one new position
        (T = 1): its key and value are written into the cache, and its query reads every
        position written so far, so generation never re-runs the prefix."""
        B, T, D = x.shape
        H = self.n_head
        qkv = self.c_attn(x).reshape(B, T, 3, H, D // H)                     # (B, T, 3, H, D/H): Q, K, V in heads
        # Each a view, (B, H, T, D/H); split after the reshape, so their gradients meet again as
        # one (B, T, 3, H, D/H) tensor that is read back as (B, T, 3D) without a copy.
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        if cache is not None:
            k = cache.slot.where(k, cache.k)                                 # (B, H, S, D/H), S = block_size
            v = cache.slot.where(v, cache.v)                                 # (B, H, S, D/H)
            visible = cache.written                                          # (1, S)
        else:
            visible = causal_mask(T, x.device)                               # (T, T)
        # softmax(Q K^T / sqrt(D/H), future keys at -inf) V, with dropout on the weights
        y = q.scaled_dot_product_attention(k, v, attn_mask=visible, dropout_p=self.attn_dropout.p,
                                           training=self.training)          # (B, H, T, D/H)
        if self.keep_weights:                                                # (B, H, T, S), rows sum to 1
            self.weights = q.attention_weights(k, attn_mask=visible)        # still lazy: see attention_maps
        y = y.transpose(1, 2).reshape(B, T, D)                               # (B, T, D): heads side by side
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(Module):
    """The position-wise FFN: widen to 4D, GELU, project back to D."""

    def __init__(self, config: GPTConfig):
        D = config.n_embd
        self.c_fc = Linear(D, 4 * D, bias=config.bias)
        self.c_proj = Linear(4 * D, D, bias=config.bias)
        self.dropout = Dropout(config.dropout)
        self.approximate = "tanh" if config.activation == "gelu_tanh" else "none"

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x).gelu(approximate=self.approximate)                 # (B, T, 4D)
        return self.dropout(self.c_proj(h))                                  # (B, T, D)


class Block(Module):
    """One pre-LayerNorm decoder block (the Z1..Z5 steps above)."""

    def __init__(self, config: GPTConfig):
        self.ln_1 = LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache: Optional[CacheSlot] = None):
        z2, kv = self.attn(self.ln_1(x), cache)   # Z1 = LN(X), Z2 = MaskedMultiHead(Z1)
        z3 = x + z2
        z5 = self.mlp(self.ln_2(z3))              # Z4 = LN(Z3), Z5 = FFN(Z4)
        return z3 + z5, kv


class GPT(Module):
    """Token ids -> X = W_e rows + W_p rows -> L blocks -> final LayerNorm -> logits through
    the head W_s (D x V): W_e^T itself when tied (no extra matrix), else a learned lm_head."""

    def __init__(self, config: GPTConfig, device: Optional[str] = None):
        self.config = config
        V, T, D = config.vocab_size, config.block_size, config.n_embd
        self.wte = Embedding(V, D)          # W_e: token embeddings (V, D)
        learned = config.position_embedding == "learned"
        self.wpe = Embedding(T, D) if learned else SinusoidalPositions(T, D, device)   # W_p (T, D)
        self.drop = Dropout(config.dropout)
        self.h = [Block(config) for _ in range(config.n_layer)]
        self.ln_f = LayerNorm(D, eps=config.layer_norm_eps, bias=config.bias)
        if not config.tie_word_embeddings:
            self.lm_head = Linear(D, V, bias=False)     # W_s^T (V, D), stored (out, in) like every Linear
        self._init_weights(device)

    # ---- initialization ---------------------------------------------------------------
    def _init_weights(self, device: Optional[str]) -> None:
        """GPT-2's init: N(0, 0.02) for every weight matrix and embedding, zero biases, unit
        LayerNorm gains.  The two projections that write into the residual stream in each
        block get std 0.02/sqrt(2L): 2L of them add up, so the stream's variance stays put."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)

        def param(t: Tensor) -> Tensor:
            t = t.realize()
            t.requires_grad = True
            return t

        for name, module in self.named_modules():
            if isinstance(module, (Linear, Embedding)) and not isinstance(module, SinusoidalPositions):
                std = residual_std if name.endswith("c_proj") else 0.02
                module.weight = param(Tensor.randn(*module.weight.shape, device=device) * std)
            if isinstance(module, (Linear, LayerNorm)) and module.bias is not None:
                module.bias = param(Tensor.zeros(*module.bias.shape, device=device).contiguous())
            if isinstance(module, LayerNorm):
                module.weight = param(Tensor.ones(*module.weight.shape, device=device).contiguous())

    @property
    def device(self) -> str:
        return self.wte.weight.device

    # ---- forward ------------------------------------------------------------------------
    def check_input(self, idx: Tensor, offset: int = 0) -> None:
        """Errors that name the problem, instead of a shape error deep inside a block.
        It looks at shapes and dtypes only: reading the ids back would cost a device-to-host
        copy per step and freeze them into a jit capture.  An id outside [0, V) is caught
        where the embedding's gather runs ("index ... is out of range for a table of V rows")."""
        if not isinstance(idx, Tensor):
            raise TypeError(f"idx must be a minigrad Tensor of token ids, got {type(idx).__name__}")
        if idx.ndim != 2:
            raise ValueError(f"idx must have shape (B, T), got {idx.shape}")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        T, block = idx.shape[1], self.config.block_size
        if offset + T > block:
            raise ValueError(f"sequence of length {offset + T} is longer than block_size {block}: "
                             f"the model has position embeddings for {block} positions only")

    def _hidden(self, idx: Tensor, offset: int = 0, past: Optional[KVCache] = None,
                pos: Optional[Tensor] = None, slots: Optional[List[CacheSlot]] = None):
        """Token ids (B, T) at positions offset..offset+T-1 -> final hidden states (B, T, D)
        and the K, V of every block.  With `past` (a static cache filled up to offset), T is 1.
        A captured decoding step passes the positions `pos` (T,) and the `slots` as tensors instead."""
        T = idx.shape[1]
        if pos is None:
            pos = Tensor.arange(offset, offset + T, device=idx.device)      # (T,)
        x = self.wte(idx) + self.wpe(pos)                                    # (B, T, D) + (T, D) -> (B, T, D)
        x = self.drop(x)
        if slots is None:
            slots = [None] * len(self.h) if past is None else cache_slots(past, offset, idx.device)
        cache = []
        for block, slot in zip(self.h, slots):
            x, kv = block(x, slot)                                           # (B, T, D)
            cache.append(kv)
        return self.ln_f(x), cache                                          # (B, T, D)

    def head(self, x: Tensor) -> Tensor:
        """Final hidden states (..., D) -> logits (..., V) = x W_s."""
        W_s = self.wte.weight.T if self.config.tie_word_embeddings else self.lm_head.weight.T   # (D, V)
        return x @ W_s

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None):
        """idx (B, T) token ids -> logits (B, T, V), and the mean cross-entropy against
        targets (B, T) when they are given (else None)."""
        self.check_input(idx)
        B, T = idx.shape
        x, _ = self._hidden(idx)                                             # (B, T, D)
        logits = self.head(x)                                                # (B, T, V)
        if targets is None:
            return logits, None
        if not isinstance(targets, Tensor):
            targets = Tensor(np.asarray(targets), device=idx.device)
        if targets.shape != (B, T):
            raise ValueError(f"targets must have the shape of idx {(B, T)}, got {targets.shape}")
        V = self.config.vocab_size
        loss = logits.reshape(B * T, V).cross_entropy(targets.reshape(B * T))  # (B*T, V) vs (B*T,) -> ()
        return logits, loss

    def attention_maps(self, idx) -> List[np.ndarray]:
        """Run idx (B, T) through the model and return each block's attention weights, a list
        of L arrays (B, H, T, T): row t says how much position t read from each position <= t."""
        idx = idx if isinstance(idx, Tensor) else Tensor(np.asarray(idx), device=self.device)
        attns = [block.attn for block in self.h]
        was_training = self.training
        self.eval()
        try:
            for attn in attns:
                attn.keep_weights = True
            with no_grad():
                self(idx)
            return [attn.weights.numpy() for attn in attns]
        finally:
            for attn in attns:
                attn.keep_weights, attn.weights = False, None
            self.train(was_training)

    # ---- training helpers -----------------------------------------------------------------
    def configure_optimizer(self, weight_decay: float, lr: float, betas=(0.9, 0.999)) -> AdamW:
        """AdamW that decays only the 2-D weights (matmul weights, embeddings); biases and
        LayerNorm gains are left alone, as in GPT-2 and nanoGPT: their size is not what overfits."""
        params = self.parameters()
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        return AdamW(groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without a learned position table (the token table
        counts: when tied it is the head too), as nanoGPT reports it."""
        n = super().num_parameters()
        return n - self.wpe.weight.numel() if non_embedding and self.wpe.weight.requires_grad else n

    # ---- generation ---------------------------------------------------------------------------
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 seed: Optional[int] = None) -> np.ndarray:
        """Extend idx (B, T0) by max_new_tokens sampled tokens; returns (B, T0 + new) ids.

        Keys and values of past positions are cached, so each new token runs the model on one
        position.  Absolute positions (learned or sinusoidal) tie the cache to them, so once the context
        holds block_size tokens the window slides by one and the cache is filled again from
        the cropped window (what a model without a cache would see as well).  The cache is
        static, block_size positions from the start: every decoding step has the same shapes."""
        from .sampling import sample_next
        ids = np.asarray(idx.numpy() if isinstance(idx, Tensor) else idx, dtype=np.int64)
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"generate needs a prompt of shape (B, T) with T >= 1, got {ids.shape}")
        rng = np.random.default_rng(seed)
        block = self.config.block_size
        full_window, one_position = self._sampling_steps()
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                cache, length = None, 0
                for _ in range(max_new_tokens):
                    if length == block:                            # a full window: no cache needed after
                        window = ids[:, -block:]
                        logits = full_window(Tensor(window, device=self.device)).numpy()
                        cache = None
                    elif cache is None:                           # fill the cache from a short prompt
                        logits, cache = self._step(ids[:, -block:], 0, None)
                        length = min(ids.shape[1], block)
                        if length == block:
                            cache = None
                    else:                                         # one new position at `length`
                        slot, written = slot_masks(block, length, self.device)
                        idx_t = Tensor(ids[:, -1:], device=self.device)
                        pos = Tensor(np.array([length]), device=self.device)
                        logits, *flat = one_position(idx_t, pos, slot, written, *[t for kv in cache for t in kv])
                        logits = logits.numpy()
                        cache = list(zip(flat[0::2], flat[1::2]))
                        length += 1
                    next_ids = sample_next(logits, temperature, top_k, rng)      # (B,)
                    ids = np.concatenate([ids, next_ids[:, None]], axis=1)       # (B, T + 1)
        finally:
            self.train(was_training)
        return ids

    def _sampling_steps(self):
        """The two steps of generate() with fixed shapes, captured by minigrad.jit (so a token costs
        one replay, not a graph and a schedule), made once per model and reused:
          full_window(idx (B, block_size)) -> last logits (B, V)    once the context is full
          one_position(idx (B, 1), pos (1,), slot, written, K_1, V_1, ..., K_L, V_L)
              -> (last logits (B, V), K_1', V_1', ...)              while the cache fills
        They read the parameters wherever they are now (a model that trains between samples is fine);
        a new batch size captures again (a jit keeps its shapes)."""
        import minigrad

        def full_window(idx: Tensor) -> Tensor:
            x, _ = self._hidden(idx)                                     # (B, T, D)
            return self.head(x[:, -1, :])                                # (B, V)

        def one_position(idx: Tensor, pos: Tensor, slot: Tensor, written: Tensor, *flat: Tensor):
            slots = [CacheSlot(k, v, slot, written) for k, v in zip(flat[0::2], flat[1::2])]
            x, cache = self._hidden(idx, pos=pos, slots=slots)           # (B, 1, D)
            return (self.head(x[:, -1, :]), *[t for kv in cache for t in kv])

        steps = self.__dict__.get("_captured_sampling")
        if steps is None:
            steps = self.__dict__["_captured_sampling"] = {}
        key = self.device
        if key not in steps:
            steps[key] = (_ShapeKeyed(lambda: minigrad.jit(full_window, state=[self])),
                          _ShapeKeyed(lambda: minigrad.jit(one_position, state=[self])))
        return steps[key]

    def _step(self, ids: np.ndarray, offset: int, past: Optional[KVCache]):
        """Without `past`: fill a cache from ids (B, T) at positions 0..T-1.  With it: add the
        one position `offset`.  Returns the last position's logits (B, V) as numpy and the
        cache, realized so that graphs do not pile up from step to step."""
        idx = Tensor(ids, device=self.device)                               # (B, T)
        self.check_input(idx, offset)
        if past is not None and idx.shape[1] != 1:
            raise ValueError(f"a cached step takes one position, got {idx.shape[1]}")
        x, cache = self._hidden(idx, offset, past)                          # (B, T, D)
        logits = self.head(x[:, -1, :])                                     # (B, V)
        if past is None:                                                    # room for block_size positions
            grow = ((0, 0), (0, 0), (0, self.config.block_size - idx.shape[1]), (0, 0))
            cache = [(k.pad(grow), v.pad(grow)) for k, v in cache]          # (B, H, block_size, D/H)
        flat = [t for kv in cache for t in kv]
        realize(logits, *flat)
        cache = [(k.detach(), v.detach()) for k, v in cache]
        return logits.numpy(), cache

    # ---- checkpoints ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str, **overrides) -> "GPT":
        """Load a Hugging Face GPT-2 directory (config.json + model.safetensors), offline."""
        from .hf import load_hf_gpt2
        return load_hf_gpt2(cls, path, **overrides)

    def save_pretrained(self, path: str) -> None:
        """Write a Hugging Face GPT-2 directory that transformers can load."""
        from .hf import save_hf_gpt2
        save_hf_gpt2(self, path)
