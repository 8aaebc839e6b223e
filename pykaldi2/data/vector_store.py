"""Integer vectors keyed by utterance id, on disk and memory-mapped: training targets that do not
live in every process's memory.

Kaldi keeps per-utterance integer vectors (alignments, ``ali-to-pdf`` output, ``text.int``) in
archives that its training binaries read one example at a time through an scp
(``RandomAccessInt32VectorReader``), so no process holds a corpus of them. A Python dict of
arrays does the opposite: it costs about 100 bytes per utterance plus 4 bytes per frame, and
every DataLoader worker inherits a copy (copy-on-write pages that reference counting dirties).
A :class:`VectorStore` is a directory holding all vectors in one flat array plus a sorted key
table, memory-mapped read-only: lookups are a binary search, a worker's memory does not grow
with the corpus, and the pages are the page cache's, shared by every process that maps them.

Layout of a store dir (written once, atomically, by :class:`VectorStoreWriter`)::

    keys.npy     (N,) bytes ``|S<w>``: the utterance ids (UTF-8), sorted
    index.npy    (N, 2) int64: start and length of each key's vector in values.bin
    values.bin   (M,) raw values (``dtype`` in meta.json), in the order they were added
    meta.json    {"format": "pykaldi2-vector-store", "version": 1, "dtype", "num_keys",
                  "num_values", "source": what the store was made from (to tell if it is stale)}

    >>> with VectorStoreWriter("exp/ce/egs/pdf_targets", source={"ali": "..."}) as w:
    ...     for utt, pdfs in alignments:
    ...         w.add(utt, pdfs)
    >>> targets = VectorStore("exp/ce/egs/pdf_targets")     # Mapping[str, (T,) int32]
    >>> targets["utt1"], targets.length("utt1"), "utt2" in targets

A key added twice keeps its last vector (as merging dicts would).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_dir

FORMAT = "pykaldi2-vector-store"
VERSION = 1


class VectorStoreWriter:
    """Writes a :class:`VectorStore` dir: vectors streamed to disk as they are added; the key
    table is sorted and everything moved into place by :meth:`close` (nothing is left at
    ``path`` if the writer fails or is killed before)."""

    def __init__(
        self,
        path: str | os.PathLike,
        dtype: Any = np.int32,
        source: Any = None,
    ) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.source = source
        self._ctx = atomic_dir(self.path)
        self._tmp = self._ctx.__enter__()
        self._values = open(self._tmp / "values.bin", "wb")
        self._keys: list[bytes] = []
        self._starts: list[int] = []
        self._lengths: list[int] = []
        self._num_values = 0

    def add(self, key: str, vector) -> None:
        """Append ``vector`` ((n,) integers) under ``key`` (a later add of the same key wins)."""
        v = np.ascontiguousarray(vector, dtype=self.dtype)
        if v.ndim != 1:
            raise ValueError(f"VectorStoreWriter: {key}: a 1-d vector is needed, not {v.shape}")
        b = key.encode("utf-8")
        if not b or b.endswith(b"\0"):
            raise ValueError(f"VectorStoreWriter: unusable key {key!r}")
        self._values.write(v.tobytes())
        self._keys.append(b)
        self._starts.append(self._num_values)
        self._lengths.append(len(v))
        self._num_values += len(v)

    def close(self, ok: bool = True) -> None:
        """Finish the store (``ok``) or discard it."""
        if self._values is None:
            return
        self._values.close()
        self._values = None
        if not ok:
            self._ctx.__exit__(RuntimeError, RuntimeError("discarded"), None)
            return
        try:
            n = len(self._keys)
            width = max((len(k) for k in self._keys), default=1)
            keys = np.array(self._keys, dtype=f"S{width}")
            index = np.stack(
                [np.array(self._starts, dtype=np.int64), np.array(self._lengths, dtype=np.int64)],
                axis=1,
            ).reshape(n, 2)
            self._keys = self._starts = self._lengths = []
            order = np.argsort(keys, kind="stable")
            keys, index = keys[order], index[order]
            if n > 1:  # a key added twice: keep its last vector (last of its equal run)
                last = np.ones(n, dtype=bool)
                last[:-1] = keys[1:] != keys[:-1]
                keys, index = keys[last], index[last]
            np.save(self._tmp / "keys.npy", keys)
            np.save(self._tmp / "index.npy", index)
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "dtype": self.dtype.str,
                "num_keys": int(len(keys)),
                "num_values": int(self._num_values),
                "source": self.source,
            }
            (self._tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        except BaseException as e:
            self._ctx.__exit__(type(e), e, None)
            raise
        self._ctx.__exit__(None, None, None)

    def __enter__(self) -> VectorStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def write_vector_store(
    path: str | os.PathLike,
    items: Iterable[tuple[str, Any]],
    dtype: Any = np.int32,
    source: Any = None,
) -> VectorStore:
    """Write ``(key, vector)`` pairs (streamed) as a store at ``path``; returns it opened."""
    with VectorStoreWriter(path, dtype, source) as w:
        for key, vec in items:
            w.add(key, vec)
    return VectorStore(path)


def read_store_meta(path: str | os.PathLike) -> dict | None:
    """The meta.json of a store dir, or None when ``path`` holds no (finished) store."""
    f = Path(path) / "meta.json"
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("format") == FORMAT else None


class VectorStore(Mapping[str, np.ndarray]):
    """A store dir as a read-only ``Mapping[str, (n,) array]`` (memory-mapped, see the module
    doc). Picklable: a pickle holds the path only, and each process maps the files itself.

    Each lookup returns a copy of the vector (a plain, writable ndarray).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta = read_store_meta(self.path)
        if meta is None:
            raise DataError(
                "not a vector store (no meta.json of one)",
                file=str(self.path),
                fix="remove the dir; the trainer writes it again",
            )
        if meta.get("version") != VERSION:
            raise DataError(
                f"vector store version {meta.get('version')}, this pykaldi2 reads {VERSION}",
                file=str(self.path),
                fix="remove the dir; the trainer writes it again",
            )
        self.meta = meta
        self.dtype = np.dtype(meta["dtype"])
        self._pid = -1
        self._maps: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # -- mapping the files (lazily, once per process) ---------------------------------------
    def _open(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._maps is None or self._pid != os.getpid():
            try:
                keys = np.load(self.path / "keys.npy", mmap_mode="r")
                index = np.load(self.path / "index.npy", mmap_mode="r")
                n = int(self.meta["num_values"])
                values = (
                    np.memmap(self.path / "values.bin", dtype=self.dtype, mode="r", shape=(n,))
                    if n
                    else np.zeros(0, dtype=self.dtype)
                )
            except (OSError, ValueError) as e:
                raise DataError(
                    f"unreadable vector store: {e}",
                    file=str(self.path),
                    fix="remove the dir; the trainer writes it again",
                ) from None
            self._maps, self._pid = (keys, index, values), os.getpid()
        return self._maps

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"], state["_pid"] = None, -1
        return state

    def _find(self, key: object) -> int:
        """Row of ``key`` in the key table, -1 when absent."""
        if not isinstance(key, str):
            return -1
        keys = self._open()[0]
        b = key.encode("utf-8")
        if len(keys) == 0 or len(b) > keys.dtype.itemsize:
            return -1
        i = int(np.searchsorted(keys, b))
        return i if i < len(keys) and keys[i] == b else -1

    # -- Mapping ---------------------------------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray:
        i = self._find(key)
        if i < 0:
            raise KeyError(key)
        _, index, values = self._open()
        start, n = (int(x) for x in index[i])
        return np.array(values[start : start + n])  # a small copy: writable, a plain ndarray

    def __contains__(self, key: object) -> bool:
        return self._find(key) >= 0

    def __len__(self) -> int:
        return int(self.meta["num_keys"])

    def __iter__(self) -> Iterator[str]:
        keys = self._open()[0]
        for start in range(0, len(keys), 65536):  # decode a block at a time
            for k in keys[start : start + 65536].tolist():
                yield k.decode("utf-8")

    def length(self, key: str) -> int:
        """The length of ``key``'s vector (reads the index only)."""
        i = self._find(key)
        if i < 0:
            raise KeyError(key)
        return int(self._open()[1][i, 1])

    @property
    def source(self) -> Any:
        """What the store was made from (``source`` given to the writer)."""
        return self.meta.get("source")
