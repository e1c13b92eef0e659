"""How long the first training steps take: with a cold kernel cache (every kernel compiled now)
and a warm one (the libraries of an earlier run loaded from disk), each in a fresh process.

    python bench/first_step.py                 # S, the laptop recipe
    python bench/first_step.py --config M      # the shakespeare-char model

Step 1 runs eagerly (and compiles the step's kernels), steps 2 and 3 are the jit's checked calls,
step 4 its capture; step 5 is the first replay.  Prints the seconds of each and writes
bench/results/first_step[_M].json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {bench!r})
from gpt_step import CONFIGS, make_batches
from gpt.model import GPT, GPTConfig
from gpt.train import make_train_step
from minigrad import Tensor
from minigrad.backends import get_backend
shape = dict(CONFIGS[{config!r}])
B = shape.pop("batch_size")
config = GPTConfig(vocab_size=65, dropout=0.0, bias=False, **shape)
Tensor.manual_seed(0)
model = GPT(config)
optimizer = model.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.99))
step = make_train_step(model, optimizer, grad_clip=1.0, use_jit=True)
imported = time.perf_counter() - t0
times = []
for x, y in make_batches(config, B, 5):
    t = time.perf_counter()
    step(Tensor(x), Tensor(y)).item()
    times.append(time.perf_counter() - t)
compiler = get_backend("numpy").compiler
print(json.dumps({{"setup_s": imported, "steps_s": times, "compiles": compiler.compiles if compiler else None}}))
"""


def run(config: str, cache: str) -> dict:
    code = CHILD.format(bench=os.path.dirname(os.path.abspath(__file__)), config=config)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "MINIGRAD_CACHE": cache}, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["S", "M"], default="S")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   "first_step.json" if args.config == "S" else f"first_step_{args.config}.json")
    with tempfile.TemporaryDirectory(prefix="minigrad-cache-") as cache:
        results = {"cold": run(args.config, cache), "warm": run(args.config, cache)}
    print(f"first training steps, config {args.config} (seconds; step 1 eager, 2-3 checked, 4 captured, 5 replayed)")
    for name, r in results.items():
        steps = "  ".join(f"{t:6.2f}" for t in r["steps_s"])
        print(f"  {name:<5} kernel cache: setup {r['setup_s']:5.2f}  steps {steps}   ({r['compiles']} compiler runs)")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"config": args.config, "results": results}, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
