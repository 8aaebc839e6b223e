"""Kaldi text tables: one ``<key> <value>`` per line (wav.scp, text, utt2spk, segments, ...).

Every reader keeps the line number of each entry so that errors and validation problems can
point at ``file:line``. Keys are sorted like ``LC_ALL=C sort``: by the UTF-8 bytes of the key,
which for Python ``str`` is plain code-point order.

    >>> entries = read_table_lines("data/train/utt2spk")
    >>> entries[0]
    TableLine(key='fash-an251-fash-b', value='fash', line=1)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pykaldi2.utils.errors import DataError


@dataclass(frozen=True)
class TableLine:
    """One parsed line of a Kaldi table: ``key``, the rest of the line ``value``, 1-based ``line``."""

    key: str
    value: str
    line: int


def c_sort_key(key: str) -> bytes:
    """The sort key of ``LC_ALL=C sort``: the UTF-8 bytes of the string."""
    return key.encode("utf-8")


def c_sorted(keys: Iterable[str]) -> list[str]:
    """``keys`` sorted like ``LC_ALL=C sort`` (UTF-8 byte order)."""
    return sorted(keys, key=c_sort_key)


#: The UTF-8 byte-order mark some editors put at the start of a file (invisible in a terminal).
UTF8_BOM = b"\xef\xbb\xbf"


def iter_table_lines(path: str | os.PathLike) -> Iterator[TableLine]:
    """The non-blank lines of a Kaldi table, one at a time (the file is streamed, never read
    whole), split into key and value at the first whitespace.

    The separator may be any run of spaces or tabs (Kaldi's readers split on whitespace too). A
    UTF-8 byte-order mark at the start of the file is dropped (validate-data-dir names it), as
    is a carriage return at a line end. Raises :class:`DataError` naming the file and line for
    a line that is not valid UTF-8. Duplicates and ordering are not checked here (see
    :mod:`pykaldi2.data.validate`).
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    with f:
        for n, bline in enumerate(f, start=1):
            if n == 1 and bline.startswith(UTF8_BOM):
                bline = bline[len(UTF8_BOM) :]
            try:
                line = bline.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"not valid UTF-8 ({e.reason} at byte {e.start})",
                    file=str(path),
                    line=n,
                    fix="re-encode the file as UTF-8",
                ) from None
            stripped = line.strip()
            if not stripped:
                continue
            parts = stripped.split(maxsplit=1)
            yield TableLine(parts[0], parts[1] if len(parts) > 1 else "", n)


def read_table_lines(path: str | os.PathLike) -> list[TableLine]:
    """All non-blank lines of a Kaldi table (:func:`iter_table_lines` as a list)."""
    return list(iter_table_lines(path))


def read_table(
    path: str | os.PathLike, duplicates: list[TableLine] | None = None
) -> dict[str, str]:
    """A Kaldi table as ``{key: value}``, read line by line.

    A duplicate key is a :class:`DataError`, unless a ``duplicates`` list is given: then the
    first occurrence is kept and each later one is appended to it.
    """
    table: dict[str, str] = {}
    for e in iter_table_lines(path):
        if e.key in table:
            repeated_key(path, e, duplicates)
            continue
        table[e.key] = e.value
    return table


def repeated_key(path: str | os.PathLike, e: TableLine, duplicates: list[TableLine] | None) -> None:
    """A line whose key came before: appended to ``duplicates`` when given (the first one
    wins), else a :class:`DataError` naming both lines. Call it, then skip the line."""
    if duplicates is not None:
        duplicates.append(e)
        return
    first = next(x.line for x in iter_table_lines(path) if x.key == e.key)
    raise DataError(
        f"duplicate key {e.key!r} (first on line {first})",
        file=str(path),
        line=e.line,
        fix="remove the duplicate line, or run `pykaldi2 fix-data-dir`",
    )


def format_table(table: dict[str, str]) -> str:
    """``table`` as Kaldi text, sorted in C order, one ``key value`` per line."""
    lines = []
    for k in c_sorted(table):
        v = table[k]
        lines.append(f"{k} {v}" if v != "" else k)
    return "".join(line + "\n" for line in lines)
