"""Checksums of a model dir's files, written with the dir and checked when it is loaded.

A dir being built (inside :func:`~pykaldi2.utils.io.atomic_dir`) gets ``checksums.sha256`` last:
one ``<sha256>  <path>`` line per file under it (``sha256sum`` format, so ``sha256sum -c
checksums.sha256`` in the dir checks it without pykaldi2). :func:`verify_checksums` recomputes
them on load: a truncated, damaged or edited file is a :class:`DataError` naming it, instead of
a traceback from torch or a model that loads with a flipped byte. Dirs written before checksums
existed have no manifest and load unchecked (:func:`verify_checksums` returns False).

    >>> write_checksums(tmp)                         # last step of writing exp/ce/final
    >>> verify_checksums("exp/ce/final", fix="re-run train-ce")
    True
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write_text

#: The manifest's name in a model dir.
MANIFEST = "checksums.sha256"


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_files(root: str | os.PathLike) -> list[str]:
    """The regular files under ``root`` (recursive), as sorted POSIX paths relative to it,
    without the manifest."""
    root = Path(root)
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST
    )


def write_checksums(root: str | os.PathLike) -> Path:
    """Write ``root/checksums.sha256`` for every file under ``root`` (replacing it)."""
    root = Path(root)
    lines = [f"{sha256_file(root / rel)}  {rel}\n" for rel in dir_files(root)]
    path = root / MANIFEST
    atomic_write_text(path, "".join(lines))
    return path


def read_checksums(root: str | os.PathLike) -> dict[str, str] | None:
    """``{path: sha256}`` of ``root/checksums.sha256``; None when the dir has none. A line that
    is not ``<64 hex digits>  <path>`` is a :class:`DataError` naming the line."""
    manifest = Path(root) / MANIFEST
    if not manifest.is_file():
        return None
    out: dict[str, str] = {}
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise DataError(
                "not a '<sha256>  <file>' line", file=str(manifest), line=n,
                fix="copy the model dir again (its manifest is damaged)",
            )  # fmt: skip
        out[rel] = digest.lower()
    return out


def verify_checksums(root: str | os.PathLike, *, fix: str) -> bool:
    """Check every file listed in ``root/checksums.sha256``: True when all match, False when
    the dir has no manifest (written before checksums; nothing checked). A listed file that is
    missing or whose sha256 differs is a :class:`DataError` naming it, with ``fix``."""
    root = Path(root)
    listed = read_checksums(root)
    if listed is None:
        return False
    for rel, digest in listed.items():
        path = root / rel
        if not path.is_file():
            raise DataError(
                f"{rel} is listed in {MANIFEST} but missing", file=str(path),
                fix=f"copy the whole model dir, or {fix}",
            )  # fmt: skip
        if sha256_file(path) != digest:
            raise DataError(
                f"{rel} fails its sha256 check ({path.stat().st_size} bytes): the file is "
                "truncated, damaged or changed since the model dir was written",
                file=str(path), fix=fix,
            )  # fmt: skip
    return True
