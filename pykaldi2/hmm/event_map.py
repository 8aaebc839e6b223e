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


def map_context(to_pdf, phones: Sequence[int], pdf_class: int) -> int | None:
    """pdf_id of ``phones`` (the context window) and ``pdf_class`` (ContextDependency::Compute)."""
    event = {i: int(p) for i, p in enumerate(phones)}
    event[PDF_CLASS] = int(pdf_class)
    return to_pdf.map(event)
