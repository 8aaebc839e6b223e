"""Datasets for acoustic-model training: whole utterances and fixed-size chunks.

Both read features through any ``Mapping[utt, (T, F) array]`` (e.g.
:func:`pykaldi2.features.storage.open_features`, which reopens HDF5 files per worker) and
frame targets through a ``Mapping[utt, (T,) int array]`` (pdf_ids from ``ali-to-pdf``).

Dimension legend: N batch, T frames, F feature dim.

    >>> feats = open_features("data/train")               # HDF5 or feats.scp
    >>> targets = read_pdf_targets("exp/tri2_ali/pdf.scp")
    >>> ds = ChunkDataset(feats, targets, chunk_size=80)   # PyKaldi2's default chunking
    >>> loader = DataLoader(ds, batch_size=64, collate_fn=collate_frames, num_workers=2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

#: Target value of padding frames (ignored by the CE loss).
IGNORE = -100


@dataclass
class TargetCheck:
    """Result of matching targets to features: kept utts and what was dropped, with reasons."""

    utts: list[str]
    missing: list[str]
    mismatched: list[tuple[str, int, int]]  # (utt, feature frames, target frames)


def match_targets(
    feats: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    *,
    frame_lengths: Mapping[str, int] | None = None,
    tolerance: int = 1,
    max_missing_fraction: float = 0.2,
    source: str = "targets",
) -> TargetCheck:
    """Keep utterances whose target count is within ``tolerance`` frames of the feature count.

    Utterances without targets (failed alignments) or with a larger mismatch are dropped and
    logged; if more than ``max_missing_fraction`` of the utterances are dropped, a DataError
    names the first offenders (usually features and alignments from different data dirs or
    frame shifts).
    """
    utts, missing, bad = [], [], []
    for utt in sorted(feats.keys()):
        if utt not in targets:
            missing.append(utt)
            continue
        nf = frame_lengths[utt] if frame_lengths is not None else _num_frames(feats, utt)
        nt = len(targets[utt])
        if abs(nf - nt) > tolerance:
            bad.append((utt, nf, nt))
            continue
        utts.append(utt)
    total = len(utts) + len(missing) + len(bad)
    if total == 0:
        raise DataError("no utterances with features", file=source)
    dropped = len(missing) + len(bad)
    if dropped:
        log.warning(
            "%s: dropped %d of %d utterances (%d without targets, %d length mismatches)",
            source,
            dropped,
            total,
            len(missing),
            len(bad),
        )
    if dropped > max_missing_fraction * total:
        examples = [f"{u}: no targets" for u in missing[:3]] + [
            f"{u}: {nf} feature frames vs {nt} targets" for u, nf, nt in bad[:3]
        ]
        raise DataError(
            f"{dropped} of {total} utterances have no usable targets ({'; '.join(examples)})",
            file=source,
            fix="align the same data dir the features were computed for (same frame shift), "
            "or raise max_missing_fraction",
        )
    return TargetCheck(utts, missing, bad)


def _num_frames(feats: Mapping[str, np.ndarray], utt: str) -> int:
    shape = getattr(feats, "shape", None)
    return int(shape(utt)[0]) if callable(shape) else int(len(feats[utt]))


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Targets padded (repeat last) or cut to ``n`` frames (within the checked tolerance)."""
    if len(y) >= n:
        return y[:n]
    return np.concatenate([y, np.full(n - len(y), y[-1], dtype=y.dtype)])


class UtteranceDataset(torch.utils.data.Dataset):
    """Whole utterances: item i -> (utt, feats (T, F) float32, targets (T,) int64 or None)."""

    def __init__(
        self,
        feats: Mapping[str, np.ndarray],
        targets: Mapping[str, np.ndarray] | None = None,
        utts: Sequence[str] | None = None,
        tolerance: int = 1,
    ) -> None:
        self.feats, self.targets = feats, targets
        if utts is None:
            utts = (
                match_targets(feats, targets, tolerance=tolerance).utts
                if targets
                else sorted(feats.keys())
            )
        self.utts = list(utts)
        self.lengths = [_num_frames(feats, u) for u in self.utts]

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int):
        utt = self.utts[i]
        x = np.asarray(self.feats[utt], dtype=np.float32)
        y = None
        if self.targets is not None:
            y = _fit_length(np.asarray(self.targets[utt], dtype=np.int64), len(x))
        return utt, x, y


