"""data/vector_store.py: per-utterance int vectors on disk, memory-mapped (the trainers'
targets): round trip, a key added twice, pickling without the values, atomic writes, errors."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from pykaldi2.data.vector_store import (
    VectorStore,
    VectorStoreWriter,
    read_store_meta,
    write_vector_store,
)
from pykaldi2.utils.errors import DataError


def _vectors(n=50, seed=0):
    rng = np.random.default_rng(seed)
    out = {f"spk{i % 4}-utt{i:03d}": rng.integers(0, 5000, rng.integers(0, 40)) for i in range(n)}
    out["sprecher-äöü"] = np.array([7, 8], dtype=np.int32)  # UTF-8 keys
    return out


def test_round_trip_as_a_mapping(tmp_path):
    vecs = _vectors()
    items = list(vecs.items())[::-1]  # added out of order: the key table is sorted
    store = write_vector_store(tmp_path / "s", items, source={"made": "here"})
    assert len(store) == len(vecs) and list(store) == sorted(vecs)
    for k, v in vecs.items():
        got = store[k]
        assert got.dtype == np.int32 and type(got) is np.ndarray and got.flags.writeable
        np.testing.assert_array_equal(got, v)
        assert store.length(k) == len(v) and k in store
    assert "nope" not in store and 3 not in store and "x" * 500 not in store
    with pytest.raises(KeyError):
        store["nope"]
    assert store.get("nope") is None
    assert store.source == {"made": "here"}
    meta = read_store_meta(tmp_path / "s")
    assert meta["num_keys"] == len(vecs) and meta["num_values"] == sum(map(len, vecs.values()))


def test_a_key_added_twice_keeps_its_last_vector_and_other_dtypes(tmp_path):
    with VectorStoreWriter(tmp_path / "s", dtype=np.int64) as w:
        w.add("b", [1, 2])
        w.add("a", [3])
        w.add("b", [2**40])
    store = VectorStore(tmp_path / "s")
    assert list(store) == ["a", "b"] and store["b"].dtype == np.int64
    assert store["b"].tolist() == [2**40] and store["a"].tolist() == [3]


def test_pickle_holds_the_path_not_the_values(tmp_path):
    vecs = {f"u{i:05d}": np.arange(1000) for i in range(100)}  # 400 kB of values
    store = write_vector_store(tmp_path / "s", vecs.items())
    store["u00000"]  # maps the files in this process
    blob = pickle.dumps(store)
    assert len(blob) < 2000
    again = pickle.loads(blob)
    assert again._maps is None
    np.testing.assert_array_equal(again["u00099"], vecs["u00099"])
    if hasattr(os, "fork"):  # a forked child maps the files itself (its own pid)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            ok = store["u00042"].tolist() == list(range(1000)) and store._pid == os.getpid()
            os.write(w, b"1" if ok else b"0")
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(r, 1) == b"1"


def test_empty_store_and_empty_vectors(tmp_path):
    store = write_vector_store(tmp_path / "s", [])
    assert len(store) == 0 and list(store) == [] and "a" not in store
    store = write_vector_store(tmp_path / "t", [("a", []), ("b", [])])
    assert store["a"].tolist() == [] and store.length("b") == 0


def test_a_failed_write_leaves_the_old_store(tmp_path):
    path = tmp_path / "s"
    write_vector_store(path, [("a", [1])])
    with pytest.raises(RuntimeError), VectorStoreWriter(path) as w:
        w.add("a", [2])
        raise RuntimeError("killed")
    assert VectorStore(path)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temp dir left behind
    with pytest.raises(ValueError, match="1-d"), VectorStoreWriter(tmp_path / "t") as w:
        w.add("a", [[1, 2]])
    assert not (tmp_path / "t").exists()


def test_not_a_store_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not a vector store") as e:
        VectorStore(tmp_path)
    assert str(tmp_path) in str(e.value) and "writes it again" in str(e.value)
    assert read_store_meta(tmp_path) is None
