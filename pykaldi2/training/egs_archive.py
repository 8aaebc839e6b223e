"""Training-example archives on disk (Kaldi's ``cegs.N.ark``): many chunks in one ``.npz``.

An archive holds N examples, each an input window ``(T_i, F)`` (float16 or float32) and a
numerator graph (an epsilon-free acceptor over pdf_ids, arcs sorted as
:class:`~pykaldi2.lang.den_fst.ChainGraph` sorts them), with its key (``utt``, first output
frame) and its number of output frames. Arrays, all concatenated over the examples::

    keys (N,) str          feat_offsets (N + 1,)       feats (sum T_i, F)
    num_out (N,) int32     arc_offsets (N + 1,)        src, dst, pdf (A,) int32, log_weight (A,) f32
    start (N,) int32       state_offsets (N + 1,)      final (S,) f32 (log weight; -inf: not final)

Written atomically (:func:`write_archive`); :class:`EgsArchive` reads one whole archive (an
archive is sized to be small: ``frames_per_archive``) and gives example ``i`` as numpy arrays.
A job appends its examples to piece files as it makes them (:class:`ArchiveSpool`);
``merge_archives`` concatenates pieces and shuffles them (Kaldi's nnet3-chain-shuffle-egs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write

__all__ = [
    "ArchiveSpool",
    "EgsArchive",
    "Example",
    "merge_archives",
    "read_pieces",
    "write_archive",
]

FIELDS = ("keys", "feat_offsets", "feats", "num_out", "arc_offsets", "src", "dst", "pdf",
          "log_weight", "start", "state_offsets", "final")  # fmt: skip


@dataclass
class Example:
    """One chunk: ``feats`` (T, F), its numerator graph as arrays, ``num_out`` output frames."""

    key: str
    feats: np.ndarray
    num_out: int
    src: np.ndarray
    dst: np.ndarray
    pdf: np.ndarray
    log_weight: np.ndarray
    final: np.ndarray
    start: int

    @classmethod
    def from_graph(cls, key: str, feats: np.ndarray, num_out: int, graph) -> Example:
        """From a :class:`~pykaldi2.lang.den_fst.ChainGraph` (torch tensors)."""
        return cls(
            key, feats, int(num_out),
            graph.src.numpy().astype(np.int32), graph.dst.numpy().astype(np.int32),
            graph.pdf.numpy().astype(np.int32), graph.log_weight.numpy().astype(np.float32),
            graph.final_log_weight.numpy().astype(np.float32), int(graph.start),
        )  # fmt: skip

    def graph(self, num_pdfs: int):
        """The numerator as a :class:`~pykaldi2.lang.den_fst.ChainGraph` (arcs already sorted)."""
        import torch

        from pykaldi2.lang.den_fst import ChainGraph

        def t(a, dt):
            return torch.from_numpy(np.ascontiguousarray(a)).to(dt)

        return ChainGraph(
            t(self.src, torch.int64), t(self.dst, torch.int64), t(self.pdf, torch.int64),
            t(self.log_weight, torch.float64), t(self.final, torch.float64), self.start,
            num_pdfs,
        )  # fmt: skip


def _offsets(sizes) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))]).astype(np.int64)


def _arrays(examples: list[Example], dtype) -> dict[str, np.ndarray]:
    return {
        "keys": np.asarray([e.key for e in examples]),
        "feat_offsets": _offsets([len(e.feats) for e in examples]),
        "feats": np.concatenate([e.feats for e in examples]).astype(dtype),
        "num_out": np.asarray([e.num_out for e in examples], dtype=np.int32),
        "arc_offsets": _offsets([len(e.src) for e in examples]),
        "src": np.concatenate([e.src for e in examples]).astype(np.int32),
        "dst": np.concatenate([e.dst for e in examples]).astype(np.int32),
        "pdf": np.concatenate([e.pdf for e in examples]).astype(np.int32),
        "log_weight": np.concatenate([e.log_weight for e in examples]).astype(np.float32),
        "start": np.asarray([e.start for e in examples], dtype=np.int32),
        "state_offsets": _offsets([len(e.final) for e in examples]),
        "final": np.concatenate([e.final for e in examples]).astype(np.float32),
    }


def _check(path, examples: list[Example]) -> None:
    if not examples:
        raise DataError("no examples to write", file=str(path))
    dims = {e.feats.shape[1] for e in examples}
    if len(dims) != 1:
        raise DataError(f"examples with feature dims {sorted(dims)}", file=str(path))


def write_archive(path: str | os.PathLike, examples: list[Example], dtype=np.float16) -> None:
    """Write ``examples`` as one archive, atomically."""
    _check(path, examples)
    with atomic_write(path, "wb") as f:
        np.savez(f, **_arrays(examples, dtype))


class EgsArchive:
    """One archive in memory; ``archive[i]`` is its ``i``-th :class:`Example`."""

    def __init__(self, path: str | os.PathLike, arrays: dict | None = None) -> None:
        self.path = Path(path)
        if arrays is not None:  # a block of a piece file (ArchiveSpool)
            self.a = arrays
            return
        if not self.path.is_file():
            raise DataError("no such egs archive", file=str(self.path),
                            fix="re-run chain-get-egs (the egs dir is incomplete)")  # fmt: skip
        try:
            with np.load(self.path, allow_pickle=False) as z:
                self.a = {k: z[k] for k in FIELDS}
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"unreadable egs archive: {e}", file=str(self.path),
                            fix="delete it and re-run chain-get-egs") from None  # fmt: skip

    def __len__(self) -> int:
        return int(len(self.a["keys"]))

    @property
    def num_out(self) -> np.ndarray:
        return self.a["num_out"]

    @property
    def num_frames(self) -> np.ndarray:
        """(N,) input frames of each example."""
        return np.diff(self.a["feat_offsets"])

    def __getitem__(self, i: int) -> Example:
        a = self.a
        f0, f1 = a["feat_offsets"][i], a["feat_offsets"][i + 1]
        r0, r1 = a["arc_offsets"][i], a["arc_offsets"][i + 1]
        s0, s1 = a["state_offsets"][i], a["state_offsets"][i + 1]
        return Example(
            str(a["keys"][i]), a["feats"][f0:f1], int(a["num_out"][i]),
            a["src"][r0:r1], a["dst"][r0:r1], a["pdf"][r0:r1], a["log_weight"][r0:r1],
            a["final"][s0:s1], int(a["start"][i]),
        )  # fmt: skip


class ArchiveSpool:
    """A job's examples on their way to the archives, in bounded memory (Kaldi's
    nnet3-chain-get-egs writes each example to its archive's pipe as it is made).

    :meth:`add` buffers examples per archive (features already in the archive's ``dtype``);
    when the buffered bytes of all archives (features plus numerator arrays: a numerator's
    size grows with the tree and the chunk, not only with its frames) reach ``max_bytes``,
    every buffer is appended to its piece file ``path_of(archive)`` as one block (the
    :data:`FIELDS` arrays, ``np.save`` one after the other: a file that grows by appending),
    so the memory of a job does not grow with its share of the corpus. :func:`read_pieces`
    reads a piece file back, its examples in the order they were added.
    """

    def __init__(self, path_of, dtype=np.float16, max_bytes: int = 16 << 20) -> None:
        self.path_of, self.dtype, self.max_bytes = path_of, np.dtype(dtype), int(max_bytes)
        self.buffers: dict = {}
        self.buffered_bytes = 0

    @staticmethod
    def example_bytes(example: Example) -> int:
        """What ``example`` holds in memory: its arrays' bytes."""
        arrays = (example.feats, example.src, example.dst, example.pdf, example.log_weight,
                  example.final)  # fmt: skip
        return int(sum(a.nbytes for a in arrays))

    def add(self, archive, example: Example) -> None:
        if example.feats.dtype != self.dtype:  # the cast the block write would make anyway
            example = replace(example, feats=example.feats.astype(self.dtype))
        self.buffers.setdefault(archive, []).append(example)
        self.buffered_bytes += self.example_bytes(example)
        if self.buffered_bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        for archive, examples in self.buffers.items():
            path = Path(self.path_of(archive))
            _check(path, examples)
            arrays = _arrays(examples, self.dtype)
            with open(path, "ab") as f:
                for k in FIELDS:
                    np.save(f, arrays[k], allow_pickle=False)
        self.buffers.clear()
        self.buffered_bytes = 0


def read_pieces(path: str | os.PathLike) -> list[Example]:
    """The examples of an :class:`ArchiveSpool` piece file (or of an ``.npz`` archive)."""
    path = Path(path)
    if path.suffix == ".npz":
        arc = EgsArchive(path)
        return [arc[i] for i in range(len(arc))]
    out: list[Example] = []
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            while f.tell() < size:
                arc = EgsArchive(path, {k: np.load(f, allow_pickle=False) for k in FIELDS})
                out += [arc[i] for i in range(len(arc))]
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"truncated or unreadable egs piece file: {e}", file=str(path),
                        fix="delete the egs dir's tmp/ and re-run chain-get-egs") from None  # fmt: skip
    return out


def merge_archives(pieces: list[Path], out: Path, seed, dtype=np.float16) -> int:
    """Concatenate the examples of ``pieces`` (piece files or archives, in order) into ``out``
    in a seeded random order; returns the number of examples (0: nothing written)."""
    examples = [e for p in pieces for e in read_pieces(p)]
    if not examples:
        return 0
    order = np.random.default_rng(seed).permutation(len(examples))
    write_archive(out, [examples[i] for i in order], dtype)
    return len(examples)
