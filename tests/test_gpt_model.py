"""The GPT model: the forward pass against a PyTorch oracle, causality (of values and of
gradients), initialization, weight-decay groups, input errors, and that it can learn."""
import math

import numpy as np
import pytest

from gpt.model import GPT, GPTConfig
from gpt_options import OPTION_IDS, OPTIONS
from minigrad import Tensor

torch = pytest.importorskip("torch")
F = torch.nn.functional
from torch_gpt import torch_logits, torch_sinusoid  # noqa: E402  (after the importorskip)

V, T, L, H, D = 13, 8, 2, 2, 16


def tiny(**kw) -> GPT:
    Tensor.manual_seed(kw.pop("seed", 0))
    return GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=D, **kw))


def ids(shape, seed=0, high=V):
    return np.random.default_rng(seed).integers(0, high, size=shape)


def torch_gpt(model, idx, targets, activation="none"):
    """The PyTorch oracle (tests/torch_gpt.py) in float64: logits, loss and every gradient."""
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in model.state_dict().items()}
    logits = torch_logits(P, model.config, torch.tensor(idx), activation)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.tensor(targets).reshape(-1))
    loss.backward()
    return logits.detach().numpy(), loss.item(), {k: t.grad.numpy() for k, t in P.items()}


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_forward_and_gradients_match_pytorch(activation, options):
    model = tiny(activation=activation, **options)
    x, y = ids((3, T), 1), ids((3, T), 2)
    logits, loss = model(Tensor(x), Tensor(y))
    loss.backward()
    ref_logits, ref_loss, ref_grads = torch_gpt(model, x, y,
                                                "tanh" if activation == "gelu_tanh" else "none")
    assert logits.shape == (3, T, V)
    np.testing.assert_allclose(logits.numpy(), ref_logits, atol=1e-5, err_msg="logits differ from PyTorch")
    assert loss.item() == pytest.approx(ref_loss, abs=1e-5)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), ref_grads[name], atol=2e-5, err_msg=f"gradient of {name}")


@pytest.mark.parametrize("activation,approximate", [("gelu", "none"), ("gelu_tanh", "tanh")])
def test_mlp_uses_the_configured_gelu(activation, approximate):
    """With GPT-2's small init the two GELUs differ by ~1e-6: scale c_fc so they cannot hide."""
    mlp = tiny(activation=activation).h[0].mlp
    w = mlp.c_fc.weight.numpy() * 50
    mlp.c_fc.weight = Tensor(w)
    x = np.random.default_rng(9).standard_normal((2, 3, D)).astype(np.float32)
    got = mlp(Tensor(x)).numpy()
    h = {a: F.gelu(F.linear(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)), approximate=a)
         for a in ("none", "tanh")}
    out = {a: F.linear(v, torch.tensor(mlp.c_proj.weight.numpy(), dtype=torch.float64)).numpy() for a, v in h.items()}
    other = "tanh" if approximate == "none" else "none"
    np.testing.assert_allclose(got, out[approximate], atol=2e-6, err_msg=f"{activation}: MLP vs torch")
    assert np.abs(out[approximate] - out[other]).max() > 2e-5, "the test cannot tell the two GELUs apart"


def test_parameter_names_are_gpt2s_and_head_is_tied():
    names = set(tiny().state_dict())
    expected = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"}
    for i in range(L):
        for part in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            expected |= {f"h.{i}.{part}.weight", f"h.{i}.{part}.bias"}
    assert names == expected, f"extra: {names - expected}, missing: {expected - names}"
    assert tiny().state_dict()["h.0.attn.c_attn.weight"].shape == (3 * D, D)     # Linear's (out, in)


def test_targets_may_be_a_numpy_array():
    model = tiny()
    x, y = ids((2, T), 7), ids((2, T), 8)
    _, from_tensor = model(Tensor(x), Tensor(y))
    _, from_numpy = model(Tensor(x), y)
    assert from_numpy.item() == from_tensor.item()


def test_parameter_count_leaves_out_the_position_table():
    model = tiny()
    total = sum(v.size for v in model.state_dict().values())
    assert model.num_parameters(non_embedding=False) == total
    assert model.num_parameters() == total - T * D, "by default the count leaves out wpe (T x D), as nanoGPT's"


