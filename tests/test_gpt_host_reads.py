"""Building a graph reads nothing back from the device: a GPT training step, eager or
replayed by the jit, copies exactly one value to Python, the loss the caller asks for."""
import numpy as np
import pytest

from gpt.model import GPT, GPTConfig
from gpt.train import make_train_step
from minigrad import Tensor
from minigrad.debug import host_reads


@pytest.mark.parametrize("use_jit", [False, True])
def test_a_training_step_reads_back_only_the_loss(use_jit):
    Tensor.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    optimizer = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99))
    step = make_train_step(model, optimizer, grad_clip=1.0, use_jit=use_jit)
    rng = np.random.default_rng(0)
    for i in range(5):                               # eager, two traced calls, then replays
        x, y = rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8))
        y[0, : i + 1] = -1                           # a different count of ignored targets each step
        before = host_reads()
        loss = step(Tensor(x), Tensor(y))
        assert host_reads() == before, f"step {i} read values back while building its graph"
        assert np.isfinite(loss.item())
        assert host_reads() == before + 1
