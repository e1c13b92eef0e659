"""Time the gradient allreduce of data-parallel training for three model sizes, alone (no
training in between), under MPI:

    mpiexec -n 2 python bench/allreduce.py                 # ranks on this machine
    mpiexec -n 8 -f hosts python bench/allreduce.py         # ranks on several machines

Each model's gradients go through the same GradientBuckets and World.sum_ as `gpt train`
(25 MiB buckets); after a barrier, so a rank's wait for a slower one is not counted.  Also
times an 8-byte allreduce: the latency term of the model in docs/distributed.md.  Prints a
table and writes bench/results/allreduce.json (rank 0).
"""
import json
import os
import platform
import time

import numpy as np

from gpt.distributed import GradientBuckets, detect_world
from gpt.model import GPT, GPTConfig
from gpt.train import PRESETS

CHAR_VOCAB = 65                          # Tiny Shakespeare's characters


def preset_config(name: str) -> GPTConfig:
    p = PRESETS[name]
    return GPTConfig(vocab_size=CHAR_VOCAB, block_size=p["block_size"], n_layer=p["n_layer"], n_head=p["n_head"],
                     n_embd=p["n_embd"], bias=p.get("bias", True))


MODELS = {"laptop": lambda: preset_config("laptop"),
          "shakespeare-char": lambda: preset_config("shakespeare-char"),
          "gpt2 (124M)": lambda: GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)}


def median_seconds(world, buffers, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        world.comm.Barrier()
        start = time.perf_counter()
        world.sum_(buffers)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    world = detect_world()
    if world.size < 2:
        raise SystemExit("run under mpiexec with at least 2 ranks: mpiexec -n 2 python bench/allreduce.py")
    results = {"ranks": world.size, "host": platform.node(), "date": time.strftime("%Y-%m-%d"), "models": {}}
    results["latency_us"] = 1e6 * median_seconds(world, [np.zeros(2, np.float32)], repeats=200)
    for name, make_config in MODELS.items():
        shapes = [p.shape for p in GPT(make_config()).parameters()]
        buckets = GradientBuckets(shapes, extra=2)
        nbytes = sum(b.nbytes for b in buckets.buffers)
        seconds = median_seconds(world, buckets.buffers, repeats=10 if nbytes < 1e8 else 3)
        # bus bandwidth: what each rank's link carried per second in a ring allreduce
        bus = 2 * (world.size - 1) / world.size * nbytes / seconds
        results["models"][name] = {"parameters": int(sum(np.prod(s) for s in shapes)), "bytes": int(nbytes),
                                   "buckets": len(buckets.buffers), "ms": 1000 * seconds, "bus_GB_per_s": bus / 1e9}
    if world.is_root:
        print(f"{world.size} ranks; 8-byte allreduce: {results['latency_us']:.1f} us")
        print(f"{'model':>18} {'parameters':>12} {'MB':>8} {'buckets':>8} {'ms':>9} {'bus GB/s':>9}")
        for name, r in results["models"].items():
            print(f"{name:>18} {r['parameters']:>12,} {r['bytes'] / 1e6:>8.1f} {r['buckets']:>8} {r['ms']:>9.2f} "
                  f"{r['bus_GB_per_s']:>9.2f}")
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "allreduce.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
