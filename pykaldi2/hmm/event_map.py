"""Kaldi's EventMap (the decision tree behind a ContextDependency) in Python, and its binary I/O.

An *event* maps keys to values: keys 0..N-1 are positions in the phone context window, key -1
(``PDF_CLASS``) the pdf-class. Three node types, written exactly as Kaldi's tree/event-map.cc::

    CE <answer>                       ConstantEventMap: a leaf, answer = pdf_id
    TE <key> <size> ( m0 m1 ... )     TableEventMap: child by the key's value (NULL: no child)
    SE <key> [yes-set] { yes no }     SplitEventMap: yes-child if value in the set

and the whole tree as ``ContextDependency <N> <P> ToPdf <map> EndContextDependency``. Binary
Kaldi I/O: a token is its text plus a space; an int32 is the byte 4 then 4 little-endian bytes
(-4 then 4 bytes for a uint32); an integer vector is the byte 4, an int32 count, raw int32s.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write

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


# ---- writing ---------------------------------------------------------------------------------
def _token(f, tok: str) -> None:
    f.write(tok.encode() + b" ")


def _int32(f, v: int) -> None:
    f.write(b"\x04" + struct.pack("<i", int(v)))


def _uint32(f, v: int) -> None:
    f.write(b"\xfc" + struct.pack("<I", int(v)))


def _write_map(f, m) -> None:
    if m is None:
        _token(f, "NULL")
    elif isinstance(m, ConstantEventMap):
        _token(f, "CE")
        _int32(f, m.answer)
    elif isinstance(m, TableEventMap):
        _token(f, "TE")
        _int32(f, m.key)
        _uint32(f, len(m.table))
        _token(f, "(")
        for child in m.table:
            _write_map(f, child)
        _token(f, ")")
    elif isinstance(m, SplitEventMap):
        _token(f, "SE")
        _int32(f, m.key)
        ys = sorted(set(int(v) for v in m.yes_set))
        f.write(b"\x04" + struct.pack("<i", len(ys)) + np.asarray(ys, dtype="<i4").tobytes())
        _token(f, "{")
        _write_map(f, m.yes)
        _write_map(f, m.no)
        _token(f, "}")
    else:
        raise TypeError(f"not an event map: {type(m)}")


def context_dependency_bytes(to_pdf, context_width: int, central_position: int) -> bytes:
    """Kaldi binary serialization of a ContextDependency with the tree ``to_pdf``."""
    f = io.BytesIO()
    _token(f, "ContextDependency")
    _int32(f, context_width)
    _int32(f, central_position)
    _token(f, "ToPdf")
    _write_map(f, to_pdf)
    _token(f, "EndContextDependency")
    return f.getvalue()


def context_dependency_from_bytes(data: bytes):
    """A ``khg.ContextDependency`` from its Kaldi binary serialization (a ``tree`` file)."""
    from pykaldi2.kaldi import khg

    if not data.startswith(b"ContextDependency "):
        raise DataError(
            "not a Kaldi binary tree (does not start with 'ContextDependency ')",
            fix="write the tree in binary mode (Kaldi: copy-tree --binary=true)",
        )
    cd = khg.ContextDependency.__new__(khg.ContextDependency)
    cd.__setstate__((np.frombuffer(data, dtype=np.int8).tolist(),))
    return cd


def read_tree(path: str | os.PathLike):
    """Load a Kaldi binary ``tree`` file as ``khg.ContextDependency``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError("no such tree file", file=path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return context_dependency_from_bytes(data)
    except DataError as e:
        raise DataError(str(e), file=path) from None


def write_tree(path: str | os.PathLike, to_pdf, context_width: int, central_position: int) -> None:
    """Write a tree in Kaldi's binary format, atomically."""
    with atomic_write(path, "wb") as f:
        f.write(context_dependency_bytes(to_pdf, context_width, central_position))


def map_context(to_pdf, phones: Sequence[int], pdf_class: int) -> int | None:
    """pdf_id of ``phones`` (the context window) and ``pdf_class`` (ContextDependency::Compute)."""
    event = {i: int(p) for i, p in enumerate(phones)}
    event[PDF_CLASS] = int(pdf_class)
    return to_pdf.map(event)
