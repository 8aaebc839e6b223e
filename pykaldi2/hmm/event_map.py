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


# ---- Kaldi's text form (copy-tree --binary=false) ------------------------------------------
def event_map_tokens(m) -> list[str]:
    """The whitespace-separated tokens of Kaldi's text form of ``m``."""
    if m is None:
        return ["NULL"]
    if isinstance(m, ConstantEventMap):
        return ["CE", str(int(m.answer))]
    if isinstance(m, TableEventMap):
        toks = ["TE", str(int(m.key)), str(len(m.table)), "("]
        for c in m.table:
            toks += event_map_tokens(c)
        return toks + [")"]
    if isinstance(m, SplitEventMap):
        ys = sorted(set(int(v) for v in m.yes_set))
        return (
            ["SE", str(int(m.key)), "[", *map(str, ys), "]", "{"]
            + event_map_tokens(m.yes)
            + event_map_tokens(m.no)
            + ["}"]
        )
    raise TypeError(f"not an event map: {type(m)}")


def _parse_map(toks: list[str], i: int) -> tuple[object, int]:
    t = toks[i]
    if t == "NULL":
        return None, i + 1
    if t == "CE":
        return ConstantEventMap(int(toks[i + 1])), i + 2
    if t == "TE":
        key, size = int(toks[i + 1]), int(toks[i + 2])
        if toks[i + 3] != "(":
            raise ValueError(f"expected '(' at token {i + 3}")
        i += 4
        table = []
        for _ in range(size):
            child, i = _parse_map(toks, i)
            table.append(child)
        if toks[i] != ")":
            raise ValueError(f"expected ')' at token {i}")
        return TableEventMap(key, table), i + 1
    if t == "SE":
        key = int(toks[i + 1])
        if toks[i + 2] != "[":
            raise ValueError(f"expected '[' at token {i + 2}")
        j = toks.index("]", i + 3)
        yes_set = [int(v) for v in toks[i + 3 : j]]
        if toks[j + 1] != "{":
            raise ValueError(f"expected '{{' at token {j + 1}")
        yes, i = _parse_map(toks, j + 2)
        no, i = _parse_map(toks, i)
        if toks[i] != "}":
            raise ValueError(f"expected '}}' at token {i}")
        return SplitEventMap(key, yes_set, yes, no), i + 1
    raise ValueError(f"unexpected token {t!r} at {i}")


def read_tree_text(text: str) -> tuple[object, int, int]:
    """Parse Kaldi's text tree (``copy-tree --binary=false``): ``(to_pdf, N, P)``."""
    toks = text.split()
    try:
        if toks[:1] != ["ContextDependency"] or toks[3] != "ToPdf":
            raise ValueError("does not start with 'ContextDependency N P ToPdf'")
        m, i = _parse_map(toks, 4)
        if toks[i : i + 1] != ["EndContextDependency"]:
            raise ValueError("no EndContextDependency")
    except (IndexError, ValueError) as e:
        raise DataError(f"not a Kaldi text tree: {e}", fix="copy-tree --binary=false") from None
    return m, int(toks[1]), int(toks[2])


def tree_text(to_pdf, context_width: int, central_position: int) -> str:
    """Kaldi's text form of a tree, one line (compare with ``read_tree_text`` or by tokens)."""
    toks = ["ContextDependency", str(context_width), str(central_position), "ToPdf"]
    return " ".join(toks + event_map_tokens(to_pdf) + ["EndContextDependency"]) + "\n"


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