def test_no_bias_config_has_no_bias_parameters():
    assert not [n for n in tiny(bias=False).state_dict() if n.endswith(".bias")]


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_changing_later_tokens_leaves_earlier_logits_unchanged(options, monkeypatch):
    monkeypatch.setattr("gpt.model._MASKS", {})          # build the causal mask here, not from a cache
    model = tiny(**options)
    x = ids((2, T), 3)
    t = 4
    changed = x.copy()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1 + ids((2, T - t - 1), 4, V - 1)) % V    # every later token differs
    a, _ = model(Tensor(x))
    b, _ = model(Tensor(changed))
    np.testing.assert_allclose(a.numpy()[:, :t + 1], b.numpy()[:, :t + 1], atol=1e-6,
                               err_msg="logits at positions <= t moved when only later tokens changed")
    assert np.abs(a.numpy()[:, t + 1:] - b.numpy()[:, t + 1:]).max() > 1e-4, "later logits should change"


def test_loss_at_position_t_has_no_gradient_from_later_positions():
    """Position embeddings of later positions get zero gradient from position t's loss."""
    model = tiny()
    x, t = ids((2, T), 5), 3
    logits, _ = model(Tensor(x))
    loss = logits[:, t, :].cross_entropy(Tensor(ids((2,), 6)))
    loss.backward()
    g = model.wpe.weight.grad.numpy()                                   # (T, D)
    assert np.abs(g[t + 1:]).max() == 0.0, f"later positions got gradient {np.abs(g[t + 1:]).max()}"
    assert np.abs(g[:t + 1]).min(axis=1).max() > 0, "positions <= t should get gradient"


def test_hidden_state_at_t_has_no_gradient_from_tokens_used_only_later():
    """Token-embedding rows used only after t get zero gradient (measured before the tied head,
    which touches every row of wte by design)."""
    model = tiny()
    t = 3
    x = np.array([[0, 1, 2, 3, 7, 8, 9, 10]])                           # tokens 7..10 only after t
    hidden, _ = model._hidden(Tensor(x))                                  # (1, T, D)
    (hidden[:, t, :] * Tensor(np.random.default_rng(0).normal(size=(1, D)).astype(np.float32))).sum().backward()
    g = model.wte.weight.grad.numpy()
    assert np.abs(g[[7, 8, 9, 10]]).max() == 0.0
    assert np.abs(g[[0, 1, 2, 3]]).min(axis=1).max() > 0


def test_init_follows_gpt2():
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=4, n_head=2, n_embd=64))
    state = model.state_dict()
    assert state["h.0.mlp.c_fc.weight"].std() == pytest.approx(0.02, rel=0.1)
    assert state["wte.weight"].std() == pytest.approx(0.02, rel=0.1)
    for name in ("h.0.attn.c_proj.weight", "h.3.mlp.c_proj.weight"):
        assert state[name].std() == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.1), name
    assert not state["h.1.attn.c_attn.bias"].any() and (state["h.2.ln_1.weight"] == 1).all()


def test_same_seed_same_weights():
    a, b = tiny(seed=7).state_dict(), tiny(seed=7).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["wte.weight"], tiny(seed=8).state_dict()["wte.weight"])


def test_weight_decay_only_on_2d_weights():
    """With zero gradients AdamW's step is decay alone: 2-D weights shrink, 1-D ones stay."""
    model = tiny()
    before = model.state_dict()
    opt = model.configure_optimizer(weight_decay=0.5, lr=0.1)
    for p in model.parameters():
        p.grad = Tensor.zeros(*p.shape)
    opt.step()
    after = model.state_dict()
    for name in before:
        if before[name].ndim == 2:
            np.testing.assert_allclose(after[name], before[name] * (1 - 0.1 * 0.5), rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_too_long_sequence_is_a_clear_error():
    with pytest.raises(ValueError, match="longer than block_size 8"):
        tiny()(Tensor(ids((1, T + 1))))


@pytest.mark.parametrize("bad", [V, -1])
def test_token_out_of_range_is_a_clear_error(bad):
    x = ids((2, T))
    x[1, 3] = bad
    logits, _ = tiny()(Tensor(x))                  # building the graph reads nothing back
    with pytest.raises(IndexError, match=rf"index {bad} is out of range for a table of {V} rows"):
        logits.numpy()                             # the embedding's gather checks its ids


def test_targets_of_wrong_shape_are_an_error():
    with pytest.raises(ValueError, match="targets must have the shape"):
        tiny()(Tensor(ids((2, T))), Tensor(ids((2, T - 1))))


def test_bad_config_is_an_error():
    for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
        config = {**dict(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=16), name: 0}
        with pytest.raises(ValueError, match=f"GPTConfig.{name} must be a positive integer, got 0"):
            GPTConfig(**config)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=16, dropout=1.0)
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=3, n_embd=16)
    with pytest.raises(ValueError, match="activation"):
        GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=16, activation="relu")


