"""Kaldi's RemoveEpsLocalSpecial (fstext/remove-eps-local-inl.h, the fstrmepslocal binary with
its defaults), which mkgraph.sh runs on HCLGa.

Unlike OpenFst's RmEpsilon (which removes every epsilon and can multiply the arcs), it removes
an epsilon arc only where that never increases the number of arcs + states, by two local
patterns on an arc ``s -> n`` (``n != s``; epsilon = no ilabel or no olabel on one side of a
combined pair):

1. ``n`` has one arc in (and is not the start state) and several out (a final-prob counts as an
   arc out): every arc (or final-prob) of ``n`` that combines with ``s -> n`` is moved to ``s``;
   if some stay, ``s -> n`` is reweighted by ``kept / (kept + removed)`` (totals in the log
   semiring, so the FST stays stochastic in the log semiring) and ``n``'s remaining arcs are
   divided by the same.
2. ``n`` has one arc out (or only a final-prob): if it combines, ``s`` gets the combined arc
   (final-prob) and ``s -> n`` goes; ``n``'s arc goes too when ``s -> n`` was its only arc in.

Arcs are visited state by state, arcs added to a state are visited too; deleted arcs point to a
dead state, and the FST is connected at the end. Equivalence holds in the tropical semiring
(final-probs are combined with tropical Plus, as Kaldi does). Weights are float32, as in
OpenFst.
"""

from __future__ import annotations

import math

import numpy as np

INF = math.inf


def _f32(x: float) -> float:
    return float(np.float32(x))


def _times(a: float, b: float) -> float:
    return INF if a == INF or b == INF else _f32(a + b)


def _log_plus(a: float, b: float) -> float:
    """LogWeight Plus in float32 (OpenFst's LogPosExp form)."""
    if a == INF:
        return b
    if b == INF:
        return a
    a32, b32 = np.float32(a), np.float32(b)
    if a32 > b32:
        return float(b32 - np.log1p(np.exp(-(a32 - b32))))
    return float(a32 - np.log1p(np.exp(-(b32 - a32))))


class _RemoveEpsLocal:
    """RemoveEpsLocalClass<StdArc, ReweightPlusLogArc> on Python lists (see module doc)."""

    def __init__(self, start: int, arcs: list[list[list]], final: list[float]):
        self.start = start
        self.arcs = arcs  # per state: [ilabel, olabel, weight, nextstate]
        self.final = final
        self.dead = len(arcs)  # non_coacc_state_
        arcs.append([])
        final.append(INF)
        n = len(arcs)
        self.num_in = [0] * n
        self.num_out = [0] * n
        self.num_in[start] += 1
        for s in range(n):
            if final[s] != INF:
                self.num_out[s] += 1
            for arc in arcs[s]:
                self.num_in[arc[3]] += 1
                self.num_out[s] += 1
        for s in range(n):
            pos = 0
            while pos < len(arcs[s]):
                self._remove_eps(s, pos)
                pos += 1

    @staticmethod
    def _combine(a, b):
        if (a[0] != 0 and b[0] != 0) or (a[1] != 0 and b[1] != 0):
            return None
        return [a[0] if a[0] != 0 else b[0], a[1] if a[1] != 0 else b[1], _times(a[2], b[2]), b[3]]

    def _remove_eps(self, s: int, pos: int) -> None:
        arc = self.arcs[s][pos]
        n = arc[3]
        if n == self.dead or n == s:
            return
        if self.num_in[n] == 1 and self.num_out[n] > 1:
            self._pattern1(s, pos, arc)
        elif self.num_out[n] == 1:
            self._pattern2(s, pos, arc)

    def _pattern1(self, s: int, pos: int, arc: list) -> None:
        n = arc[3]
        removed, kept = INF, INF
        to_add = []
        for nxt in self.arcs[n]:
            if nxt[3] == self.dead:
                continue
            combined = self._combine(arc, nxt)
            if combined is not None:
                removed = _log_plus(removed, nxt[2])
                self.num_out[n] -= 1
                self.num_in[nxt[3]] -= 1
                nxt[3] = self.dead
                to_add.append(combined)
            else:
                kept = _log_plus(kept, nxt[2])
        nf = self.final[n]
        if nf != INF:
            if arc[0] == 0 and arc[1] == 0:  # CanCombineFinal
                removed = _log_plus(removed, nf)
                if self.final[s] == INF:
                    self.num_out[s] += 1
                self.final[s] = min(self.final[s], _times(arc[2], nf))
                self.num_out[n] -= 1
                self.final[n] = INF
            else:
                kept = _log_plus(kept, nf)
        if removed != INF:
            if kept == INF:  # everything moved: the arc goes
                self.num_out[s] -= 1
                self.num_in[n] -= 1
                arc[3] = self.dead
            else:
                reweight = _f32(kept - _log_plus(removed, kept))
                arc[2] = _times(arc[2], reweight)
                for nxt in self.arcs[n]:
                    if nxt[3] != self.dead:
                        nxt[2] = _f32(nxt[2] - reweight)
                if self.final[n] != INF:
                    self.final[n] = _f32(self.final[n] - reweight)
        for c in to_add:
            self.num_out[s] += 1
            self.num_in[c[3]] += 1
            self.arcs[s].append(c)

    def _pattern2(self, s: int, pos: int, arc: list) -> None:
        n = arc[3]
        can_delete_next = self.num_in[n] == 1
        delete_arc = False
        nf = self.final[n]
        if nf != INF:  # only a final-prob out of n
            if arc[0] == 0 and arc[1] == 0:
                if self.final[s] == INF:
                    self.num_out[s] += 1
                self.final[s] = min(self.final[s], _times(arc[2], nf))
                delete_arc = True
                if can_delete_next:
                    self.num_out[n] -= 1
                    self.final[n] = INF
        else:
            nxt = next(a for a in self.arcs[n] if a[3] != self.dead)
            combined = self._combine(arc, nxt)
            if combined is not None:
                delete_arc = True
                if can_delete_next:
                    self.num_out[n] -= 1
                    self.num_in[nxt[3]] -= 1
                    nxt[3] = self.dead
                self.num_out[s] += 1
                self.num_in[combined[3]] += 1
                self.arcs[s].append(combined)
        if delete_arc:
            self.num_out[s] -= 1
            self.num_in[n] -= 1
            arc[3] = self.dead


def remove_eps_local(fst) -> None:
    """fstrmepslocal (RemoveEpsLocalSpecial) on a ``kaldifst.StdVectorFst``, in place."""
    from pykaldi2.kaldi import kaldifst

    if fst.num_states == 0 or fst.start < 0:
        return
    arcs = [
        [[a.ilabel, a.olabel, a.weight.value, a.nextstate] for a in kaldifst.ArcIterator(fst, s)]
        for s in range(fst.num_states)
    ]
    final = [fst.final(s).value for s in range(fst.num_states)]
    r = _RemoveEpsLocal(int(fst.start), arcs, final)
    for s in range(fst.num_states):
        fst.delete_arcs(s, fst.num_arcs(s))
        for il, ol, w, n in r.arcs[s]:
            if n != r.dead:
                fst.add_arc(s, kaldifst.StdArc(il, ol, w, n))
        fst.set_final(s, r.final[s])
    kaldifst.connect(fst)
