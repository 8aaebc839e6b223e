"""Kaldi's CompactLattice in numpy arrays, its text form, and conversions to / from raw lattices.

A CompactLattice is an acceptor on words: arc ``a`` carries a word (0: epsilon), a pair weight
``(graph_cost, acoustic_cost)`` and a *string* of transition-ids (the frames the arc spans);
final weights carry a pair and a string too. Determinized lattices (one path per word
sequence, e.g. ``lat.N.gz`` of Kaldi's decode dirs) are CompactLattices. As Kaldi writes them,
acoustic costs are unscaled.

Text form (``lattice-copy ark:- ark,t:-``), arcs of the start state first, a state's final
weight after its arcs, floats with 6 significant digits (C++'s default)::

    0<TAB>1<TAB>68<TAB>10.6528,10062,3_1_1_1       (src dst word graph,acoustic,tids)
    8<TAB>0.634323,0,                               (final state: weight, empty string)

The weight One (0,0 with no string) is left out, as OpenFst's printer does.

Dimension legend: A arcs, S states, L total string length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pykaldi2.decoding.lattice import Lattice, _ArcArrays, fmt_float, parse_float
from pykaldi2.utils.errors import DataError, Pykaldi2Error

__all__ = ["CompactLattice"]


@dataclass
class CompactLattice(_ArcArrays):
    """A CompactLattice (A arcs, S states) in arrays.

    Attributes:
        num_states: S.  start: the start state (-1: empty).
        src, dst: (A,) int32 states.  word: (A,) int32 word ids (0: epsilon).
        graph_cost, ac_cost: (A,) float32 (acoustic costs unscaled).
        str_offsets: (A + 1,) int64: arc a's transition-ids are
            ``strings[str_offsets[a]:str_offsets[a + 1]]``.  strings: (L,) int32.
        final_graph, final_ac: (S,) float32, ``inf`` for non-final states.
        final_offsets: (S + 1,) int64 and final_strings: the final weights' transition-ids.
        properties: the OpenFst property bits of the binary header it was read from (written
            back unchanged), or None.
    """

    num_states: int
    start: int
    src: np.ndarray
    dst: np.ndarray
    word: np.ndarray
    graph_cost: np.ndarray
    ac_cost: np.ndarray
    str_offsets: np.ndarray
    strings: np.ndarray
    final_graph: np.ndarray
    final_ac: np.ndarray
    final_offsets: np.ndarray
    final_strings: np.ndarray
    properties: int | None = field(default=None, compare=False)

    # ---- the extension's dict form -------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, properties: int | None = None) -> CompactLattice:
        return cls(
            num_states=int(d["num_states"]),
            start=int(d["start"]),
            src=np.asarray(d["src"], np.int32),
            dst=np.asarray(d["dst"], np.int32),
            word=np.asarray(d["label"], np.int32),
            graph_cost=np.asarray(d["graph"], np.float32),
            ac_cost=np.asarray(d["ac"], np.float32),
            str_offsets=np.asarray(d["str_offsets"], np.int64),
            strings=np.asarray(d["strings"], np.int32),
            final_graph=np.asarray(d["final_graph"], np.float32),
            final_ac=np.asarray(d["final_ac"], np.float32),
            final_offsets=np.asarray(d["final_offsets"], np.int64),
            final_strings=np.asarray(d["final_strings"], np.int32),
            properties=properties,
        )

    def to_dict(self) -> dict:
        """The extension's dict (arcs must be grouped by source state, in state order)."""
        return {
            "num_states": self.num_states,
            "start": self.start,
            "src": self.src,
            "dst": self.dst,
            "label": self.word,
            "graph": self.graph_cost,
            "ac": self.ac_cost,
            "str_offsets": self.str_offsets,
            "strings": self.strings,
            "final_graph": self.final_graph,
            "final_ac": self.final_ac,
            "final_offsets": self.final_offsets,
            "final_strings": self.final_strings,
        }

    # ---- what best paths and scoring need (as Lattice has them) --------------------------
    @property
    def olabel(self) -> np.ndarray:
        """(A,) the word of each arc (the name :class:`Lattice` uses)."""
        return self.word

    def arc_string(self, a: int) -> np.ndarray:
        return self.strings[self.str_offsets[a] : self.str_offsets[a + 1]]

    def final_string(self, s: int) -> np.ndarray:
        return self.final_strings[self.final_offsets[s] : self.final_offsets[s + 1]]

    def path_ali(self, arcs: Sequence[int], final_state: int) -> list[int]:
        """The transition-ids along ``arcs`` and the final weight of ``final_state``."""
        parts = [self.arc_string(a) for a in arcs] + [self.final_string(final_state)]
        return [int(t) for t in np.concatenate(parts)] if parts else []

    @property
    def num_frames_per_arc(self) -> np.ndarray:
        """(A,) number of transition-ids (frames) on each arc."""
        return np.diff(self.str_offsets)

    # ---- conversions ---------------------------------------------------------------------
    @classmethod
    def from_raw(cls, lat: Lattice) -> CompactLattice:
        """One compact arc per raw arc (word = olabel, string = [ilabel] or empty); the same
        weighted word/transition-id relation as ``lat`` (Kaldi also merges chains)."""
        order = np.argsort(lat.src, kind="stable")
        il = lat.ilabel[order]
        n = (il != 0).astype(np.int64)
        fin = np.isfinite(lat.final_graph)
        return cls(
            num_states=lat.num_states,
            start=lat.start,
            src=lat.src[order].astype(np.int32),
            dst=lat.dst[order].astype(np.int32),
            word=lat.olabel[order].astype(np.int32),
            graph_cost=lat.graph_cost[order].astype(np.float32),
            ac_cost=lat.ac_cost[order].astype(np.float32),
            str_offsets=np.concatenate([[0], np.cumsum(n)]),
            strings=il[il != 0].astype(np.int32),
            final_graph=np.where(fin, lat.final_graph, np.inf).astype(np.float32),
            final_ac=np.where(fin, lat.final_ac, np.inf).astype(np.float32),
            final_offsets=np.zeros(lat.num_states + 1, np.int64),
            final_strings=np.zeros(0, np.int32),
        )

    def to_raw(self) -> Lattice:
        """Kaldi's ConvertLattice (CompactLattice -> Lattice): an arc with n > 1 transition-ids
        becomes a chain of n arcs (word and weight on the first), a final string a chain of
        epsilon-word arcs to a new final state; ilabel = transition-id, olabel = word."""
        S, A = self.num_states, self.num_arcs
        n = np.diff(self.str_offsets)
        fn = np.diff(self.final_offsets)
        fin = np.isfinite(self.final_graph)
        fn = np.where(fin, fn, 0)
        extra_arc = np.maximum(n - 1, 0)  # intermediate states per arc
        first_new = S + np.concatenate([[0], np.cumsum(extra_arc)])[:-1]  # (A,)
        num_arc_states = int(extra_arc.sum())
        first_final_new = S + num_arc_states + np.concatenate([[0], np.cumsum(fn)])[:-1]  # (S,)
        total_states = S + num_arc_states + int(fn.sum())
        # Arc chains: arc a has max(n, 1) pieces; piece k goes from (k == 0 ? src : new k-1)
        # to (k == last ? dst : new k).
        pieces = np.maximum(n, 1)
        a_idx = np.repeat(np.arange(A), pieces)
        k = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        last = k == pieces[a_idx] - 1
        src = np.where(k == 0, self.src[a_idx], first_new[a_idx] + k - 1)
        dst = np.where(last, self.dst[a_idx], first_new[a_idx] + k)
        has = n[a_idx] > 0
        tid = np.zeros(len(a_idx), np.int64)
        tid[has] = self.strings[self.str_offsets[a_idx[has]] + k[has]]
        word = np.where(k == 0, self.word[a_idx], 0)
        g = np.where(k == 0, self.graph_cost[a_idx], 0.0)
        ac = np.where(k == 0, self.ac_cost[a_idx], 0.0)
        # Final chains.
        s_idx = np.repeat(np.arange(S), fn)
        fk = np.arange(int(fn.sum())) - np.repeat(np.cumsum(fn) - fn, fn)
        fsrc = np.where(fk == 0, s_idx, first_final_new[s_idx] + fk - 1)
        fdst = first_final_new[s_idx] + fk
        ftid = (
            self.final_strings[self.final_offsets[s_idx] + fk]
            if len(s_idx)
            else np.zeros(0, np.int64)
        )
        fg = np.where(fk == 0, self.final_graph[s_idx], 0.0)
        fa = np.where(fk == 0, self.final_ac[s_idx], 0.0)
        final_graph = np.full(total_states, np.inf)
        final_ac = np.full(total_states, np.inf)
        plain = fin & (fn == 0)
        final_graph[np.flatnonzero(plain)] = self.final_graph[plain]
        final_ac[np.flatnonzero(plain)] = self.final_ac[plain]
        ends = first_final_new[fn > 0] + fn[fn > 0] - 1
        final_graph[ends] = 0.0
        final_ac[ends] = 0.0
        return Lattice(
            num_states=total_states,
            start=self.start,
            src=np.concatenate([src, fsrc]).astype(np.int64),
            dst=np.concatenate([dst, fdst]).astype(np.int64),
            ilabel=np.concatenate([tid, ftid]).astype(np.int64),
            olabel=np.concatenate([word, np.zeros(len(fsrc), np.int64)]).astype(np.int64),
            graph_cost=np.concatenate([g, fg]).astype(np.float64),
            ac_cost=np.concatenate([ac, fa]).astype(np.float64),
            final_graph=final_graph,
            final_ac=final_ac,
        )

    def path_lattice(self, arcs: Sequence[int], final_state: int) -> CompactLattice:
        """The linear lattice of one path (``arcs`` in order, ending in ``final_state``): what
        lattice-1best / lattice-to-nbest write."""
        idx = np.asarray(arcs, dtype=np.int64)
        k = len(idx)
        strs = [self.arc_string(a) for a in arcs]
        fs = self.final_string(final_state)
        fg = np.full(k + 1, np.inf, np.float32)
        fa = np.full(k + 1, np.inf, np.float32)
        fg[k], fa[k] = self.final_graph[final_state], self.final_ac[final_state]
        return CompactLattice(
            num_states=k + 1,
            start=0,
            src=np.arange(k, dtype=np.int32),
            dst=np.arange(1, k + 1, dtype=np.int32),
            word=self.word[idx].astype(np.int32),
            graph_cost=self.graph_cost[idx].astype(np.float32),
            ac_cost=self.ac_cost[idx].astype(np.float32),
            str_offsets=np.concatenate([[0], np.cumsum([len(x) for x in strs])]).astype(np.int64),
            strings=(np.concatenate(strs) if strs else np.zeros(0)).astype(np.int32),
            final_graph=fg,
            final_ac=fa,
            final_offsets=np.concatenate([np.zeros(k + 1, np.int64), [len(fs)]]),
            final_strings=np.asarray(fs, np.int32),
        )

    def scaled(self, acoustic_scale: float = 1.0, lm_scale: float = 1.0) -> CompactLattice:
        """Kaldi's lattice-scale (``--acoustic-scale``, ``--lm-scale``) as a new lattice."""
        out = _copy(self)
        out.graph_cost = (self.graph_cost.astype(np.float64) * lm_scale).astype(np.float32)
        out.ac_cost = (self.ac_cost.astype(np.float64) * acoustic_scale).astype(np.float32)
        fin = np.isfinite(self.final_graph)
        out.final_graph = np.where(
            fin, self.final_graph.astype(np.float64) * lm_scale, np.inf
        ).astype(np.float32)
        out.final_ac = np.where(
            fin, self.final_ac.astype(np.float64) * acoustic_scale, np.inf
        ).astype(np.float32)
        return out

    # ---- text ----------------------------------------------------------------------------
    def to_text(self) -> str:
        """Kaldi's text form (see the module docstring), without the key line."""
        out: list[str] = []
        if self.start < 0:
            return ""
        order = np.argsort(self.src, kind="stable")
        first = np.searchsorted(self.src[order], np.arange(self.num_states + 1))
        states = [self.start] + [s for s in range(self.num_states) if s != self.start]
        strings, offs = self.strings.tolist(), self.str_offsets.tolist()
        fstr, foffs = self.final_strings.tolist(), self.final_offsets.tolist()
        src, dst, word = self.src.tolist(), self.dst.tolist(), self.word.tolist()
        g, a = self.graph_cost.tolist(), self.ac_cost.tolist()
        fg, fa = self.final_graph.tolist(), self.final_ac.tolist()
        for s in states:
            arcs = order[first[s] : first[s + 1]].tolist()
            for i in arcs:
                w = _weight_text(g[i], a[i], strings[offs[i] : offs[i + 1]])
                out.append(f"{src[i]}\t{dst[i]}\t{word[i]}{w}\n")
            if np.isfinite(fg[s]) or not arcs:
                w = (
                    _weight_text(fg[s], fa[s], fstr[foffs[s] : foffs[s + 1]])
                    if np.isfinite(fg[s])
                    else "\tInfinity,Infinity,"
                )
                out.append(f"{s}{w}\n")
        return "".join(out)

    @classmethod
    def from_lines(cls, lines: Sequence[str], where: str = "") -> CompactLattice:
        """Parse the text form (``src dst word [g,a,tids]`` and ``state [g,a,tids]`` lines);
        the first line's state is the start state, as Kaldi's reader takes it."""
        src, dst, word, g, a, strs = [], [], [], [], [], []
        finals: dict[int, tuple[float, float, list[int]]] = {}
        start, max_state = -1, -1
        for line in lines:
            f = line.split()
            if not f:
                continue
            try:
                s = int(f[0])
                if start < 0:
                    start = s
                if len(f) in (3, 4):
                    w = _parse_weight(f[3]) if len(f) == 4 else (0.0, 0.0, [])
                    src.append(s)
                    dst.append(int(f[1]))
                    word.append(int(f[2]))
                    g.append(w[0])
                    a.append(w[1])
                    strs.append(w[2])
                    max_state = max(max_state, s, int(f[1]))
                elif len(f) in (1, 2):
                    finals[s] = _parse_weight(f[1]) if len(f) == 2 else (0.0, 0.0, [])
                    max_state = max(max_state, s)
                else:
                    raise ValueError(f"{len(f)} fields")
            except (ValueError, IndexError) as e:
                raise DataError(
                    f"bad compact lattice line {line.strip()!r} ({e})",
                    file=where or None,
                    fix="expected 'src dst word g,a,tid_tid' or 'state g,a,tids' lines",
                ) from None
        S = max_state + 1
        fg = np.full(S, np.inf, np.float32)
        fa = np.full(S, np.inf, np.float32)
        fl = [[] for _ in range(S)]
        for s, (wg, wa, st) in finals.items():
            fg[s], fa[s], fl[s] = wg, wa, st
        order = np.argsort(np.asarray(src, np.int64), kind="stable")
        strs = [strs[i] for i in order]
        return cls(
            num_states=S,
            start=start,
            src=np.asarray(src, np.int32)[order],
            dst=np.asarray(dst, np.int32)[order],
            word=np.asarray(word, np.int32)[order],
            graph_cost=np.asarray(g, np.float32)[order],
            ac_cost=np.asarray(a, np.float32)[order],
            str_offsets=np.concatenate([[0], np.cumsum([len(x) for x in strs])]).astype(np.int64),
            strings=np.asarray([t for x in strs for t in x], np.int32),
            final_graph=fg,
            final_ac=fa,
            final_offsets=np.concatenate([[0], np.cumsum([len(x) for x in fl])]).astype(np.int64),
            final_strings=np.asarray([t for x in fl for t in x], np.int32),
        )


