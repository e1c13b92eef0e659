"""examples/digits_cnn.py in a short mode: a CNN built from conv2d/max_pool2d learns the 8x8
digits, and the picture of its predictions is a real PNG."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import digits_cnn  # noqa: E402


def test_digits_cnn_learns_and_plots(tmp_path):
    model, acc, (X_test, y_test) = digits_cnn.train(epochs=3, log=lambda *_: None)
    assert acc >= 0.95, f"test accuracy {acc:.3f} after 3 epochs"          # chance is 0.10
    path = tmp_path / "digits.png"
    digits_cnn.plot_predictions(model, X_test, y_test, str(path))
    import matplotlib.image
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 600
    assert np.std(image[..., :3]) > 0.05                                   # not a blank canvas
