"""GPT.attention_maps: the weights a learner plots, against the attention of block 0
recomputed in numpy from the state dict."""
import numpy as np

from gpt.model import GPT, GPTConfig
from minigrad import Tensor


def layernorm(x, w, b, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def test_attention_maps_match_numpy():
    Tensor.manual_seed(3)
    V, T, H, D = 11, 8, 2, 16
    model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=2, n_head=H, n_embd=D))
    for p in model.parameters():                   # stronger than the 0.02 init, so the maps are not uniform
        p.lazydata = (p * 20).realize().lazydata
    idx = np.random.default_rng(0).integers(0, V, size=(2, 6))
    maps = model.attention_maps(idx)
    assert len(maps) == 2 and maps[0].shape == (2, H, 6, 6)

    s = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    x = s["wte.weight"][idx] + s["wpe.weight"][:6]                                   # (B, T, D)
    z = layernorm(x, s["h.0.ln_1.weight"], s["h.0.ln_1.bias"])
    qkv = z @ s["h.0.attn.c_attn.weight"].T + s["h.0.attn.c_attn.bias"]              # (B, T, 3D)
    q, k = (qkv[..., i * D:(i + 1) * D].reshape(2, 6, H, D // H).transpose(0, 2, 1, 3) for i in range(2))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D // H)                           # (B, H, T, T)
    scores[..., np.triu(np.ones((6, 6), bool), 1)] = -np.inf
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(maps[0], expected, atol=1e-5, err_msg="block 0 attention: minigrad vs numpy")
    assert np.abs(maps[0][..., np.triu(np.ones((6, 6), bool), 1)]).max() == 0      # no weight on the future
    assert not model.h[0].attn.keep_weights and model.h[0].attn.weights is None    # nothing left behind
    assert model.training is True, "attention_maps puts the model back in training mode"
    model.eval()
    model.attention_maps(idx)
    assert model.training is False, "... and leaves an eval-mode model in eval mode"
