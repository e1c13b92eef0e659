"""Hugging Face GPT-2 checkpoints (config.json + model.safetensors) in and out, offline.

HF's GPT-2 keeps its projections in a Conv1D whose weight is laid out (in, out); minigrad's
Linear, like PyTorch's, stores (out, in).  Those four weights are transposed on the way in
and on the way out; every other tensor maps by name alone.  GPT-2 learns its positions, so
a model with the seeds' sinusoidal W_p has no GPT-2 form; an untied head is GPT-2's
`tie_word_embeddings: false` with its own lm_head.weight.
"""
import json
import os
import re

import numpy as np

from .model import GPTConfig

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
BUFFERS = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")   # causal-mask buffers of older HF versions
HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                  "gelu": "gelu"}


def _read_config(path: str, overrides: dict) -> GPTConfig:
    config_file = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face GPT-2 directory")
    with open(config_file) as f:
        hf = json.load(f)
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{config_file}: model_type is {hf.get('model_type')!r}, only 'gpt2' is supported")
    n_embd = hf["n_embd"]
    if hf.get("n_inner") not in (None, 4 * n_embd):
        raise ValueError(f"{config_file}: n_inner={hf['n_inner']}, but this GPT's FFN is 4 * n_embd = {4 * n_embd}")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("scale_attn_weights") is False:
        raise ValueError(f"{config_file}: attention scaling other than 1/sqrt(D/H) is not supported")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in HF_ACTIVATIONS:
        raise ValueError(f"{config_file}: activation_function {activation!r} is not supported "
                         f"(supported: {sorted(HF_ACTIVATIONS)})")
    fields = dict(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                  n_head=hf["n_head"], n_embd=n_embd, dropout=0.0, bias=True,
                  activation=HF_ACTIVATIONS[activation], layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                  position_embedding="learned", tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)))
    fields.update(overrides)
    if fields["position_embedding"] != "learned":
        raise ValueError(f"{config_file}: GPT-2 checkpoints hold learned positions (wpe); "
                         f"do not override position_embedding when loading one")
    return GPTConfig(**fields)


def load_hf_gpt2(cls, path: str, **overrides):
    """Build a GPT from an HF GPT-2 directory, checking every name and shape."""
    from safetensors.numpy import load_file
    config = _read_config(path, overrides)
    weights_file = os.path.join(path, "model.safetensors")
    if not os.path.isfile(weights_file):
        raise FileNotFoundError(f"{path} has no model.safetensors (only the safetensors format is read; "
                                f"re-save with save_pretrained(..., safe_serialization=True))")
    raw = load_file(weights_file)
    model = cls(config)
    expected = {name: p.shape for name, p in model.named_parameters()}
    state, unexpected = {}, []
    for hf_name, value in raw.items():
        name = hf_name[len("transformer."):] if hf_name.startswith("transformer.") else hf_name
        if BUFFERS.match(name):
            continue
        if name == "lm_head.weight" and config.tie_word_embeddings:   # the tied head: the same numbers as wte
            if value.shape != expected["wte.weight"]:
                raise ValueError(f"{weights_file}: lm_head.weight has shape {value.shape}, "
                                 f"wte.weight needs {expected['wte.weight']}")
            continue
        if name not in expected:
            unexpected.append(hf_name)
            continue
        if name.endswith(CONV1D):
            value = value.T                          # Conv1D (in, out) -> Linear (out, in)
        if value.shape != expected[name]:
            raise ValueError(f"{weights_file}: {hf_name} has shape {value.shape} (after the Conv1D transpose) "
                             f"but the model's {name} is {expected[name]}")
        state[name] = np.ascontiguousarray(value, dtype=np.float32)
    missing = sorted(set(expected) - set(state))
    if missing or unexpected:
        raise KeyError(f"{weights_file} does not match a GPT-2 of this config: "
                       f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
                       f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    model.load_state_dict(state)
    return model


def save_hf_gpt2(model, path: str) -> None:
    """Write config.json + model.safetensors in HF's GPT2LMHeadModel layout."""
    from safetensors.numpy import save_file
    config = model.config
    if not config.bias:
        raise ValueError("HF GPT-2 always has biases; this model was built with bias=False")
    if config.position_embedding != "learned":
        raise ValueError(f"GPT-2 has no {config.position_embedding} positions, only a learned table (wpe): "
                         f"this model cannot be saved as a GPT-2 checkpoint; use gpt.checkpoint instead")
    os.makedirs(path, exist_ok=True)
    tensors = {}
    for name, value in model.state_dict().items():
        if name.endswith(CONV1D):
            value = value.T                          # Linear (out, in) -> Conv1D (in, out)
        prefix = "" if name == "lm_head.weight" else "transformer."    # HF keeps the head outside the trunk
        tensors[prefix + name] = np.ascontiguousarray(value)
    hf_config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                 "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
                 "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None,
                 "activation_function": "gelu_new" if config.activation == "gelu_tanh" else "gelu",
                 "layer_norm_epsilon": config.layer_norm_eps, "resid_pdrop": config.dropout,
                 "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
                 "tie_word_embeddings": config.tie_word_embeddings}
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
