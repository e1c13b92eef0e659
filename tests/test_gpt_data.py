"""Data: the char tokenizer, finding corpora (path, shakespeare, pystdlib) without a network,
and batches (shapes, the one-token shift, the seeded rng)."""
import os
import shutil

import numpy as np
import pytest

from gpt import data
from gpt.data import CharDataset, CharTokenizer, DataError, load_text



@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty cache and a urlopen that fails, so nothing can come from the network."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")
    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    monkeypatch.setenv("MINIGRAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIGRAD_DATA", raising=False)
    return tmp_path


def test_tokenizer_round_trip_and_sorted_vocabulary():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world")) and tok.vocab_size == 8
    ids = tok.encode("world hello")
    assert ids.dtype == np.int64 and tok.decode(ids) == "world hello"
    assert CharTokenizer.from_dict(tok.to_dict()).chars == tok.chars


def test_unknown_characters_are_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"2 character\(s\) not in the vocabulary: 'x', 'z'"):
        tok.encode("abzcx")


def test_missing_data_file_names_the_path(tmp_path):
    missing = tmp_path / "no_such.txt"
    with pytest.raises(DataError, match=f"data file not found: {missing}"):
        load_text(str(missing))


def test_a_path_is_read_as_text(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("to be or not to be\n", encoding="utf-8")
    text, source = load_text(str(f))
    assert text == "to be or not to be\n" and source == str(f)


def test_local_file_is_the_checksummed_shakespeare(shakespeare):
    assert data.sha256_of(shakespeare) == data.SHAKESPEARE_SHA256


def test_shakespeare_found_through_minigrad_data(shakespeare, offline, monkeypatch):
    monkeypatch.setenv("MINIGRAD_DATA", os.path.dirname(shakespeare))
    text, source = load_text("shakespeare")
    assert source == shakespeare and text.startswith("First Citizen:")


def test_shakespeare_found_in_the_cache_when_offline(shakespeare, offline):
    os.makedirs(data.cache_dir())
    shutil.copy(shakespeare, os.path.join(data.cache_dir(), "tinyshakespeare.txt"))
    _, source = load_text("shakespeare")
    assert source == os.path.join(data.cache_dir(), "tinyshakespeare.txt")


def test_download_is_checksummed_and_cached(shakespeare, offline, monkeypatch):
    class Response:
        def __init__(self, payload):
            self.payload = payload

        def read(self):
            return self.payload

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    with open(shakespeare, "rb") as f:
        good = f.read()
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: Response(good[:-1] + b"?"))
    with pytest.raises(DataError, match="sha256"):
        load_text("shakespeare")
    assert not os.path.exists(os.path.join(data.cache_dir(), "tinyshakespeare.txt"))
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: Response(good))
    text, source = load_text("shakespeare")
    assert source == os.path.join(data.cache_dir(), "tinyshakespeare.txt") and len(text) == 1115394
    assert os.listdir(data.cache_dir()) == ["tinyshakespeare.txt"]           # no partial files left


def test_no_network_message_names_the_ways_out(offline):
    with pytest.raises(DataError) as e:
        load_text("shakespeare")
    message = str(e.value)
    for way_out in ("--data path/to/file.txt", "MINIGRAD_DATA", "--data pystdlib"):
        assert way_out in message


def test_pystdlib_corpus_is_offline_deterministic_and_sizeable(offline):
    a, _ = load_text("pystdlib")
    b, _ = load_text("pystdlib")
    assert a == b and 200_000 <= len(a) <= data.PYSTDLIB_CHARS
    assert "def " in a


def test_batches_are_shifted_by_one_and_reproducible():
    ids = np.arange(1000) % 97
    ds = CharDataset(ids, block_size=16, batch_size=4, seed=0)
    x, y = ds.get_batch("train")
    assert x.shape == y.shape == (4, 16)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    np.testing.assert_array_equal((x + 1) % 97, y)
    state = ds.rng_state()
    again = ds.get_batch("val")
    ds.set_rng_state(state)
    np.testing.assert_array_equal(ds.get_batch("val")[0], again[0])
    np.testing.assert_array_equal(CharDataset(ids, 16, 4, seed=0).get_batch("train")[0], x)


def test_split_is_90_10_and_val_blocks_come_from_the_end():
    ids = np.arange(1000)
    ds = CharDataset(ids, block_size=8, batch_size=64, seed=1)
    assert len(ds.splits["train"]) == 900 and len(ds.splits["val"]) == 100
    x, y = ds.get_batch("val")
    assert x.min() >= 900 and y.max() <= 999


def test_too_little_data_for_the_block_size_is_an_error():
    with pytest.raises(DataError, match="val split has 10 tokens"):
        CharDataset(np.arange(100), block_size=32, batch_size=2)
