"""fstpushspecial: Kaldi's PushSpecial (fstext/push-special.cc), fast and reference versions.

Ordinary weight pushing (OpenFst's Push, in the log semiring) fails on FSTs whose total weight
is infinite, which backoff LMs and cyclic HMM graphs can be. Kaldi's PushSpecial instead makes
every state "sum to" the same value ``lambda``: it finds the dominant eigenvector ``v`` of the
(probability-semiring) transition matrix ``P`` with the power method, where ``P[i, j]`` is the
total probability of the arcs ``i -> j`` and a final probability of ``i`` counts as an arc back
to the start state, and reweights ``p'[i, j] = p[i, j] * v[j] / v[i]`` (final probabilities by
``v[start] / v[i]``). Path weights from the start to a final state are unchanged; the graph
becomes as close to stochastic as it can be. It is used by mkgraph.sh (fstpushspecial on HCLG)
and by chain-make-den-fst (:func:`pykaldi2.lang.den_fst.den_graph_minimize_wrapper`).

Kaldi's iteration, reproduced here step for step (so that a run which stops before converging,
as it does on every AN4 den graph, gives the same weights):

    v <- 1 / sqrt(S) for every state
    repeat up to 200 times:
        v <- (P v + 0.1 v) / |P v + 0.1 v|          (the 0.1 v term handles periodic graphs)
        every 5th iteration: stop if log(max_i r_i / min_i r_i) <= delta,
            r_i = sum_j p[i, j] v[j] / v[i]         (the row sums after reweighting)
    cost'(i -> j) = cost(i -> j) - log v[j] + log v[i]

Arc and final probabilities are ``expf`` of the float costs (Kaldi's ``Exp`` of a float), the
potentials double, the new costs rounded to float as Kaldi's TropicalWeight stores them.
:func:`push_special_potentials` is the vectorized version (it adds in Kaldi's order, so it
equals the reference to the last bit); :func:`push_special_reference` is the literal loop.

    >>> converged = push_special(fst)                      # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pykaldi2.kaldi import kaldifst
from pykaldi2.utils.log import get_logger

__all__ = [
    "K_DELTA",
    "PUSH_SPECIAL_DELTA",
    "FstArcs",
    "fst_arcs",
    "push_special",
    "push_special_potentials",
    "push_special_reference",
    "set_weights",
]

log = get_logger(__name__)

#: OpenFst's kDelta (1/1024, a float).
K_DELTA = 1.0 / 1024.0
#: The delta Kaldi passes to PushSpecial (fstpushspecial's default, CreateDenominatorFst's
#: ``kDelta * 0.01``), as the float it is in C++.
PUSH_SPECIAL_DELTA = float(np.float32(K_DELTA * 0.01))
#: Kaldi's iteration limit.
MAX_ITERS = 200


@dataclass
class FstArcs:
    """A ``StdVectorFst`` as arrays, arcs in the FST's order (state by state).

    Attributes:
        src, dst, ilabel, olabel: (A,) int64.
        cost: (A,) float32 tropical weights (``-log`` probabilities).
        final: (S,) float32 final costs, ``inf`` for non-final states.
        start: the start state (-1 for an empty FST).
    """

    src: np.ndarray
    dst: np.ndarray
    ilabel: np.ndarray
    olabel: np.ndarray
    cost: np.ndarray
    final: np.ndarray
    start: int

    @property
    def num_states(self) -> int:
        return int(self.final.shape[0])


def fst_arcs(fst) -> FstArcs:
    """Read every arc and final weight of ``fst`` into :class:`FstArcs`."""
    n = fst.num_states
    rows: list[tuple[int, int, int, float, int]] = []
    final = np.empty(n, dtype=np.float32)
    for s in range(n):
        for a in kaldifst.ArcIterator(fst, s):
            rows.append((s, a.ilabel, a.olabel, a.weight.value, a.nextstate))
        final[s] = fst.final(s).value
    if rows:
        src, il, ol, w, dst = (np.asarray(c) for c in zip(*rows))
    else:
        src = il = ol = dst = np.zeros(0, np.int64)
        w = np.zeros(0, np.float32)
    return FstArcs(
        src=src.astype(np.int64),
        dst=dst.astype(np.int64),
        ilabel=il.astype(np.int64),
        olabel=ol.astype(np.int64),
        cost=w.astype(np.float32),
        final=final,
        start=int(fst.start),
    )


def set_weights(fst, cost: np.ndarray, final: np.ndarray) -> None:
    """In place: give the arcs of ``fst`` (in :func:`fst_arcs` order) the costs ``cost`` (A,)
    and the states the final costs ``final`` (S,) (``inf``: not final)."""
    k = 0
    for s in range(fst.num_states):
        n = fst.num_arcs(s)
        if n:
            arcs = [(a.ilabel, a.olabel, a.nextstate) for a in kaldifst.ArcIterator(fst, s)]
            fst.delete_arcs(s, n)
            for (i, o, d), w in zip(arcs, cost[k : k + n].tolist()):
                fst.add_arc(s, kaldifst.StdArc(i, o, w, d))
            k += n
        fst.set_final(s, float(final[s]))
    if k != len(cost):
        raise ValueError(f"set_weights: {len(cost)} costs for an FST with {k} arcs")


def _expf(cost: np.ndarray) -> np.ndarray:
    """Kaldi's ``Exp(-cost)`` of a float cost: the float exponential, as a double."""
    with np.errstate(over="ignore"):
        return np.exp(-cost.astype(np.float64)).astype(np.float32).astype(np.float64)


