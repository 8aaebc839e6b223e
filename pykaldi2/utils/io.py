"""Atomic file and directory writes: a killed run never leaves a half-written output.

>>> with atomic_write("data/train/text") as f:
...     f.write("utt1 HELLO\n")
>>> with atomic_dir("data/train") as tmp:      # tmp is a sibling temp dir
...     (tmp / "wav.scp").write_text("...")    # renamed onto data/train on success

A full disk (ENOSPC, or EDQUOT: over quota) during either is a :class:`DiskFullError` naming
the file and saying what to do (free space, run the same command again), never a traceback:
the temp file is removed and the previous output, if any, kept. Writers that wrap the file
(``torch.save`` reports a failed write as ``RuntimeError: unexpected pos``) are seen through:
the file object :func:`atomic_write` yields records the OSError of its writes.
:func:`disk_full_errors` does the same conversion around any block of writes, and
:func:`check_free_space` refuses to start a write that would not fit (for writers such as
HDF5 that do not fail cleanly when the disk fills).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pykaldi2.utils.errors import Pykaldi2Error

#: errno values of "the disk is full" (no space left; disk quota exceeded).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: How libraries that hide the errno (HDF5, torch's zip writer) say it.
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "errno = 28")


class DiskFullError(Pykaldi2Error):
    """No space left on the device (or over quota) while writing: what was being written was
    not written (its temp file removed, an earlier version kept)."""


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes available to this user on the filesystem holding ``path`` (an existing path)."""
    st = os.statvfs(path)
    return int(st.f_bavail) * int(st.f_frsize)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc``, or an exception it was raised from or during (not one hidden with
    ``from None``), says the disk is full: an OSError with errno ENOSPC/EDQUOT, or a library
    error whose text says so."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if any(t in str(exc) for t in _DISK_FULL_TEXTS):
            return True
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return False


def disk_full_error(path: str | os.PathLike, kept: bool = False) -> DiskFullError:
    """The :class:`DiskFullError` for a failed write of ``path`` (``kept``: an earlier version
    of it is still there)."""
    path = Path(path)
    where = path.parent if str(path.parent) else Path(".")
    try:
        free = f"{_human(free_bytes(where))} free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        f"{path}: no space left on the device ({free}); it was not written"
        + (" (the previous version is kept)" if kept else "")
        + f". Fix: free disk space (df -h {where}), or write somewhere else, then run the same "
        "command again: finished outputs are kept and the run resumes"
    )


@contextlib.contextmanager
def disk_full_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full-disk error raised in the block (see :func:`is_disk_full`) into a
    :class:`DiskFullError` naming ``path``, the output being written."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(path) from e
        raise


def check_free_space(path: str | os.PathLike, need: int, what: str) -> None:
    """A :class:`DiskFullError` unless the filesystem of ``path`` (a dir) has ``need`` bytes
    free: ``what`` (e.g. an archive about to be written to) would not fit."""
    have = free_bytes(path)
    if have < need:
        raise DiskFullError(
            f"{what}: not enough space left on the device of {path} ({_human(have)} free, "
            f"{_human(need)} needed); nothing was written. Fix: free disk space (df -h {path}), "
            "or write somewhere else, then run the same command again: finished outputs are "
            "kept and the run resumes"
        )


class _RecordingFile:
    """A file object that remembers the first OSError of its writes (see the module doc)."""

    def __init__(self, f: IO) -> None:
        self._f = f
        self.error: OSError | None = None

    def _call(self, name: str, *args):
        try:
            return getattr(self._f, name)(*args)
        except OSError as e:
            self.error = self.error or e
            raise

    def write(self, data):
        return self._call("write", data)

    def writelines(self, lines):
        return self._call("writelines", lines)

    def flush(self):
        return self._call("flush")

    def __iter__(self):
        return iter(self._f)

    def __getattr__(self, name: str):
        return getattr(self._f, name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kw) -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync and rename it onto ``path``.

    On an exception the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
    rec = None
    try:
        with open(tmp, mode, **kw) as f:
            rec = _RecordingFile(f)
            yield rec  # type: ignore[misc]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if not isinstance(e, DiskFullError) and (
            is_disk_full(e)
            or (rec is not None and rec.error is not None and is_disk_full(rec.error))
        ):
            raise disk_full_error(path, kept=path.exists()) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory in a temp sibling and move it onto ``path`` only on success.

    An existing ``path`` is replaced (moved aside, then deleted) when ``overwrite`` is true;
    otherwise a ``FileExistsError`` is raised before any work is done.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; remove it or pass overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, DiskFullError) and is_disk_full(e):
            raise disk_full_error(path, kept=path.exists()) from e
        raise


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created) for the block, or fail at once.

    The lock dies with its process (a killed run leaves no stale lock); the file keeps the pid
    of its holder for the message. ``what`` names the locked work in that message, e.g.
    ``"compute-feats into fbank/raw_fbank_train.*"``.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise Pykaldi2Error(
                f"another process (pid {holder}) is running {what} now (lock {path}). Fix: wait "
                "for it to finish, or write somewhere else"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()  # releases the lock
