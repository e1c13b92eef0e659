"""The GPT trained on the OpenCL backend follows PyTorch: the same initial weights, the same
batches of real text, the same AdamW (decay on 2-D weights only), gradient clipping and jit
as `gpt train`; every step's loss and the final weights must agree with a PyTorch run.  Then
greedy generation on OpenCL gives the NumPy backend's tokens.  (On CI this runs on PoCL, the
CPU; the first step compiles every kernel once, a few seconds.)"""
import os

import numpy as np
import torch
import torch.nn.functional as F

import gpt
from gpt.data import CharDataset, CharTokenizer
from gpt.model import GPT, GPTConfig
from gpt.train import make_train_step
from minigrad import Tensor
from torch_gpt import torch_logits

STEPS, LR, BETAS, WEIGHT_DECAY, CLIP = 8, 3e-3, (0.9, 0.99), 0.1, 1.0


def text_batches(block_size, batch_size, steps):
    """(tokenizer, [(x, y)] * steps) from real text: gpt/model.py's own source."""
    with open(os.path.join(os.path.dirname(gpt.__file__), "model.py")) as f:
        text = f.read()
    tokenizer = CharTokenizer.from_text(text)
    data = CharDataset(tokenizer.encode(text), block_size, batch_size, seed=0)
    return tokenizer, [data.get_batch("train") for _ in range(steps)]


def pytorch_training(state, config, batches):
    """The oracle: the same steps in PyTorch float32; the loss of each step, the final weights."""
    P = {k: torch.tensor(v, requires_grad=True) for k, v in state.items()}
    decay = [p for p in P.values() if p.ndim >= 2]
    no_decay = [p for p in P.values() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS)
    losses = []
    for x, y in batches:
        logits = torch_logits(P, config, torch.tensor(x))
        loss = F.cross_entropy(logits.reshape(-1, config.vocab_size), torch.tensor(y).reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), CLIP)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, {k: p.detach().numpy() for k, p in P.items()}


def test_training_on_opencl_follows_pytorch(cl):
    tokenizer, batches = text_batches(block_size=32, batch_size=8, steps=STEPS)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=64)
    Tensor.manual_seed(1337)
    model = GPT(config, device="cl")
    initial = model.state_dict()
    optimizer = model.configure_optimizer(weight_decay=WEIGHT_DECAY, lr=LR, betas=BETAS)
    step = make_train_step(model, optimizer, grad_clip=CLIP, use_jit=True)
    losses = [step(Tensor(x, device="cl"), Tensor(y, device="cl")).item() for x, y in batches]

    ref_losses, ref_weights = pytorch_training(initial, config, batches)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4,
                               err_msg=f"{STEPS} steps on OpenCL: losses (actual) vs PyTorch (desired)")
    assert ref_losses[-1] < ref_losses[0] - 0.2, f"the loss should fall: {ref_losses}"
    for name, value in model.state_dict().items():
        moved = np.abs(ref_weights[name] - initial[name]).max()
        error = np.abs(value - ref_weights[name]).max()
        assert error < 1e-2 * max(moved, LR), \
            f"{name}: max difference {error:.2e} from PyTorch after {STEPS} steps (the weights moved {moved:.2e})"

    # greedy generation: the same tokens on OpenCL as on the NumPy backend with these weights
    on_numpy = GPT(config)
    on_numpy.load_state_dict(model.state_dict())
    prompt = np.array([tokenizer.encode("def forward(")])
    np.testing.assert_array_equal(model.generate(prompt, 12, top_k=1), on_numpy.generate(prompt, 12, top_k=1),
                                  err_msg="greedy generation: OpenCL vs NumPy")
    sampled = model.generate(prompt, 12, temperature=0.8, top_k=5, seed=3)
    assert sampled.shape == (1, prompt.shape[1] + 12) and (sampled >= 0).all() and (sampled < config.vocab_size).all()
