"""The GPT on the OpenCL backend: 20 training steps of the laptop recipe give the NumPy
backend's losses, and generation gives the same tokens.  (On CI this runs on PoCL, the CPU;
the first step compiles every kernel once, a few seconds.)"""
import numpy as np

from gpt.model import GPT, GPTConfig
from gpt.train import make_train_step
from minigrad import Tensor

LAPTOP = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=True)


def train_losses(device: str, steps: int = 20, use_jit: bool = True):
    Tensor.manual_seed(1337)
    model = GPT(GPTConfig(**LAPTOP), device=device)
    optimizer = model.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.99))

    run = make_train_step(model, optimizer, grad_clip=1.0, use_jit=use_jit)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        data = rng.integers(0, LAPTOP["vocab_size"], size=(12, LAPTOP["block_size"] + 1))
        losses.append(run(Tensor(data[:, :-1], device=device), Tensor(data[:, 1:], device=device)).item())
    return model, losses


def test_laptop_recipe_trains_the_same_on_opencl(cl):
    numpy_model, numpy_losses = train_losses("numpy")
    cl_model, cl_losses = train_losses("cl")
    np.testing.assert_allclose(cl_losses, numpy_losses, atol=1e-3,
                               err_msg="20 training steps: OpenCL losses (actual) vs NumPy losses (desired)")
    assert numpy_losses[-1] < numpy_losses[0], f"the loss should fall over 20 steps: {numpy_losses}"
    prompt = np.array([[1, 2, 3, 4, 5]])
    on_numpy = numpy_model.generate(prompt, 12, top_k=1)
    on_cl = cl_model.generate(prompt, 12, top_k=1)
    np.testing.assert_array_equal(on_cl, on_numpy, err_msg="greedy generation: OpenCL vs NumPy")
    sampled = cl_model.generate(prompt, 12, temperature=0.8, top_k=5, seed=3)
    assert sampled.shape == (1, 17) and (sampled >= 0).all() and (sampled < LAPTOP["vocab_size"]).all()
