"""The CLI, run in-process through gpt.cli.main(argv): training outputs, exact resume (after a
finished half run and after Ctrl-C), NaN handling, checkpoints, sampling, plotting, errors."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import gpt.train
from gpt.checkpoint import load_checkpoint, load_optimizer_state, resolve, save_checkpoint
from gpt.cli import build_parser, main, resolve_train_config
from gpt.data import CharDataset, CharTokenizer, pystdlib_text
from gpt.model import GPT, GPTConfig
from minigrad import Tensor

ITERS = 16
MODEL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4"]
SCHEDULE = ["--eval-interval", "4", "--eval-iters", "2", "--warmup-iters", "2", "--lr-decay-iters", str(ITERS),
            "--lr", "3e-3", "--dropout", "0.1", "--seed", "7", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(pystdlib_text()[:40_000], encoding="utf-8")
    return str(path)


def train_args(corpus, out_dir, max_iters, *extra):
    return ["train", "--data", corpus, "--out-dir", str(out_dir), "--max-iters", str(max_iters),
            *MODEL, *SCHEDULE, *extra]


def read_log(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def losses(rows):
    return [(r["iter"], r["train_loss"], r["val_loss"], r["lr"]) for r in rows]


@pytest.fixture(scope="module")
def full_run(corpus, tmp_path_factory):
    """One uninterrupted run that several tests compare against or sample from."""
    out = tmp_path_factory.mktemp("full")
    assert main(train_args(corpus, out, ITERS)) == 0
    return str(out)


def test_training_writes_log_plot_and_checkpoints(full_run):
    rows = read_log(full_run)
    assert [r["iter"] for r in rows] == [0, 4, 8, 12, 16]
    assert set(rows[1]) == {"iter", "train_loss", "val_loss", "lr", "elapsed_s", "tokens_per_s"}
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[1]["tokens_per_s"] > 0
    with open(os.path.join(full_run, "loss.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    for name in ("best", "last"):
        assert sorted(os.listdir(os.path.join(full_run, name))) == \
            ["model.safetensors", "optimizer.safetensors", "state.json"]
    state = json.load(open(os.path.join(full_run, "last", "state.json")))
    assert state["iter"] == ITERS and state["evaluated"] and state["config"]["n_layer"] == 1
    assert state["best_val_loss"] == min(r["val_loss"] for r in rows)


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(corpus, full_run, tmp_path):
    assert main(train_args(corpus, tmp_path, ITERS // 2)) == 0
    assert main(["train", "--out-dir", str(tmp_path), "--max-iters", str(ITERS), "--resume", "--no-progress"]) == 0
    assert losses(read_log(tmp_path)) == losses(read_log(full_run))


def test_jit_and_eager_training_log_the_same_losses(corpus, full_run, tmp_path):
    assert main(train_args(corpus, tmp_path, ITERS, "--no-jit")) == 0
    assert losses(read_log(tmp_path)) == losses(read_log(full_run))


@pytest.mark.parametrize("call, saved_iter, evaluated", [(13, 5, False), (9, 4, True)])
def test_ctrl_c_saves_last_and_resume_continues_exactly(corpus, full_run, tmp_path, monkeypatch, capsys,
                                                        call, saved_iter, evaluated):
    """Batches drawn: eval at 0 (calls 1-4: 2 per split), steps 0-3 (5-8), eval at 4 (9-12), step 4 (13).
    Ctrl-C during step 4 saves after it; during the eval at 4, saves after that eval."""
    real_get_batch = CharDataset.get_batch
    calls = {"n": 0}

    def get_batch(self, split):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return real_get_batch(self, split)

    monkeypatch.setattr(CharDataset, "get_batch", get_batch)
    assert main(train_args(corpus, tmp_path, ITERS)) == 130
    assert "--resume" in capsys.readouterr().err
    state = json.load(open(os.path.join(tmp_path, "last", "state.json")))
    assert (state["iter"], state["evaluated"]) == (saved_iter, evaluated)
    monkeypatch.setattr(CharDataset, "get_batch", real_get_batch)
    assert main(["train", "--out-dir", str(tmp_path), "--resume", "--no-progress"]) == 0
    assert losses(read_log(tmp_path)) == losses(read_log(full_run))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch, capsys):
    real_clip = gpt.train.clip_grad_norm_
    calls = {"n": 0}

    def poisoned_clip(params, max_norm):
        calls["n"] += 1
        if calls["n"] == 6:                               # step 5's update turns the weights into NaN
            for p in params:
                p.grad = p.grad * float("nan")
        return real_clip(params, max_norm)

    monkeypatch.setattr(gpt.train, "clip_grad_norm_", poisoned_clip)
    assert main(train_args(corpus, tmp_path, ITERS, "--no-jit")) == 1    # eager: clip runs every step
    err = capsys.readouterr().err
    assert "nan" in err and "last good checkpoint" in err and "Traceback" not in err
    state = json.load(open(os.path.join(tmp_path, "last", "state.json")))
    assert state["iter"] == 4                             # the eval before the NaN, untouched
    model, _, _ = load_checkpoint(os.path.join(tmp_path, "last"))
    assert all(np.isfinite(v).all() for v in model.state_dict().values())


def test_checkpoint_round_trip(tmp_path):
    Tensor.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.1))
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95))
    _, loss = model(Tensor(np.zeros((2, 8), dtype=np.int64)), Tensor(np.ones((2, 8), dtype=np.int64)))
    loss.backward()
    opt.step()
    tok = CharTokenizer("abcde")
    save_checkpoint(str(tmp_path / "ck"), model, opt, tok, {"iter": 3, "note": "x"})
    loaded, loaded_tok, meta = load_checkpoint(str(tmp_path / "ck"))
    assert loaded.config == model.config and loaded_tok.chars == tok.chars and meta["iter"] == 3
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)
    opt2 = loaded.configure_optimizer(0.1, 1e-3, (0.9, 0.95))
    load_optimizer_state(meta["path"], opt2, meta)
    assert opt2.step_count == 1
    for a, b in zip(opt.m + opt.v, opt2.m + opt2.v):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # a second save replaces the first whole; a swap interrupted mid-way falls back to .old
    save_checkpoint(str(tmp_path / "ck"), model, opt, tok, {"iter": 4})
    assert sorted(os.listdir(tmp_path)) == ["ck"]
    os.rename(tmp_path / "ck", tmp_path / "ck.old")
    assert resolve(str(tmp_path / "ck")) == str(tmp_path / "ck.old")


def test_sample_continues_the_prompt(full_run, capsys):
    assert main(["sample", "--out-dir", full_run, "--prompt", "def ", "--num-tokens", "30", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("def ") and len(text.rstrip("\n")) >= 30
    assert main(["sample", "--out-dir", full_run, "--prompt", "def ", "--num-tokens", "30", "--seed", "1"]) == 0
    assert capsys.readouterr().out == text                          # same seed, same sample


def test_sample_names_unknown_characters(full_run, capsys):
    assert main(["sample", "--out-dir", full_run, "--prompt", "héllo\u263a"]) == 2
    err = capsys.readouterr().err
    assert "'\u263a'" in err and "not in the vocabulary" in err and "Traceback" not in err


def test_sample_missing_checkpoint_dir(tmp_path, capsys):
    assert main(["sample", "--out-dir", str(tmp_path / "nothing")]) == 2
    assert f"checkpoint directory not found: {tmp_path / 'nothing'}" in capsys.readouterr().err


def test_train_missing_data_file_names_the_path(tmp_path, capsys):
    missing = tmp_path / "missing.txt"
    assert main(["train", "--data", str(missing), "--out-dir", str(tmp_path / "o"), "--no-progress"]) == 2
    assert f"data file not found: {missing}" in capsys.readouterr().err


def test_plot_compares_runs(full_run, corpus, tmp_path):
    assert main(["plot", full_run, full_run, "--names", "a", "b", "--out", str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", full_run, "--out", str(tmp_path / "one.svg")]) == 0
    assert b"<svg" in (tmp_path / "one.svg").read_bytes()[:500]


def test_plot_rejects_other_formats(full_run, tmp_path, capsys):
    assert main(["plot", full_run, "--out", str(tmp_path / "x.jpg")]) == 2
    assert ".png or .svg" in capsys.readouterr().err


def test_help_explains_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--n-layer", "--lr-decay-iters", "--grad-clip", "--preset", "--resume", "--device", "laptop"):
        assert flag in out
    for sub in ("sample", "plot"):
        with pytest.raises(SystemExit):
            main([sub, "--help"])
        assert "--out" in capsys.readouterr().out


def test_python_dash_m_gpt_runs():
    result = subprocess.run([sys.executable, "-m", "gpt", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "train" in result.stdout and "sample" in result.stdout


def test_preset_then_typed_flags_win():
    cfg = resolve_train_config(build_parser().parse_args(["train", "--preset", "tiny", "--n-layer", "3"]))
    assert (cfg.n_layer, cfg.n_embd, cfg.block_size, cfg.max_iters) == (3, 32, 32, 200)
    laptop = resolve_train_config(build_parser().parse_args(["train", "--preset", "laptop"]))
    assert (laptop.n_layer, laptop.n_head, laptop.n_embd, laptop.block_size, laptop.batch_size) == (4, 4, 128, 64, 12)
    assert (laptop.max_iters, laptop.lr, laptop.min_lr, laptop.lr_decay_iters, laptop.eval_iters) == \
        (2000, 1e-3, 1e-4, 2000, 20)
    char = resolve_train_config(build_parser().parse_args(["train", "--preset", "shakespeare-char"]))
    assert (char.n_layer, char.n_embd, char.block_size, char.batch_size, char.dropout, char.beta2) == \
        (6, 384, 256, 64, 0.2, 0.99)


def test_resume_keeps_the_model_shape(full_run, capsys):
    assert main(["train", "--out-dir", full_run, "--resume", "--n-embd", "32"]) == 2
    assert "keeps the model's shape and dropout" in capsys.readouterr().err


def test_seed_preset_trains_the_seed_texts_model_on_shakespeare(shakespeare, tmp_path):
    """`--preset seed`: sinusoidal W_p, its own W_s, biases; its loss falls on Tiny Shakespeare
    (a short run: the preset's model and learning rate; fewer steps, sequences and eval batches).
    From ln(65) = 4.17 nats at the start, 20 steps get near the characters' frequencies (~3.3)."""
    out = str(tmp_path / "seed")
    assert main(["train", "--preset", "seed", "--data", shakespeare, "--out-dir", out, "--max-iters", "20",
                 "--batch-size", "4", "--eval-interval", "10", "--eval-iters", "2", "--warmup-iters", "2",
                 "--no-progress"]) == 0
    rows = read_log(out)
    assert [r["iter"] for r in rows] == [0, 10, 20]
    assert rows[0]["train_loss"] > 4.0 and rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.6, rows
    model, _, meta = load_checkpoint(out)
    assert (model.config.position_embedding, model.config.tie_word_embeddings, model.config.bias) == \
        ("sinusoidal", False, True)
    names = set(model.state_dict())
    assert "lm_head.weight" in names and "wpe.weight" not in names
    assert meta["train_config"]["position_embedding"] == "sinusoidal"


def test_architecture_flags_reach_the_model_config():
    args = build_parser().parse_args(["train", "--position-embedding", "sinusoidal", "--no-tie-word-embeddings"])
    cfg = resolve_train_config(args)
    assert cfg.position_embedding == "sinusoidal" and cfg.tie_word_embeddings is False
    defaults = resolve_train_config(build_parser().parse_args(["train"]))
    assert defaults.position_embedding == "learned" and defaults.tie_word_embeddings is True


def test_checkpoint_without_the_new_config_keys_loads_as_learned_and_tied(tmp_path):
    """Checkpoints written before the two options existed load as what they were: GPT-2's choices."""
    Tensor.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8))
    save_checkpoint(str(tmp_path / "ck"), model, None, CharTokenizer("abcde"), {"iter": 0})
    state_file = tmp_path / "ck" / "state.json"
    meta = json.loads(state_file.read_text())
    del meta["config"]["position_embedding"], meta["config"]["tie_word_embeddings"]
    state_file.write_text(json.dumps(meta))
    loaded, _, _ = load_checkpoint(str(tmp_path / "ck"))
    assert loaded.config.position_embedding == "learned" and loaded.config.tie_word_embeddings
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)
