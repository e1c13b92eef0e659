"""Train nanoGPT's laptop recipe (L=4, H=4, D=128, T=64, B=12, 2000 steps) on Tiny
Shakespeare with minigrad, then plot the loss curves and print a sample.

    python examples/train_shakespeare.py                    # out-dir runs/shakespeare-laptop
    python examples/train_shakespeare.py --max-iters 200    # any `gpt train` flag passes through

A thin wrapper over the CLI: the same as
    python -m gpt train --preset laptop --data shakespeare --out-dir runs/shakespeare-laptop
    python -m gpt plot runs/shakespeare-laptop --out runs/shakespeare-laptop/loss.png
    python -m gpt sample --out-dir runs/shakespeare-laptop --prompt "ROMEO:"
Offline, point MINIGRAD_DATA at a folder holding tinyshakespeare.txt, or pass --data FILE.
"""
import os
import sys

from gpt.cli import main

OUT_DIR = "runs/shakespeare-laptop"


def run(extra_args):
    out_dir = extra_args[extra_args.index("--out-dir") + 1] if "--out-dir" in extra_args else OUT_DIR
    code = main(["train", "--preset", "laptop", "--data", "shakespeare", "--out-dir", out_dir, *extra_args])
    if code not in (0, 130):          # 130: Ctrl-C, the last checkpoint was saved: still plot and sample
        return code
    main(["plot", out_dir, "--out", os.path.join(out_dir, "loss.png")])
    return main(["sample", "--out-dir", out_dir, "--prompt", "ROMEO:", "--num-tokens", "300"])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
