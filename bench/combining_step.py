"""What the data-parallel step's host round trip costs on one process: the laptop recipe's
training step as one captured graph (make_train_step) against the same step split in two
captured pieces with the gradient on the host in between (CombiningStep, one micro-batch,
one rank: the allreduce is a no-op), timed alternately in one run so load affects both.

    python bench/combining_step.py --steps 20
"""
import argparse
import time

import numpy as np

from gpt.distributed import World
from gpt.model import GPT, GPTConfig
from gpt.train import PRESETS, CombiningStep, make_train_step
from minigrad import Tensor


def build(kind: str, config: GPTConfig, state: dict):
    model = GPT(config)
    model.load_state_dict(state)
    optimizer = model.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.99))
    if kind == "fused":
        step = make_train_step(model, optimizer, grad_clip=1.0)
        return lambda x, y: step(Tensor(x), Tensor(y)).item()
    step = CombiningStep(model, optimizer, grad_clip=1.0, use_jit=True, world=World(), grad_accum=1)
    return lambda x, y: step([(x, y)], False)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    p = PRESETS["laptop"]
    config = GPTConfig(vocab_size=65, block_size=p["block_size"], n_layer=p["n_layer"], n_head=p["n_head"],
                       n_embd=p["n_embd"], bias=p["bias"])
    Tensor.manual_seed(0)
    state = GPT(config).state_dict()
    rng = np.random.default_rng(0)
    data = rng.integers(0, config.vocab_size, size=(p["batch_size"], config.block_size + 1))
    x, y = data[:, :-1], data[:, 1:]
    steps = {kind: build(kind, config, state) for kind in ("fused", "split")}
    times = {kind: [] for kind in steps}
    losses = {kind: [] for kind in steps}
    for i in range(args.steps + 3):
        for kind, step in steps.items():
            start = time.perf_counter()
            losses[kind].append(step(x, y))
            if i >= 3:                                   # after capture
                times[kind].append(time.perf_counter() - start)
    np.testing.assert_allclose(losses["split"], losses["fused"], rtol=1e-5)
    fused, split = (1000 * float(np.median(times[k])) for k in ("fused", "split"))
    print(f"laptop step, median of {args.steps}: one captured graph {fused:.1f} ms, split with the gradient on "
          f"the host {split:.1f} ms ({split / fused:.2f}x); same losses")


if __name__ == "__main__":
    main()
