"""A crash in the middle of a checkpoint save leaves the previous checkpoint whole.

The writer is made to fail at each point between its files (after model.safetensors, after
optimizer.safetensors, half-way through state.json, between the two renames of the swap);
then the checkpoint on disk must load with exactly the old weights, optimizer moments and
iteration, and (but for the interrupted swap, which loading resolves) the folder must be as
it was: no temporary directory left behind.  A save written in place fails these tests."""
import json
import os
import re

import numpy as np
import pytest

import gpt.checkpoint as checkpoint
from gpt.checkpoint import load_checkpoint, load_optimizer_state, save_checkpoint
from gpt.data import CharTokenizer
from gpt.model import GPT, GPTConfig
from minigrad import Tensor

TOKENIZER = CharTokenizer("abcde")


class Crash(Exception):
    """The injected failure (a full disk, a kill, a power cut)."""


def trained(seed: int):
    """A tiny model and its AdamW after one step: weights and moments that differ by seed."""
    Tensor.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8))
    optimizer = model.configure_optimizer(0.1, 1e-2, (0.9, 0.95))
    x = np.random.default_rng(seed).integers(0, 5, (2, 9))
    _, loss = model(Tensor(x[:, :-1]), Tensor(x[:, 1:]))
    loss.backward()
    optimizer.step()
    return model, optimizer


def files_under(folder) -> dict:
    """Every file below folder, by relative path, with its bytes."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, folder)] = f.read()
    return found


def assert_checkpoint_holds(path, model, optimizer, iteration):
    loaded, tokenizer, meta = load_checkpoint(path)
    assert meta["iter"] == iteration, f"checkpoint iteration {meta['iter']}, expected {iteration}"
    assert tokenizer.chars == TOKENIZER.chars
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=f"weight {name}")
    restored = loaded.configure_optimizer(0.1, 1e-2, (0.9, 0.95))
    load_optimizer_state(meta["path"], restored, meta)
    assert restored.step_count == optimizer.step_count
    for k, (a, b) in enumerate(zip(optimizer.m + optimizer.v, restored.m + restored.v)):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=f"optimizer moment {k}")


def fail_on_call(n: int, real):
    """real(), except that its n-th call raises Crash instead."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise Crash(f"injected failure at call {n} of {real.__name__}")
        return real(*args, **kwargs)
    return wrapper


def half_written_json(obj, f, **kwargs):
    f.write(json.dumps(obj)[:20])                  # a truncated state.json, then the crash
    raise Crash("injected failure while writing state.json")


CRASHES = {
    "after model.safetensors": lambda mp: mp.setattr(checkpoint, "save_file", fail_on_call(2, checkpoint.save_file)),
    "after optimizer.safetensors": lambda mp: mp.setattr(checkpoint.json, "dump", fail_on_call(1, json.dump)),
    "half-way through state.json": lambda mp: mp.setattr(checkpoint.json, "dump", half_written_json),
    "between the two renames": lambda mp: mp.setattr(checkpoint.os, "replace", fail_on_call(2, os.replace)),
}


@pytest.mark.parametrize("where", list(CRASHES))
def test_crash_mid_save_keeps_the_previous_checkpoint(where, tmp_path, monkeypatch):
    old_model, old_optimizer = trained(0)
    new_model, new_optimizer = trained(1)
    path = str(tmp_path / "last")
    save_checkpoint(path, old_model, old_optimizer, TOKENIZER, {"iter": 100})
    before = files_under(tmp_path)

    CRASHES[where](monkeypatch)
    with pytest.raises(Crash):
        save_checkpoint(path, new_model, new_optimizer, TOKENIZER, {"iter": 200})
    monkeypatch.undo()

    assert_checkpoint_holds(path, old_model, old_optimizer, 100)
    assert_checkpoint_holds(str(tmp_path), old_model, old_optimizer, 100)      # found from the run directory too
    if where != "between the two renames":
        assert files_under(tmp_path) == before, f"a crash {where} changed the files on disk"
    # the next save succeeds and leaves only the new checkpoint
    save_checkpoint(path, new_model, new_optimizer, TOKENIZER, {"iter": 200})
    assert os.listdir(tmp_path) == ["last"], os.listdir(tmp_path)
    assert_checkpoint_holds(path, new_model, new_optimizer, 200)


def test_crash_in_the_first_save_leaves_nothing(tmp_path, monkeypatch):
    """With no previous checkpoint, a failed save leaves no partial one that would load."""
    model, optimizer = trained(0)
    monkeypatch.setattr(checkpoint, "save_file", fail_on_call(2, checkpoint.save_file))
    with pytest.raises(Crash):
        save_checkpoint(str(tmp_path / "last"), model, optimizer, TOKENIZER, {"iter": 1})
    assert os.listdir(tmp_path) == []
    with pytest.raises(checkpoint.CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "last"))


def test_half_written_checkpoint_is_hidden_while_being_written(tmp_path, monkeypatch):
    """While files are being written they sit in a dot-folder named after the checkpoint, so a
    killed process leaves nothing that looks like a checkpoint."""
    model, optimizer = trained(0)
    seen = []

    def look_then_crash(*args, **kwargs):
        seen.extend(os.listdir(tmp_path))
        raise Crash("injected")
    monkeypatch.setattr(checkpoint, "save_file", look_then_crash)
    with pytest.raises(Crash):
        save_checkpoint(str(tmp_path / "last"), model, optimizer, TOKENIZER, {"iter": 1})
    assert len(seen) == 1 and seen[0].startswith(".last.tmp-"), seen


def test_state_records_the_random_number_generator(tmp_path):
    model, optimizer = trained(0)
    Tensor.manual_seed(42)
    Tensor.rand(5).realize()                          # advance the counter
    expected = {"seed": Tensor._seed, "counter": Tensor._rng_counter}
    save_checkpoint(str(tmp_path / "ck"), model, optimizer, TOKENIZER, {"iter": 7})
    _, _, meta = load_checkpoint(str(tmp_path / "ck"))
    assert meta["minigrad_rng"] == expected and expected["counter"] > 0
    assert meta["optimizer"]["step_count"] == 1 and meta["optimizer"]["lr"] == pytest.approx(1e-2)


def test_unreadable_checkpoints_name_the_path(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match=f"no checkpoint in {re.escape(str(tmp_path))}.*python -m gpt train"):
        load_checkpoint(str(tmp_path))
    model, optimizer = trained(0)
    path = tmp_path / "ck"
    save_checkpoint(str(path), model, optimizer, TOKENIZER, {"iter": 1})
    state = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**state, "format_version": 99}))
    with pytest.raises(checkpoint.CheckpointError, match=re.escape(str(path)) + ".*checkpoint format 99 is not 1"):
        load_checkpoint(str(path))
    (path / "state.json").write_text("{not json")
    with pytest.raises(checkpoint.CheckpointError, match=f"cannot read {re.escape(str(path / 'state.json'))}"):
        load_checkpoint(str(path))


def test_a_checkpoint_loads_onto_the_device_asked_for(tmp_path, cl):
    model, optimizer = trained(0)
    save_checkpoint(str(tmp_path / "ck"), model, optimizer, TOKENIZER, {"iter": 1})
    loaded, _, _ = load_checkpoint(str(tmp_path / "ck"), device="cl")
    assert loaded.device == "cl" and all(p.device == "cl" for p in loaded.parameters())
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)
