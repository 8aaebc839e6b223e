"""Logging set-up and progress bars shared by every command."""

from __future__ import annotations

import logging
import os
import sys

_FMT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def setup_logging(verbose: int = 0) -> None:
    level = logging.DEBUG if verbose > 0 else logging.INFO
    logging.basicConfig(level=level, format=_FMT, datefmt="%H:%M:%S", stream=sys.stderr)


def progress(iterable=None, **kw):
    """A tqdm progress bar on stderr; disabled with PYKALDI2_NO_PROGRESS=1 (tests, logs)."""
    from tqdm.auto import tqdm

    kw.setdefault("disable", os.environ.get("PYKALDI2_NO_PROGRESS") == "1")
    kw.setdefault("dynamic_ncols", True)
    kw.setdefault("file", sys.stderr)
    return tqdm(iterable, **kw)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append ``record`` as one JSON line to the log file ``path`` (parent dirs created).

    A log grows line by line (and keeps its lines across resumes), so it is appended to, not
    rewritten atomically like an output file; a write that fails (a full disk) is cut off
    again, so the log never ends in half a line.
    """
    import json
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = memoryview((json.dumps(record) + "\n").encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)