def test_overfits_one_batch():
    model = tiny()
    x = ids((4, T), 9)
    x[:, 0] = [0, 1, 2, 3]                # distinct first tokens: every (context, target) pair is unique
    y = ids((4, T), 10)
    opt = model.configure_optimizer(weight_decay=0.0, lr=2e-2, betas=(0.9, 0.99))
    for _ in range(60):
        _, loss = model(Tensor(x), Tensor(y))
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.05, f"loss after 60 steps on one batch: {loss.item()}"


# ---- the seed texts' options: sinusoidal W_p, a separate head W_s --------------------------------
@pytest.mark.parametrize("width", [16, 7])                        # even and odd D
def test_sinusoidal_W_p_is_the_formula(width):
    model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=1, n_head=1, n_embd=width,
                          position_embedding="sinusoidal"))
    expected = torch_sinusoid(T, width).numpy()
    np.testing.assert_allclose(model.wpe.weight.numpy(), expected, atol=1e-6)
    x = ids((1, T), 9)
    h_sin, _ = model._hidden(Tensor(x))
    model.wpe.weight = Tensor(np.zeros((T, width), dtype=np.float32))   # the same model without positions
    h_none, _ = model._hidden(Tensor(x))
    assert np.abs(h_sin.numpy() - h_none.numpy()).max() > 1e-3, "W_p is not added to the embeddings"


def test_sinusoidal_W_p_is_a_constant_not_a_parameter():
    model = tiny(position_embedding="sinusoidal")
    W_p = model.wpe.weight
    assert "wpe.weight" not in model.state_dict() and not any(p is W_p for p in model.parameters())
    before = W_p.numpy()
    opt = model.configure_optimizer(weight_decay=0.1, lr=0.1)
    assert not any(p is W_p for p in opt.params)
    _, loss = model(Tensor(ids((2, T), 1)), Tensor(ids((2, T), 2)))
    loss.backward()
    opt.step()
    assert W_p.grad is None and np.array_equal(W_p.numpy(), before)
    assert model.num_parameters() == model.num_parameters(non_embedding=False)   # no table to leave out


def test_untied_head_is_its_own_parameter_with_its_own_gradient():
    """Tied, every row of W_e gets gradient through the head; untied, W_e's rows of tokens not in
    the input get none, and W_s (lm_head) gets the head's gradient."""
    x = np.array([[0, 1, 2, 3, 0, 1, 2, 3]])                          # tokens 4..V-1 never in the input
    y = ids((1, T), 3)
    grads = {}
    for tied in (True, False):
        model = tiny(tie_word_embeddings=tied)
        _, loss = model(Tensor(x), Tensor(y))
        loss.backward()
        grads[tied] = {name: p.grad.numpy() for name, p in model.named_parameters()}
    assert "lm_head.weight" not in grads[True] and grads[False]["lm_head.weight"].shape == (V, D)
    assert np.abs(grads[True]["wte.weight"][4:]).min(axis=1).max() > 0
    assert np.abs(grads[False]["wte.weight"][4:]).max() == 0.0
    assert np.abs(grads[False]["lm_head.weight"]).min(axis=1).max() > 0
    model = tiny(tie_word_embeddings=False)
    assert model.lm_head.weight is not model.wte.weight
    assert not np.array_equal(model.state_dict()["lm_head.weight"], model.state_dict()["wte.weight"])


def test_unknown_position_embedding_is_named():
    with pytest.raises(ValueError, match="position_embedding must be one of"):
        tiny(position_embedding="rotary")
