"""subset_data_dir and combine_data (Kaldi's ``utils/subset_data_dir.sh``, ``combine_data.sh``).

>>> small = subset_data_dir(d, first=100)                 # first 100 utts in sorted order
>>> short = subset_data_dir(d, shortest=500)              # the 500 shortest (needs durations)
>>> some = subset_data_dir(d, spk_list=["fash", "fbbh"])  # all utts of these speakers
>>> both = combine_data([read_data_dir("data/a"), read_data_dir("data/b")])
"""

from __future__ import annotations

import os
from pathlib import Path

from pykaldi2.data.datadir import DataDir, read_data_dir
from pykaldi2.data.durations import compute_utt2dur
from pykaldi2.data.tables import read_table_lines
from pykaldi2.utils.errors import DataError


def read_id_list(path: str | os.PathLike) -> list[tuple[str, int]]:
    """The first field of each line of a list file, with its line number."""
    return [(e.key, e.line) for e in read_table_lines(path)]


def subset_data_dir(
    d: DataDir,
    *,
    utt_list: list[str] | str | os.PathLike | None = None,
    first: int | None = None,
    spk_list: list[str] | str | os.PathLike | None = None,
    shortest: int | None = None,
) -> DataDir:
    """The part of ``d`` selected by exactly one of the criteria.

    Args:
        utt_list: utterance ids (a list, or a file with one id first on each line). An id not
            in ``d`` is a :class:`DataError`.
        first: the first N utterances in C sort order.
        spk_list: speaker ids (list or file); all their utterances. Unknown ids are errors.
        shortest: the N shortest utterances (by ``utt2num_frames`` when the features exist,
            as Kaldi's feat-to-len, else ``utt2dur``, computed if absent; ties broken by id).
    """
    given = [x is not None for x in (utt_list, first, spk_list, shortest)]
    if sum(given) != 1:
        raise DataError("give exactly one of utt_list, first, spk_list, shortest")
    if utt_list is not None or spk_list is not None:
        is_utt = utt_list is not None
        ids = utt_list if is_utt else spk_list
        known = d.utt2spk if is_utt else d.spk2utt
        what = "utterance" if is_utt else "speaker"
        if isinstance(ids, (str, os.PathLike)):
            entries, src = read_id_list(ids), str(ids)
        else:
            entries, src = [(x, None) for x in ids], None
        for x, line in entries:
            if x not in known:
                raise DataError(
                    f"{what} {x!r} is not in the data dir {d.path or ''}".rstrip(),
                    file=src,
                    line=line,
                    fix=f"remove it from the {what} list",
                )
        wanted = {x for x, _ in entries}
        if is_utt:
            return d.select(wanted)
        return d.select(u for u, s in d.utt2spk.items() if s in wanted)
    n = first if first is not None else shortest
    assert n is not None
    if n < 0:
        raise DataError(f"the number of utterances must be >= 0, got {n}")
    if n > len(d):
        raise DataError(f"asked for {n} utterances but the data dir has only {len(d)}")
    if first is not None:
        return d.select(d.utt_ids[:n])
    frames = d.utt_tables.get("utt2num_frames")
    if frames is not None and set(frames) >= set(d.utt2spk):
        # as utils/subset_data_dir.sh --shortest (feat-to-len): the feature lengths, no audio read
        length = {u: int(frames[u]) for u in d.utt2spk}
    else:
        length = d.utt2dur if d.utt2dur is not None else compute_utt2dur(d)
    return d.select(sorted(d.utt_ids, key=lambda u: (length[u], u))[:n])


def _merge(
    target: dict[str, object], source: dict[str, object], what: str, where: str, strict: bool
) -> None:
    """Add ``source`` into ``target``; a repeated key is an error (``strict``) or must agree."""
    for k, v in source.items():
        if k in target:
            if strict:
                raise DataError(
                    f"duplicate {what} id {k!r}",
                    file=where,
                    fix="give the data dirs distinct ids (e.g. add a prefix) before combining",
                )
            if target[k] != v:
                raise DataError(
                    f"{what} {k!r} differs between data dirs ({target[k]!r} vs {v!r})",
                    file=where,
                )
        target[k] = v


def combine_data(dirs: list[DataDir]) -> DataDir:
    """One data dir holding the utterances of all of ``dirs`` (duplicate utt ids: error).

    A recording or speaker may appear in several dirs only with identical values. When some
    dirs have ``segments`` and others not, whole-recording segments ``<utt> <utt> 0 -1`` are
    made for the latter. utt2dur and carried tables are kept only when every dir has them.
    """
    if not dirs:
        raise DataError("no data dirs to combine")
    out = DataDir(wav_scp={}, text={}, utt2spk={})
    any_seg = any(d.segments is not None for d in dirs)
    out.segments = {} if any_seg else None
    all_dur = all(d.utt2dur is not None for d in dirs)
    out.utt2dur = {} if all_dur else None
    utt_names = set.intersection(*(set(d.utt_tables) for d in dirs))
    spk_names = set.intersection(*(set(d.spk_tables) for d in dirs))
    for i, d in enumerate(dirs):
        where = str(d.path) if d.path is not None else f"data dir #{i + 1}"
        _merge(out.utt2spk, d.utt2spk, "utterance", where, strict=True)
        _merge(out.text, d.text, "utterance", where, strict=False)
        _merge(out.wav_scp, d.wav_scp, "recording", where, strict=False)
        if out.segments is not None:
            seg = d.segments
            if seg is None:
                seg = {u: (u, 0.0, -1.0) for u in d.utt2spk}
            _merge(out.segments, seg, "utterance", where, strict=False)
        if out.utt2dur is not None:
            _merge(out.utt2dur, d.utt2dur, "utterance", where, strict=False)
        for name in utt_names:
            _merge(out.utt_tables.setdefault(name, {}), d.utt_tables[name], name, where, False)
        for name in spk_names:
            _merge(out.spk_tables.setdefault(name, {}), d.spk_tables[name], name, where, False)
    return out


def combine_data_dirs(paths: list[str | os.PathLike]) -> DataDir:
    """:func:`combine_data` of the data dirs at ``paths``."""
    return combine_data([read_data_dir(Path(p)) for p in paths])
