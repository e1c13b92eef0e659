"""One training step of a tiny GPT, from token ids to the update, in the seed texts' notation,
with pictures of its autograd graph and of the kernels that run it.  This script writes the
page docs/tour.md (and its pictures in docs/tour/) and the notebook examples/tour.ipynb from
the same cells; every number on the page is printed by the code above it.

    python examples/autodiff_tour.py                     # rewrite docs/tour.md, docs/tour/, examples/tour.ipynb
    python examples/autodiff_tour.py --out-dir /tmp/t    # write the page elsewhere
    python examples/autodiff_tour.py --check             # regenerate in a temporary folder, compare (CI)
"""
import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from docgen import notebook, run_cells, same_page  # noqa: E402

CELLS = [
    ("md", """
# A tour of one training step

This page follows one training step of a tiny GPT through minigrad, in the notation of the
seed texts: B sequences of T tokens, a vocabulary of V characters, width D, H heads of width
D/H, L blocks; X the token embeddings, W_e the token table, W_p the positions, Z1..Z5 the
steps of a block, W_s the head. Every number below is printed by the code above it:
`python examples/autodiff_tour.py` rewrites this page (and `examples/tour.ipynb`, the same
cells as a notebook), and CI checks that the page is what the code prints.
"""),
    ("md", """
## Autodiff in five lines

Before the GPT, the smallest graph: every op on a tensor that requires a gradient records
the `Function` that made it, and `backward()` walks those records in reverse. Inside
`viz.trace()` each op also keeps the gradient that reached it, so the picture can show it.
"""),
    ("code", """
import os
import numpy as np
from minigrad import Tensor, viz, no_grad
os.makedirs("tour", exist_ok=True)

x = Tensor([[1.0, -2.0, 3.0]], requires_grad=True)
W = Tensor([[0.5], [-1.0], [2.0]], requires_grad=True)
with viz.trace():
    y = (x @ W).relu()
    loss = (y * y).sum()
    loss.backward()
print("loss", loss.item(), " dloss/dx", x.grad.numpy(), " = 2y W^T with y =", y.item())
print("the gradient reaching relu's output: dloss/dy = 2y =", 2 * y.item())
viz.draw(viz.autograd_graph(loss, title="loss = relu(x W)^2"), "tour/readme_example.png")
"""),
    ("md", """
![the autograd graph of loss = relu(x W)^2](tour/readme_example.png)

Each box is a tensor: the op that made it (a leaf when nothing did), its shape and dtype,
and the norm of the gradient backward sent into it: the Relu box shows 2y, the leaves the
norms of the `.grad` printed above.

## The model and a batch

The `seed` preset's model, small: sinusoidal W_p, its own head W_s, biases, a GELU FFN of
width 4D.
"""),
    ("code", """
from gpt.data import CharTokenizer
from gpt.model import GPT, GPTConfig

text = "First Citizen:\\nBefore we proceed any further, hear me speak.\\n"
tokenizer = CharTokenizer.from_text(text)
Tensor.manual_seed(0)
config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=2, n_head=2, n_embd=16,
                   position_embedding="sinusoidal", tie_word_embeddings=False)
model = GPT(config)
B, T, D, H, V, L = 2, config.block_size, config.n_embd, config.n_head, config.vocab_size, config.n_layer
print(f"B={B} T={T} D={D} H={H} (D/H={D // H}) V={V} L={L}; {model.num_parameters()} parameters")

ids = tokenizer.encode(text)
starts = [0, 15]
idx = Tensor(np.stack([ids[s:s + T] for s in starts]))                   # (B, T) inputs
targets = Tensor(np.stack([ids[s + 1:s + T + 1] for s in starts]))       # (B, T) the next characters
for b in range(B):
    print(repr(tokenizer.decode(idx.numpy()[b])), "->", repr(tokenizer.decode(targets.numpy()[b])),
          idx.numpy()[b])
"""),
    ("md", """
## X: token embeddings

The seed texts multiply the one-hot matrix X^ohe (T x V) by W_e (V x D); each row of X^ohe
has a single 1, so the product picks rows of W_e. minigrad does the picking directly (a
gather), and it is the same matrix:
"""),
    ("code", """
W_e = model.wte.weight                                        # (V, D)
X = model.wte(idx)                                            # (B, T, D)
X_ohe = np.eye(V, dtype=np.float32)[idx.numpy()]              # (B, T, V)
print("W_e", W_e.shape, " X", X.shape, " X_ohe", X_ohe.shape)
print("X == X_ohe @ W_e:", np.array_equal(X_ohe @ W_e.numpy(), X.numpy()))
"""),
    ("md", """
## W_p: sinusoidal positions

W_p[t, 2i] = sin(t / 10000^(2i/D)) and W_p[t, 2i+1] = cos(t / 10000^(2i/D)). It is a
constant: no gradient, not a parameter, not in the state dict. X̃ = X + W_p.
"""),
    ("code", """
W_p = model.wpe.weight                                        # (block_size, D)
print("W_p", W_p.shape, " requires_grad:", W_p.requires_grad,
      " a parameter:", any(p is W_p for p in model.parameters()))
print(np.round(W_p.numpy()[:4, :4], 4))
t, i = 3, 1
print(f"W_p[{t}, {2 * i}] = sin({t} / 10000^({2 * i}/{D})) = {np.sin(t / 10000 ** (2 * i / D)):.4f}")
X_tilde = X + model.wpe(Tensor.arange(T))                     # (B, T, D) + (T, D): rows 0..T-1 of W_p
print("X_tilde", X_tilde.shape)
"""),
    ("md", """
## One block: Z1 to Z5

Z1 = LN(X̃), Z2 = MaskedMultiHead(Z1), Z3 = X̃ + Z2, Z4 = LN(Z3), Z5 = FFN(Z4), and the
block's output Z3 + Z5. Step by step with the layers of block 1 (`model.h[0]`):
"""),
    ("code", """
block = model.h[0]
Z1 = block.ln_1(X_tilde)                                      # (B, T, D)
z = Z1.numpy()
print("Z1", Z1.shape, " every row: mean 0:", bool(np.abs(z.mean(-1)).max() < 1e-5),
      " std 1:", bool(np.abs(z.std(-1) - 1).max() < 1e-3))

attn = block.attn
qkv = attn.c_attn(Z1)                                         # (B, T, 3D): Q, K, V side by side
q, k, v = (qkv[:, :, j * D:(j + 1) * D].reshape(B, T, H, D // H).transpose(1, 2) for j in range(3))
scores = (q @ k.transpose(-2, -1)) * (1 / np.sqrt(D // H))    # (B, H, T, T)
future = Tensor(np.triu(np.ones((T, T), dtype=bool), k=1))    # (T, T) True above the diagonal
weights = scores.masked_fill(future, float("-inf")).softmax(-1)   # (B, H, T, T), rows sum to 1
print("Q, K, V", q.shape, " scores", scores.shape, " weights", weights.shape)
print("sequence 0, head 0: row t weighs positions 0..t, and 0 after t")
print(np.round(weights.numpy()[0, 0], 2))
"""),
    ("code", """
heads = (weights @ v).transpose(1, 2).reshape(B, T, D)        # (B, T, D): heads side by side
Z2 = attn.c_proj(heads)                                       # (B, T, D)
Z2_module, _ = attn(Z1)
print("Z2", Z2.shape, " equals the attention module's output:", np.allclose(Z2.numpy(), Z2_module.numpy(), atol=1e-6))
Z3 = X_tilde + Z2                                             # residual
Z4 = block.ln_2(Z3)
FFN_hidden = block.mlp.c_fc(Z4).gelu()                        # (B, T, 4D)
Z5 = block.mlp.c_proj(FFN_hidden)                             # (B, T, D)
out = Z3 + Z5
print("Z3", Z3.shape, " Z4", Z4.shape, " FFN hidden", FFN_hidden.shape, " Z5", Z5.shape, " out", out.shape)
"""),
    ("md", """
## The other blocks, the head W_s, the loss

The remaining L-1 blocks repeat the same steps, a final LayerNorm follows, and the head W_s
(D x V, its own matrix here, not W_e^T) gives the logits. The mean cross-entropy of the
targets is the loss; an untrained model is close to guessing, ln V.
"""),
    ("code", """
h = out
for block in model.h[1:]:
    h, _ = block(h)
h = model.ln_f(h)                                             # (B, T, D)
W_s = model.lm_head.weight.T                                  # (D, V)
logits = h @ W_s                                              # (B, T, V)
loss = logits.reshape(B * T, V).cross_entropy(targets.reshape(B * T))
print("logits", logits.shape, f" loss {loss.item():.4f}, ln V = {np.log(V):.4f}")
model_logits, model_loss = model(idx, targets)
print("the same as model(idx, targets):", np.allclose(logits.numpy(), model_logits.numpy(), atol=1e-5))
"""),
    ("md", """
## The graph backward walks

`viz.trace(model)` records which module made each op. The whole step has hundreds of ops;
collapsed to one box per module (the depth-2 names `h.0`, `h.1`, ...), it fits on a page.
Ops of the GPT itself (the head, the loss) stay visible.
"""),
    ("code", """
with viz.trace(model):
    _, loss = model(idx, targets)
    loss.backward()
full = viz.autograd_graph(loss, model)
modules = viz.autograd_graph(loss, model, collapse=2, title="one training step, one box per module")
viz.draw(modules, "tour/gpt_modules.png")
print(len(full.nodes), "tensors in the graph;", len(modules.nodes), "boxes after collapsing")
"""),
    ("md", """
![the GPT's autograd graph, one box per module](tour/gpt_modules.png)

Opening one module shows its ops (the attention of block 1, `h.0.attn`: the Q/K/V split,
the masked softmax, the weighted sum of V) with the gradient norm each received:
"""),
    ("code", """
opened = viz.autograd_graph(loss, model, collapse=2, expand="h.0.attn", title="block 1's attention opened")
viz.draw(opened, "tour/gpt_attention.png")
print(len(opened.clusters["h.0.attn"][1]), "tensors inside h.0.attn")
"""),
    ("md", """
![the autograd graph with h.0.attn opened](tour/gpt_attention.png)

## Gradients

Every parameter now holds a gradient of its own shape; W_p, a constant, has none. A central
finite difference on the largest entry of W_s's gradient agrees with backward:
"""),
    ("code", """
params = dict(model.named_parameters())
for name in ["wte.weight", "h.0.attn.c_attn.weight", "h.1.mlp.c_fc.bias", "lm_head.weight"]:
    print(f"{name:24s} {str(params[name].shape):10s} |grad| {np.linalg.norm(params[name].grad.numpy()):.4f}")
print("W_p.grad:", model.wpe.weight.grad)

g = params["lm_head.weight"].grad.numpy()                     # (V, D): W_s^T, as Linear stores it
row, col = np.unravel_index(np.abs(g).argmax(), g.shape)
state, eps = model.state_dict(), 1e-2

def loss_with(delta):
    w = state["lm_head.weight"].copy()
    w[row, col] += delta
    model.load_state_dict({**state, "lm_head.weight": w})
    with no_grad():
        return model(idx, targets)[1].item()

finite_difference = (loss_with(eps) - loss_with(-eps)) / (2 * eps)
model.load_state_dict(state)                                  # the weights as they were
print(f"dloss/dW_s[{col}, {row}]: backward {g[row, col]:.3f}, finite difference {finite_difference:.3f}")
"""),
    ("md", """
## The update

AdamW turns each gradient into a step. After one step on this batch its loss is lower:
"""),
    ("code", """
optimizer = model.configure_optimizer(weight_decay=0.1, lr=1e-2)
before = loss.item()
optimizer.step()
optimizer.zero_grad()
with no_grad():
    _, after = model(idx, targets)
print(f"loss on this batch: {before:.4f} before the step, {after.item():.4f} after")
"""),
    ("md", """
## From the graph to kernels

Nothing above ran op by op: each `.numpy()` or `.item()` realized a lazy graph as a
schedule of fused kernels. `viz.schedule_graph` draws that schedule without running it:
each frame is one kernel, and the ops inside a frame run in one pass. The masked softmax
over the attention scores:
"""),
    ("code", """
scores_buffer = Tensor(scores.numpy())                        # (B, H, T, T), already in memory
masked_softmax = scores_buffer.masked_fill(future, float("-inf")).softmax(-1)
schedule = viz.schedule_graph(masked_softmax)
viz.draw(schedule, "tour/softmax_kernels.png")
print(schedule.title + ":", "; ".join(title for title, _ in schedule.clusters.values()))
"""),
    ("md", """
![the kernels of the masked softmax](tour/softmax_kernels.png)

Three kernels: the row max; the row sum of exp(x - max) with the mask fused in; the division.
exp(x - max) is computed by both of the last two rather than stored in between: a short chain of
elementwise ops over one buffer costs less to compute twice than to write out and read back.

`DEBUG=2` prints the same kernels as they run, and `t.explain()` lists them as text; see
[debug.md](debug.md).
"""),
]


