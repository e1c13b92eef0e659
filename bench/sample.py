"""KV-cache sampling speed: minigrad's GPT.generate against PyTorch eager's plain decoding loop
with its own cache, the same weights, back to back in one process.

    python bench/sample.py                       # the laptop recipe's model (L=4 H=4 D=128 T=64), batch 1
    python bench/sample.py --tokens 1000 --batch 4

Both decode one token at a time, attending to the cached keys and values of every earlier
position (the window slides once block_size is full: minigrad refills its cache from the cropped
window, and so does the reference).  Prints tokens per second and the ratio, and writes
bench/results/sample.json.  PyTorch is only the reference here, never a dependency.
"""
import argparse
import json
import math
import os
import time

import numpy as np

from gpt.model import GPT, GPTConfig
from minigrad import Tensor


def time_minigrad(model, prompt, tokens, seed=0):
    t0 = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=tokens, temperature=1.0, seed=seed)
    return time.perf_counter() - t0, out


def torch_sampler(config, state):
    """A plain PyTorch decoding loop with a KV cache: nanoGPT's model, written out."""
    import torch
    import torch.nn.functional as F
    P = {k: torch.tensor(v) for k, v in state.items()}
    D, H, L = config.n_embd, config.n_head, config.n_layer

    def run(idx, start, cache):
        """idx (B, T) at positions start.. -> last logits (B, V); appends K, V to `cache`."""
        B, T = idx.shape
        x = P["wte.weight"][idx] + P["wpe.weight"][start:start + T]
        for i in range(L):
            p = lambda name: P[f"h.{i}.{name}"]  # noqa: E731
            z = F.layer_norm(x, (D,), p("ln_1.weight"), p("ln_1.bias"))
            q, k, v = F.linear(z, p("attn.c_attn.weight"), p("attn.c_attn.bias")).split(D, dim=2)
            q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
            if len(cache) > i:
                k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
                cache[i] = (k, v)
            else:
                cache.append((k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
            x = x + F.linear(y.transpose(1, 2).reshape(B, T, D), p("attn.c_proj.weight"), p("attn.c_proj.bias"))
            z = F.layer_norm(x, (D,), p("ln_2.weight"), p("ln_2.bias"))
            x = x + F.linear(F.gelu(F.linear(z, p("mlp.c_fc.weight"), p("mlp.c_fc.bias"))),
                             p("mlp.c_proj.weight"), p("mlp.c_proj.bias"))
        x = F.layer_norm(x[:, -1], (D,), P["ln_f.weight"], P["ln_f.bias"])
        return x @ P["wte.weight"].T

    def generate(prompt, tokens, seed=0):
        gen = torch.Generator().manual_seed(seed)
        ids = torch.tensor(prompt)
        block = config.block_size
        with torch.no_grad():
            cache, length = [], 0
            for _ in range(tokens):
                if not cache or length == block:
                    window = ids[:, -block:]
                    cache = []
                    logits = run(window, 0, cache)
                    length = window.shape[1]
                else:
                    logits = run(ids[:, -1:], length, cache)
                    length += 1
                probs = torch.softmax(logits.double(), dim=-1)
                ids = torch.cat([ids, torch.multinomial(probs, 1, generator=gen)], dim=1)
        return ids
    return generate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=65)
    parser.add_argument("--batch", type=int, default=1, help="sequences sampled side by side")
    parser.add_argument("--tokens", type=int, default=500, help="new tokens per sequence")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (the best counts)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "sample.json"))
    args = parser.parse_args()

    config = GPTConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd, dropout=0.0, bias=True)
    Tensor.manual_seed(1234)
    model = GPT(config)
    state = model.state_dict()
    prompt = np.zeros((args.batch, 1), dtype=np.int64)
    time_minigrad(model, prompt, 8)                       # warm-up: compiles the decoding kernels

    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    torch_generate = torch_sampler(config, state)
    torch_generate(prompt, 8)

    ours, theirs = [], []
    for _ in range(args.repeats):                         # interleaved, so both see the same machine
        ours.append(time_minigrad(model, prompt, args.tokens)[0])
        t0 = time.perf_counter()
        torch_generate(prompt, args.tokens)
        theirs.append(time.perf_counter() - t0)
    n = args.batch * args.tokens
    results = {"minigrad": n / min(ours), "torch-eager": n / min(theirs)}
    print(f"KV-cache sampling, L={args.n_layer} H={args.n_head} D={args.n_embd} T={args.block_size}, "
          f"batch {args.batch}, {args.tokens} new tokens (best of {args.repeats})")
    for name, tps in results.items():
        print(f"  {name:<12} {tps:9.0f} tokens/s")
    ratio = results["minigrad"] / results["torch-eager"]
    print(f"  minigrad / torch-eager: {ratio:.2f}x")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"tokens_per_s": results, "ratio": ratio, "config": vars(args),
                   "cpu_count": os.cpu_count()}, f, indent=2)
    print(f"wrote {args.out}")
    assert math.isfinite(ratio)


if __name__ == "__main__":
    main()
