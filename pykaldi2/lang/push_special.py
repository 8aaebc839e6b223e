"""Kaldi's PushSpecial (fstext/push-special.cc, the fstpushspecial binary).

Pushes the weights of a weighted FST so that every state "sums to" the same total (arcs plus
final-prob, in the log semiring), without changing the weighted language. Ordinary weight
pushing cannot do this for backoff LMs and cyclic HMM graphs (their total weight can be
infinite); this always works.

With ``P`` the matrix of transition probabilities (``p_st`` = sum of exp(-w) over arcs s -> t;
a final-prob of s counts as a transition s -> start), the power method finds the top
eigenvector ``v``:

    v <- 1 / sqrt(S) for every state
    repeat up to 200 times:
        v <- (P v + 0.1 v) / |P v + 0.1 v|          (the 0.1 v term handles periodic graphs)
        every 5th iteration: stop if log(max_i r_i / min_i r_i) <= delta,
            r_i = sum_j p_ij v_j / v_i               (the row sums after reweighting)

Then, with ``c = -log v``, every arc weight becomes ``w + c_t - c_s`` and every final weight
``f + c_start - c_s``: each state sums to the top eigenvalue of ``P`` and the weight of every
complete path is unchanged.

mkgraph.sh runs it on LG (``fstpushspecial``, delta :data:`DELTA`), and chain-make-den-fst on
the denominator graph (CreateDenominatorFst, delta :data:`DEN_FST_DELTA`,
:func:`pykaldi2.lang.den_fst.den_graph_minimize_wrapper`). Kaldi's iteration is reproduced
step for step, so a run that stops before converging (as it does on every AN4 den graph) gives
Kaldi's weights: arc and final probabilities are ``expf`` of the float costs (``kaldi::Exp`` of
a float), the potentials double, the sums added in Kaldi's order, the new costs rounded to
float as TropicalWeight stores them.

:func:`push_special` works on a ``kaldifst.StdVectorFst`` in place; :func:`push_special_weights`
is the same on arrays (vectorised; equal to the reference to the last bit),
:func:`push_special_weights_ref` the loop-by-loop reference that follows Kaldi's code.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: OpenFst's kDelta (1/1024, exact as a float); Kaldi's default --delta of fstpushspecial.
K_DELTA = 1.0 / 1024.0
DELTA = K_DELTA
#: The delta CreateDenominatorFst passes to PushSpecial (``kDelta * 0.01``, the float it is in
#: C++).
DEN_FST_DELTA = float(np.float32(K_DELTA * 0.01))
MAX_ITER = 200


@dataclass
class FstArrays:
    """A StdVectorFst's arcs and finals as arrays.

    Attributes:
        start: start state (-1 for an empty FST).
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


def _expf(cost: np.ndarray) -> np.ndarray:
    """``kaldi::Exp(-cost)`` of float costs: the float exponential, as a double."""
    with np.errstate(over="ignore"):
        return np.exp(-cost.astype(np.float64)).astype(np.float32).astype(np.float64)


def _not_converged_warning(iters: int) -> None:
    log.warning(
        "push-special: finished %d iterations without converging (Kaldi's warning; its output "
        "is the same as Kaldi's)", iters,
    )  # fmt: skip


def push_special_potentials(a: FstArrays, delta: float = DELTA) -> tuple[np.ndarray, float, bool]:
    """Kaldi's PushSpecialClass::Iterate on arrays: ``(potentials -log v (S,) float64, lambda,
    converged)``; ``lambda`` is the power method's last norm (top eigenvalue of P + 0.1)."""
    n, start = a.num_states, a.start
    p_arc, p_final = _expf(a.weight), _expf(a.final)
    # Kaldi's pred_ lists: for each state t the arcs into it, and for the start state also the
    # final probs, in the order (state, its arcs, its final prob). The update adds
    # occ[t] * p into new_occ[source] for t = 0, 1, ... in that order; np.add.at adds in index
    # order, so sorting the updates by (target, insertion order) gives Kaldi's sums bit for bit.
    fin_states = np.flatnonzero(p_final != 0.0)
    order_key = np.concatenate([a.src * 2, fin_states * 2 + 1])  # a state's arcs, then final
    targets = np.concatenate([a.dst, np.full(len(fin_states), start, dtype=np.int64)])
    sources = np.concatenate([a.src, fin_states])
    probs = np.concatenate([p_arc, p_final[fin_states]])
    seq = np.lexsort((np.arange(len(order_key)), order_key))
    by_target = seq[np.argsort(targets[seq], kind="stable")]
    upd_src, upd_tgt, upd_p = sources[by_target], targets[by_target], probs[by_target]
    occ = np.full(n, 1.0 / math.sqrt(n))
    lam, converged, it = 0.0, False, 0
    for it in range(MAX_ITER):
        new = 0.1 * occ
        np.add.at(new, upd_src, occ[upd_tgt] * upd_p)
        lam = math.sqrt(float(np.cumsum(new * new)[-1]))  # sequential sum, as Kaldi's loop
        occ = new * (1.0 / lam)
        if it % 5 == 0 and it > 0:
            sums = np.zeros(n)
            np.add.at(sums, a.src, p_arc * occ[a.dst] / occ[a.src])
            sums += p_final * occ[start] / occ
            with np.errstate(divide="ignore"):
                err = math.log(float(sums.max()) / float(sums.min()))
            if err <= delta:
                converged = True
                break
    if not converged:
        _not_converged_warning(it + 1)
    with np.errstate(divide="ignore"):
        return -np.log(occ), lam, converged


