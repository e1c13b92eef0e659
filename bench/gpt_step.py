"""Time one GPT training step (forward, backward, clip, AdamW) on each minigrad backend and,
as the reference, in PyTorch eager on the same CPU, all in one run and with the same weights.

    python bench/gpt_step.py                      # S, the laptop recipe: L=4 H=4 D=128 T=64 B=12
    python bench/gpt_step.py --config M           # M, shakespeare-char: L=6 H=6 D=384 T=256 B=64
    python bench/gpt_step.py --devices numpy cl --steps 20

The jit steps and PyTorch's are interleaved in rounds of --round steps each, so both see the
same machine (other load, clock changes); the first step of each round is not timed, as it meets
the other library's threads still spinning (PyTorch's OpenMP, BLAS's) and pays for them.  Prints milliseconds per step, tokens/s, the ratio to PyTorch,
the model's FLOPs per step and the MFU: those FLOPs per second as a share of what np.matmul
does at n=1024 in the same run (the BLAS ceiling of this machine).  Checks that every backend
gives the same losses, and writes bench/results/gpt_step[_M].json.  PyTorch is only an oracle
here, never a dependency.
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

CONFIGS = {"S": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12),
           "M": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64)}


def make_batches(config, batch_size, steps, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, config.vocab_size, size=(steps, batch_size, config.block_size + 1))
    return [(d[:, :-1], d[:, 1:]) for d in data]


def new_step(config, state, device="numpy", use_jit=True):
    """The CLI's training step (forward, backward, clip, AdamW) for a model with these weights."""
    Tensor.manual_seed(0)
    model = GPT(config)
    model.load_state_dict(state)
    if device != "numpy":
        for p in model.parameters():
            p.lazydata = p.to(device).realize().lazydata
    optimizer = model.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.99))
    return make_train_step(model, optimizer, grad_clip=1.0, use_jit=use_jit)


def captured_step(config, state, batch):
    """new_step under the jit, called until it has captured (calls 1 to 4)."""
    step = new_step(config, state)
    while step.recording is None:
        step(Tensor(batch[0]), Tensor(batch[1])).item()
    return step


def minigrad_steps(config, state, device, use_jit=False):
    """A function running one training step on a batch, returning (loss, seconds)."""
    backend = get_backend(device)
    step = new_step(config, state, device, use_jit)

    def run(x, y):
        t0 = time.perf_counter()
        loss = step(Tensor(x, device=device), Tensor(y, device=device)).item()
        backend.synchronize()
        return loss, time.perf_counter() - t0
    return run


def time_minigrad(config, state, batches, device, warmup, use_jit=False):
    run = minigrad_steps(config, state, device, use_jit)
    losses, times = [], []
    for i, (x, y) in enumerate(batches):
        loss, seconds = run(x, y)
        losses.append(loss)
        if i >= warmup:
            times.append(seconds)
    return losses, times


def kernels_per_step(config, state, batch) -> tuple:
    """(kernels, launches) of one training step (forward, backward, clip, AdamW): the kernels a
    jit records, the figure the scheduler's fusion rules are judged by, and the launches a replay
    makes of them (fewer where runs of them are multi-output kernels)."""
    step = captured_step(config, state, batch)
    step(Tensor(batch[0]), Tensor(batch[1]))             # a replay: its launches are grouped now
    return len(step.recording.calls), len(step.launch_groups)


