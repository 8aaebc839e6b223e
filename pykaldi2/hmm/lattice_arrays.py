"""Raw lattices as arrays, and the transition_id tables they refer to -- numpy only.

What lattice generation (:mod:`pykaldi2.hmm.latgen`, in worker processes that never import
torch) hands to sequence training (:mod:`pykaldi2.losses.lattice`): one raw state-level lattice
(Kaldi's ``Lattice``: acyclic, time-synchronous, one transition_id per emitting arc) as flat
arrays with each state's topological level and frame (Kaldi's ``LatticeStateTimes``), and the
transition model's transition_id -> pdf / phone tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pykaldi2.utils.errors import DataError

__all__ = ["LatticeArrays", "TransitionInfo", "lattice_state_times"]


@dataclass
class TransitionInfo:
    """transition_id tables of a transition model (picklable, for workers and tasks).

    Attributes:
        tid2pdf: (num_transition_ids + 1,) int64 transition_id -> pdf_id (index 0: -1).
        tid2phone: (num_transition_ids + 1,) int64 transition_id -> phone (index 0: 0).
    """

    tid2pdf: np.ndarray
    tid2phone: np.ndarray

    @classmethod
    def from_trans_model(cls, tm) -> TransitionInfo:
        """From a ``khg.TransitionModel``."""
        n = int(tm.num_transition_ids)
        pdf = np.asarray(tm.transition_id_to_pdf_array(), dtype=np.int64).copy()
        pdf[0] = -1
        phone = np.zeros(n + 1, dtype=np.int64)
        phone[1:] = [tm.transition_id_to_phone(t) for t in range(1, n + 1)]
        return cls(pdf, phone)

    @property
    def num_pdfs(self) -> int:
        return int(self.tid2pdf.max()) + 1

    def check_tids(self, tids: np.ndarray, what: str, utt: str = "") -> None:
        tids = np.asarray(tids)
        if tids.size and (tids.min() < 0 or tids.max() >= self.tid2pdf.shape[0]):
            raise DataError(
                f"{what} has transition_ids outside [0, {self.tid2pdf.shape[0] - 1}]",
                utt=utt or None,
                fix="lattices and alignments must come from the same transition model",
            )


def lattice_state_times(
    num_states: int, start: int, src: np.ndarray, dst: np.ndarray, emitting: np.ndarray, utt=""
) -> tuple[np.ndarray, np.ndarray]:
    """Topological level and frame of every state (Kaldi's ``LatticeStateTimes``), vectorized.

    Args:
        src, dst: (A,) arc states; emitting: (A,) bool, the arc consumes a frame.
    Returns:
        level (S,): longest arc count from ``start`` (every arc goes to a higher level);
        time (S,): frames consumed before the state.
    Raises DataError for cycles, states unreachable from ``start`` or arcs that do not agree on
    a state's time (the lattice is not time-synchronous).
    """
    level = np.full(num_states, -1, dtype=np.int64)
    time = np.zeros(num_states, dtype=np.int64)
    indeg = np.bincount(dst, minlength=num_states)
    roots = np.flatnonzero(indeg == 0)
    if num_states and (roots.size != 1 or roots[0] != start):
        raise DataError(
            f"lattice has {roots.size} states without incoming arcs (start {start})",
            utt=utt or None,
            fix="lattices must be connected from the start state (raw decoder lattices are)",
        )
    by_src = np.argsort(src, kind="stable")
    first = np.searchsorted(src[by_src], np.arange(num_states + 1))
    step = emitting.astype(np.int64)
    frontier, depth = roots, 0
    while frontier.size:
        level[frontier] = depth
        counts = first[frontier + 1] - first[frontier]
        arcs = by_src[np.repeat(first[frontier], counts) + _ranges(counts)]
        d = dst[arcs]
        np.maximum.at(time, d, time[src[arcs]] + step[arcs])
        np.subtract.at(indeg, d, 1)
        frontier = np.unique(d[indeg[d] == 0])
        depth += 1
    if (level < 0).any():
        raise DataError(
            f"lattice has a cycle through {int((level < 0).sum())} states", utt=utt or None
        )
    if (time[dst] != time[src] + step).any():
        raise DataError(
            "lattice is not time-synchronous (paths reach a state after different frame counts)",
            utt=utt or None,
            fix="use raw lattices whose arcs carry one transition_id per frame",
        )
    return level, time


def _ranges(counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(c) for c in counts])``, vectorized."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


@dataclass
class LatticeArrays:
    """One raw lattice (A arcs, S states), picklable; what the generation workers return.

    Attributes:
        num_states: S.  start: the start state.
        src, dst: (A,) int64 states.  tid: (A,) int64 transition_ids (0: epsilon).
        word: (A,) int64 word ids (0: epsilon).
        graph_cost: (A,) float64.  ac_cost: (A,) float64 unscaled acoustic costs of the model
            that generated the lattice (information only: training rescoring replaces them).
        final_cost: (S,) float64 final graph cost (``inf``: not final).
        level, time: (S,) int64, filled by :func:`lattice_state_times` on construction.
        utt: utterance id (for error messages).
    """

    num_states: int
    start: int
    src: np.ndarray
    dst: np.ndarray
    tid: np.ndarray
    word: np.ndarray
    graph_cost: np.ndarray
    ac_cost: np.ndarray
    final_cost: np.ndarray
    utt: str = ""
    level: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    time: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.num_states == 0:
            raise DataError("empty lattice", utt=self.utt or None, fix="regenerate the lattice")
        if self.level is None or self.time is None:
            self.level, self.time = lattice_state_times(
                self.num_states, self.start, self.src, self.dst, self.tid != 0, self.utt
            )
        finals = np.flatnonzero(np.isfinite(self.final_cost))
        if finals.size == 0 or (self.time[finals] != self.time[finals[0]]).any():
            raise DataError(
                "lattice has no final state, or final states at different frames",
                utt=self.utt or None,
                fix="decode with allow_partial, or drop the utterance",
            )

    @property
    def num_arcs(self) -> int:
        return int(self.src.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.time[np.flatnonzero(np.isfinite(self.final_cost))[0]])

    @property
    def frame(self) -> np.ndarray:
        """(A,) frame of each arc (the time of its source state)."""
        return self.time[self.src]
