"""Kaldi lattice archives: Lattice and CompactLattice, binary and text, ``ark``, ``.gz``, ``scp``.

An archive is a sequence of ``key`` + space + lattice entries (Kaldi's table format):

- binary (Kaldi's default, ``lat.N.gz`` of a decode dir, ``gzip -c`` of the ark): the lattice is
  an OpenFst VectorFst of arc type ``compactlattice44`` or ``lattice4`` right after the space
  (no ``\\0B`` marker for lattices); see ``pykaldi2/hmm/csrc/lattice_io.h``;
- text (``ark,t:``): a newline, the lattice's text form (:meth:`CompactLattice.to_text`,
  :meth:`Lattice.to_text`), an empty line.

Reading detects gzip (magic bytes), binary or text per entry (as Kaldi's holders: the byte after
the space is 214 or whitespace), and Lattice or CompactLattice (the arc type, or the text's
columns). A ``.scp`` lists ``key file:offset`` lines into archives. Archives are read entry by
entry, not whole.

    >>> with LatticeWriter("exp/tri1/decode_test/lat.1.gz") as w:   # gzipped binary
    ...     w.write("utt1", clat)
    >>> for utt, lat in read_lattices("exp/tri1/decode_test/lat.1.gz"): ...
    >>> dict(read_compact_lattices("lat.1.ark"))    # raw ones converted, as Kaldi's holder does
"""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pykaldi2.decoding.compact_lattice import CompactLattice
from pykaldi2.decoding.lattice import Lattice
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.io import atomic_write

__all__ = [
    "LatticeWriter",
    "lattice_entry_bytes",
    "read_compact_lattices",
    "read_lattice_ark",
    "read_lattices",
    "write_lattice_ark",
]

AnyLattice = Lattice | CompactLattice
_FST_MAGIC_BYTE = 0xD6  # first byte of OpenFst's magic number, little-endian
_CHUNK = 1 << 22


def _ext():
    from pykaldi2.hmm import _decoder

    return _decoder


def _check_key(key: str) -> None:
    if not key or any(c.isspace() for c in key):
        raise DataError(
            f"invalid utterance id {key!r} for a lattice archive", fix="no spaces in keys"
        )


def lattice_bytes(lat: AnyLattice) -> bytes:
    """Kaldi's binary form of one lattice (the bytes after ``key `` in an archive)."""
    if isinstance(lat, CompactLattice):
        return _ext().write_lattice(lat.to_dict(), True, lat.properties)
    return _ext().write_lattice(lat.to_dict(), False, None)


def lattice_entry_bytes(key: str, lat: AnyLattice | str, binary: bool = True) -> bytes:
    """One archive entry: ``key`` + space + the binary lattice, or + newline + text + newline."""
    _check_key(key)
    if binary:
        if isinstance(lat, str):
            raise Pykaldi2Error("lattice_entry_bytes: a text lattice cannot be written in binary")
        return key.encode() + b" " + lattice_bytes(lat)
    text = lat if isinstance(lat, str) else lat.to_text()
    return f"{key} \n{text}\n".encode()


class LatticeWriter:
    """Writes a Kaldi lattice archive atomically (a temp file renamed on :meth:`close`).

    Args:
        path: ``lat.N.gz`` (gzipped, as Kaldi's decode dirs) or an ``.ark``.
        binary: Kaldi's binary lattices (default), else the text form (``ark,t:``).
        compress: gzip; default: when ``path`` ends in ``.gz``.
    """

    def __init__(self, path: str | os.PathLike, binary: bool = True, compress: bool | None = None):
        self.path = Path(path)
        self.binary = binary
        self.compress = self.path.suffix == ".gz" if compress is None else compress
        self._stack = contextlib.ExitStack()
        raw = self._stack.enter_context(atomic_write(self.path, "wb"))
        self._f = (
            self._stack.enter_context(gzip.GzipFile(fileobj=raw, mode="wb", mtime=0))
            if self.compress
            else raw
        )
        self.num_written = 0

    def write(self, key: str, lat: AnyLattice | str) -> None:
        self.write_entry(lattice_entry_bytes(key, lat, self.binary))

    def write_entry(self, entry: bytes) -> None:
        """Append an entry made by :func:`lattice_entry_bytes` (e.g. in a worker process)."""
        self._f.write(entry)
        self.num_written += 1

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> LatticeWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._stack.__exit__(*exc)


