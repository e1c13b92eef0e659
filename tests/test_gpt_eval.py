"""Evaluation with its forward captured by minigrad.jit (make_eval_loss): the same losses as the
eager model, evaluation after evaluation, while training changes the weights in between."""
import numpy as np

from gpt.model import GPT, GPTConfig
from gpt.train import estimate_loss, make_eval_loss, make_train_step
from minigrad import Tensor


class FixedBatches:
    """get_batch(split) from a seeded generator: two of these give the same batches."""
    def __init__(self, vocab, B=3, T=16):
        self.rng, self.vocab, self.B, self.T = np.random.default_rng(7), vocab, B, T

    def get_batch(self, split):
        d = self.rng.integers(0, self.vocab, size=(self.B, self.T + 1))
        return d[:, :-1], d[:, 1:]


def test_captured_evaluation_equals_eager_as_training_goes_on():
    config = GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.2, bias=False)
    Tensor.manual_seed(0)
    model = GPT(config)
    optimizer = model.configure_optimizer(weight_decay=0.1, lr=1e-2, betas=(0.9, 0.99))
    step = make_train_step(model, optimizer, grad_clip=1.0, use_jit=True)
    captured = make_eval_loss(model, use_jit=True)
    train_batches = FixedBatches(13)
    for _ in range(3):                       # the capture is made in the first evaluation (call 4)
        for _ in range(5):
            x, y = train_batches.get_batch("train")
            step(Tensor(x), Tensor(y)).item()
        fast = estimate_loss(model, FixedBatches(13), 4, "numpy", captured)
        slow = estimate_loss(model, FixedBatches(13), 4, "numpy")
        assert fast.keys() == slow.keys() == {"train", "val"}
        for split in fast:
            assert abs(fast[split] - slow[split]) < 1e-6, (split, fast, slow)
        assert model.training                # evaluation hands the model back in training mode
    assert captured.recording is not None    # replayed, not eager
