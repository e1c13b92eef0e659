"""Two moons, micrograd style: a small MLP learns to separate two interleaved half circles.

    python examples/moons.py                      # 300 steps, writes moons.png
    python examples/moons.py --steps 500 --out /tmp/moons.png --device cl

The dataset generator (make_moons) is plain numpy, so the tests import it from here.
"""
import argparse
import math
import time

import numpy as np

from minigrad import Tensor, nn, optim


def make_moons(n: int = 200, noise: float = 0.15, seed: int = 0):
    """n points on two interleaving half circles (like sklearn's make_moons), with Gaussian noise.
    Returns X (n, 2) float32 and y (n,) int64 labels in {0, 1}, shuffled."""
    rng = np.random.default_rng(seed)
    n_outer = n // 2
    n_inner = n - n_outer
    t_outer = np.linspace(0, math.pi, n_outer)
    t_inner = np.linspace(0, math.pi, n_inner)
    outer = np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1)
    inner = np.stack([1 - np.cos(t_inner), 0.5 - np.sin(t_inner)], axis=1)
    X = np.concatenate([outer, inner]) + rng.normal(0.0, noise, (n, 2))
    y = np.concatenate([np.zeros(n_outer, np.int64), np.ones(n_inner, np.int64)])
    order = rng.permutation(n)
    return X[order].astype(np.float32), y[order]


class MLP(nn.Module):
    """Linear layers with ReLU between them; the last layer gives one logit per class."""

    def __init__(self, sizes=(2, 16, 16, 2), device=None, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.layers = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layer = nn.Linear(fan_in, fan_out)
            bound = 1 / math.sqrt(fan_in)            # PyTorch's default range
            layer.weight = Tensor(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32), device=device,
                                  requires_grad=True)
            layer.bias = Tensor(rng.uniform(-bound, bound, fan_out).astype(np.float32), device=device,
                                requires_grad=True)
            self.layers.append(layer)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = layer(x).relu()
        return self.layers[-1](x)


def accuracy(model: MLP, X: np.ndarray, y: np.ndarray, device=None) -> float:
    predictions = model(Tensor(X, device=device)).argmax(-1).numpy()
    return float((predictions == y).mean())


def train(X: np.ndarray, y: np.ndarray, steps: int = 300, lr: float = 0.03, device=None, seed: int = 0,
          log_every: int = 0):
    """Full-batch AdamW on cross-entropy.  Returns the model and the loss of every step."""
    model = MLP(device=device, seed=seed)
    opt = optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    xs, ys = Tensor(X, device=device), Tensor(y, device=device)
    losses = []
    for step in range(steps):
        loss = model(xs).cross_entropy(ys)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {losses[-1]:.4f}  accuracy {accuracy(model, X, y, device):.3f}")
    return model, losses


def plot_decision_boundary(model: MLP, X: np.ndarray, y: np.ndarray, path: str, device=None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pad = 0.5
    xs = np.linspace(X[:, 0].min() - pad, X[:, 0].max() + pad, 200)
    ys = np.linspace(X[:, 1].min() - pad, X[:, 1].max() + pad, 200)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    probs = model(Tensor(grid, device=device)).softmax(-1).numpy()[:, 1].reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contourf(gx, gy, probs, levels=20, cmap="RdBu_r", alpha=0.6)
    ax.contour(gx, gy, probs, levels=[0.5], colors="k", linewidths=1)
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", edgecolors="k", s=18)
    ax.set_title(f"minigrad MLP on two moons: accuracy {accuracy(model, X, y, device):.1%}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (full batch)")
    parser.add_argument("--out", default="moons.png", help="where to save the decision-boundary plot")
    parser.add_argument("--n", type=int, default=200, help="number of points")
    parser.add_argument("--noise", type=float, default=0.15, help="standard deviation of the noise")
    parser.add_argument("--lr", type=float, default=0.03, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="numpy (default) or cl")
    args = parser.parse_args(argv)
    X, y = make_moons(args.n, args.noise, args.seed)
    start = time.perf_counter()
    model, _ = train(X, y, steps=args.steps, lr=args.lr, device=args.device, seed=args.seed,
                     log_every=max(1, args.steps // 10))
    acc = accuracy(model, X, y, args.device)
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.2f} s: accuracy {acc:.1%}")
    plot_decision_boundary(model, X, y, args.out, args.device)
    print(f"decision boundary saved to {args.out}")
    return acc


if __name__ == "__main__":
    main()