def chunk_starts(n: int, chunk_size: int) -> list[int]:
    """First frames of the chunks of an ``n``-frame utterance: every ``chunk_size`` frames, the
    last one shifted back to end at frame ``n`` (a single chunk at 0 when ``n <= chunk_size``)."""
    starts = list(range(0, max(n - chunk_size, 0) + 1, chunk_size))
    if n > chunk_size and starts[-1] + chunk_size < n:
        starts.append(n - chunk_size)
    return starts


class ChunkDataset(torch.utils.data.Dataset):
    """Fixed-size chunks of ``chunk_size`` target frames with ``left``/``right`` context frames.

    Item i -> (utt, feats (left + chunk_size + right, F), targets (chunk_size,)). The last
    chunk of an utterance is shifted back to end at the utterance end (overlapping the one
    before it, as Kaldi's nnet3 egs do) so every chunk is full; utterances shorter than a chunk
    give one chunk padded with IGNORE targets. Context beyond the utterance edges repeats the
    first/last frame.
    """

    def __init__(
        self,
        feats: Mapping[str, np.ndarray],
        targets: Mapping[str, np.ndarray],
        chunk_size: int = 80,
        left: int = 0,
        right: int = 0,
        utts: Sequence[str] | None = None,
        tolerance: int = 1,
    ) -> None:
        if chunk_size <= 0 or left < 0 or right < 0:
            raise ValueError("ChunkDataset: chunk_size > 0 and left/right >= 0 required")
        self.feats, self.targets = feats, targets
        self.chunk_size, self.left, self.right = chunk_size, left, right
        if utts is None:
            utts = match_targets(feats, targets, tolerance=tolerance).utts
        self.utts = list(utts)
        # chunk c: utterance self.utts[_utt[c]], first frame _start[c]; _frames[i]: utterance
        # i's frames. Flat arrays (12 bytes a chunk), not a list of tuples (~120 bytes a chunk,
        # whose pages every DataLoader worker dirties by reference counting).
        frames = np.array([_num_frames(feats, u) for u in self.utts], dtype=np.int64)
        per_utt = [np.asarray(chunk_starts(int(n), chunk_size), dtype=np.int64) for n in frames]
        counts = np.array([len(s) for s in per_utt], dtype=np.int64)
        self._frames = frames.astype(np.int32)
        self._utt = np.repeat(np.arange(len(frames), dtype=np.int32), counts)
        self._start = np.concatenate(per_utt or [np.zeros(0, np.int64)]).astype(np.int32)
        self.chunks = _Chunks(self)

    def chunk(self, i: int) -> tuple[str, int, int]:
        """Chunk ``i`` as (utt, first frame, the utterance's frames)."""
        u = int(self._utt[i])
        return self.utts[u], int(self._start[i]), int(self._frames[u])

    def __len__(self) -> int:
        return len(self._utt)

    def __getitem__(self, i: int):
        utt, start, n = self.chunk(i)
        x = np.asarray(self.feats[utt], dtype=np.float32)
        y = _fit_length(np.asarray(self.targets[utt], dtype=np.int64), n)
        c = self.chunk_size
        idx = np.clip(np.arange(start - self.left, start + c + self.right), 0, n - 1)
        tgt = np.full(c, IGNORE, dtype=np.int64)
        m = min(c, n - start)
        tgt[:m] = y[start : start + m]
        return utt, x[idx], tgt


class _Chunks(Sequence):
    """``ChunkDataset.chunks``: chunk i as a (utt, start, num_frames) tuple, made on access."""

    def __init__(self, ds: ChunkDataset) -> None:
        self._ds = ds

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._ds.chunk(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._ds.chunk(i)


def collate_frames(items):
    """List of (utt, feats (T_i, F), targets (T_i',) | None) -> a padded batch dict.

    Returns ``{"utts": [...], "feats": (N, T, F), "lengths": (N,), "targets": (N, T') | None}``
    with feats zero-padded and targets padded with IGNORE.
    """
    utts = [it[0] for it in items]
    lengths = torch.tensor([len(it[1]) for it in items], dtype=torch.int64)
    dim = items[0][1].shape[1]
    feats = torch.zeros(len(items), int(lengths.max()), dim)
    for i, it in enumerate(items):
        feats[i, : len(it[1])] = torch.from_numpy(it[1])
    targets = None
    if items[0][2] is not None:
        tl = max(len(it[2]) for it in items)
        targets = torch.full((len(items), tl), IGNORE, dtype=torch.int64)
        for i, it in enumerate(items):
            targets[i, : len(it[2])] = torch.from_numpy(it[2])
    return {"utts": utts, "feats": feats, "lengths": lengths, "targets": targets}
