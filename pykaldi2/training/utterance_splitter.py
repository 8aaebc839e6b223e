"""Kaldi's UtteranceSplitter (nnet3/nnet-example-utils.cc): which chunks an utterance's egs get.

The chunk widths (``--num-frames``, e.g. Kaldi's chain recipes' ``140,100,160``) are rounded up
to multiples of the frame subsampling factor (141, 102, 162). The first is the *principal*
width, which may repeat; a split of an utterance is any number of principal chunks plus at most
two of the others. For every utterance length the splits whose total is closest to it are kept
(cost: total - length when the chunks overrun, twice length - total when they leave frames out;
splits with a chunk longer than the utterance are not allowed; every split within 2 of the best
cost is a candidate), and one is drawn at random, in increasing or (at random) decreasing
order. The gap (or overlap) between the chunks' total and the utterance is spread at random:
overlaps go between chunks in proportion to the smaller neighbour, gaps anywhere (before,
between, after) evenly. All positions are multiples of the subsampling factor; the last chunk
may run up to ``factor - 1`` frames past the end. Utterances shorter than the smallest chunk
get no chunks (Kaldi drops them).

    >>> s = UtteranceSplitter([140, 100, 160], frame_subsampling_factor=3)
    >>> s.chunks(500, np.random.default_rng(0))       # [(first_frame, num_frames), ...]
    [(0, 162), (162, 141), (303, 198)...]              # doctest: +SKIP

:func:`splits_reference` enumerates the candidate splits of one length by brute force.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

__all__ = ["UtteranceSplitter", "round_up_num_frames", "splits_reference"]


def round_up_num_frames(num_frames: Sequence[int], factor: int) -> list[int]:
    """Kaldi's ExampleGenerationConfig::ComputeDerived: each width up to a multiple of factor."""
    out = []
    for n in num_frames:
        if n <= 0:
            raise ValueError(f"chunk widths must be > 0, got {list(num_frames)}")
        out.append(n if n % factor == 0 else factor * (n // factor + 1))
    return out


def _cost(total: float, u: int, largest: int) -> float:
    if u < largest:
        return float("inf")
    return total - u if total > u else 2.0 * (u - total)


class UtteranceSplitter:
    """Chunks for utterances of a given length (see the module docstring)."""

    COST_THRESHOLD = 1.9999

    def __init__(self, num_frames: Sequence[int], frame_subsampling_factor: int = 1) -> None:
        self.factor = int(frame_subsampling_factor)
        if self.factor < 1:
            raise ValueError("frame_subsampling_factor must be >= 1")
        self.num_frames = round_up_num_frames(num_frames, self.factor)
        self.primary = self.num_frames[0]
        self.max_length = 2 * max(self.num_frames) + self.primary
        self._splits = self._init_splits()
        self._for_length = self._init_split_for_length()

    def _init_splits(self) -> list[tuple[int, ...]]:
        """Every split up to a total of max_length + primary (InitSplits)."""
        ceiling = self.max_length + self.primary
        found: set[tuple[int, ...]] = set()
        nf = self.num_frames
        for i in range(len(nf)):
            for j in range(len(nf)):
                vec = ([nf[i]] if i > 0 else []) + ([nf[j]] if j > 0 else [])
                while sum(vec) <= ceiling:
                    if vec:
                        found.add(tuple(sorted(vec)))
                    vec = sorted(vec + [self.primary])
        return sorted(found)

    def _init_split_for_length(self) -> list[list[tuple[int, ...]]]:
        out: list[list[tuple[int, ...]]] = []
        for u in range(self.max_length + 1):
            costs = [_cost(sum(s), u, max(s)) for s in self._splits]
            best = min(costs)
            if best == float("inf"):
                out.append([])
                continue
            out.append([s for s, c in zip(self._splits, costs) if c < best + self.COST_THRESHOLD])
        return out

    def candidate_splits(self, length: int) -> tuple[int, list[tuple[int, ...]]]:
        """(number of extra principal chunks, the candidate splits of the remaining length)."""
        repeats = 0
        while length > self.max_length:
            length -= self.primary
            repeats += 1
        return repeats, self._for_length[length]

    def chunk_sizes(self, length: int, rng: np.random.Generator) -> list[int]:
        """Kaldi's GetChunkSizesForUtterance ([] if the utterance is too short)."""
        repeats, splits = self.candidate_splits(length)
        if not splits:
            return []
        sizes = sorted(list(splits[int(rng.integers(len(splits)))]) + [self.primary] * repeats)
        if rng.integers(2) == 0:
            sizes.reverse()
        return sizes

    def gaps(self, length: int, sizes: list[int], rng: np.random.Generator) -> list[int]:
        """Kaldi's GetGapSizes (at the subsampled rate, scaled back): the gap (negative:
        overlap) before each chunk."""
        f = self.factor
        if f > 1:
            reduced = self._gaps((length + f - 1) // f, [s // f for s in sizes], rng)
            return [g * f for g in reduced]
        return self._gaps(length, sizes, rng)

    @staticmethod
    def _gaps(length: int, sizes: list[int], rng: np.random.Generator) -> list[int]:
        n = len(sizes)
        total_gap = length - sum(sizes)
        if total_gap < 0:
            if n == 1:
                raise ValueError(f"chunk of {sizes[0]} frames in an utterance of {length}")
            mags = [min(sizes[i], sizes[i + 1]) for i in range(n - 1)]
            overlaps = _distribute_randomly(total_gap, mags)
            return [0] + overlaps
        gaps = _distribute_uniform(total_gap, n + 1, rng)
        return gaps[:n]

    def chunks(self, length: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """``[(first_frame, num_frames), ...]`` in input frames (GetChunksForUtterance)."""
        sizes = self.chunk_sizes(length, rng)
        if not sizes:
            return []
        out, t = [], 0
        for gap, size in zip(self.gaps(length, sizes, rng), sizes):
            t += gap
            out.append((t, size))
            t += size
        if t - length >= self.factor:
            raise AssertionError(f"chunks end at {t}, the utterance at {length}")
        return out


def _distribute_uniform(n: int, size: int, rng: np.random.Generator) -> list[int]:
    """``n`` split into ``size`` near-equal parts, shuffled (DistributeRandomlyUniform)."""
    common, rem = divmod(n, size)
    vec = [common + 1] * rem + [common] * (size - rem)
    rng.shuffle(vec)
    return vec


def _distribute_randomly(n: int, magnitudes: list[int]) -> list[int]:
    """``n`` (may be negative) split in proportion to ``magnitudes`` (DistributeRandomly).

    Kaldi declares the fractional parts as int32, so they are all 0 and the frames left after
    rounding down go to the first entries in order; done the same here."""
    if n < 0:
        return [-v for v in _distribute_randomly(-n, magnitudes)]
    total = float(sum(magnitudes))
    counts = [int(n * m / total) for m in magnitudes]
    for i in range(n - sum(counts)):
        counts[i] += 1
    return counts


def splits_reference(num_frames: Sequence[int], factor: int, length: int) -> set[tuple[int, ...]]:
    """Brute force: every split (principal chunks + at most two others) whose cost for
    ``length`` is within the threshold of the best (for lengths up to the splitter's table)."""
    nf = round_up_num_frames(num_frames, factor)
    primary, others = nf[0], nf[1:]
    cands = set()
    for k in range(0, 2 * max(nf) // primary + 4):
        for r in range(3):
            for extra in itertools.combinations_with_replacement(others, r):
                s = tuple(sorted([primary] * k + list(extra)))
                if s:
                    cands.add(s)
    costs = {s: _cost(sum(s), length, max(s)) for s in cands}
    best = min(costs.values())
    if best == float("inf"):
        return set()
    return {s for s, c in costs.items() if c < best + UtteranceSplitter.COST_THRESHOLD}
