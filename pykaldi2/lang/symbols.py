"""Symbol tables (phones.txt, words.txt): the two-column ``symbol id`` text files of Kaldi/OpenFst.

>>> words = SymbolTable(["<eps>", "HELLO", "WORLD"])
>>> words.id("HELLO"), words.sym(2)
(1, 'WORLD')
>>> words.write("lang/words.txt")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write_text


class SymbolTable:
    """A bijection between symbols (str) and integer ids (Kaldi's phones.txt / words.txt).

    Ids need not be contiguous when read from a file; tables we build are ``0..N-1`` with
    ``<eps>`` at 0.
    """

    def __init__(self, symbols: Iterable[str] = (), *, name: str = "") -> None:
        self.name = name
        self._sym2id: dict[str, int] = {}
        self._id2sym: dict[int, str] = {}
        self._next_id = 0
        for s in symbols:
            self.add(s)

    # --- building -------------------------------------------------------------------------
    def add(self, sym: str, id_: int | None = None) -> int:
        """Add ``sym`` (with the next free id unless ``id_`` is given); return its id."""
        if not sym or any(c.isspace() for c in sym):
            raise DataError(f"invalid symbol {sym!r} (empty or with whitespace)", file=self.name)
        if sym in self._sym2id:
            raise DataError(f"duplicate symbol {sym!r}", file=self.name or None)
        if id_ is None:
            id_ = self._next_id
        if id_ in self._id2sym:
            raise DataError(
                f"id {id_} used by both {self._id2sym[id_]!r} and {sym!r}", file=self.name or None
            )
        self._sym2id[sym] = id_
        self._id2sym[id_] = sym
        self._next_id = max(self._next_id, id_ + 1)
        return id_

    # --- lookup ---------------------------------------------------------------------------
    def id(self, sym: str) -> int:
        """The id of ``sym``; a clear error when it is missing."""
        try:
            return self._sym2id[sym]
        except KeyError:
            raise DataError(
                f"symbol {sym!r} is not in the symbol table", file=self.name or None
            ) from None

    def sym(self, id_: int) -> str:
        """The symbol of ``id_``; a clear error when it is missing."""
        try:
            return self._id2sym[int(id_)]
        except KeyError:
            raise DataError(
                f"id {id_} is not in the symbol table", file=self.name or None
            ) from None

    def ids(self, syms: Iterable[str]) -> list[int]:
        return [self.id(s) for s in syms]

    def syms(self, ids: Iterable[int]) -> list[str]:
        return [self.sym(i) for i in ids]

    def get(self, sym: str, default: int | None = None) -> int | None:
        return self._sym2id.get(sym, default)

    def __contains__(self, sym: object) -> bool:
        return sym in self._sym2id

    def __len__(self) -> int:
        return len(self._sym2id)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        """(symbol, id) pairs in id order."""
        for i in sorted(self._id2sym):
            yield self._id2sym[i], i

    @property
    def symbols(self) -> list[str]:
        return [s for s, _ in self]

    def max_id(self) -> int:
        return self._next_id - 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SymbolTable) and self._sym2id == other._sym2id

    def __repr__(self) -> str:
        return f"SymbolTable({self.name!r}, {len(self)} symbols)"

    # --- I/O ------------------------------------------------------------------------------
    def to_text(self) -> str:
        return "".join(f"{s} {i}\n" for s, i in self)

    def write(self, path: str | os.PathLike) -> None:
        """Write ``symbol id`` lines in id order, atomically."""
        atomic_write_text(path, self.to_text())

    @classmethod
    def read(cls, path: str | os.PathLike) -> SymbolTable:
        """Read a ``symbol id`` file; malformed lines raise :class:`DataError` with file:line."""
        path = Path(path)
        if not path.is_file():
            raise DataError("symbol table not found", file=str(path), fix="run prepare-lang first")
        table = cls(name=str(path))
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                    raise DataError(
                        f"expected 'symbol id', got {line.strip()!r}",
                        file=str(path),
                        line=lineno,
                    )
                try:
                    table.add(fields[0], int(fields[1]))
                except DataError as e:
                    raise DataError(
                        str(e).split(": ", 1)[-1], file=str(path), line=lineno
                    ) from None
        return table
