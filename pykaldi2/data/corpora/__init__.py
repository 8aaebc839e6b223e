"""Corpus preparers: a corpus on disk (official layout) -> Kaldi data dirs.

Each module has ``prepare_<corpus>(corpus_dir, out_dir) -> dict[name, DataDir]`` and
``download_<corpus>(dest_dir) -> corpus_dir``. Every data dir is validated in memory and then
written atomically, so a failed run never leaves a half-finished data dir.
"""

from __future__ import annotations

import os
from pathlib import Path

from pykaldi2.data.datadir import DataDir, write_data_dir
from pykaldi2.data.validate import validate_data_dir
from pykaldi2.utils.errors import DataError


def write_checked(d: DataDir, path: str | os.PathLike) -> None:
    """Validate ``d`` in memory, then write it atomically at ``path``.

    Raises :class:`DataError` listing the first problems if ``d`` is not a valid data dir
    (a preparer bug or a damaged corpus), without writing anything.
    """
    problems = validate_data_dir(d)
    if problems:
        shown = "\n  ".join(str(p) for p in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(f"prepared data dir {path} is not valid:\n  {shown}{more}")
    write_data_dir(d, Path(path))


def speaker_prefixed(spk: str, name: str, sep: str = "-") -> str:
    """``name`` prefixed by ``spk`` (unchanged when it already starts with ``spk + sep``)."""
    return name if name.startswith(spk + sep) else f"{spk}{sep}{name}"
