"""Raw Kaldi lattices as numpy arrays, their text form, and best paths under LM weights.

A raw lattice (Kaldi's ``Lattice``, not ``CompactLattice``) is an acyclic FST whose arcs carry
``ilabel = transition_id``, ``olabel = word id`` and a pair weight ``(graph_cost,
acoustic_cost)``. As Kaldi's decoders do when they write lattices, acoustic costs are stored
*unscaled* (the decoder's ``acoustic_scale`` is divided out), so that scoring with
``lmwt`` (Kaldi's ``lattice-scale --inv-acoustic-scale=LMWT``) and a word insertion penalty
(``lattice-add-penalty``) ranks paths by::

    cost(path) = sum(graph_cost) + sum(acoustic_cost) / lmwt + wip * num_words(path)

Text form (``lattice-copy --write-compact=false ark:in ark,t:out``): OpenFst's printer, the
start state first, then the others in order, each state's arcs then its final weight; floats
with 6 significant digits as C++ prints them::

    0<TAB>1<TAB>2<TAB>0<TAB>0.5,3.25      (src dst transition_id word graph_cost,acoustic_cost)
    7<TAB>0.69,0                            (final state and its final weight)

:mod:`pykaldi2.decoding.compact_lattice` has the determinized (word) form, and
:mod:`pykaldi2.decoding.lattice_io` Kaldi's archives (binary or text, ``ark`` / ``.gz``).
The functions below take either kind (both have ``src``, ``dst``, ``olabel`` = words,
``graph_cost``, ``ac_cost``, ``final_graph``, ``final_ac`` and ``path_ali``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pykaldi2.utils.errors import DataError, Pykaldi2Error


def fmt_float(x: float) -> str:
    """A float as Kaldi's lattice printer writes it (C++ ``ostream << float``, precision 6;
    ``Infinity`` / ``-Infinity`` / ``BadNumber``)."""
    x = float(x)
    if x == np.inf:
        return "Infinity"
    if x == -np.inf:
        return "-Infinity"
    if x != x:
        return "BadNumber"
    return f"{x:.6g}"


def parse_float(s: str) -> float:
    """The inverse of :func:`fmt_float` (as Kaldi's reader: strtod, then float32)."""
    if s == "Infinity":
        return np.inf
    if s == "-Infinity":
        return -np.inf
    if s == "BadNumber":
        return np.nan
    return float(np.float32(float(s)))


class _ArcArrays:
    """What raw and compact lattices share: ``num_states``, ``start`` and (A,) ``src``."""

    num_states: int
    start: int
    src: np.ndarray

    @property
    def num_arcs(self) -> int:
        return int(self.src.shape[0])

    def arc_order(self) -> np.ndarray:
        """(A,) arc indices as OpenFst's printer lists them: the start state's arcs first,
        then the other states' in state order (each state's arcs in their order)."""
        key = np.where(self.src == self.start, -1, self.src)
        return np.argsort(key, kind="stable")


@dataclass
class Lattice(_ArcArrays):
    """A raw lattice in arrays (A arcs, S states).

    Attributes:
        num_states: S.
        start: the start state (-1 for an empty lattice).
        src, dst: (A,) int64 arc source / destination states.
        ilabel: (A,) int64 transition_ids (0: epsilon).
        olabel: (A,) int64 word ids (0: epsilon).
        graph_cost: (A,) float64 graph (LM + transition + pronunciation) costs.
        ac_cost: (A,) float64 unscaled acoustic costs (negated log-likelihoods).
        final_graph, final_ac: (S,) float64 final weights; ``inf`` for non-final states.
    """

    num_states: int
    start: int
    src: np.ndarray
    dst: np.ndarray
    ilabel: np.ndarray
    olabel: np.ndarray
    graph_cost: np.ndarray
    ac_cost: np.ndarray
    final_graph: np.ndarray
    final_ac: np.ndarray

    def path_ali(self, arcs: Sequence[int], final_state: int) -> list[int]:
        """The transition-ids along ``arcs`` (epsilons left out)."""
        il = self.ilabel
        return [int(il[a]) for a in arcs if il[a] != 0]

    # ---- the extension's dict form -------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> Lattice:
        """From the decoder extension's lattice dict (float32 costs kept exactly)."""
        fg = np.asarray(d["final_graph"], np.float64)
        fin = np.isfinite(fg)
        return cls(
            num_states=int(d["num_states"]),
            start=int(d["start"]),
            src=np.asarray(d["src"], np.int64),
            dst=np.asarray(d["dst"], np.int64),
            ilabel=np.asarray(d["ilabel"], np.int64),
            olabel=np.asarray(d["olabel"], np.int64),
            graph_cost=np.asarray(d["graph"], np.float64),
            ac_cost=np.asarray(d["ac"], np.float64),
            final_graph=np.where(fin, fg, np.inf),
            final_ac=np.where(fin, np.asarray(d["final_ac"], np.float64), np.inf),
        )

    def to_dict(self) -> dict:
        """The extension's lattice dict (float32 weights; arcs grouped by state)."""
        order = np.argsort(self.src, kind="stable")
        return {
            "num_states": self.num_states,
            "start": self.start,
            "src": self.src[order].astype(np.int32),
            "dst": self.dst[order].astype(np.int32),
            "ilabel": self.ilabel[order].astype(np.int32),
            "olabel": self.olabel[order].astype(np.int32),
            "graph": self.graph_cost[order].astype(np.float32),
            "ac": self.ac_cost[order].astype(np.float32),
            "final_graph": self.final_graph.astype(np.float32),
            "final_ac": self.final_ac.astype(np.float32),
        }

    # ---- conversion from / to text -------------------------------------------------------
    @classmethod
    def from_lines(
        cls, lines: Sequence[str], *, acoustic_scale: float = 1.0, where: str = ""
    ) -> Lattice:
        """Parse OpenFst text lines of a raw lattice (``src dst ilabel olabel [g,a]`` / ``s [g,a]``).

        ``acoustic_scale``: the scale the acoustic costs carry; they are divided by it.
        The start state is the state of the first line (as Kaldi's text reader takes it).
        """
        arcs: list[tuple[int, int, int, int, float, float]] = []
        finals: list[tuple[int, float, float]] = []
        start = -1
        for line in lines:
            f = line.split()
            if not f:
                continue
            try:
                if len(f) in (4, 5):
                    g, a = _pair(f[4]) if len(f) == 5 else (0.0, 0.0)
                    arcs.append((int(f[0]), int(f[1]), int(f[2]), int(f[3]), g, a))
                elif len(f) in (1, 2):
                    g, a = _pair(f[1]) if len(f) == 2 else (0.0, 0.0)
                    finals.append((int(f[0]), g, a))
                else:
                    raise ValueError(f"{len(f)} fields")
            except ValueError as e:
                raise DataError(
                    f"bad lattice line {line.strip()!r} ({e})",
                    file=where or None,
                    fix="lattices must be raw Kaldi lattices in text form (lattice-copy ark,t:)",
                ) from None
            if start < 0:
                start = int(f[0])
        arr = np.asarray(arcs, dtype=np.float64).reshape(-1, 6)
        fin = np.asarray(finals, dtype=np.float64).reshape(-1, 3)
        ints = arr[:, :4].astype(np.int64)
        num_states = int(max(ints[:, :2].max(initial=-1), fin[:, 0].max(initial=-1)) + 1)
        final_graph = np.full(num_states, np.inf)
        final_ac = np.full(num_states, np.inf)
        fs = fin[:, 0].astype(np.int64)
        final_graph[fs] = fin[:, 1]
        final_ac[fs] = fin[:, 2] / acoustic_scale
        return cls(
            num_states=num_states,
            start=start,
            src=ints[:, 0],
            dst=ints[:, 1],
            ilabel=ints[:, 2],
            olabel=ints[:, 3],
            graph_cost=arr[:, 4],
            ac_cost=arr[:, 5] / acoustic_scale,
            final_graph=final_graph,
            final_ac=final_ac,
        )

    @classmethod
    def from_kaldifst(cls, lat, *, acoustic_scale: float = 1.0) -> Lattice:
        """From a ``kaldifst.Lattice`` (e.g. ``LatticeSimpleDecoder.get_raw_lattice()``)."""
        text = lat.to_str(is_acceptor=False, show_weight_one=False)
        return cls.from_lines(text.splitlines(), acoustic_scale=acoustic_scale)

    def to_text(self) -> str:
        """Kaldi's text form (OpenFst's printer order, ``g,a`` weights, 6 digits)."""
        if self.start < 0:
            return ""
        order = np.argsort(self.src, kind="stable")
        first = np.searchsorted(self.src[order], np.arange(self.num_states + 1))
        src, dst, il, ol = (x.tolist() for x in (self.src, self.dst, self.ilabel, self.olabel))
        g, a = self.graph_cost.tolist(), self.ac_cost.tolist()
        fg, fa = self.final_graph.tolist(), self.final_ac.tolist()
        out = []
        for s in [self.start] + [s for s in range(self.num_states) if s != self.start]:
            arcs = order[first[s] : first[s + 1]].tolist()
            for i in arcs:
                out.append(f"{src[i]}\t{dst[i]}\t{il[i]}\t{ol[i]}{_fmt_pair(g[i], a[i])}\n")
            if np.isfinite(fg[s]) or not arcs:
                out.append(f"{s}{_fmt_pair(fg[s], fa[s])}\n")
        return "".join(out)

    def to_kaldifst(self, *, acoustic_scale: float = 1.0):
        """As a ``kaldifst.Lattice`` (acoustic costs multiplied by ``acoustic_scale``)."""
        from pykaldi2.kaldi import kaldifst

        lat = kaldifst.Lattice()
        for _ in range(self.num_states):
            lat.add_state()
        if self.start >= 0:
            lat.start = self.start
        for i in range(self.num_arcs):
            w = kaldifst.LatticeWeight(self.graph_cost[i], self.ac_cost[i] * acoustic_scale)
            arc = kaldifst.LatticeArc(int(self.ilabel[i]), int(self.olabel[i]), w, int(self.dst[i]))
            lat.add_arc(int(self.src[i]), arc)
        for s in np.flatnonzero(np.isfinite(self.final_graph)):
            w = kaldifst.LatticeWeight(self.final_graph[s], self.final_ac[s] * acoustic_scale)
            lat.set_final(int(s), w)
        return lat


def _pair(s: str) -> tuple[float, float]:
    g, a = s.split(",")
    return parse_float(g), parse_float(a)


def _fmt_pair(g: float, a: float) -> str:
    """``\\tg,a`` as Kaldi prints it; empty for the weight One (0,0) as OpenFst prints."""
    if g == 0 and a == 0:
        return ""
    return f"\t{fmt_float(g)},{fmt_float(a)}"


# ---- best paths -------------------------------------------------------------------------
#: Most (arc, weight pair) cells :func:`best_paths` handles at once (about 32 MB per array).
_MAX_ARC_PAIRS = 4_000_000


@dataclass
class BestPath:
    """One best path: word ids, transition-ids, and its total graph / unscaled acoustic costs."""

    words: list[int]
    ali: list[int]
    graph_cost: float
    ac_cost: float


def topo_levels(lat: Lattice) -> np.ndarray:
    """(S,) int64: each state's depth in a topological layering (Kahn's algorithm, vectorized).

    Every arc goes from a lower to a higher level. Raises if the lattice has a cycle.
    """
    S = lat.num_states
    level = np.full(S, -1, dtype=np.int64)
    indeg = np.bincount(lat.dst, minlength=S)
    order = np.argsort(lat.src, kind="stable")
    offsets = np.searchsorted(lat.src[order], np.arange(S + 1))
    frontier = np.flatnonzero(indeg == 0)
    depth = 0
    while frontier.size:
        level[frontier] = depth
        counts = offsets[frontier + 1] - offsets[frontier]
        total = int(counts.sum())
        if total == 0:
            break
        first = np.repeat(offsets[frontier] - np.cumsum(counts) + counts, counts)
        arcs = order[first + np.arange(total)]
        d = lat.dst[arcs]
        indeg -= np.bincount(d, minlength=S)
        frontier = np.unique(d[indeg[d] == 0])
        depth += 1
    if (level < 0).any():
        raise Pykaldi2Error(f"lattice has a cycle through {int((level < 0).sum())} states")
    return level


def best_paths(
    lat: Lattice, lm_weights: Sequence[float], word_ins_penalties: Sequence[float] | float = 0.0
) -> list[BestPath | None]:
    """Best path for each ``(lmwt, wip)`` pair at once (K = len(lm_weights) pairs).

    Costs: ``graph + acoustic / lmwt + wip * [word arc]`` (see the module docstring).
    Vectorized over arcs and the K pairs; a level-by-level Viterbi over :func:`topo_levels`.
    Returns one :class:`BestPath` per pair, ``None`` where no final state is reachable.
    """
    lmwt = np.asarray(lm_weights, dtype=np.float64).reshape(-1)
    wip = np.broadcast_to(np.asarray(word_ins_penalties, dtype=np.float64), lmwt.shape)
    K, S = lmwt.shape[0], lat.num_states
    chunk = max(1, _MAX_ARC_PAIRS // max(lat.num_arcs, 1))
    if K > chunk:  # bound the (A, K) work arrays of big lattices
        return [
            p
            for i in range(0, K, chunk)
            for p in best_paths(lat, lmwt[i : i + chunk], wip[i : i + chunk])
        ]
    if S == 0 or lat.start < 0:
        return [None] * K
    cost = (
        lat.graph_cost[:, None]
        + lat.ac_cost[:, None] / lmwt[None, :]
        + (lat.olabel != 0)[:, None] * wip[None, :]
    )  # (A, K)
    level = topo_levels(lat)
    best = np.full((S, K), np.inf)
    best[lat.start] = 0.0
    arc_level = level[lat.src]
    by_level = np.argsort(arc_level, kind="stable")
    bounds = np.searchsorted(arc_level[by_level], np.arange(level.max() + 2))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if lo == hi:
            continue
        a = by_level[lo:hi]
        np.minimum.at(best, lat.dst[a], best[lat.src[a]] + cost[a])
    # Back-pointers: for each state and pair, the first incoming arc reaching its best cost.
    cand = best[lat.src] + cost  # (A, K)
    big = lat.num_arcs
    hit = np.where(cand <= best[lat.dst], np.arange(big)[:, None], big)  # (A, K)
    bp = np.full((S, K), big, dtype=np.int64)
    np.minimum.at(bp, lat.dst, hit)
    total = best + lat.final_graph[:, None] + lat.final_ac[:, None] / lmwt[None, :]
    out: list[BestPath | None] = []
    src, ol = lat.src.tolist(), lat.olabel.tolist()
    for k in range(K):
        s = int(np.argmin(total[:, k]))
        if not np.isfinite(total[s, k]):
            out.append(None)
            continue
        g, ac = float(lat.final_graph[s]), float(lat.final_ac[s])
        final_state = s
        arcs = []
        bpk = bp[:, k].tolist()
        while s != lat.start:
            a = bpk[s]
            arcs.append(a)
            s = src[a]
        arcs.reverse()
        idx = np.asarray(arcs, dtype=np.int64)
        out.append(
            BestPath(
                words=[ol[a] for a in arcs if ol[a] != 0],
                ali=lat.path_ali(arcs, final_state),
                graph_cost=g + float(lat.graph_cost[idx].sum()),
                ac_cost=ac + float(lat.ac_cost[idx].sum()),
            )
        )
    return out


def best_path(lat: Lattice, lmwt: float = 1.0, word_ins_penalty: float = 0.0) -> BestPath | None:
    """Kaldi's ``lattice-scale --inv-acoustic-scale=lmwt | lattice-add-penalty | lattice-best-path``."""
    return best_paths(lat, [lmwt], [word_ins_penalty])[0]


def best_path_reference(
    lat: Lattice, lmwt: float = 1.0, word_ins_penalty: float = 0.0
) -> BestPath | None:
    """Slow, obviously-correct best path: DFS topological order, then a plain Viterbi loop."""
    S = lat.num_states
    if S == 0 or lat.start < 0:
        return None
    out_arcs: list[list[int]] = [[] for _ in range(S)]
    for a in range(lat.num_arcs):
        out_arcs[int(lat.src[a])].append(a)
    order: list[int] = []
    state = [0] * S  # 0 new, 1 on stack, 2 done
    for root in range(S):
        if state[root]:
            continue
        stack = [(root, iter(out_arcs[root]))]
        state[root] = 1
        while stack:
            s, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[s] = 2
                order.append(s)
                continue
            d = int(lat.dst[nxt])
            if state[d] == 1:
                raise Pykaldi2Error("lattice has a cycle")
            if state[d] == 0:
                state[d] = 1
                stack.append((d, iter(out_arcs[d])))
    order.reverse()
    best = [float("inf")] * S
    back: list[int] = [-1] * S
    best[lat.start] = 0.0
    for s in order:
        if best[s] == float("inf"):
            continue
        for a in out_arcs[s]:
            c = best[s] + lat.graph_cost[a] + lat.ac_cost[a] / lmwt
            c += word_ins_penalty if lat.olabel[a] != 0 else 0.0
            d = int(lat.dst[a])
            if c < best[d]:
                best[d], back[d] = c, a
    totals = [best[s] + lat.final_graph[s] + lat.final_ac[s] / lmwt for s in range(S)]
    s = min(range(S), key=lambda i: totals[i])
    if totals[s] == float("inf"):
        return None
    g, ac = float(lat.final_graph[s]), float(lat.final_ac[s])
    final_state = s
    arcs = []
    while s != lat.start:
        arcs.append(back[s])
        s = int(lat.src[back[s]])
    arcs.reverse()
    return BestPath(
        words=[int(lat.olabel[a]) for a in arcs if lat.olabel[a] != 0],
        ali=lat.path_ali(arcs, final_state),
        graph_cost=g + sum(float(lat.graph_cost[a]) for a in arcs),
        ac_cost=ac + sum(float(lat.ac_cost[a]) for a in arcs),
    )


@dataclass
class NbestPath:
    """One of the n best paths: its arcs (in order), final state and costs (graph, acoustic
    unscaled); ``words`` and ``ali`` as on :class:`BestPath`."""

    arcs: list[int]
    final_state: int
    words: list[int]
    ali: list[int]
    graph_cost: float
    ac_cost: float


def nbest_paths(lat, n: int, lmwt: float = 1.0, word_ins_penalty: float = 0.0) -> list[NbestPath]:
    """The ``n`` best *paths* (Kaldi's lattice-to-nbest: OpenFst's n-shortest paths of the
    lattice), best first, under ``graph + acoustic / lmwt + wip * words``. On a determinized
    lattice (one path per word sequence) they are the n best word sequences.

    Each state keeps its n best partial paths, states in topological order (k-best Viterbi on
    an acyclic lattice).
    """
    import heapq

    if n < 1:
        raise Pykaldi2Error(f"nbest_paths: n must be >= 1, got {n}")
    S = lat.num_states
    if S == 0 or lat.start < 0:
        return []
    level = topo_levels(lat)
    order = np.argsort(level, kind="stable").tolist()
    cost = (lat.graph_cost + lat.ac_cost / lmwt + (lat.olabel != 0) * word_ins_penalty).tolist()
    by_src = np.argsort(lat.src, kind="stable")
    first = np.searchsorted(lat.src[by_src], np.arange(S + 1))
    dst = lat.dst.tolist()
    # entries[s]: up to n (cost, arc, previous entry) sorted by cost; a path is a chain.
    entries: list[list[tuple[float, int, tuple | None]]] = [[] for _ in range(S)]
    entries[lat.start] = [(0.0, -1, None)]
    for s in order:
        ents = sorted(entries[s], key=lambda e: e[0])[:n]
        entries[s] = ents
        if not ents:
            continue
        for a in by_src[first[s] : first[s + 1]].tolist():
            d = dst[a]
            for e in ents:
                entries[d].append((e[0] + cost[a], a, e))
            if len(entries[d]) > 4 * n:  # keep the lists short
                entries[d] = heapq.nsmallest(n, entries[d], key=lambda x: x[0])
    fcost = (lat.final_graph + lat.final_ac / lmwt).tolist()
    finals = [
        (e[0] + fcost[s], s, e) for s in range(S) if np.isfinite(fcost[s]) for e in entries[s]
    ]
    out = []
    for _, s, e in heapq.nsmallest(n, finals, key=lambda x: x[0]):
        arcs = []
        while e[2] is not None:
            arcs.append(e[1])
            e = e[2]
        arcs.reverse()
        idx = np.asarray(arcs, dtype=np.int64)
        out.append(
            NbestPath(
                arcs=arcs,
                final_state=s,
                words=[int(w) for w in lat.olabel[idx] if w != 0],
                ali=lat.path_ali(arcs, s),
                graph_cost=float(lat.final_graph[s]) + float(lat.graph_cost[idx].sum()),
                ac_cost=float(lat.final_ac[s]) + float(lat.ac_cost[idx].sum()),
            )
        )
    return out


def nbest_words(
    lat: Lattice, n: int, lmwt: float = 1.0, word_ins_penalty: float = 0.0
) -> list[tuple[list[int], float]]:
    """The ``n`` best *distinct* word sequences with their costs, best first.

    Costs as :func:`best_paths`. Like Kaldi's ``lattice-to-nbest`` on a determinized lattice:
    the lattice is projected on words (a tropical acceptor of combined costs), epsilons are
    removed, it is determinized (so each word sequence keeps its best path only) and OpenFst's
    n-shortest-paths is taken. Costs are float32 (OpenFst's tropical weight).
    """
    from pykaldi2.kaldi import kaldifst

    if n < 1:
        raise Pykaldi2Error(f"nbest_words: n must be >= 1, got {n}")
    if lat.num_states == 0 or lat.start < 0:
        return []
    cost = lat.graph_cost + lat.ac_cost / lmwt + (lat.olabel != 0) * word_ins_penalty
    fcost = lat.final_graph + lat.final_ac / lmwt
    lines = [
        f"{lat.src[i]} {lat.dst[i]} {lat.olabel[i]} {lat.olabel[i]} {cost[i]:.9g}\n"
        for i in lat.arc_order()
    ]
    if not lines or lat.src[lat.arc_order()[0]] != lat.start:
        lines.insert(0, f"{lat.start} {lat.start} 0 0 0\n")  # pins the start state (no-op loop)
    lines += [f"{s} {fcost[s]:.9g}\n" for s in np.flatnonzero(np.isfinite(fcost))]
    fst = kaldifst.compile("".join(lines))
    kaldifst.rmepsilon(fst)
    best = kaldifst.shortest_path(kaldifst.determinize(fst, delta=1e-6), n=n)
    out = []
    for path in kaldifst.convert_nbest_to_vector(best):
        _, _, words, w = kaldifst.get_linear_symbol_sequence(path)
        out.append((list(words), float(w.value)))
    out.sort(key=lambda x: x[1])
    return out
