"""Kaldi's PushSpecial (fstext/push-special.cc, the fstpushspecial binary).

Pushes the weights of a weighted FST so that every state "sums to" the same total (arcs plus
final-prob, in the log semiring), without changing the weighted language. Ordinary weight
pushing cannot do this for backoff LMs (their total weight can be infinite); this always works.

With ``P`` the matrix of transition probabilities (``p_st`` = sum of exp(-w) over arcs s -> t;
a final-prob of s counts as a transition s -> start), the power method finds the top
eigenvector ``v``: ``v <- P v + 0.1 v`` (the 0.1 keeps linear FSTs, whose eigenvalues share a
magnitude, converging), renormalised to unit length, until the per-state sums
``sum_t p_st v_t / v_s`` agree to within ``delta`` (log of max / min, checked every 5
iterations; at most 200). Then, with ``c = -log v``, every arc weight becomes
``w + c_t - c_s`` and every final weight ``f + c_start - c_s``: each state sums to the top
eigenvalue of ``P`` and the weight of every complete path is unchanged.

mkgraph.sh runs it on LG (``fstpushspecial``), and chain-make-den-fst on the denominator graph.

:func:`push_special` works on a ``kaldifst.StdVectorFst`` in place; :func:`push_special_weights`
is the same on arrays (vectorised), :func:`push_special_weights_ref` a loop-by-loop reference
that follows Kaldi's code.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: OpenFst's kDelta, Kaldi's default --delta of fstpushspecial.
DELTA = 1.0 / 1024.0
MAX_ITER = 200


@dataclass
class FstArrays:
    """A StdVectorFst's arcs and finals as arrays.

    Attributes:
        start: start state.
        src, dst: (A,) int64 source and destination of every arc (arcs in state order).
        ilabel, olabel: (A,) int64.
        weight: (A,) float32 tropical weights.
        final: (S,) float32 final weights (``inf``: not final).
    """

    start: int
    src: np.ndarray
    dst: np.ndarray
    ilabel: np.ndarray
    olabel: np.ndarray
    weight: np.ndarray
    final: np.ndarray

    @property
    def num_states(self) -> int:
        return len(self.final)

    @classmethod
    def from_fst(cls, fst) -> FstArrays:
        from pykaldi2.kaldi import kaldifst

        rows, final = [], np.empty(fst.num_states, dtype=np.float32)
        for s in range(fst.num_states):
            final[s] = fst.final(s).value
            rows.extend(
                (s, a.nextstate, a.ilabel, a.olabel, a.weight.value)
                for a in kaldifst.ArcIterator(fst, s)
            )
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        return cls(
            start=int(fst.start),
            src=arr[:, 0].astype(np.int64),
            dst=arr[:, 1].astype(np.int64),
            ilabel=arr[:, 2].astype(np.int64),
            olabel=arr[:, 3].astype(np.int64),
            weight=arr[:, 4].astype(np.float32),
            final=final,
        )


def _test_accuracy(src, dst, p_arc, p_final, occ, start, num_states) -> float:
    sums = np.bincount(src, weights=p_arc * occ[dst] / occ[src], minlength=num_states)
    sums += p_final * occ[start] / occ
    return math.log(sums.max() / sums.min())


def push_special_weights(
    a: FstArrays, delta: float = DELTA
) -> tuple[np.ndarray, np.ndarray, float]:
    """PushSpecial on arrays: ``(arc weights (A,) float32, final weights (S,) float32, total)``:
    the new weights of ``a``'s arcs (same order) and states, and the probability every state
    now sums to (the top eigenvalue of P; the power method's lambda is that + 0.1)."""
    n, start = a.num_states, a.start
    if n == 0:
        return a.weight.copy(), a.final.copy(), 1.0
    p_arc = np.exp(-a.weight.astype(np.float64))
    p_final = np.exp(-a.final.astype(np.float64))
    occ = np.full(n, 1.0 / math.sqrt(n))
    lam = 0.0
    for it in range(MAX_ITER):
        new = 0.1 * occ + np.bincount(a.src, weights=occ[a.dst] * p_arc, minlength=n)
        new += occ[start] * p_final
        lam = math.sqrt(float(new @ new))
        occ = new * (1.0 / lam)
        if it % 5 == 0 and it > 0:
            if _test_accuracy(a.src, a.dst, p_arc, p_final, occ, start, n) <= delta:
                break
    else:
        log.warning(
            "push-special: finished %d iterations without converging; output will be inaccurate",
            MAX_ITER,
        )
    return _modify(a, occ) + (lam - 0.1,)


def _modify(a: FstArrays, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore"):
        cost = -np.log(occ)
    if not np.all(np.isfinite(cost)):
        log.warning("push-special: NaN or inf potentials (states without a path to the end?)")
    # Kaldi: arc weight = float(w + c_t - c_s) in double; final = f + float(c_start - c_s)
    weight = ((a.weight.astype(np.float64) + cost[a.dst]) - cost[a.src]).astype(np.float32)
    final = a.final + (cost[a.start] - cost).astype(np.float32)
    return weight, final.astype(np.float32)


def push_special_weights_ref(
    a: FstArrays, delta: float = DELTA
) -> tuple[np.ndarray, np.ndarray, float]:
    """Slow reference of :func:`push_special_weights`: PushSpecialClass line by line
    (predecessor lists, the same loops and order of summation)."""
    n, start = a.num_states, a.start
    if n == 0:
        return a.weight.copy(), a.final.copy(), 1.0
    pred: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    out_arcs: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for s, t, w in zip(a.src.tolist(), a.dst.tolist(), a.weight.tolist()):
        pred[t].append((s, math.exp(-w)))
        out_arcs[s].append((t, w))
    for s in range(n):
        f = math.exp(-float(a.final[s]))
        if f != 0.0:
            pred[start].append((s, f))
    occ = [1.0 / math.sqrt(n)] * n

    def accuracy() -> float:
        sums = []
        for s in range(n):
            tot = sum(math.exp(-w) * occ[t] / occ[s] for t, w in out_arcs[s])
            tot += math.exp(-float(a.final[s])) * occ[start] / occ[s]
            sums.append(tot)
        return math.log(max(sums) / min(sums))

    lam = 0.0
    for it in range(MAX_ITER):
        new = [0.1 * x for x in occ]
        for i in range(n):
            for j, p in pred[i]:
                new[j] += occ[i] * p
        lam = math.sqrt(sum(x * x for x in new))
        occ = [x / lam for x in new]
        if it % 5 == 0 and it > 0 and accuracy() <= delta:
            break
    return _modify(a, np.asarray(occ)) + (lam - 0.1,)


def push_special(fst, delta: float = DELTA) -> float:
    """fstpushspecial on a ``kaldifst.StdVectorFst``, in place; returns the total every state
    now sums to (a probability; 1 for a stochastic FST)."""
    from pykaldi2.kaldi import kaldifst

    if fst.num_states == 0:
        return 1.0
    a = FstArrays.from_fst(fst)
    weight, final, lam = push_special_weights(a, delta)
    bounds = np.searchsorted(a.src, np.arange(a.num_states + 1))
    for s in range(a.num_states):
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        if hi > lo:
            fst.delete_arcs(s, hi - lo)
            for k in range(lo, hi):
                fst.add_arc(
                    s,
                    kaldifst.StdArc(
                        int(a.ilabel[k]), int(a.olabel[k]), float(weight[k]), int(a.dst[k])
                    ),
                )
        if np.isfinite(a.final[s]):
            fst.set_final(s, float(final[s]))
    return lam
