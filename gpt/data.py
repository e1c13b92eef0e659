"""Text in, batches of token ids out.

`load_text(name)` finds a corpus: a file path, `shakespeare` (Tiny Shakespeare, downloaded
once and checksum-verified) or `pystdlib` (source files every Python installation carries,
so training works with no network).  `CharTokenizer` maps characters to ids and back;
`CharDataset` splits the ids 90/10 and draws random contiguous blocks from a seeded rng.
"""
import hashlib
import os
import sys
import sysconfig
import tempfile
import urllib.request
from typing import Dict, Iterable, List, Tuple

import numpy as np

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_FILES = ("tinyshakespeare.txt", "input.txt")

# standard-library sources for the offline corpus, in this fixed order; files a Python
# version lacks are skipped, and the text stops growing at PYSTDLIB_CHARS
PYSTDLIB_FILES = ("textwrap.py", "string.py", "functools.py", "heapq.py", "bisect.py", "contextlib.py",
                  "dataclasses.py", "fractions.py", "statistics.py", "shutil.py", "copy.py", "difflib.py",
                  "calendar.py", "csv.py", "pprint.py", "random.py", "json/encoder.py", "json/decoder.py",
                  "collections/__init__.py", "argparse.py", "enum.py", "tokenize.py", "inspect.py")
PYSTDLIB_CHARS = 500_000


class DataError(Exception):
    """A corpus could not be found or read; the message says what to do instead."""


# ---- tokenizer --------------------------------------------------------------------------
class CharTokenizer:
    """One token per character: the vocabulary is the sorted set of characters seen."""

    def __init__(self, chars: Iterable[str]):
        self.chars: List[str] = list(chars)
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("CharTokenizer vocabulary has repeated characters")
        self.stoi: Dict[str, int] = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise ValueError(f"{len(unknown)} character(s) not in the vocabulary: {shown}")
        return np.fromiter((self.stoi[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        return cls(d["chars"])


# ---- corpora ----------------------------------------------------------------------------
def cache_dir() -> str:
    return os.environ.get("MINIGRAD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minigrad")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def shakespeare_path(download: bool = True) -> str:
    """Where Tiny Shakespeare is: $MINIGRAD_DATA, then the cache, then a one-time download."""
    data_dir = os.environ.get("MINIGRAD_DATA")
    if data_dir:
        for name in SHAKESPEARE_FILES:
            path = os.path.join(data_dir, name)
            if os.path.isfile(path):
                if sha256_of(path) != SHAKESPEARE_SHA256:     # a user's own copy: use it, but say so
                    print(f"note: {path} differs from the reference Tiny Shakespeare (sha256); using it anyway",
                          file=sys.stderr)
                return path
    cached = os.path.join(cache_dir(), "tinyshakespeare.txt")
    if os.path.isfile(cached) and sha256_of(cached) == SHAKESPEARE_SHA256:
        return cached
    if not download:
        raise DataError(f"Tiny Shakespeare is not in {cached}")
    os.makedirs(cache_dir(), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir(), suffix=".part")
    os.close(fd)
    try:
        try:
            with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response, open(tmp, "wb") as f:
                f.write(response.read())
        except OSError as e:    # URLError, timeouts and refused connections are all OSErrors
            raise DataError(
                f"could not download Tiny Shakespeare from {SHAKESPEARE_URL} ({e}).\n"
                f"Ways out:\n"
                f"  * pass a text file instead: --data path/to/file.txt\n"
                f"  * put tinyshakespeare.txt (or input.txt) in a folder and set MINIGRAD_DATA=that/folder\n"
                f"  * copy it to {cached}\n"
                f"  * train on the offline corpus: --data pystdlib") from None
        got = sha256_of(tmp)
        if got != SHAKESPEARE_SHA256:
            raise DataError(f"downloaded Tiny Shakespeare has sha256 {got}, expected {SHAKESPEARE_SHA256}; "
                            f"not using it (try again, or pass --data with a local copy)")
        os.replace(tmp, cached)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return cached


def pystdlib_text() -> str:
    """Source of some standard-library modules, concatenated in a fixed order."""
    root = sysconfig.get_paths()["stdlib"]
    parts, total = [], 0
    for rel in PYSTDLIB_FILES:
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            continue
        text = _read(path)
        parts.append(f"# ---- {rel}\n{text}")
        total += len(parts[-1])
        if total >= PYSTDLIB_CHARS:
            break
    text = "".join(parts)[:PYSTDLIB_CHARS]
    if len(text) < 50_000:
        raise DataError(f"found too little Python source under {root} for the pystdlib corpus "
                        f"(this Python may ship without .py files); pass --data path/to/file.txt")
    return text


def load_text(name: str) -> Tuple[str, str]:
    """(text, where it came from) for --data: a path, 'shakespeare' or 'pystdlib'."""
    if name == "shakespeare" and not os.path.exists(name):
        path = shakespeare_path()
        return _read(path), path
    if name == "pystdlib" and not os.path.exists(name):
        return pystdlib_text(), f"pystdlib ({sysconfig.get_paths()['stdlib']})"
    if not os.path.isfile(name):
        raise DataError(f"data file not found: {os.path.abspath(name)} "
                        f"(--data takes a text file path, 'shakespeare' or 'pystdlib')")
    try:
        return _read(name), os.path.abspath(name)
    except UnicodeDecodeError as e:
        raise DataError(f"{os.path.abspath(name)} is not UTF-8 text: {e}") from None


# ---- batches ----------------------------------------------------------------------------
class CharDataset:
    """Token ids split 90/10 into train and val, and random (x, y) blocks where y is x
    shifted by one: the target at every position is the next token."""

    def __init__(self, ids: np.ndarray, block_size: int, batch_size: int, seed: int = 0):
        n = int(0.9 * len(ids))
        self.splits = {"train": ids[:n], "val": ids[n:]}
        for split, data in self.splits.items():
            if len(data) < block_size + 1:
                raise DataError(f"the {split} split has {len(data)} tokens, fewer than block_size + 1 = "
                                f"{block_size + 1}: use more text or a smaller --block-size")
        self.block_size, self.batch_size = block_size, batch_size
        self.rng = np.random.default_rng(seed)

    def get_batch(self, split: str) -> Tuple[np.ndarray, np.ndarray]:
        data = self.splits[split]
        T = self.block_size
        starts = self.rng.integers(0, len(data) - T, size=self.batch_size)        # (B,)
        offsets = starts[:, None] + np.arange(T)                                   # (B, T)
        return data[offsets], data[offsets + 1]                                    # x, y: (B, T)

    # the rng's state goes into checkpoints, so a resumed run draws the same batches
    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
