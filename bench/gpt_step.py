"""Time one GPT training step (forward, backward, clip, AdamW) on each minigrad backend and,
as the reference, in PyTorch eager on the same CPU, all in one run and with the same weights.

    python bench/gpt_step.py                      # the laptop recipe: L=4, H=4, D=128, T=64, B=12
    python bench/gpt_step.py --devices numpy cl --steps 20

Prints milliseconds per step and ratios, checks that every backend gives the same losses,
and writes bench/results/gpt_step.json.  PyTorch is only an oracle here, never a dependency.
"""
import argparse
import json
import math
import os
import platform
import time

import numpy as np

from gpt.model import GPT, GPTConfig
from gpt.train import make_train_step
from minigrad import Tensor
from minigrad.backends import available_devices, get_backend


def make_batches(config, batch_size, steps, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, config.vocab_size, size=(steps, batch_size, config.block_size + 1))
    return [(d[:, :-1], d[:, 1:]) for d in data]


def time_minigrad(config, state, batches, device, warmup, use_jit=False):
    Tensor.manual_seed(0)
    model = GPT(config)
    model.load_state_dict(state)
    if device != "numpy":
        for p in model.parameters():
            p.lazydata = p.to(device).realize().lazydata
    optimizer = model.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.99))
    backend = get_backend(device)
    step = make_train_step(model, optimizer, grad_clip=1.0, use_jit=use_jit)
    losses, times = [], []
    for i, (x, y) in enumerate(batches):
        t0 = time.perf_counter()
        loss = step(Tensor(x, device=device), Tensor(y, device=device))
        losses.append(loss.item())
        backend.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return losses, times


def kernels_per_step(config, state, batch) -> int:
    """How many kernels one training step (forward, backward, clip, AdamW) runs, as a jit
    records them: the figure the scheduler's fusion rules are judged by."""
    from minigrad import jit
    Tensor.manual_seed(0)
    model = GPT(config)
    model.load_state_dict(state)
    optimizer = model.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.99))
    step = make_train_step(model, optimizer, grad_clip=1.0, use_jit=True)
    while step.recording is None:
        step(Tensor(batch[0]), Tensor(batch[1]))
    assert isinstance(step, jit)
    return len(step.recording.calls)


def time_torch(config, state, batches, warmup):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(0)
    params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in state.items()}

    def forward(idx, targets):
        B, T = idx.shape
        x = params["wte.weight"][idx] + params["wpe.weight"][:T]
        H, D = config.n_head, config.n_embd
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        for i in range(config.n_layer):
            p = lambda name: params[f"h.{i}.{name}"]  # noqa: E731
            z = F.layer_norm(x, (D,), p("ln_1.weight"), p("ln_1.bias"))
            q, k, v = F.linear(z, p("attn.c_attn.weight"), p("attn.c_attn.bias")).split(D, dim=2)
            q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / math.sqrt(D // H)
            att = att.masked_fill(mask, float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, D)
            x = x + F.linear(y, p("attn.c_proj.weight"), p("attn.c_proj.bias"))
            z = F.layer_norm(x, (D,), p("ln_2.weight"), p("ln_2.bias"))
            h = F.gelu(F.linear(z, p("mlp.c_fc.weight"), p("mlp.c_fc.bias")))
            x = x + F.linear(h, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"))
        x = F.layer_norm(x, (D,), params["ln_f.weight"], params["ln_f.bias"])
        logits = x @ params["wte.weight"].T
        return F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))

    decay = [p for n, p in params.items() if p.dim() >= 2]
    no_decay = [p for n, p in params.items() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    losses, times = [], []
    for i, (x, y) in enumerate(batches):
        t0 = time.perf_counter()
        loss = forward(torch.tensor(x), torch.tensor(y))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return losses, times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--vocab-size", type=int, default=65)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per backend (after --warmup)")
    parser.add_argument("--warmup", type=int, default=4,
                        help="untimed first steps (OpenCL compiles kernels here; the jit checks steps 2 and 3 "
                             "and captures step 4)")
    parser.add_argument("--devices", nargs="+", default=None, help="minigrad devices (default: numpy, and cl if it works)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "gpt_step.json"))
    args = parser.parse_args()

    config = GPTConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd, dropout=0.0, bias=True)
    Tensor.manual_seed(1234)
    state = GPT(config).state_dict()
    batches = make_batches(config, args.batch_size, args.steps + args.warmup)
    devices = args.devices or available_devices()

    results = {}
    for device in devices:
        for use_jit in (False, True):
            losses, times = time_minigrad(config, state, batches, device, args.warmup, use_jit)
            name = f"minigrad-{device}" + ("+jit" if use_jit else "")
            results[name] = {"ms_per_step": 1e3 * float(np.median(times)), "losses": losses}
    kernels = kernels_per_step(config, state, batches[0])
    print(f"kernels per step: {kernels}")
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(os.cpu_count() or 1)
            losses, times = time_torch(config, state, batches, args.warmup)
            results["torch-eager"] = {"ms_per_step": 1e3 * float(np.median(times)), "losses": losses}
        except ImportError:
            print("(PyTorch not installed: no reference run)")

    base = results["minigrad-numpy"]["ms_per_step"] if "minigrad-numpy" in results else None
    tokens = args.batch_size * args.block_size
    print(f"GPT step, L={args.n_layer} H={args.n_head} D={args.n_embd} T={args.block_size} B={args.batch_size} "
          f"(median of {args.steps} steps)")
    for name, r in results.items():
        ratio = f"{r['ms_per_step'] / base:5.2f}x numpy" if base else ""
        print(f"  {name:<20} {r['ms_per_step']:8.1f} ms/step  {tokens / r['ms_per_step'] * 1e3:9.0f} tokens/s  {ratio}")
    reference = results[next(iter(results))]["losses"]
    for name, r in results.items():
        diff = max(abs(a - b) for a, b in zip(r["losses"], reference))
        r["max_loss_diff_vs_first"] = diff
        print(f"  {name:<20} max |loss - {next(iter(results))}| over all steps = {diff:.2e}")
    info = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "kernels_per_step": kernels,
            "devices": {d: (get_backend(d).describe() if d == "cl" else "numpy") for d in devices},
            "config": vars(args)}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"results": results, "info": info}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