def _copy(lat: CompactLattice) -> CompactLattice:
    from dataclasses import replace

    return replace(lat)


def _weight_text(g: float, a: float, tids: list[int]) -> str:
    """``\\tg,a,t1_t2`` or "" for the weight One (OpenFst's printer leaves it out)."""
    if g == 0 and a == 0 and not tids:
        return ""
    return f"\t{fmt_float(g)},{fmt_float(a)},{'_'.join(map(str, tids))}"


def _parse_weight(s: str) -> tuple[float, float, list[int]]:
    parts = s.split(",")
    if len(parts) != 3:
        raise ValueError(f"weight {s!r} is not g,a,tids")
    tids = [int(t) for t in parts[2].split("_")] if parts[2] else []
    return parse_float(parts[0]), parse_float(parts[1]), tids


def check_compact(lat: CompactLattice, utt: str = "") -> None:
    """Raise a DataError naming ``utt`` for arrays of inconsistent sizes."""
    A, S = len(lat.src), lat.num_states
    ok = (
        len(lat.dst) == A == len(lat.word) == len(lat.graph_cost) == len(lat.ac_cost)
        and len(lat.str_offsets) == A + 1
        and len(lat.final_graph) == S == len(lat.final_ac)
        and len(lat.final_offsets) == S + 1
    )
    if not ok:
        raise DataError("compact lattice arrays of inconsistent sizes", utt=utt or None)
    if A and (lat.src.min() < 0 or lat.dst.max() >= S or lat.src.max() >= S):
        raise Pykaldi2Error(f"compact lattice {utt}: arc state out of range")
