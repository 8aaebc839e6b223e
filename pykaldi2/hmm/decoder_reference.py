"""Slow, obviously-correct references for :mod:`pykaldi2.hmm.decoder` (for tests, tiny inputs).

- :func:`viterbi_reference`: exhaustive Viterbi through a graph (no pruning at all): per frame
  every reachable state, emitting arcs then input-epsilon closure, final costs at the end.
- :func:`word_sequences`: every word sequence of an acyclic lattice with its best weight, by
  dynamic programming over (state, word sequence) -- what a determinized lattice must encode.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def _eps_closure(best: dict, back: dict, eps_arcs: dict) -> None:
    """Relax input-epsilon arcs until nothing improves (HCLG has no epsilon cycles)."""
    changed = True
    while changed:
        changed = False
        for s in list(best):
            for d, w, ol in eps_arcs.get(s, ()):
                c = best[s] + w
                if c < best.get(d, np.inf):
                    best[d] = c
                    back[d] = (s, 0, ol)
                    changed = True


def viterbi_reference(
    graph_arrays: dict, start: int, loglik: np.ndarray, tid2pdf: np.ndarray, acoustic_scale: float
) -> tuple[float, list[int], list[int]]:
    """Best ``(cost, words, transition-ids)`` of a graph for (T, num_pdfs) log-likelihoods.

    ``graph_arrays``: ``Graph.arrays()`` (src, dst, ilabel, olabel, weight, final). The cost is
    graph cost + scaled acoustic cost (float64), final cost included when a final state is
    reachable at the last frame, else the best state (Kaldi's partial traceback).
    """
    emit, eps = defaultdict(list), defaultdict(list)
    for s, d, il, ol, w in zip(
        *(graph_arrays[k].tolist() for k in ("src", "dst", "ilabel", "olabel", "weight"))
    ):
        (emit if il else eps)[s].append((d, w, ol) if not il else (d, w, il, ol))
    final = graph_arrays["final"]
    best = {start: 0.0}
    backs: list[dict] = [{}]
    _eps_closure(best, backs[0], eps)
    for t in range(loglik.shape[0]):
        nxt: dict = {}
        back: dict = {}
        for s, c in best.items():
            for d, w, il, ol in emit.get(s, ()):
                cost = c + w - acoustic_scale * float(loglik[t, tid2pdf[il]])
                if cost < nxt.get(d, np.inf):
                    nxt[d] = cost
                    back[d] = (s, il, ol)
        _eps_closure(nxt, back, eps)
        best = nxt
        backs.append(back)
    with_final = {s: c + float(final[s]) for s, c in best.items() if np.isfinite(final[s])}
    pool = with_final or best
    s = min(pool, key=pool.get)
    cost = pool[s]
    words: list[int] = []
    ali: list[int] = []
    for t in range(len(backs) - 1, -1, -1):  # epsilon chains within a frame, then one emission
        back = backs[t]
        while s in back:
            p, il, ol = back[s]
            if ol:
                words.append(ol)
            if il:
                ali.append(il)
                s = p
                break
            s = p
    return cost, words[::-1], ali[::-1]


def word_sequences(lat, acoustic_scale: float = 1.0) -> dict[tuple[int, ...], float]:
    """``{word sequence: best cost}`` of an acyclic lattice (raw or compact: anything with
    ``src``, ``dst``, ``olabel``, ``graph_cost``, ``ac_cost``, ``final_graph``, ``final_ac``),
    cost = graph + acoustic_scale * acoustic. Exponential in general: tiny lattices only."""
    S = lat.num_states
    out_arcs = defaultdict(list)
    indeg = np.zeros(S, np.int64)
    for i, (s, d) in enumerate(zip(lat.src.tolist(), lat.dst.tolist())):
        out_arcs[s].append(i)
        indeg[d] += 1
    order, stack = [], [s for s in range(S) if indeg[s] == 0]
    while stack:
        s = stack.pop()
        order.append(s)
        for i in out_arcs[s]:
            d = int(lat.dst[i])
            indeg[d] -= 1
            if indeg[d] == 0:
                stack.append(d)
    seqs: list[dict] = [dict() for _ in range(S)]
    if lat.start >= 0:
        seqs[lat.start][()] = 0.0
    result: dict[tuple[int, ...], float] = {}
    for s in order:
        for seq, c in seqs[s].items():
            for i in out_arcs[s]:
                w = int(lat.olabel[i])
                nseq = seq + (w,) if w else seq
                cost = c + float(lat.graph_cost[i]) + acoustic_scale * float(lat.ac_cost[i])
                d = int(lat.dst[i])
                if cost < seqs[d].get(nseq, np.inf):
                    seqs[d][nseq] = cost
            if np.isfinite(lat.final_graph[s]):
                fc = c + float(lat.final_graph[s]) + acoustic_scale * float(lat.final_ac[s])
                if fc < result.get(seq, np.inf):
                    result[seq] = fc
    return result