def check(folder: str) -> str:
    """Regenerate the page in `folder`; '' when docs/tour.md and examples/tour.ipynb agree with it."""
    page = run_cells(CELLS, folder)
    with open(os.path.join(os.path.dirname(HERE), "docs", "tour.md")) as f:
        problem = same_page(page, f.read())
    with open(os.path.join(HERE, "tour.ipynb")) as f:
        if not problem and f.read() != notebook(CELLS):
            problem = "examples/tour.ipynb is not made from these cells"
    return problem


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(HERE), "docs"),
                        help="folder for tour.md and its pictures (default: docs/)")
    parser.add_argument("--notebook", default=os.path.join(HERE, "tour.ipynb"),
                        help="where the notebook goes ('' for none)")
    parser.add_argument("--check", action="store_true",
                        help="regenerate in a temporary folder and compare with the committed page and notebook")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            problem = check(tmp)
        print(f"out of date: {problem}; run python examples/autodiff_tour.py" if problem else
              "docs/tour.md and examples/tour.ipynb are up to date")
        return 1 if problem else 0
    page = run_cells(CELLS, args.out_dir)
    with open(os.path.join(args.out_dir, "tour.md"), "w") as f:
        f.write(page)
    if args.notebook:
        with open(args.notebook, "w") as f:
            f.write(notebook(CELLS))
    print(f"wrote {os.path.join(args.out_dir, 'tour.md')} and its pictures in {os.path.join(args.out_dir, 'tour')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
