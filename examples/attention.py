"""From an attention map down to a kernel's source, for a trained char-level GPT.

    python examples/attention.py --out-dir runs/laptop --prompt "ROMEO: Is it so?"

With no --out-dir it uses the first of the README's run folders that exists (runs/laptop,
then runs/quickstart).

1. plots every head's attention weights for the prompt (attention.png in the run directory);
2. prints the kernels that compute one block's attention weights (what fused with what);
3. prints the OpenCL C of those kernels, the code a GPU would run for them.
Train a model first, e.g. `python -m gpt train --preset laptop --data shakespeare --out-dir runs/laptop`.
"""
import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gpt.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from minigrad import Tensor, no_grad  # noqa: E402

README_RUNS = ("runs/laptop", "runs/quickstart", "runs/seed")      # where the README's train commands write


def plot_maps(maps, chars, path):
    """One row per block, one column per head; row t of a map is what position t read."""
    L, H = len(maps), maps[0].shape[1]
    fig, axes = plt.subplots(L, H, figsize=(2.6 * H, 2.6 * L), squeeze=False)
    for layer, weights in enumerate(maps):
        for head in range(H):
            ax = axes[layer][head]
            ax.imshow(weights[0, head], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"block {layer}, head {head}", fontsize=8)
            ax.set_xticks(range(len(chars)), chars, fontsize=6)
            ax.set_yticks(range(len(chars)), chars, fontsize=6)
    fig.suptitle("attention weights (row: query position, column: key position)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=None,
                        help=f"a training run's directory (default: the first of {', '.join(README_RUNS)} that exists)")
    parser.add_argument("--prompt", default="ROMEO: Is it so?")
    parser.add_argument("--block", type=int, default=0, help="which block's kernels to print")
    args = parser.parse_args()
    args.out_dir = args.out_dir or next((d for d in README_RUNS if os.path.isdir(d)), None)
    if args.out_dir is None:
        sys.exit(f"attention.py: no run found in {' or '.join(README_RUNS)}; train one first "
                 f"(python -m gpt train --preset laptop --data shakespeare --out-dir runs/laptop) or pass --out-dir")
    try:
        model, tokenizer, _ = load_checkpoint(args.out_dir, device="numpy")
        ids = tokenizer.encode(args.prompt)[None, : model.config.block_size]      # (1, T)
    except (CheckpointError, ValueError) as e:
        sys.exit(f"attention.py: {e}")
    chars = [c if c.strip() else "␣" for c in tokenizer.decode(ids[0])]

    # 1. the attention maps
    path = plot_maps(model.attention_maps(ids), chars, os.path.join(args.out_dir, "attention.png"))
    print(f"1. attention maps of every block and head: {path}\n")

    # 2. the kernels behind one block's weights, before anything runs
    attn = model.h[args.block].attn
    attn.keep_weights = True
    model.eval()
    with no_grad():
        model(Tensor(ids))
    weights = attn.weights                                  # (1, H, T, T), still a lazy graph
    print(f"2. the kernels that compute block {args.block}'s attention weights:")
    print(weights.explain())

    # 3. the same kernels as OpenCL C: the code a GPU would run (rendered as text, no GPU needed)
    print("\n3. their OpenCL source:")
    print(weights.explain(source=True))
    attn.keep_weights, attn.weights = False, None

if __name__ == "__main__":
    main()
