"""split_data (Kaldi's ``utils/split_data.sh``): a data dir in N parts by speaker.

``split_data("data/train", 4)`` writes ``data/train/split4/{1,2,3,4}/`` (wav.scp, text, utt2spk,
spk2utt, feats.scp, cmvn.scp, ... of that part) and returns their paths. Speakers are never split
across parts: consecutive speakers (in sorted order) go to each part, first an equal number of
speakers per part, then the boundary speakers move to a neighbour while that makes the numbers
of utterances more equal (Kaldi's ``split_scp.pl --utt2spk``). The parts are rewritten only when
missing or older than the data dir's files, as split_data.sh does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pykaldi2.data.datadir import DataDir, read_data_dir, write_data_dir
from pykaldi2.utils.errors import DataError

_SOURCES = ("utt2spk", "text", "feats.scp", "cmvn.scp", "wav.scp", "segments")


def split_speakers(spk_counts: list[tuple[str, int]], nj: int) -> list[list[str]]:
    """Speakers (in order, with their utterance counts) into ``nj`` contiguous groups of about
    equal numbers of utterances (split_scp.pl's algorithm)."""
    n = len(spk_counts)
    if nj < 1:
        raise DataError(f"--nj must be >= 1, got {nj}")
    if n < nj:
        raise DataError(
            f"cannot split {n} speakers into {nj} jobs (a speaker is never split)",
            fix=f"use --nj {n} or less",
        )
    parts: list[list[tuple[str, int]]] = [[] for _ in range(nj)]
    for i, sc in enumerate(spk_counts):
        parts[(i * nj) // n].append(sc)
    sizes = [sum(c for _, c in p) for p in parts]
    changed = True
    while changed:
        changed = False
        for j in range(nj):
            if j < nj - 1 and parts[j]:
                c = parts[j][-1][1]
                if abs((sizes[j + 1] + c) - (sizes[j] - c)) < abs(sizes[j + 1] - sizes[j]):
                    parts[j + 1].insert(0, parts[j].pop())
                    sizes[j] -= c
                    sizes[j + 1] += c
                    changed = True
            if j > 0 and parts[j]:
                c = parts[j][0][1]
                if abs((sizes[j] - c) - (sizes[j - 1] + c)) < abs(sizes[j] - sizes[j - 1]):
                    parts[j - 1].append(parts[j].pop(0))
                    sizes[j] -= c
                    sizes[j - 1] += c
                    changed = True
    return [[s for s, _ in p] for p in parts]


def split_data_dir(d: DataDir, nj: int) -> list[DataDir]:
    """``d`` in ``nj`` parts by speaker (in memory)."""
    spk2utt = d.spk2utt
    groups = split_speakers([(s, len(u)) for s, u in spk2utt.items()], nj)
    return [d.select(u for s in g for u in spk2utt[s]) for g in groups]


def split_data(data_dir: str | os.PathLike, nj: int) -> list[Path]:
    """split_data.sh: write (if stale) and return ``data_dir/split<nj>/<1..nj>``."""
    data_dir = Path(data_dir)
    root = data_dir / f"split{nj}"
    parts = [root / str(j + 1) for j in range(nj)]
    newest = max(
        (os.path.getmtime(data_dir / f) for f in _SOURCES if (data_dir / f).is_file()), default=0
    )
    fresh = all((p / "utt2spk").is_file() for p in parts) and all(
        os.path.getmtime(p / "utt2spk") >= newest for p in parts
    )
    if not fresh:
        for part, path in zip(split_data_dir(read_data_dir(data_dir), nj), parts):
            write_data_dir(part, path)
    return parts


def split_utts(
    utts: list[str], nj: int, weights: list[float] | np.ndarray | None = None
) -> list[list[str]]:
    """``nj`` contiguous parts of the (sorted) utterances: near-equal numbers of them (Kaldi's
    split_scp.pl), or, with ``weights`` (one per utterance, e.g. its duration), near-equal
    total weight, each part at least one utterance (so jobs of a feature extraction finish
    together when utterance lengths vary along the sorted list)."""
    if nj < 1:
        raise DataError(f"--nj must be >= 1, got {nj}")
    n = len(utts)
    if nj > n:
        raise DataError(f"--nj {nj} is more than the {n} utterances; lower --nj")
    if weights is None:
        bounds = np.linspace(0, n, nj + 1).round().astype(int)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"split_utts: need {n} finite weights >= 0 with a positive sum")
        # utterance i goes to the part its weight's midpoint falls in; then every part is
        # made non-empty (a bound at least one past the previous, leaving one per later part)
        mid = (np.cumsum(w) - w / 2) / w.sum()
        inner = np.searchsorted(mid, np.arange(1, nj) / nj)
        bounds = np.concatenate([[0], inner, [n]])
        for k in range(1, nj):
            bounds[k] = min(max(bounds[k], bounds[k - 1] + 1), n - (nj - k))
    return [utts[bounds[i] : bounds[i + 1]] for i in range(nj)]