def _modify(a: FstArrays, pot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaldi's ModifyFst: the new float arc and final weights for potentials ``pot``."""
    if not np.all(np.isfinite(pot)):
        log.warning("push-special: NaN or inf potentials (states without a path to the end?)")
    # arc: float(w + c_t - c_s) in double; final: Times(f, float(c_start - c_s)) in float
    weight = ((a.weight.astype(np.float64) + pot[a.dst]) - pot[a.src]).astype(np.float32)
    with np.errstate(invalid="ignore"):
        final = a.final + (pot[a.start] - pot).astype(np.float32)
    return weight, final.astype(np.float32)


def push_special_weights(
    a: FstArrays, delta: float = DELTA
) -> tuple[np.ndarray, np.ndarray, float]:
    """PushSpecial on arrays: ``(arc weights (A,) float32, final weights (S,) float32, total)``:
    the new weights of ``a``'s arcs (same order) and states, and the probability every state
    now sums to (the top eigenvalue of P; the power method's lambda is that + 0.1)."""
    if a.num_states == 0:
        return a.weight.copy(), a.final.copy(), 1.0
    pot, lam, _ = push_special_potentials(a, delta)
    return _modify(a, pot) + (lam - 0.1,)


def push_special_weights_ref(
    a: FstArrays, delta: float = DELTA
) -> tuple[np.ndarray, np.ndarray, float]:
    """Slow reference of :func:`push_special_weights`: PushSpecialClass line by line
    (predecessor lists, float exponentials, the same loops and order of summation)."""
    n, start = a.num_states, a.start
    if n == 0:
        return a.weight.copy(), a.final.copy(), 1.0
    f32 = np.float32

    def expf(w: float) -> float:
        return float(f32(math.exp(-w))) if w != math.inf else 0.0

    pred: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    out_arcs: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    finals = a.final.tolist()
    k = 0
    for s in range(n):  # arcs are in state order; a state's final prob after its arcs
        while k < len(a.src) and a.src[k] == s:
            t, w = int(a.dst[k]), float(a.weight[k])
            pred[t].append((s, expf(w)))
            out_arcs[s].append((t, w))
            k += 1
        fp = expf(finals[s])
        if fp != 0.0:
            pred[start].append((s, fp))
    occ = [1.0 / math.sqrt(n)] * n

    def accuracy() -> float:
        lo = hi = 0.0
        for s in range(n):
            tot = 0.0
            for t, w in out_arcs[s]:
                tot += expf(w) * occ[t] / occ[s]
            tot += expf(finals[s]) * occ[start] / occ[s]
            lo, hi = (tot, tot) if s == 0 else (min(lo, tot), max(hi, tot))
        return math.log(hi / lo) if lo > 0 else math.inf

    lam, converged, it = 0.0, False, 0
    for it in range(MAX_ITER):
        new = [0.1 * x for x in occ]
        for i in range(n):
            for j, p in pred[i]:
                new[j] += occ[i] * p
        sumsq = 0.0
        for x in new:
            sumsq += x * x
        lam = math.sqrt(sumsq)
        inv = 1.0 / lam
        occ = [x * inv for x in new]
        if it % 5 == 0 and it > 0 and accuracy() <= delta:
            converged = True
            break
    if not converged:
        _not_converged_warning(it + 1)
    with np.errstate(divide="ignore"):
        pot = -np.log(np.asarray(occ))
    return _modify(a, pot) + (lam - 0.1,)


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
