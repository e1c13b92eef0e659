"""How far the weights of two implementations of the same training step drift apart in 20 steps
(L=2 H=4 D=64 T=32 B=8, biases, AdamW, clipping at 1.0, the jit; fixed weights and batches).

    python bench/drift.py --save /tmp/now.npz           # this checkout's weights, float32 and float64
    python bench/drift.py --compare /tmp/before.npz     # against a file another checkout saved
    python bench/drift.py --device cl ...               # minigrad on OpenCL

Each run prints, for float32 and for float64 (the same model with every parameter in float64),
the largest difference in losses and in weights and how many weights differ by more than 1e-6,
and minigrad float32 against PyTorch float32.  Float32 sums taken in another order change the
last bits of a gradient; AdamW divides by sqrt(v), so for weights whose gradients are noise those
bits become updates of up to lr.  In float64 the noise is 1e-16 of the gradients, not 1e-7: a
change that keeps the maths shows there as differences near 1e-13.  Writes bench/results/drift.json.
"""
import argparse
import json
import os

import numpy as np

from gpt.model import GPT, GPTConfig
from gpt.train import make_train_step
from minigrad import Tensor

CONFIG = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=64, dropout=0.0, bias=True)
STEPS = 20


def start(config=CONFIG, batch_size=8, steps=STEPS):
    """The fixed weights (float64) and batches every run starts from."""
    rng = np.random.default_rng(0)
    Tensor.manual_seed(0)
    shapes = {k: v.shape for k, v in GPT(config).state_dict().items()}
    state = {k: rng.standard_normal(shape) * 0.05 + (1.0 if k.endswith(".weight") and "ln" in k else 0.0)
             for k, shape in shapes.items()}
    return state, rng.integers(0, config.vocab_size, size=(steps, batch_size, config.block_size + 1))


def minigrad_run(state, batches, dtype, device, config=CONFIG):
    """(losses, weights) after training from `state` on `batches`, with parameters of `dtype`."""
    Tensor.manual_seed(0)
    model = GPT(config)
    model.load_state_dict({k: v.astype(np.float32) for k, v in state.items()})
    for p, (name, value) in zip(model.parameters(), model.state_dict().items()):
        assert p.shape == value.shape, "parameters() and state_dict() list the weights in one order"
        p.lazydata = Tensor(state[name].astype(dtype), device=device).lazydata    # float64 parameters too
    optimizer = model.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.99))
    step = make_train_step(model, optimizer, grad_clip=1.0, use_jit=True)
    losses = [step(Tensor(b[:, :-1], device=device), Tensor(b[:, 1:], device=device)).item() for b in batches]
    return np.array(losses), {k: np.asarray(v, np.float64) for k, v in model.state_dict().items()}


def torch_run(state, batches):
    from gpt_step import torch_steps                     # bench/ is on the path when this runs as a script
    run = torch_steps(CONFIG, {k: v.astype(np.float32) for k, v in state.items()})
    losses = [run(b[:, :-1], b[:, 1:])[0] for b in batches]
    return np.array(losses), {k: p.detach().numpy().astype(np.float64) for k, p in run.params.items()}


def differences(a, b) -> dict:
    (la, wa), (lb, wb) = a, b
    diff = {k: np.abs(wa[k] - wb[k]) for k in wa}
    return {"max_loss_diff": float(np.abs(la - lb).max()), "max_weight_diff": float(max(d.max() for d in diff.values())),
            "weights_over_1e-6": int(sum((d > 1e-6).sum() for d in diff.values())),
            "weights": int(sum(d.size for d in diff.values()))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save", help="write this checkout's losses and weights here (.npz)")
    parser.add_argument("--compare", help="a file --save wrote in another checkout")
    parser.add_argument("--device", default="numpy", help="minigrad's device (numpy, or cl)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "drift.json"))
    args = parser.parse_args()
    state, batches = start()
    runs = {dtype: minigrad_run(state, batches, dtype, args.device) for dtype in ("float32", "float64")}
    results = {}
    try:
        results["minigrad float32 vs PyTorch float32"] = differences(runs["float32"], torch_run(state, batches))
    except ImportError:
        print("(PyTorch not installed: no reference run)")
    if args.save:
        np.savez(args.save, **{f"{dtype}/{k}": v for dtype, (losses, weights) in runs.items()
                               for k, v in [("losses", losses), *weights.items()]})
    if args.compare:
        saved = np.load(args.compare)
        for dtype, run in runs.items():
            other = (saved[f"{dtype}/losses"], {k: saved[f"{dtype}/{k}"] for k in run[1]})
            results[f"this checkout vs {os.path.basename(args.compare)}, {dtype}"] = differences(run, other)
    for what, r in results.items():
        print(f"{what}: losses within {r['max_loss_diff']:.1e}, weights within {r['max_weight_diff']:.1e}, "
              f"{r['weights_over_1e-6']} of {r['weights']} weights differ by more than 1e-6")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
