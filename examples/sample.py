"""Sample from a trained checkpoint, from Python rather than the CLI.

    python examples/sample.py runs/shakespeare-laptop "ROMEO:"

Loads the best checkpoint of a run (its tokenizer comes with it), then generates with the
KV cache: each new character runs the model on one position only.
"""
import sys

from gpt.checkpoint import load_checkpoint


def main(out_dir="runs/shakespeare-laptop", prompt="\n", num_tokens=300):
    model, tokenizer, meta = load_checkpoint(out_dir)
    print(f"# {meta['path']}: iteration {meta['iter']}, val loss {meta.get('best_val_loss', float('nan')):.3f}")
    for temperature in (0.5, 1.0):
        ids = model.generate(tokenizer.encode(prompt)[None, :], num_tokens, temperature=temperature,
                             top_k=20, seed=0)
        print(f"# temperature {temperature}, top_k 20\n{tokenizer.decode(ids[0])}\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
