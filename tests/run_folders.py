"""Helpers for tests on real run folders: a tiny run made by the CLI, and snapshots that
show whether anything on disk changed."""
import os
import shutil

from gpt.cli import main
from gpt.data import pystdlib_text

TINY = ["--preset", "tiny", "--eval-interval", "2", "--eval-iters", "1", "--no-progress"]   # a few steps of it


def make_run(folder, iters: int = 4) -> str:
    """A finished run of the tiny preset (log.jsonl, loss.png, best/, last/) in folder/run, trained
    by the CLI for a few steps."""
    corpus = os.path.join(folder, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(pystdlib_text()[:20_000])
    run = os.path.join(folder, "run")
    assert main(["train", "--data", corpus, "--out-dir", run, "--max-iters", str(iters), *TINY]) == 0
    return run


def copy_run(run: str, folder) -> str:
    target = os.path.join(folder, "run")
    shutil.copytree(run, target)
    return target


def snapshot(folder) -> dict:
    """{relative path: (bytes, mode)} of every file and folder under `folder`."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            content = None if os.path.isdir(path) else open(path, "rb").read()
            found[os.path.relpath(path, folder)] = (content, os.stat(path).st_mode)
    return found
