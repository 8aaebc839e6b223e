"""Kaldi's EventMap (the decision tree behind a ContextDependency) in Python.

An *event* maps keys to values: keys 0..N-1 are positions in the phone context window, key -1
(``PDF_CLASS``) the pdf-class. Three node types, as Kaldi's tree/event-map.cc writes them::

    CE <answer>                       ConstantEventMap: a leaf, answer = pdf_id
    TE <key> <size> ( m0 m1 ... )     TableEventMap: child by the key's value (NULL: no child)
    SE <key> [yes-set] { yes no }     SplitEventMap: yes-child if value in the set

and the whole tree as ``ContextDependency <N> <P> ToPdf <map> EndContextDependency``; the
``tree`` file (binary and text) is read and written by :mod:`pykaldi2.hmm.kaldi_io`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Kaldi's kPdfClass key.
PDF_CLASS = -1


@dataclass
class ConstantEventMap:
    answer: int

    def map(self, event: Mapping[int, int]) -> int | None:
        return self.answer


@dataclass
class TableEventMap:
    key: int
    table: list = field(default_factory=list)

    def map(self, event: Mapping[int, int]) -> int | None:
        v = event.get(self.key)
        if v is None or not 0 <= v < len(self.table) or self.table[v] is None:
            return None
        return self.table[v].map(event)


@dataclass
class SplitEventMap:
    key: int
    yes_set: list[int]
    yes: object
    no: object

    def map(self, event: Mapping[int, int]) -> int | None:
        v = event.get(self.key)
        if v is None:
            return None
        return (self.yes if v in self._set else self.no).map(event)

    @property
    def _set(self) -> frozenset:
        s = self.__dict__.get("_cached_set")
        if s is None:
            s = frozenset(self.yes_set)
            self.__dict__["_cached_set"] = s
        return s


EventMap = ConstantEventMap | TableEventMap | SplitEventMap


# ---- tree operations (Kaldi's EventMap::Copy, MultiMap, SplitStatsByMap) ---------------------
def copy_event_map(m, new_leaves: Mapping[int, object]):
    """A copy of ``m`` whose leaves ``CE a`` with ``a`` in ``new_leaves`` are replaced by (a copy
    of) ``new_leaves[a]`` (Kaldi's EventMap::Copy(new_leaves)); other leaves are kept."""
    if m is None:
        return None
    if isinstance(m, ConstantEventMap):
        sub = new_leaves.get(m.answer)
        return ConstantEventMap(m.answer) if sub is None else copy_event_map(sub, {})
    if isinstance(m, TableEventMap):
        return TableEventMap(m.key, [copy_event_map(c, new_leaves) for c in m.table])
    if isinstance(m, SplitEventMap):
        return SplitEventMap(
            m.key,
            list(m.yes_set),
            copy_event_map(m.yes, new_leaves),
            copy_event_map(m.no, new_leaves),
        )
    raise TypeError(f"not an event map: {type(m)}")


def leaf_answers(m) -> list[int]:
    """Every leaf answer of ``m``, sorted and unique (Kaldi's MultiMap of the empty event)."""
    out: set[int] = set()
    stack = [m]
    while stack:
        x = stack.pop()
        if isinstance(x, ConstantEventMap):
            out.add(int(x.answer))
        elif isinstance(x, TableEventMap):
            stack.extend(c for c in x.table if c is not None)
        elif isinstance(x, SplitEventMap):
            stack += [x.yes, x.no]
    return sorted(out)


def renumber_event_map(m) -> tuple[object, int]:
    """``m`` with its leaf answers renumbered 0..n-1 in increasing order (RenumberEventMap)."""
    answers = leaf_answers(m)
    mapping = {a: ConstantEventMap(i) for i, a in enumerate(answers)}
    return copy_event_map(m, mapping), len(answers)


def map_events(m, events: np.ndarray, key_column: Mapping[int, int]) -> np.ndarray:
    """Answers of ``m`` for many events at once (vectorized EventMap::Map).

    Args:
        events: (N, K) int values; -1 means the key is absent from the event.
        key_column: EventMap key -> column of ``events`` (e.g. ``{0: 0, 1: 1, 2: 2, -1: 3}``).

    Returns:
        (N,) int answers; -1 where the map has no answer (an absent key, a NULL table entry).
    """
    events = np.asarray(events)
    out = np.full(len(events), -1, dtype=np.int64)
    stack = [(m, np.arange(len(events)))]
    while stack:
        x, rows = stack.pop()
        if x is None or len(rows) == 0:
            continue
        if isinstance(x, ConstantEventMap):
            out[rows] = x.answer
            continue
        vals = events[rows, key_column[x.key]]
        if isinstance(x, SplitEventMap):
            present = vals >= 0
            yes = present & np.isin(vals, x.yes_set)
            stack += [(x.yes, rows[yes]), (x.no, rows[present & ~yes])]
        else:
            for v in np.unique(vals[(vals >= 0) & (vals < len(x.table))]).tolist():
                stack.append((x.table[v], rows[vals == v]))
    return out


def map_context(to_pdf, phones: Sequence[int], pdf_class: int) -> int | None:
    """pdf_id of ``phones`` (the context window) and ``pdf_class`` (ContextDependency::Compute)."""
    event = {i: int(p) for i, p in enumerate(phones)}
    event[PDF_CLASS] = int(pdf_class)
    return to_pdf.map(event)
