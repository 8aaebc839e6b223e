"""Tree statistics: Kaldi's acc-tree-stats, sum-tree-stats and the Gaussian clustering objective.

Statistics are kept per *event*: the phones in the context window plus the pdf-class, e.g. for
triphones ``(left, center, right, pdf_class)``; phone 0 stands for the utterance boundary, as in
Kaldi. For a context-independent central phone (silence) only the central position is recorded:
the other positions hold -1, "key absent", as Kaldi leaves those keys out of the event so that no
question can ever be asked about them. Each event holds a frame count, the sum of the features
and the sum of their squares (Kaldi's GaussClusterable, variance floor 0.01).

:func:`kaldi_objf` is GaussClusterable::Objf in double precision; :func:`objf32` rounds it to a
float the way Kaldi's ``BaseFloat`` return value does, so that the tree builder takes the same
decisions as Kaldi's (its gains are differences of floats).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pykaldi2.hmm.ali import split_to_phones
from pykaldi2.hmm.model import GmmModel
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write

#: Kaldi's GaussClusterable variance floor (acc-tree-stats --var-floor).
VAR_FLOOR = 0.01
_LOG_2PI = float(np.log(2 * np.pi))


@dataclass
class TreeStats:
    """Sufficient statistics per context event (Kaldi's ``treeacc``).

    Attributes:
        events: (N, W + 1) int: phones at window positions 0..W-1 (-1: key absent), then the
            pdf-class. Rows are unique and sorted.
        count: (N,) frame counts.
        x1: (N, D) sums of features.
        x2: (N, D) sums of squared features.
        context_width: W; central_position: P.
    """

    events: np.ndarray
    count: np.ndarray
    x1: np.ndarray
    x2: np.ndarray
    context_width: int = 3
    central_position: int = 1

    @property
    def dim(self) -> int:
        return int(self.x1.shape[1])

    @property
    def num_frames(self) -> float:
        return float(self.count.sum())

    def pdf_class_key(self) -> int:
        """Column of ``events`` holding the pdf-class (Kaldi's key -1)."""
        return self.context_width

    def key_columns(self) -> dict[int, int]:
        """EventMap key -> column of ``events`` (positions 0..W-1, pdf-class -1 -> W)."""
        cols = {k: k for k in range(self.context_width)}
        cols[-1] = self.context_width
        return cols


def kaldi_objf(count, x1, x2, var_floor: float = VAR_FLOOR) -> np.ndarray:
    """Log-likelihood of data under its own ML diagonal Gaussian (GaussClusterable::Objf).

    Per frame ``sum_d(-0.5 var_d / floored_var_d) - 0.5 (sum_d log floored_var_d + D log 2 pi)``
    times the count, with ``floored_var = max(var, var_floor)``; 0 where count <= 0.

    Args:
        count: (...,) frame counts; x1, x2: (..., D) sums of x and x^2.

    Returns:
        (...,) float64.
    """
    count = np.asarray(count, dtype=np.float64)
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = np.asarray(x2, dtype=np.float64)
    safe = np.where(count > 0, count, 1.0)[..., None]
    mean = x1 / safe
    var = x2 / safe - mean * mean
    floored = np.maximum(var, var_floor)
    d = x1.shape[-1]
    per_frame = -0.5 * (var / floored).sum(-1) - 0.5 * (np.log(floored).sum(-1) + d * _LOG_2PI)
    return np.where(count > 0, per_frame * count, 0.0)


def objf32(count, x1, x2, var_floor: float = VAR_FLOOR) -> np.ndarray:
    """:func:`kaldi_objf` rounded to float32, as Kaldi's Objf() returns it."""
    return kaldi_objf(count, x1, x2, var_floor).astype(np.float32)


def _sum_by_row(ev: np.ndarray, x: np.ndarray):
    """Unique rows of ``ev`` (T, K) and the count, sum and sum of squares of ``x`` (T, D) per
    row: (U, K), (U,), (U, D), (U, D)."""
    uniq, inv = np.unique(ev, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], np.arange(len(uniq)))
    xs = x[order]
    return (
        uniq,
        np.diff(np.append(starts, len(inv))).astype(np.float64),
        np.add.reduceat(xs, starts, axis=0),
        np.add.reduceat(xs * xs, starts, axis=0),
    )


def tid_to_pdf_class(model: GmmModel) -> np.ndarray:
    """(num_transition_ids + 1,) int: the pdf-class of each transition-id (Kaldi's
    TransitionIdToPdfClass: the self-loop pdf-class for self-loops, else the forward one)."""
    topo = model.tm.topo
    out = np.full(model.tm.num_transition_ids + 1, -1, dtype=np.int64)
    for tid in range(1, len(out)):
        st = topo.topology_for_phone(int(model.tid2phone[tid]))[int(model.tid2hmm_state[tid])]
        out[tid] = st.self_loop_pdf_class if model.tid_is_self_loop[tid] else st.forward_pdf_class
    return out


class _EventSums:
    """Running per-event sums, as Kaldi's acc-tree-stats keeps them (a map from event to its
    GaussClusterable): an index from event to row, and the rows in fixed-size blocks so that
    growing never copies what is already there. Memory is the distinct events seen, plus one
    block; each row is added to in the order the parts arrive, so the sums are the same, bit
    for bit, as one sequential sum over the parts in that order.
    """

    BLOCK = 4096

    def __init__(self) -> None:
        self._index: dict[tuple[int, ...], int] = {}
        # per field (events, count, x1, x2): its blocks of BLOCK rows
        self._fields: tuple[list[np.ndarray], ...] = ([], [], [], [])

    def __len__(self) -> int:
        return len(self._index)

    def add(self, events: np.ndarray, count: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> None:
        """Add rows: ``events`` (U, K) int; ``count`` (U,); x1, x2 (U, D)."""
        index, b = self._index, self.BLOCK
        ev, c, s1, s2 = self._fields
        rows = np.empty(len(events), dtype=np.int64)
        for i, key in enumerate(map(tuple, events.tolist())):
            r = index.get(key)
            if r is None:
                r = index[key] = len(index)
                if r % b == 0:
                    ev.append(np.empty((b, events.shape[1]), dtype=np.int64))
                    c.append(np.zeros(b))
                    s1.append(np.zeros((b, x1.shape[1])))
                    s2.append(np.zeros((b, x1.shape[1])))
                ev[r // b][r % b] = key
            rows[i] = r
        blk, off = np.divmod(rows, b)
        for k in np.unique(blk):
            sel = blk == k
            o = off[sel]
            np.add.at(c[k], o, count[sel])  # add.at: a repeated row is added twice, not once
            np.add.at(s1[k], o, x1[sel])
            np.add.at(s2[k], o, x2[sel])

    def result(self, context_width: int, central_position: int) -> TreeStats:
        """The sums as :class:`TreeStats`, rows sorted by event (the order of
        ``np.unique(events, axis=0)``). This empties the store: each field's blocks are freed
        as soon as it is copied out, so the copy never needs twice the memory of the sums."""
        n = len(self._index)
        if not n:
            raise DataError("tree statistics: no events to sum", fix="check the alignments")

        def take(blocks: list[np.ndarray], order=None) -> np.ndarray:
            whole = np.concatenate(blocks)[:n]
            blocks.clear()
            return whole if order is None else whole[order]

        events = take(self._fields[0])
        order = np.lexsort(events.T[::-1])
        events = events[order]
        count, x1, x2 = (take(f, order) for f in self._fields[1:])
        self._index = {}
        return TreeStats(events, count, x1, x2, context_width, central_position)


class TreeStatsAccumulator:
    """acc-tree-stats over a stream of utterances: memory grows with the number of distinct
    context events seen, never with the number of frames.

    >>> acc = TreeStatsAccumulator(model, ci_phones=[1, 2])
    >>> for utt, x, ali in stream:
    ...     acc.add(utt, x, ali)
    >>> stats = acc.result()
    """

    def __init__(
        self,
        model: GmmModel,
        ci_phones: Iterable[int] = (),
        context_width: int = 3,
        central_position: int = 1,
    ) -> None:
        if not 0 <= central_position < context_width:
            raise ValueError(f"central_position {central_position} not in [0, {context_width})")
        self.model = model
        self.ci = set(int(p) for p in ci_phones)
        self.w, self.p = context_width, central_position
        self._tid2pdf_class = tid_to_pdf_class(model)
        self._sums: _EventSums | None = _EventSums()
        self.num_utts = 0

    def _events(self, ali: np.ndarray) -> np.ndarray:
        """(T, W + 1) event of every frame of one alignment."""
        w, p = self.w, self.p
        segs = split_to_phones(self.model, ali)
        phones = [ph for ph, _, _ in segs]
        ev = np.empty((len(ali), w + 1), dtype=np.int64)
        for i, (ph, start, n) in enumerate(segs):
            for pos in range(w):
                j = i + pos - p
                if ph in self.ci and pos != p:
                    ev[start : start + n, pos] = -1
                else:
                    ev[start : start + n, pos] = phones[j] if 0 <= j < len(phones) else 0
        ev[:, w] = self._tid2pdf_class[ali]
        return ev

    def add(self, utt: str, feats: np.ndarray, ali: np.ndarray) -> None:
        """Add one utterance: ``feats`` (T, D) and its alignment ``ali`` (T,) transition-ids."""
        ali = np.asarray(ali, dtype=np.int64)
        x = np.asarray(feats, dtype=np.float64)
        if len(x) != len(ali):
            raise DataError(
                f"alignment has {len(ali)} frames, features {len(x)}", utt=utt, fix="re-align"
            )
        self._sums.add(*_sum_by_row(self._events(ali), x))
        self.num_utts += 1

    def result(self) -> TreeStats:
        """The statistics, rows sorted by event; call once, at the end (it empties the
        accumulator)."""
        if self._sums is None:
            raise RuntimeError("TreeStatsAccumulator.result() was already called")
        if not len(self._sums):
            raise DataError("acc-tree-stats: no aligned utterance has features", fix="check inputs")
        sums, self._sums = self._sums, None
        return sums.result(self.w, self.p)


def acc_tree_stats(
    model: GmmModel,
    feats,
    alis,
    ci_phones: Iterable[int] = (),
    context_width: int = 3,
    central_position: int = 1,
) -> TreeStats:
    """Accumulate per-context Gaussian statistics from alignments (acc-tree-stats).

    Args:
        model: the model the alignments belong to (gives phones and HMM states per frame).
        feats: utt -> (T, D) features; alis: utt -> (T,) transition_ids (utterances without
            features are skipped).
        ci_phones: context-independent phones (silence): only their central position is
            recorded, as Kaldi's ``--ci-phones``.
        context_width, central_position: N and P (3 and 1 for triphones).

    Returns:
        :class:`TreeStats` with one row per distinct event seen.
    """
    acc = TreeStatsAccumulator(model, ci_phones, context_width, central_position)
    for utt, ali in alis.items():
        if utt in feats:
            acc.add(utt, feats[utt], ali)
    return acc.result()


def sum_tree_stats(parts: Iterable[TreeStats]) -> TreeStats:
    """The sum of several jobs' statistics (sum-tree-stats): rows of equal events are added, in
    the order of ``parts``. ``parts`` may be a generator (e.g. reading one job's file at a
    time), so that only the sum and one part are in memory."""
    sums = _EventSums()
    shape = None
    for s in parts:
        if shape is None:
            shape = (s.context_width, s.central_position)
        elif (s.context_width, s.central_position) != shape:
            raise DataError("sum-tree-stats: statistics with different context widths")
        sums.add(s.events, s.count, s.x1, s.x2)
        del s  # one part in memory at a time when parts is a generator
    if shape is None:
        raise DataError("sum-tree-stats: no statistics to sum")
    return sums.result(*shape)


def write_tree_stats(path: str | os.PathLike, stats: TreeStats) -> None:
    """Write statistics (``JOB.treeacc``) as an ``.npz``, atomically."""
    with atomic_write(path, "wb") as f:
        np.savez(
            f,
            events=stats.events,
            count=stats.count,
            x1=stats.x1,
            x2=stats.x2,
            shape=np.asarray([stats.context_width, stats.central_position]),
        )


def read_tree_stats(path: str | os.PathLike) -> TreeStats:
    """Read statistics written by :func:`write_tree_stats`."""
    try:
        with np.load(os.fspath(path)) as z:
            w, p = (int(v) for v in z["shape"])
            return TreeStats(z["events"], z["count"], z["x1"], z["x2"], w, p)
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"cannot read tree statistics: {e}", file=str(path)) from None


def sum_stats(stats: TreeStats, rows: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Summed (count, x1 (D,), x2 (D,)) of the given rows."""
    return float(stats.count[rows].sum()), stats.x1[rows].sum(0), stats.x2[rows].sum(0)
