"""A learner's first CNN: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
download), two convolutions, a max-pool and a linear layer, trained with Adam.

    python examples/digits_cnn.py                        # ~97-99% test accuracy, writes digits_cnn.png
    python examples/digits_cnn.py --epochs 2 --out /tmp/d.png   # a quick look

Every layer is built from minigrad's primitives: conv2d is im2col (sliding windows as views,
stacked in one kernel) followed by one matrix product; max_pool2d is the same windows reduced
with max.  scikit-learn is used here only for the data.
"""
import argparse
import time

import numpy as np

from minigrad import Tensor, nn, optim


def load_digits(seed: int = 0, test_fraction: float = 0.25):
    """(X_train, y_train, X_test, y_test): images (n, 1, 8, 8) scaled to [0, 1], int labels."""
    from sklearn.datasets import load_digits as sklearn_digits
    digits = sklearn_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None]          # (1797, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(len(X) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]


class DigitsCNN(nn.Module):
    """(N, 1, 8, 8) -> conv 3x3 (16) -> relu -> conv 3x3 (32) -> relu -> maxpool 2 -> (N, 32, 4, 4) -> linear -> 10."""

    def __init__(self):
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x).relu()                      # (N, 16, 8, 8)
        x = self.conv2(x).relu().max_pool2d(2)        # (N, 32, 4, 4)
        return self.fc(x.flatten(1))                  # (N, 10) logits


def accuracy(model: DigitsCNN, X: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    predictions = model(Tensor(X)).argmax(-1).numpy()
    model.train()
    return float((predictions == y).mean())


def train(epochs: int = 8, batch_size: int = 32, lr: float = 3e-3, seed: int = 0, log=print):
    Tensor.manual_seed(seed)
    X_train, y_train, X_test, y_test = load_digits(seed)
    model = DigitsCNN()
    opt = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(X_train))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            loss = model(Tensor(X_train[batch])).cross_entropy(Tensor(y_train[batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        log(f"epoch {epoch + 1}: last batch loss {loss.item():.3f}, test accuracy {accuracy(model, X_test, y_test):.3f}")
    return model, accuracy(model, X_test, y_test), (X_test, y_test)


def plot_predictions(model: DigitsCNN, X: np.ndarray, y: np.ndarray, path: str, count: int = 16) -> None:
    """A grid of test digits, each titled with the prediction (red where it is wrong)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    model.eval()
    predicted = model(Tensor(X[:count])).argmax(-1).numpy()
    fig, axes = plt.subplots(2, count // 2, figsize=(count // 2 * 1.1, 2.8))
    for ax, image, guess, truth in zip(axes.flat, X[:count, 0], predicted, y[:count]):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(f"{guess}", color="black" if guess == truth else "red")
        ax.axis("off")
    fig.suptitle("minigrad CNN on 8x8 digits: predictions on test images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="passes over the 1,347 training images")
    parser.add_argument("--out", default="digits_cnn.png", help="where to save the picture of predictions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model, acc, (X_test, y_test) = train(args.epochs, seed=args.seed)
    print(f"test accuracy {acc:.3f} after {args.epochs} epochs in {time.perf_counter() - start:.1f} s")
    plot_predictions(model, X_test, y_test, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
