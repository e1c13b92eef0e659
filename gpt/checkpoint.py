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
import math
import os
import shutil
import tempfile
from typing import Optional, Tuple

import numpy as np
from safetensors.numpy import load_file, save_file

from minigrad import Tensor

from .data import CharTokenizer
from .jsonfields import check_fields, is_int, is_number, show
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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_checkpoint(path: str, model: GPT, optimizer, tokenizer: CharTokenizer, state: dict) -> None:
    """Write model, optimizer and `state` (iteration, rng states, ...) to the directory `path`."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
    try:
        os.chmod(tmp, 0o777 & ~_umask())       # mkdtemp makes it 0700: others may read a run, as umask says
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
            os.chmod(os.path.join(tmp, name), 0o666 & ~_umask())   # safetensors writes 0600
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


def _one_line(error) -> str:
    return " ".join(str(error).split())


def _what_to_do(path: str) -> str:
    """Advice for a checkpoint that cannot be used: its sibling (best/ <-> last/) if there is one."""
    name = os.path.basename(os.path.normpath(path)).replace(".old", "")
    sibling = {"best": "last", "last": "best"}.get(name)
    if sibling:
        other = os.path.join(os.path.dirname(os.path.normpath(path)), sibling)
        if os.path.isfile(os.path.join(other, "state.json")):
            return f"restore the file, or use the run's other checkpoint: {other}"
    return "restore the file, or train again"


# what resuming needs beyond the model: (key, test, what it must be)
_RESUME_ENTRIES = (
    ("iter", lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    ("evaluated", lambda v: isinstance(v, bool), "true or false"),
    ("best_val_loss", lambda v: is_number(v) and not math.isnan(v), "a number"),
    ("elapsed_s", lambda v: is_number(v) and v >= 0, "a number >= 0"),
    ("data_rng", lambda v: _valid_bit_generator_state(v), "the state of numpy's PCG64 generator"),
    ("minigrad_rng", lambda v: isinstance(v, dict) and set(v) == {"seed", "counter"} and is_int(v["seed"])
     and is_int(v["counter"]) and v["counter"] >= 0, 'an object {"seed": int, "counter": int >= 0}'),
    ("optimizer", lambda v: isinstance(v, dict) and set(v) == {"step_count", "lr"} and is_int(v["step_count"])
     and v["step_count"] >= 0 and is_number(v["lr"]) and 0 <= v["lr"] < math.inf,
     'an object {"step_count": int >= 0, "lr": number >= 0}'),
    ("train_config", lambda v: isinstance(v, dict), "an object"),
)


def _valid_bit_generator_state(state) -> bool:
    try:
        np.random.default_rng().bit_generator.state = state
        return True
    except Exception:  # numpy raises TypeError, ValueError or KeyError for a malformed state
        return False


def read_state(path: str, for_resume: bool = False) -> dict:
    """state.json of the checkpoint directory `path`, checked entry by entry: the model's
    config and vocabulary always, and with for_resume everything resuming needs."""
    file = os.path.join(path, "state.json")
    what_to_do = _what_to_do(path)
    try:
        with open(file, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:            # ValueError: bad JSON or bad UTF-8
        raise CheckpointError(f"cannot read {file}: {_one_line(e)}; {what_to_do}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file} must hold a JSON object, got {show(meta)}; {what_to_do}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{file}: checkpoint format {show(meta.get('format_version'))} is not "
                              f"{FORMAT_VERSION}; {what_to_do}")
    try:
        if "config" not in meta:
            raise CheckpointError(f"{file} has no 'config' (the model's shape)")
        config = GPTConfig(**check_fields(meta["config"], GPTConfig, f"{file}: config"))
        tokenizer = meta.get("tokenizer")
        if "tokenizer" not in meta:
            raise CheckpointError(f"{file} has no 'tokenizer' (the vocabulary)")
        if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("chars"), str):
            raise CheckpointError(f"{file}: tokenizer must be an object with the vocabulary as a string in "
                                  f"\"chars\", got {show(tokenizer)}")
        chars = CharTokenizer.from_dict(tokenizer).chars
        if len(chars) != config.vocab_size:
            raise CheckpointError(f"{file}: the vocabulary has {len(chars)} characters but the model "
                                  f"{config.vocab_size} (config.vocab_size)")
        for key, test, expected in _RESUME_ENTRIES if for_resume else ():
            if key not in meta:
                raise CheckpointError(f"{file} has no {key!r}, which resuming needs")
            if not test(meta[key]):
                raise CheckpointError(f"{file}: {key!r} must be {expected}, got {show(meta[key])}")
        shards = meta.get("data_rng_shards")              # written by runs since data-parallel training
        if for_resume and shards is not None and not (isinstance(shards, list) and shards and
                                                       all(_valid_bit_generator_state(s) for s in shards)):
            raise CheckpointError(f"{file}: 'data_rng_shards' must be a list of numpy PCG64 generator states "
                                  f"(one per data shard), got {show(shards)}")
    except (CheckpointError, ValueError, TypeError) as e:   # ValueError, TypeError: GPTConfig's own checks
        message = _one_line(e)
        raise CheckpointError((message if message.startswith(file) else f"{file}: {message}") +
                              f"; {what_to_do}") from None
    return meta


def _load_tensors(file: str, what_to_do: str) -> dict:
    """The arrays of a safetensors file, every float finite, or a CheckpointError naming it."""
    if not os.path.isfile(file):
        raise CheckpointError(f"{file} is missing; {what_to_do}")
    try:
        arrays = load_file(file)
    except Exception as e:  # safetensors' own error type for a truncated or garbled file, OSError, MemoryError
        raise CheckpointError(f"{file} is damaged or not a safetensors file ({_one_line(e)[:120]}); "
                              f"{what_to_do}") from None
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise CheckpointError(f"{file} holds NaN or inf in {name} (the run diverged before this save, or "
                                  f"the file is damaged); {what_to_do}")
    return arrays


def load_checkpoint(path: str, device: Optional[str] = None, for_resume: bool = False
                    ) -> Tuple[GPT, CharTokenizer, dict]:
    """(model, tokenizer, state) from a checkpoint or run directory; every problem with its
    files is a CheckpointError naming the file and what to do."""
    path = resolve(path)
    meta = read_state(path, for_resume)
    model = GPT(GPTConfig(**meta["config"]), device=device)
    file = os.path.join(path, "model.safetensors")
    try:
        model.load_state_dict(_load_tensors(file, _what_to_do(path)))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{file} does not fit the config in state.json ({_one_line(e)[:200]}); "
                              f"{_what_to_do(path)}") from None
    meta["path"] = path
    return model, CharTokenizer.from_dict(meta["tokenizer"]), meta


def data_rng_state(meta: dict, shard: int) -> Optional[dict]:
    """The saved state of data shard `shard`'s batch generator (shard = rank x grad_accum + k),
    or None when the run that saved the checkpoint had fewer shards.  With the same number of
    shards a resume is exact whatever the split into ranks and accumulation."""
    states = meta.get("data_rng_shards") or [meta["data_rng"]]
    return states[shard] if shard < len(states) else None


def load_optimizer_state(path: str, optimizer, meta: dict) -> None:
    file = os.path.join(path, "optimizer.safetensors")
    arrays = _load_tensors(file, _what_to_do(path))
    if any(name.startswith("v.") and (array < 0).any() for name, array in arrays.items()):
        raise CheckpointError(f"{file} holds a negative second moment (v), which Adam never makes: the file is "
                              f"damaged; {_what_to_do(path)}")
    try:
        optimizer.load_state_dict({"step_count": meta["optimizer"]["step_count"], "lr": meta["optimizer"]["lr"],
                                   "state": arrays})
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{file} does not fit the model ({_one_line(e)[:200]}); "
                              f"{_what_to_do(path)}") from None