def push_special_potentials(
    src: np.ndarray,
    dst: np.ndarray,
    cost: np.ndarray,
    final: np.ndarray,
    start: int,
    delta: float = PUSH_SPECIAL_DELTA,
    max_iters: int = MAX_ITERS,
) -> tuple[np.ndarray, bool]:
    """Kaldi's PushSpecial potentials: ``(-log v (S,) float64, converged)``.

    Args:
        src, dst: (A,) arc states; cost: (A,) float32 arc costs; final: (S,) float32 final
            costs (``inf`` for non-final states); start: the start state.
    """
    n = final.shape[0]
    p_arc, p_final = _expf(cost), _expf(final)
    # Kaldi's pred_ lists: for each state t the arcs into it, and for the start state the
    # final probs too, in the order of (state, its arcs, its final prob). The update adds
    # occ[t] * p into new_occ[source] for t = 0, 1, ... in that order.
    fin_states = np.flatnonzero(p_final != 0.0)
    order_key = np.concatenate([src * 2, fin_states * 2 + 1])  # a state's arcs, then its final
    targets = np.concatenate([dst, np.full(len(fin_states), start, dtype=np.int64)])
    sources = np.concatenate([src, fin_states])
    probs = np.concatenate([p_arc, p_final[fin_states]])
    seq = np.lexsort((np.arange(len(order_key)), order_key))  # insertion order of the C++ code
    by_target = seq[np.argsort(targets[seq], kind="stable")]
    upd_src, upd_tgt, upd_p = sources[by_target], targets[by_target], probs[by_target]
    # TestAccuracy: per state, its arcs in order then its final prob
    acc_arc_src, acc_arc_dst, acc_arc_p = src, dst, p_arc
    occ = np.full(n, 1.0 / math.sqrt(n))
    converged = False
    it = 0
    for it in range(max_iters):
        new = 0.1 * occ
        np.add.at(new, upd_src, occ[upd_tgt] * upd_p)
        lam = math.sqrt(float(np.cumsum(new * new)[-1]))
        occ = new * (1.0 / lam)
        if it % 5 == 0 and it > 0:
            sums = np.zeros(n)
            np.add.at(sums, acc_arc_src, acc_arc_p * occ[acc_arc_dst] / occ[acc_arc_src])
            sums += p_final * occ[start] / occ
            with np.errstate(divide="ignore"):
                err = math.log(float(sums.max()) / float(sums.min())) if n else 0.0
            if err <= delta:
                converged = True
                break
    if not converged:
        log.info(
            "push-special: finished %d iterations without converging (as Kaldi's does on "
            "den graphs; the output is what Kaldi's is)", it + 1,
        )  # fmt: skip
    with np.errstate(divide="ignore"):
        return -np.log(occ), converged


