"""The example scripts in a short mode, as a user runs them: train (a few steps of a tiny model),
plot, sample, draw the attention maps; every figure they write is a real image."""
import importlib
import os
import sys

from test_viz import assert_real_image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

SHORT = ["--max-iters", "8", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
         "--batch-size", "4", "--eval-interval", "4", "--eval-iters", "2", "--no-progress"]


def test_train_sample_and_attention_examples_write_their_figures(shakespeare, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    assert importlib.import_module("train_shakespeare").run(["--data", shakespeare, "--out-dir", out, *SHORT]) == 0
    assert_real_image(os.path.join(out, "loss.png"))
    assert "ROMEO:" in capsys.readouterr().out                           # the sample after training

    importlib.import_module("sample").main(out, "ROMEO:", 20)
    assert "# temperature 0.5" in capsys.readouterr().out

    monkeypatch.setattr(sys, "argv", ["attention.py", "--out-dir", out, "--prompt", "ROMEO: Is it so?"])
    importlib.import_module("attention").main()
    printed = capsys.readouterr().out
    assert "__kernel void" in printed and "kernel" in printed             # kernels, then their OpenCL C
    assert_real_image(os.path.join(out, "attention.png"))
