"""Resumable downloads with checksum verification, and safe tar extraction.

A download goes to ``<dest>.part``; an interrupted run resumes it with an HTTP ``Range``
request (a server that ignores Range gets a fresh download). The finished file is checked
against its md5 (when known) before it is renamed onto ``dest``; a mismatch deletes the partial
file and raises :class:`DataError`.

    >>> download("https://www.openslr.org/resources/12/dev-clean.tar.gz",
    ...          "downloads/dev-clean.tar.gz", md5="42e2234ba48799c1f50f24a7926300a1")
    >>> extract_tar("downloads/dev-clean.tar.gz", "corpora/")
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)

CHUNK = 1 << 20


def file_md5(path: str | os.PathLike) -> str:
    """The md5 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _open(url: str, offset: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": "pykaldi2"})
    if offset > 0:
        req.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset > 0:  # the partial file is already complete (or bigger)
            return None
        raise DataError(f"HTTP {e.code} {e.reason} for {url}", fix="check the URL") from None
    except (urllib.error.URLError, OSError) as e:
        raise DataError(
            f"cannot download {url}: {e}", fix="check the network, then rerun to resume"
        ) from None


def download(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    *,
    size: int | None = None,
    resume: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify ``md5`` and/or ``size``
    (bytes; for archives whose publisher gives no checksum), return ``dest``.

    An existing ``dest`` that passes the checks (any existing ``dest`` when none is given) is
    kept without downloading.
    """
    dest = Path(dest)
    if (
        dest.is_file()
        and (md5 is None or file_md5(dest) == md5)
        and (size is None or dest.stat().st_size == size)
    ):
        log.info("%s already downloaded", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if (resume and part.is_file()) else 0
    resp = _open(url, offset, timeout)
    if resp is not None:
        with resp:
            if offset > 0 and resp.status != 206:
                log.info("server ignored the Range request; downloading %s from the start", url)
                offset = 0
            elif offset > 0:
                log.info("resuming %s at byte %d", url, offset)
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with (
                open(part, "ab" if offset else "wb") as f,
                progress(
                    total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name
                ) as bar,
            ):
                for block in iter(lambda: resp.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
    if size is not None and part.stat().st_size != size:
        got_size = part.stat().st_size
        part.unlink()
        raise DataError(
            f"size mismatch: got {got_size} bytes, expected {size} (the partial file was deleted)",
            file=str(dest),
            fix="rerun to download it again",
        )
    if md5 is not None:
        got = file_md5(part)
        if got != md5:
            part.unlink()
            raise DataError(
                f"md5 mismatch: got {got}, expected {md5} (the partial file was deleted)",
                file=str(dest),
                fix="rerun to download it again",
            )
    os.replace(part, dest)
    return dest


def extract_tar(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract a (compressed) tar archive into ``dest``, refusing paths that leave ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python < 3.11.4: check the member paths ourselves
                root = dest.resolve()
                for m in tar.getmembers():
                    target = (dest / m.name).resolve()
                    if root != target and root not in target.parents or m.issym() or m.islnk():
                        raise tarfile.TarError(f"refusing member {m.name!r}")
                tar.extractall(dest)
    except (tarfile.TarError, OSError) as e:
        raise DataError(
            f"cannot extract: {e}", file=str(archive), fix="delete it and download again"
        ) from None


def read_md5sums(text: str) -> dict[str, str]:
    """``md5sum`` output (``<md5>  <file name>`` lines) as ``{file name: md5}``."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 32:
            out[parts[1].lstrip("*")] = parts[0]
    return out


def fetch_md5sums(url: str, timeout: float = 60.0) -> dict[str, str]:
    """Download and parse a ``md5sum.txt`` file (as openslr.org publishes per resource)."""
    resp = _open(url, 0, timeout)
    assert resp is not None
    with resp:
        return read_md5sums(resp.read().decode("utf-8", "replace"))
