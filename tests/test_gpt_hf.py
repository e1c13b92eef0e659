"""Hugging Face GPT-2 checkpoints: loading one written by `transformers` gives its logits,
save_pretrained writes one `transformers` reads back, and bad directories give clear errors."""
import json
import os

import numpy as np
import pytest

from gpt.model import GPT, GPTConfig
from minigrad import Tensor

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=50, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():                     # non-zero biases and LayerNorm parameters, so a mix-up shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("hf_gpt2")
    model.save_pretrained(path, safe_serialization=True)
    return str(path), model


def hf_logits(model, idx):
    with torch.no_grad():
        return model(torch.tensor(idx)).logits.numpy()


def test_from_pretrained_matches_transformers_logits(hf_dir):
    path, hf_model = hf_dir
    model = GPT.from_pretrained(path)
    assert model.config.activation == "gelu_tanh" and model.config.block_size == 16
    idx = np.random.default_rng(0).integers(0, 50, size=(2, 16))
    logits, _ = model(Tensor(idx))
    np.testing.assert_allclose(logits.numpy(), hf_logits(hf_model, idx), atol=1e-4)


@pytest.mark.parametrize("tied", [True, False])   # untied: GPT-2's tie_word_embeddings=false, its own lm_head
def test_save_pretrained_is_read_by_transformers(tmp_path, tied):
    Tensor.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=4, n_embd=32, activation="gelu_tanh",
                          tie_word_embeddings=tied))
    model.save_pretrained(str(tmp_path))
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
    idx = np.random.default_rng(1).integers(0, 40, size=(2, 12))
    logits, _ = model(Tensor(idx))
    np.testing.assert_allclose(logits.numpy(), hf_logits(hf_model, idx), atol=1e-4)
    again = GPT.from_pretrained(str(tmp_path))
    assert again.config.tie_word_embeddings == tied and ("lm_head.weight" in again.state_dict()) != tied
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value, err_msg=name)


def test_missing_directory_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint directory at .*nowhere"):
        GPT.from_pretrained(str(tmp_path / "nowhere"))


def test_wrong_shape_names_the_tensor(hf_dir, tmp_path):
    from safetensors.numpy import load_file, save_file
    path, _ = hf_dir
    state = load_file(os.path.join(path, "model.safetensors"))
    state["transformer.h.1.mlp.c_fc.weight"] = state["transformer.h.1.mlp.c_fc.weight"][:, :64]
    save_file(state, str(tmp_path / "model.safetensors"))
    with open(os.path.join(path, "config.json")) as f:
        (tmp_path / "config.json").write_text(f.read())
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.weight has shape"):
        GPT.from_pretrained(str(tmp_path))


def test_missing_and_unexpected_keys_are_listed(hf_dir, tmp_path):
    from safetensors.numpy import load_file, save_file
    path, _ = hf_dir
    state = load_file(os.path.join(path, "model.safetensors"))
    del state["transformer.ln_f.bias"]
    state["transformer.h.0.extra.weight"] = np.zeros(3, dtype=np.float32)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(json.load(open(os.path.join(path, "config.json")))))
    with pytest.raises(KeyError, match=r"missing \['ln_f\.bias'\].*unexpected \['transformer\.h\.0\.extra\.weight'\]"):
        GPT.from_pretrained(str(tmp_path))


def test_attention_mask_buffers_and_untransformed_names_load(hf_dir, tmp_path):
    """Older transformers saved h.{i}.attn.bias / masked_bias buffers, and GPT2Model has no
    `transformer.` prefix: both still load."""
    from safetensors.numpy import load_file, save_file
    path, hf_model = hf_dir
    state = {k[len("transformer."):]: v for k, v in load_file(os.path.join(path, "model.safetensors")).items()}
    state["h.0.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), dtype=np.float32))
    state["h.0.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(open(os.path.join(path, "config.json")).read())
    idx = np.arange(10)[None, :]
    logits, _ = GPT.from_pretrained(str(tmp_path))(Tensor(idx))
    np.testing.assert_allclose(logits.numpy(), hf_logits(hf_model, idx), atol=1e-4)


def test_save_pretrained_refuses_sinusoidal_positions_and_writes_nothing(tmp_path):
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, position_embedding="sinusoidal"))
    with pytest.raises(ValueError, match="GPT-2 has no sinusoidal positions"):
        model.save_pretrained(str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_from_pretrained_gives_learned_tied_gpt2(hf_dir):
    config = GPT.from_pretrained(hf_dir[0]).config
    assert config.position_embedding == "learned" and config.tie_word_embeddings
    with pytest.raises(ValueError, match="learned positions"):
        GPT.from_pretrained(hf_dir[0], position_embedding="sinusoidal")
