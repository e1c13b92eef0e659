"""End to end, micrograd style: an MLP trained with minigrad separates the two-moons dataset.
The dataset generator and the model live in examples/moons.py (the example script), imported here."""
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import moons  # noqa: E402


def test_make_moons_shape_and_geometry():
    X, y = moons.make_moons(200, noise=0.0, seed=3)
    assert X.shape == (200, 2) and X.dtype == np.float32, f"X {X.shape} {X.dtype}"
    assert y.shape == (200,) and set(np.unique(y)) == {0, 1}, f"labels {np.unique(y)}"
    assert (y == 0).sum() == 100, f"class sizes {(y == 0).sum()} / {(y == 1).sum()}"
    # without noise, class 0 lies on the unit upper half circle, class 1 on the shifted lower one
    outer, inner = X[y == 0].astype(np.float64), X[y == 1].astype(np.float64)
    np.testing.assert_allclose(np.hypot(outer[:, 0], outer[:, 1]), 1.0, atol=1e-6, err_msg="outer moon radius")
    np.testing.assert_allclose(np.hypot(inner[:, 0] - 1, inner[:, 1] - 0.5), 1.0, atol=1e-6,
                               err_msg="inner moon radius")
    assert (outer[:, 1] >= -1e-6).all() and (inner[:, 1] <= 0.5 + 1e-6).all()
    X2, y2 = moons.make_moons(200, noise=0.0, seed=3)
    np.testing.assert_array_equal(X, X2, err_msg="same seed, different data")
    Xn, _ = moons.make_moons(200, noise=0.15, seed=3)
    spread = np.std(Xn - moons.make_moons(200, noise=0.0, seed=3)[0])
    assert math.isclose(spread, 0.15, rel_tol=0.2), f"noise std {spread}, expected about 0.15"


def test_mlp_learns_two_moons(device):
    X, y = moons.make_moons(200, noise=0.15, seed=0)
    X_test, y_test = moons.make_moons(400, noise=0.15, seed=1)
    model, losses = moons.train(X, y, steps=100, lr=0.03, device=device)
    assert all(np.isfinite(losses)), f"non-finite loss: {losses}"
    assert losses[-1] < 0.25 * losses[0], f"loss went from {losses[0]:.4f} to only {losses[-1]:.4f}"
    train_acc = moons.accuracy(model, X, y, device)
    test_acc = moons.accuracy(model, X_test, y_test, device)
    assert train_acc > 0.95, f"training accuracy {train_acc:.3f} <= 0.95"
    assert test_acc > 0.95, f"held-out accuracy {test_acc:.3f} <= 0.95"
    # the accuracy helper agrees with a plain numpy forward pass through the same weights
    h = X_test
    for layer in model.layers[:-1]:
        h = np.maximum(h @ layer.weight.numpy().T + layer.bias.numpy(), 0)
    logits = h @ model.layers[-1].weight.numpy().T + model.layers[-1].bias.numpy()
    assert math.isclose(test_acc, float((logits.argmax(-1) == y_test).mean()), abs_tol=1 / 400), \
        "accuracy() disagrees with a numpy forward pass"


def test_script_saves_a_decision_boundary_png(tmp_path, capsys):
    out = tmp_path / "boundary.png"
    acc = moons.main(["--steps", "60", "--out", str(out)])
    assert out.exists() and out.stat().st_size > 1000, f"no PNG written at {out}"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "the output is not a PNG file"
    assert acc > 0.95, f"script accuracy {acc:.3f} after 60 steps"
    printed = capsys.readouterr().out
    assert str(out) in printed and "accuracy" in printed, printed