def write_lattice_ark(
    path: str | os.PathLike, lattices: dict[str, AnyLattice], binary: bool = False
) -> None:
    """Write ``{utt: lattice}`` as one archive atomically (text by default; gzipped for .gz)."""
    with LatticeWriter(path, binary=binary) as w:
        for key, lat in lattices.items():
            w.write(key, lat)


# ---- reading --------------------------------------------------------------------------------
def _open_bytes(path: Path):
    f = open(path, "rb")
    magic = f.read(2)
    f.seek(0)
    return gzip.GzipFile(fileobj=f, mode="rb") if magic == b"\x1f\x8b" else f


class _Stream:
    """A byte stream read in chunks, with a cursor and look-ahead."""

    def __init__(self, f, where: str) -> None:
        self.f, self.where = f, where
        self.buf = bytearray()
        self.pos = 0
        self.eof = False
        self.offset = 0  # file offset of buf[0]
        self.lines = 0  # newlines consumed (line numbers of text archives)

    def fill(self, need: int = 1) -> bool:
        """Make ``need`` bytes available after pos; False at the end of the file."""
        while len(self.buf) - self.pos < need and not self.eof:
            if self.pos > _CHUNK:
                del self.buf[: self.pos]
                self.offset += self.pos
                self.pos = 0
            chunk = self.f.read(_CHUNK)
            if not chunk:
                self.eof = True
            self.buf += chunk
        return len(self.buf) - self.pos >= need

    def line(self) -> bytes | None:
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                out = bytes(self.buf[self.pos : i])
                self.pos = i + 1
                self.lines += 1
                return out
            if self.eof:
                if self.pos >= len(self.buf):
                    return None
                out = bytes(self.buf[self.pos :])
                self.pos = len(self.buf)
                return out
            self.fill(len(self.buf) - self.pos + 1)


def _text_kind(lines: list[str]) -> bool:
    """True (compact) or False (raw) from the columns of a lattice's text lines; compact when
    nothing tells (Kaldi's CompactLatticeHolder reads both)."""
    for line in lines:
        f = line.split()
        if len(f) == 5:
            return False
        if len(f) == 3:
            return True
        if len(f) in (2, 4):
            commas = f[-1].count(",")
            if commas == 2:
                return True
            if commas == 1 or (len(f) == 4 and commas == 0):
                return False
    return True


def _read_entry(s: _Stream, key: str, where: str, line: int | None = None) -> AnyLattice:
    """The lattice after ``key `` at the stream's cursor (``line``: the key's line number)."""
    if not s.fill(1):
        raise DataError(f"archive ends after key {key!r}", file=where)
    c = s.buf[s.pos]
    if c == _FST_MAGIC_BYTE:
        while True:
            try:
                d, compact, props, end = _ext().read_lattice(s.buf, s.pos)
                break
            except RuntimeError as e:
                if "ends early" in str(e) and not s.eof:
                    s.fill(len(s.buf) - s.pos + _CHUNK)
                    continue
                raise DataError(f"bad binary lattice: {e}", file=where, utt=key) from None
        s.pos = end
        return CompactLattice.from_dict(d, properties=props) if compact else Lattice.from_dict(d)
    if c not in b" \t\r\n":
        raise DataError(
            f"entry {key!r} is neither a binary lattice nor text", file=where,
            fix="lattice archives hold 'key <binary FST>' or 'key \\n<text>\\n\\n' entries",
        )  # fmt: skip
    s.line()  # the rest of the key line
    lines = []
    while True:
        text = s.line()
        if text is None or not text.strip():
            break
        lines.append(text.decode())
    loc = f"{where}:{line} ({key})" if line else f"{where} ({key})"
    if _text_kind(lines):
        return CompactLattice.from_lines(lines, where=loc)
    return Lattice.from_lines(lines, where=loc)