def torch_steps(config, state, device="cpu"):
    """PyTorch eager's training step on the same model: a function of a batch -> (loss, seconds).
    On "cuda" the time includes waiting for the GPU (loss.item() synchronizes)."""
    import torch
    import torch.nn.functional as F
    torch.manual_seed(0)
    params = {k: torch.nn.Parameter(torch.tensor(v, device=device)) for k, v in state.items()}

    def forward(idx, targets):
        B, T = idx.shape
        x = params["wte.weight"][idx] + params["wpe.weight"][:T]
        H, D = config.n_head, config.n_embd
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=device), 1)
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
    def run(x, y):
        t0 = time.perf_counter()
        loss = forward(torch.tensor(x, device=device), torch.tensor(y, device=device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        opt.zero_grad()
        return loss.item(), time.perf_counter() - t0
    run.params = params                                  # for scripts that compare the weights
    return run


def time_torch(config, state, batches, warmup):
    run = torch_steps(config, state)
    losses, times = [], []
    for i, (x, y) in enumerate(batches):
        loss, seconds = run(x, y)
        losses.append(loss)
        if i >= warmup:
            times.append(seconds)
    return losses, times


def profile_replay(config, state, batches, device="numpy", steps=20) -> dict:
    """Where a replayed step's time goes: seconds per step by kernel kind (matmul is BLAS), and the
    rest of the step (Python: argument checks, the loop over calls, reading the loss), which is
    the median whole step timed without the profiler minus the kernels' times."""
    from collections import defaultdict
    step = captured_step(config, state, batches[0])
    for _ in range(3):                                   # the first replays bind their calls
        step(Tensor(batches[0][0]), Tensor(batches[0][1])).item()
    plain = []                                           # whole steps, not profiled
    for i in range(steps):
        x, y = batches[i % len(batches)]
        t0 = time.perf_counter()
        step(Tensor(x), Tensor(y)).item()
        plain.append(time.perf_counter() - t0)
    spent, count = defaultdict(float), defaultdict(int)
    bound = step._bound_calls

    def timed_calls(buffers):
        def timed(call, kind):
            def run():
                t0 = time.perf_counter()
                call()
                spent[kind] += time.perf_counter() - t0
            return run
        calls = step.recording.calls
        return [timed(c, str(calls[g[0]][0].kind) + (" x" + str(len(g)) if len(g) > 1 else ""))
                for c, g in zip(bound(buffers), step.launch_groups)]
    step._bound_calls = timed_calls
    for i in range(steps):
        x, y = batches[i % len(batches)]
        step(Tensor(x), Tensor(y)).item()
    total = float(np.median(plain))
    for g in step.launch_groups:
        count[str(step.recording.calls[g[0]][0].kind) + (" x" + str(len(g)) if len(g) > 1 else "")] += 1
    # "elementwise x3": a multi-output launch of 3 elementwise kernels (jit._launch_groups)
    result = {kind: {"ms": 1e3 * t / steps, "launches": count[kind]} for kind, t in sorted(spent.items(), key=lambda kv: -kv[1])}
    result["rest (Python)"] = {"ms": 1e3 * (total - sum(spent.values()) / steps), "launches": 0}
    return result


def flops_per_step(config, batch_size: int, n_params: int) -> float:
    """nanoGPT's estimate (PaLM's appendix B): 6 N per token for the weights' matmuls forward and
    backward, plus 12 L H Q T per token for attention's (Q = D / H); N without positions."""
    L, H, Q, T = config.n_layer, config.n_head, config.n_embd // config.n_head, config.block_size
    return (6 * n_params + 12 * L * H * Q * T) * T * batch_size


def matmul_flops_per_s(n: int = 1024, repeat: int = 5) -> float:
    """np.matmul's float32 GFLOP/s at n x n, the best of `repeat` (the BLAS ceiling for MFU)."""
    a, b = np.ones((n, n), np.float32), np.ones((n, n), np.float32)
    np.matmul(a, b)
    best = min(_timed(lambda: np.matmul(a, b)) for _ in range(repeat))
    return 2 * n ** 3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="S",
                        help="S: the laptop recipe; M: the shakespeare-char model (dropout off)")
    for name in ("n-layer", "n-head", "n-embd", "block-size", "batch-size"):
        parser.add_argument(f"--{name}", type=int, default=None, help="override the config's value")
    parser.add_argument("--vocab-size", type=int, default=65)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per backend (default 20 on S, 5 on M)")
    parser.add_argument("--warmup", type=int, default=4,
                        help="untimed first steps (kernels compile here; the jit checks steps 2 and 3 "
                             "and captures step 4)")
    parser.add_argument("--devices", nargs="+", default=None, help="minigrad devices (default: numpy, and cl if it works)")
    parser.add_argument("--round", type=int, default=None, help="steps of each in a round (default 6 on S, 2 on M)")
    parser.add_argument("--no-eager", action="store_true", help="skip minigrad without the jit (slow on M)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--torch-device", default="cpu", help="where the PyTorch reference runs (cpu, or cuda on a GPU)")
    parser.add_argument("--profile", action="store_true", help="also time a replay by kernel kind (NumPy backend)")
    parser.add_argument("--out", default=None, help="default: bench/results/gpt_step.json (S) or gpt_step_M.json")
    args = parser.parse_args()
    shape = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in CONFIGS[args.config].items()}
    steps = args.steps or (20 if args.config == "S" else 5)
    per_round = args.round or (6 if args.config == "S" else 2)
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   "gpt_step.json" if args.config == "S" else f"gpt_step_{args.config}.json")

    batch_size = shape.pop("batch_size")
    config = GPTConfig(vocab_size=args.vocab_size, dropout=0.0, bias=True, **shape)
    Tensor.manual_seed(1234)
    model = GPT(config)
    state, n_params = model.state_dict(), model.num_parameters()
    del model
    batches = make_batches(config, batch_size, steps + args.warmup)
    devices = args.devices or available_devices()

    runners = {}
    for device in devices:
        runners[f"minigrad-{device}+jit"] = minigrad_steps(config, state, device, use_jit=True)
        if not args.no_eager:
            runners[f"minigrad-{device}"] = minigrad_steps(config, state, device, use_jit=False)
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(os.cpu_count() or 1)
            runners["torch-eager"] = torch_steps(config, state, args.torch_device)
        except ImportError:
            print("(PyTorch not installed: no reference run)")
    results = {name: {"losses": [], "times": []} for name in runners}
    for name, run in runners.items():                    # warm-up: compiles, the jit's checks and capture
        for x, y in batches[:args.warmup]:
            results[name]["losses"].append(run(x, y)[0])
    timed = batches[args.warmup:]
    while any(len(r["times"]) < steps for r in results.values()):
        for name, run in runners.items():               # a round of each in turn; its first step untimed
            r = results[name]
            for j in range(per_round + 1):
                x, y = timed[len(r["times"]) % len(timed)]
                loss, seconds = run(x, y)
                if j > 0 and len(r["times"]) < steps:
                    r["losses"].append(loss)
                    r["times"].append(seconds)
    for r in results.values():
        r["ms_per_step"] = 1e3 * float(np.median(r.pop("times")))

    # counted on the NumPy backend, the CPU's schedule; a GPU-only run (--devices cl) skips it
    kernels, launches = kernels_per_step(config, state, batches[0]) if "numpy" in devices else (None, None)
    flops = flops_per_step(config, batch_size, n_params)
    ceiling = matmul_flops_per_s()
    tokens = batch_size * config.block_size
    if kernels is not None:
        print(f"kernels per step: {kernels} ({launches} launches: multi-output kernels run several as one)")
    print(f"GPT step, config {args.config}: L={config.n_layer} H={config.n_head} D={config.n_embd} "
          f"T={config.block_size} B={batch_size}, {flops / 1e9:.1f} GFLOP per step "
          f"(median of {steps} steps; np.matmul at 1024: {ceiling / 1e9:.0f} GFLOP/s)")
    torch_ms = results.get("torch-eager", {}).get("ms_per_step")
    for name, r in results.items():
        r["tokens_per_s"] = tokens / r["ms_per_step"] * 1e3
        r["mfu"] = flops / (r["ms_per_step"] / 1e3) / ceiling
        ratio = f"{torch_ms / r['ms_per_step']:5.2f}x torch" if torch_ms else ""
        print(f"  {name:<20} {r['ms_per_step']:8.1f} ms/step  {r['tokens_per_s']:9.0f} tokens/s  "
              f"MFU {100 * r['mfu']:4.0f}%  {ratio}")
    first = next(iter(results))
    for name, r in results.items():
        diff = max(abs(a - b) for a, b in zip(r["losses"], results[first]["losses"]))
        r["max_loss_diff_vs_first"] = diff
        print(f"  {name:<20} max |loss - {first}| over all steps = {diff:.2e}")
    if args.profile:
        breakdown = profile_replay(config, state, batches, steps=steps)
        print("where a replayed step's time goes (NumPy backend):")
        for kind, r in breakdown.items():
            print(f"  {kind:<16} {r['ms']:8.2f} ms  ({r['launches']} launches)" if r["launches"] else
                  f"  {kind:<16} {r['ms']:8.2f} ms")
        results["profile"] = breakdown
    info = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "kernels_per_step": kernels, "launches_per_step": launches, "flops_per_step": flops, "matmul_flops_per_s_1024": ceiling,
            "cpu_kernels": get_backend("numpy").describe(),
            "devices": {d: get_backend(d).describe() for d in devices}, "config": vars(args)}
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"results": results, "info": info}, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
