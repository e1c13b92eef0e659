"""Picking the next token from logits, on the host with numpy."""
from typing import Optional

import numpy as np


def sample_next(logits: np.ndarray, temperature: float = 1.0, top_k: Optional[int] = None,
                rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """logits (B, V) -> one token id per row.

    temperature divides the logits (below 1 sharpens the distribution, above 1 flattens it);
    top_k keeps the k most likely tokens only.  top_k=1, or temperature=0, is greedy."""
    logits = np.asarray(logits, dtype=np.float64)                  # (B, V)
    B, V = logits.shape
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not np.isfinite(logits).all():          # else numpy's "probabilities contain NaN", or a silent pick
        raise ValueError("the model produced NaN or inf logits: its weights are damaged or the run diverged; "
                         "sample from another checkpoint")
    if temperature == 0 or top_k == 1:
        return logits.argmax(axis=-1)                               # (B,)
    logits = logits / temperature
    if top_k is not None and top_k < V:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]          # (B, 1): the k-th largest
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))     # (B, V)
    probs /= probs.sum(axis=-1, keepdims=True)
    rng = rng if rng is not None else np.random.default_rng()
    return np.array([rng.choice(V, p=row) for row in probs], dtype=np.int64)   # (B,)
