"""Checkpoints: one directory per checkpoint (`<out-dir>/best`, `<out-dir>/last`) holding

    model.safetensors       the model's tensors, under GPT-2's names
    optimizer.safetensors   AdamW's moments m.{i} and v.{i}
    state.json              config, vocabulary, iteration, optimizer step, every RNG state
                            (one batch generator per data shard: per rank and micro-batch)

A checkpoint is written into a temporary directory beside its final place and swapped in
with renames, so a crash mid-write leaves the previous checkpoint whole (loading falls back
to it if the crash came between the two renames).
"""
import json
import os
import shutil
import tempfile
from typing import Optional, Tuple

import numpy as np
from safetensors.numpy import load_file, save_file

from minigrad import Tensor

from .data import CharTokenizer
from .model import GPT, GPTConfig

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint is missing or unreadable; the message names the path."""


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str, model: GPT, optimizer, tokenizer: CharTokenizer, state: dict) -> None:
    """Write model, optimizer and `state` (iteration, rng states, ...) to the directory `path`."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in model.state_dict().items()},
                  os.path.join(tmp, "model.safetensors"))
        meta = {"format_version": FORMAT_VERSION, "config": model.config.to_dict(),
                "tokenizer": tokenizer.to_dict(), **state}
        if optimizer is not None:
            opt_state = optimizer.state_dict()
            save_file({k: np.ascontiguousarray(v) for k, v in opt_state["state"].items()},
                      os.path.join(tmp, "optimizer.safetensors"))
            meta["optimizer"] = {"step_count": opt_state["step_count"], "lr": opt_state["lr"]}
        meta["minigrad_rng"] = {"seed": Tensor._seed, "counter": Tensor._rng_counter}
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump(meta, f, indent=1)
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name), "rb") as f:
                os.fsync(f.fileno())
        old = path + ".old"
        if os.path.exists(path):
            if os.path.exists(old):
                shutil.rmtree(old)
            os.replace(path, old)          # keep the previous one until the new one is in place
        os.replace(tmp, path)
        _fsync_dir(parent)
        if os.path.exists(old):
            shutil.rmtree(old)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def resolve(path: str) -> str:
    """The checkpoint directory for `path`: the directory itself, or a run directory's
    best (else last) checkpoint; a `.old` left by an interrupted swap is used if needed."""
    for candidate in (path, os.path.join(path, "best"), os.path.join(path, "last")):
        if os.path.isfile(os.path.join(candidate, "state.json")):
            return candidate
        if os.path.isfile(os.path.join(candidate + ".old", "state.json")):
            return candidate + ".old"
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint directory not found: {os.path.abspath(path)}")
    raise CheckpointError(f"no checkpoint in {os.path.abspath(path)} (expected state.json there, "
                          f"or in its best/ or last/ subdirectory; train one with `python -m gpt train`)")


def read_state(path: str) -> dict:
    try:
        with open(os.path.join(path, "state.json")) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {os.path.join(path, 'state.json')}: {e}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')} is not {FORMAT_VERSION}")
    return meta


def load_checkpoint(path: str, device: Optional[str] = None) -> Tuple[GPT, CharTokenizer, dict]:
    """(model, tokenizer, state) from a checkpoint or run directory."""
    path = resolve(path)
    meta = read_state(path)
    model = GPT(GPTConfig(**meta["config"]), device=device)
    try:
        model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}/model.safetensors does not fit the config in state.json: {e}") from None
    meta["path"] = path
    return model, CharTokenizer.from_dict(meta["tokenizer"]), meta


def data_rng_state(meta: dict, shard: int) -> Optional[dict]:
    """The saved state of data shard `shard`'s batch generator (shard = rank x grad_accum + k),
    or None when the run that saved the checkpoint had fewer shards.  With the same number of
    shards a resume is exact whatever the split into ranks and accumulation."""
    states = meta.get("data_rng_shards") or [meta["data_rng"]]
    return states[shard] if shard < len(states) else None


def load_optimizer_state(path: str, optimizer, meta: dict) -> None:
    arrays = load_file(os.path.join(path, "optimizer.safetensors"))
    optimizer.load_state_dict({"step_count": meta["optimizer"]["step_count"], "lr": meta["optimizer"]["lr"],
                               "state": arrays})
