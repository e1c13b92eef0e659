"""Fuzzing the files of a real run: random truncations, bit flips and inserted bytes in each
checkpoint file (model, optimizer, state.json) and in log.jsonl.  Whatever the damage,
`gpt sample` and `gpt train --resume` either work or print one line and exit non-zero,
never a traceback, and a failure leaves every file as it was.  The CLI runs in-process
(gpt.cli.main), so a few hundred cases take seconds."""
import os
import shutil

import numpy as np
import pytest

from gpt.cli import main
from run_folders import make_run, snapshot

CASES_PER_FILE = 45

SAMPLE = ["best/model.safetensors", "best/state.json"]
RESUME = ["last/model.safetensors", "last/optimizer.safetensors", "last/state.json", "log.jsonl"]


def damage(data: bytes, rng: np.random.Generator) -> bytes:
    """One random truncation, bit flip or insertion of 1-8 random bytes."""
    where = int(rng.integers(0, len(data)))
    kind = rng.integers(3)
    if kind == 0:
        return data[:where]
    if kind == 1:
        flipped = bytearray(data)
        flipped[where] ^= 1 << int(rng.integers(8))
        return bytes(flipped)
    return data[:where] + rng.bytes(int(rng.integers(1, 9))) + data[where:]


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("target", SAMPLE + RESUME)
def test_damaged_files_never_give_a_traceback(made_run, tmp_path, capsys, target):
    command = "sample" if target in SAMPLE else "train"
    rng = np.random.default_rng(sum(map(ord, target)))
    with open(os.path.join(made_run, target), "rb") as f:
        original = f.read()
    outcomes = {0: 0, 1: 0, 2: 0}
    for case in range(CASES_PER_FILE):
        run = str(tmp_path / f"case{case}")
        shutil.copytree(made_run, run)
        with open(os.path.join(run, target), "wb") as f:
            f.write(damage(original, rng))
        before = snapshot(run)
        argv = (["sample", "--out-dir", run, "--num-tokens", "2"] if command == "sample" else
                ["train", "--out-dir", run, "--resume", "--max-iters", "0", "--no-progress"])
        code = main(argv)                           # any exception escaping main fails the test here
        out, err = capsys.readouterr()
        outcomes[code] += 1
        if code != 0:
            assert err.startswith(f"gpt {command}: ") and err.count("\n") == 1, f"case {case}: {err}"
            assert snapshot(run) == before, f"case {case} failed ({err.strip()}) but changed files"
        elif command == "sample":
            assert snapshot(run) == before, f"case {case}: sampling changed files"
        shutil.rmtree(run)
    assert outcomes[2] > 0, outcomes                 # the damage did hit: some cases are refused
