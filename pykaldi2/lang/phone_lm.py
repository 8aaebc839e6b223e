"""chain-est-phone-lm: the un-smoothed, hard-backoff phone n-gram of LF-MMI training.

The LM is a set of history states and transitions between them, with no backoff arcs (as in
Kaldi's chain/language-model.cc, re-implemented here):

* Counts: every phone sequence is preceded by the history ``(0,)`` (phone 0 = BOS) and ends with
  phone 0 (= EOS, the final probability). A count ``c(h, p)`` is added at the history ``h`` of
  the last ``ngram_order - 1`` symbols.
* Pruning ("hard backoff"): a history state with ``len(h) >= no_prune_ngram_order`` may be
  removed by merging its counts into its backoff state ``h[1:]``, if no longer history still
  needs it. States are removed in order of least log-likelihood loss of the training counts
  until ``#states(len == no_prune_ngram_order - 1) + num_extra_lm_states`` states remain.
* FST: one state per history with a nonzero count; from state ``h`` an arc per seen phone ``p``
  with cost ``-log c(h, p) / c(h)`` to the longest remaining suffix of ``h + (p,)``; the final
  cost is ``-log c(h, 0) / c(h)``; the start state is that of ``(0,)``.

    >>> fst = chain_est_phone_lm([[1, 2, 3], [1, 3]], ngram_order=3)   # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from dataclasses import dataclass, field

from pykaldi2.kaldi import kaldifst
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import get_logger

__all__ = ["PhoneLmOptions", "PhoneLmEstimator", "chain_est_phone_lm"]

log = get_logger(__name__)

History = tuple[int, ...]


@dataclass
class PhoneLmOptions(ConfigMixin):
    """Options of chain-est-phone-lm (Kaldi's LanguageModelOptions; recipes use 2000 extra)."""

    ngram_order: int = 4
    no_prune_ngram_order: int = 3
    num_extra_lm_states: int = 2000

    def __post_init__(self) -> None:
        if self.ngram_order < 2:
            raise Pykaldi2Error(f"ngram_order must be >= 2, got {self.ngram_order}")
        if not 1 <= self.no_prune_ngram_order <= self.ngram_order:
            raise Pykaldi2Error(
                f"no_prune_ngram_order must be in [1, ngram_order={self.ngram_order}], "
                f"got {self.no_prune_ngram_order}"
            )
        if self.num_extra_lm_states < 0:
            raise Pykaldi2Error("num_extra_lm_states must be >= 0")


def _loglike(counts: dict[int, int]) -> float:
    tot = sum(counts.values())
    return sum(c * math.log(c / tot) for c in counts.values())


@dataclass
class PhoneLmEstimator:
    """Accumulates phone n-gram counts and estimates the pruned phone LM (see module doc)."""

    opts: PhoneLmOptions = field(default_factory=PhoneLmOptions)
    counts: dict[History, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))

    def add_counts(self, phones: list[int], seq_id: str | None = None) -> None:
        """Add the n-gram counts of one phone sequence (phone ids > 0)."""
        hist: History = (0,)
        for i, p in enumerate(phones):
            if not isinstance(p, int) or p <= 0:
                raise DataError(
                    f"phone {p!r} at position {i} is not a positive integer",
                    utt=seq_id,
                    fix="map phones to ids > 0 (0 is reserved for BOS/EOS)",
                )
            self._inc(hist, p)
            hist = (hist + (p,))[-(self.opts.ngram_order - 1) :]
        self._inc(hist, 0)

    def _inc(self, hist: History, p: int) -> None:
        c = self.counts[hist]
        c[p] = c.get(p, 0) + 1
        # Every suffix down to the unprunable length must exist as a (possibly empty) state.
        for k in range(1, len(hist) - self.opts.no_prune_ngram_order + 2):
            self.counts.setdefault(hist[k:], {})

    # -- pruning --------------------------------------------------------------------------
    def _needed_by_longer(self, h: History) -> bool:
        """Some longer history backing off through ``h``, or reached from ``h``, has counts."""
        if self._active_children.get(h, 0) > 0:
            return True
        if len(h) == self.opts.ngram_order - 1:
            return False
        for p in self.counts[h]:
            if p != 0:
                nxt = h + (p,)
                if nxt in self.counts and (self.counts[nxt] or self._active_children.get(nxt, 0)):
                    return True
        return False

    def _backoff_allowed(self, h: History) -> bool:
        return (
            len(h) >= self.opts.no_prune_ngram_order
            and bool(self.counts[h])
            and not self._needed_by_longer(h)
        )

    def _like_change(self, h: History) -> float:
        """Log-likelihood change (<= 0) of merging ``h`` into ``h[1:]``."""
        mine, theirs = self.counts[h], self.counts[h[1:]]
        if not theirs:  # prefer backing off the smallest states into empty ones first
            return -1e-15 * sum(mine.values())
        merged = dict(theirs)
        for p, c in mine.items():
            merged[p] = merged.get(p, 0) + c
        return min(0.0, _loglike(merged) - _loglike(mine) - _loglike(theirs))

    def _back_off(self, h: History) -> None:
        parent = self.counts[h[1:]]
        was_empty = not parent
        for p, c in self.counts[h].items():
            parent[p] = parent.get(p, 0) + c
        self.counts[h] = {}
        self._num_active -= 0 if was_empty else 1
        # h no longer needs its backoff state to stay (it has no counts and no children).
        self._active_children[h[1:]] -= 1

    def _prune(self) -> None:
        o = self.opts
        self._active_children: dict[History, int] = defaultdict(int)
        for h in sorted(self.counts, key=len, reverse=True):  # longest first
            if len(h) >= o.no_prune_ngram_order and (self.counts[h] or self._active_children[h]):
                self._active_children[h[1:]] += 1
        self._num_active = sum(1 for c in self.counts.values() if c)
        num_basic = sum(1 for h in self.counts if len(h) == o.no_prune_ngram_order - 1)
        target = num_basic + o.num_extra_lm_states
        start = self._num_active
        # Like Kaldi: 4 stages with progressively closer targets, re-scoring all states between.
        for stage in range(1, 5):
            stage_target = start + (target - start) * stage // 4
            heap = [(-self._like_change(h), h) for h in self.counts if self._backoff_allowed(h)]
            heapq.heapify(heap)
            while self._num_active > stage_target and heap:
                cost, h = heapq.heappop(heap)
                if not self._backoff_allowed(h):
                    continue
                new_cost = -self._like_change(h)
                if not math.isclose(new_cost, cost, rel_tol=1e-6, abs_tol=1e-9):
                    heapq.heappush(heap, (new_cost, h))  # stale: its backoff state changed
                    continue
                parent = h[1:]
                self._back_off(h)
                if self._backoff_allowed(parent):
                    heapq.heappush(heap, (-self._like_change(parent), parent))
        log.info(
            "phone LM: %d states with counts before pruning, target %d (%d basic + %d extra), "
            "%d after",
            start, target, num_basic, o.num_extra_lm_states, self._num_active,
        )  # fmt: skip

    # -- output ---------------------------------------------------------------------------
    def _find_state(self, h: History) -> History:
        while h not in self.counts or not self.counts[h]:
            if not h:
                raise Pykaldi2Error("phone LM: no state for a history (internal error)")
            h = h[1:]
        return h

    def estimate(self):
        """Prune and return the LM as a ``StdVectorFst`` acceptor (costs ``-log p``)."""
        if not self.counts:
            raise Pykaldi2Error("chain_est_phone_lm: no phone sequences were given")
        # one order whatever the order of the sequences (float sums in the pruning follow it)
        self.counts = defaultdict(
            dict, {h: dict(sorted(c.items())) for h, c in sorted(self.counts.items())}
        )
        self._prune()
        states = sorted(h for h, c in self.counts.items() if c)
        index = {h: i for i, h in enumerate(states)}
        fst = kaldifst.StdVectorFst()
        for _ in states:
            fst.add_state()
        fst.start = index[self._find_state((0,))]
        tot_logprob, tot_count = 0.0, 0
        for h in states:
            cnt = self.counts[h]
            tot = sum(cnt.values())
            for p in sorted(cnt):
                lp = math.log(cnt[p] / tot)
                tot_logprob += cnt[p] * lp
                tot_count += cnt[p]
                if p == 0:
                    fst.set_final(index[h], -lp)
                else:
                    dest = self._find_state((h + (p,))[-(self.opts.ngram_order - 1) :])
                    fst.add_arc(index[h], kaldifst.StdArc(p, p, -lp, index[dest]))
        log.info(
            "phone LM: %d states, %d arcs, training perplexity %.3f",
            len(states), sum(fst.num_arcs(s) for s in range(fst.num_states)),
            math.exp(-tot_logprob / max(tot_count, 1)),
        )  # fmt: skip
        return fst


def chain_est_phone_lm(
    phone_seqs: list[list[int]],
    ngram_order: int = 4,
    no_prune_ngram_order: int = 3,
    num_extra_lm_states: int = 2000,
):
    """chain-est-phone-lm: estimate the pruned phone n-gram; returns a ``StdVectorFst``.

    ``phone_seqs`` are the training utterances as phone-id sequences (e.g. from
    :func:`pykaldi2.lang.chain_supervision.split_to_phones` of the alignments).
    """
    est = PhoneLmEstimator(PhoneLmOptions(ngram_order, no_prune_ngram_order, num_extra_lm_states))
    for i, seq in enumerate(phone_seqs):
        est.add_counts(list(seq), seq_id=f"sequence {i}")
    return est.estimate()
