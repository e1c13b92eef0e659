"""Train the laptop recipe in PyTorch eager with gpt's own data pipeline, seed and initial
weights, and print its loss curve beside a minigrad run's log.jsonl: an oracle for the whole
training run, not just one step.

    python -m gpt train --preset laptop --data PATH --out-dir runs/laptop --seed 1337
    python bench/laptop_reference.py --data PATH --seed 1337 --compare runs/laptop

PyTorch is an oracle here only; it is never imported by minigrad or gpt.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from gpt.data import CharDataset, CharTokenizer, load_text
from gpt.model import GPT, GPTConfig
from gpt.train import PRESETS, TrainConfig, lr_at
from minigrad import Tensor


def forward(P, cfg, idx, targets):
    B, T = idx.shape
    D, H = cfg.n_embd, cfg.n_head
    x = P["wte.weight"][idx] + P["wpe.weight"][:T]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for i in range(cfg.n_layer):
        p = lambda name: P.get(f"h.{i}.{name}")  # noqa: E731  (None where the model has no bias)
        z = F.layer_norm(x, (D,), p("ln_1.weight"), p("ln_1.bias"))
        q, k, v = F.linear(z, p("attn.c_attn.weight"), p("attn.c_attn.bias")).split(D, 2)
        q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(D // H)).masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, D)
        x = x + F.linear(y, p("attn.c_proj.weight"), p("attn.c_proj.bias"))
        z = F.layer_norm(x, (D,), p("ln_2.weight"), p("ln_2.bias"))
        h = F.gelu(F.linear(z, p("mlp.c_fc.weight"), p("mlp.c_fc.bias")))
        x = x + F.linear(h, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"))
    x = F.layer_norm(x, (D,), P["ln_f.weight"], P.get("ln_f.bias"))
    return F.cross_entropy((x @ P["wte.weight"].T).reshape(B * T, -1), targets.reshape(-1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="shakespeare", help="as gpt train --data")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--compare", help="a minigrad run directory (its log.jsonl is printed alongside)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(**{**PRESETS["laptop"], "data": args.data, "seed": args.seed})

    text, _ = load_text(cfg.data)
    tokenizer = CharTokenizer.from_text(text)
    data = CharDataset(tokenizer.encode(text), cfg.block_size, cfg.batch_size, seed=cfg.seed)
    Tensor.manual_seed(cfg.seed)                       # the same initial weights as `gpt train`
    model_cfg = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias)
    P = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in GPT(model_cfg).state_dict().items()}
    groups = [{"params": [p for p in P.values() if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in P.values() if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))

    ours = {}
    if args.compare:
        with open(os.path.join(args.compare, "log.jsonl")) as f:
            ours = {row["iter"]: row for row in map(json.loads, f)}
    print(f"{'iter':>5} {'torch train':>12} {'torch val':>10} {'minigrad train':>15} {'minigrad val':>13}")
    start = time.perf_counter()
    for it in range(cfg.max_iters + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, it)
        if it % cfg.eval_interval == 0 or it == cfg.max_iters:
            with torch.no_grad():
                est = {s: float(np.mean([forward(P, model_cfg, *map(torch.tensor, data.get_batch(s))).item()
                                         for _ in range(cfg.eval_iters)])) for s in ("train", "val")}
            row = ours.get(it, {})
            print(f"{it:>5} {est['train']:>12.4f} {est['val']:>10.4f} {row.get('train_loss', float('nan')):>15.4f} "
                  f"{row.get('val_loss', float('nan')):>13.4f}   ({time.perf_counter() - start:.0f} s)", flush=True)
        if it == cfg.max_iters:
            break
        x, y = data.get_batch("train")
        loss = forward(P, model_cfg, torch.tensor(x), torch.tensor(y))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), cfg.grad_clip)
        opt.step()
        opt.zero_grad()


if __name__ == "__main__":
    main()