def _read_key(s: _Stream, where: str) -> str | None:
    while s.fill(1) and s.buf[s.pos] in b" \t\r\n":
        s.lines += s.buf[s.pos] == 10
        s.pos += 1
    if not s.fill(1):
        return None
    while True:
        i = s.buf.find(b" ", s.pos)
        j = s.buf.find(b"\n", s.pos)
        if i >= 0 and (j < 0 or i < j):
            key = bytes(s.buf[s.pos : i]).decode()
            s.pos = i + 1
            return key
        if j >= 0 or s.eof:
            raise DataError("archive key without a lattice", file=where, fix="a truncated archive?")
        s.fill(len(s.buf) - s.pos + 1)


def _read_archive(path: Path) -> Iterator[tuple[str, AnyLattice]]:
    where = str(path)
    with contextlib.closing(_open_bytes(path)) as f:
        s = _Stream(f, where)
        while True:
            try:
                key = _read_key(s, where)
            except (OSError, EOFError) as e:
                raise DataError(f"cannot read the archive: {e}", file=where) from None
            if key is None:
                return
            yield key, _read_entry(s, key, where, s.lines + 1)


def _read_scp(path: Path) -> Iterator[tuple[str, AnyLattice]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or ":" not in fields[1]:
                raise DataError(
                    "expected 'key file:offset'", file=str(path), line=lineno,
                    fix="an scp of lattices points into archives",
                )  # fmt: skip
            key, spec = fields
            file, _, offset = spec.rpartition(":")
            target = Path(file)
            if not target.is_file():
                raise DataError(f"scp points to a missing file {file}", file=str(path), line=lineno)
            with open(target, "rb") as g:
                g.seek(int(offset))
                s = _Stream(g, str(target))
                yield key, _read_entry(s, key, f"{target}:{offset}")


def read_lattices(path: str | os.PathLike) -> Iterator[tuple[str, AnyLattice]]:
    """``(key, Lattice or CompactLattice)`` of an archive (ark, gzipped ark) or scp, in order."""
    path = Path(path)
    if not path.is_file():
        raise DataError("lattice archive not found", file=str(path), fix="run decoding first")
    if path.suffix == ".scp":
        yield from _read_scp(path)
    else:
        yield from _read_archive(path)


def read_compact_lattices(path: str | os.PathLike) -> Iterator[tuple[str, CompactLattice]]:
    """As :func:`read_lattices`, raw lattices converted (Kaldi's CompactLatticeHolder)."""
    for key, lat in read_lattices(path):
        yield key, lat if isinstance(lat, CompactLattice) else CompactLattice.from_raw(lat)


def read_lattice_ark(path: str | os.PathLike) -> Iterator[tuple[str, Lattice]]:
    """As :func:`read_lattices`, compact lattices expanded to raw ones (Kaldi's LatticeHolder)."""
    for key, lat in read_lattices(path):
        yield key, lat if isinstance(lat, Lattice) else lat.to_raw()


def read_archives(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[str, AnyLattice]]:
    """:func:`read_lattices` over several archives (e.g. a decode dir's lat.*.gz)."""
    for p in paths:
        yield from read_lattices(p)


def copy_entries(src: str | os.PathLike, dst: LatticeWriter) -> int:
    """Copy every lattice of ``src`` into ``dst`` (lattice-copy); returns the count."""
    n = 0
    for key, lat in read_lattices(src):
        dst.write(key, lat)
        n += 1
    return n


def decompressed(path: str | os.PathLike) -> bytes:
    """The bytes of an archive, gunzipped when gzipped (for comparisons)."""
    with contextlib.closing(_open_bytes(Path(path))) as f:
        return f.read()