def pushed_costs(
    src: np.ndarray, dst: np.ndarray, cost: np.ndarray, final: np.ndarray, start: int,
    potentials: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Kaldi's ModifyFst: the new float arc and final costs for ``potentials`` (-log v)."""
    new_cost = (cost.astype(np.float64) + potentials[dst] - potentials[src]).astype(np.float32)
    with np.errstate(invalid="ignore"):
        shift = (potentials[start] - potentials).astype(np.float32)
        new_final = np.where(np.isinf(final), final, final + shift).astype(np.float32)
    return new_cost, new_final


def push_special(fst, delta: float = PUSH_SPECIAL_DELTA) -> bool:
    """fstpushspecial, in place on a ``StdVectorFst``. Returns whether the iteration converged
    (Kaldi warns when it did not; the FST is pushed either way)."""
    if fst.num_states == 0:
        return True
    arcs = fst_arcs(fst)
    pot, converged = push_special_potentials(
        arcs.src, arcs.dst, arcs.cost, arcs.final, arcs.start, delta
    )
    cost, final = pushed_costs(arcs.src, arcs.dst, arcs.cost, arcs.final, arcs.start, pot)
    set_weights(fst, cost, final)
    return converged


def push_special_reference(fst, delta: float = PUSH_SPECIAL_DELTA) -> bool:
    """The literal loops of push-special.cc (slow; for tests), in place."""
    n = fst.num_states
    if n == 0:
        return True
    f32 = np.float32

    def expf(c: float) -> float:
        return float(f32(math.exp(-c))) if c != math.inf else 0.0

    start = fst.start
    arcs = [[(a.nextstate, a.weight.value) for a in kaldifst.ArcIterator(fst, s)] for s in range(n)]
    finals = [fst.final(s).value for s in range(n)]
    occ = [1.0 / math.sqrt(n)] * n
    pred: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for s in range(n):
        for t, w in arcs[s]:
            pred[t].append((s, expf(w)))
        fp = expf(finals[s])
        if fp != 0.0:
            pred[start].append((s, fp))

    def accuracy() -> float:
        lo = hi = 0.0
        for s in range(n):
            tot = 0.0
            for t, w in arcs[s]:
                tot += expf(w) * occ[t] / occ[s]
            tot += expf(finals[s]) * occ[start] / occ[s]
            lo, hi = (tot, tot) if s == 0 else (min(lo, tot), max(hi, tot))
        return math.log(hi / lo) if lo > 0 else math.inf

    converged = False
    for it in range(MAX_ITERS):
        new = [0.1 * o for o in occ]
        for i in range(n):
            for j, p in pred[i]:
                new[j] += occ[i] * p
        sumsq = 0.0
        for v in new:
            sumsq += v * v
        inv = 1.0 / math.sqrt(sumsq)
        occ = [v * inv for v in new]
        if it % 5 == 0 and it > 0 and accuracy() <= delta:
            converged = True
            break
    pot = [-math.log(o) for o in occ]
    for s in range(n):
        k = fst.num_arcs(s)
        old = [
            (a.ilabel, a.olabel, a.weight.value, a.nextstate) for a in kaldifst.ArcIterator(fst, s)
        ]
        fst.delete_arcs(s, k)
        for i, o, w, t in old:
            fst.add_arc(s, kaldifst.StdArc(i, o, float(f32(w + pot[t] - pot[s])), t))
        fw = finals[s]
        if fw != math.inf:
            fst.set_final(s, float(f32(f32(fw) + f32(pot[start] - pot[s]))))
    return converged
