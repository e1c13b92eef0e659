"""Peak memory of GPT training steps: minigrad (NumPy backend, the CLI's jit'd step) against
PyTorch eager, each in its own process so that one's peak cannot hide in the other's.

    python bench/memory.py                    # M: shakespeare-char (L6 H6 D384 T256 B64), 6 steps each
    python bench/memory.py --config S         # the laptop recipe

Each worker trains from the same weights on the same batches and reports its peak resident set
size (ru_maxrss) and its losses; the parent prints both, the ratio, and writes
bench/results/memory.json.  PyTorch is only the reference, never a dependency.
"""
import argparse
import json
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {   # n_layer, n_head, n_embd, block_size, batch_size
    "S": (4, 4, 128, 64, 12),
    "M": (6, 6, 384, 256, 64),
}


def worker(name: str, config_name: str, steps: int) -> None:
    from gpt.model import GPT, GPTConfig
    from gpt_step import make_batches, time_minigrad, time_torch
    from minigrad import Tensor
    L, H, D, T, B = CONFIGS[config_name]
    config = GPTConfig(vocab_size=65, block_size=T, n_layer=L, n_head=H, n_embd=D, dropout=0.0, bias=True)
    Tensor.manual_seed(1234)
    state = GPT(config).state_dict()
    batches = make_batches(config, B, steps)
    if name == "torch":
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        losses, times = time_torch(config, state, batches, warmup=0)
    else:
        losses, times = time_minigrad(config, state, batches, "numpy", warmup=0, use_jit=True)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9   # Linux reports KiB
    print(json.dumps({"peak_gb": peak_gb, "losses": losses, "step_s": times}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="M")
    parser.add_argument("--steps", type=int, default=6, help="steps per worker (the jit captures on step 4)")
    parser.add_argument("--worker", choices=["minigrad", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "memory.json"))
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.config, args.steps)
    results = {}
    for name in ("minigrad", "torch"):
        done = subprocess.run([sys.executable, __file__, "--worker", name, "--config", args.config,
                               "--steps", str(args.steps)], capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {name:<9} peak RSS {results[name]['peak_gb']:6.2f} GB   losses "
              + " ".join(f"{x:.4f}" for x in results[name]["losses"]))
    ratio = results["minigrad"]["peak_gb"] / results["torch"]["peak_gb"]
    print(f"config {args.config} {CONFIGS[args.config]}: minigrad / PyTorch peak memory = {ratio:.2f}x")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"config": args.config, "shape": CONFIGS[args.config], "steps": args.steps,
                   "results": results, "ratio": ratio}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
