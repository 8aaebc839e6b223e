"""The Kaldi data directory: ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt`` and friends.

A data dir is the interface between corpus preparation and every later stage::

    data/train/
      wav.scp    <rec_id> <path>            or  <rec_id> <command> |
      text       <utt_id> <WORD> <WORD> ...
      utt2spk    <utt_id> <spk_id>          (sorted by utterance and then also by speaker)
      spk2utt    <spk_id> <utt_id> <utt_id> ...
      segments   <utt_id> <rec_id> <start_s> <end_s>   (optional; end -1 = to the end)
      utt2dur    <utt_id> <seconds>                     (optional)

Without ``segments`` the recording id is the utterance id. Files are sorted like
``LC_ALL=C sort``. Other per-utterance tables (``feats.scp``, ``utt2num_frames``, ...) and
per-speaker tables (``spk2gender``, ``cmvn.scp``) are carried along as plain text so that fix,
subset and combine keep them consistent.

    >>> d = read_data_dir("data/train")
    >>> d.utt_ids[:2], d.spk2utt["fash"][:1], d.recording_of(d.utt_ids[0])
    >>> write_data_dir(d, "data/train_copy")
"""

from __future__ import annotations

import os
from collections.abc import Collection, Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pykaldi2.data.tables import (
    TableLine,
    c_sorted,
    format_table,
    iter_table_lines,
    read_table,
    repeated_key,
)
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_dir

#: Optional tables keyed by utterance id that fix/subset/combine carry along.
UTT_TABLES = ("feats.scp", "utt2num_frames", "utt2lang", "utt2uniq", "text.orig")
#: Optional tables keyed by speaker id.
SPK_TABLES = ("spk2gender", "cmvn.scp")


@dataclass
class DataDir:
    """An in-memory Kaldi data dir (see the module docstring for the file formats).

    Attributes:
        wav_scp: recording id -> audio path, or a Kaldi pipe command ending in ``|``.
        text: utt id -> transcript (the rest of the line after the id; may be empty).
        utt2spk: utt id -> speaker id.
        segments: utt id -> (recording id, start seconds, end seconds; -1 = to the end), or
            None when every utterance is a whole recording (recording id == utt id).
        utt2dur: utt id -> duration in seconds, or None when not computed.
        path: the directory it was read from / written to, if any.
        utt_tables: other per-utterance files by name (e.g. ``feats.scp``), raw values.
        spk_tables: other per-speaker files by name (e.g. ``spk2gender``), raw values.
    """

    wav_scp: dict[str, str]
    text: dict[str, str]
    utt2spk: dict[str, str]
    segments: dict[str, tuple[str, float, float]] | None = None
    utt2dur: dict[str, float] | None = None
    path: Path | None = None
    utt_tables: dict[str, dict[str, str]] = field(default_factory=dict)
    spk_tables: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def features_only(self) -> bool:
        """No recordings but a feats.scp: a Kaldi feature dir without its audio (what
        ``validate_data_dir.sh --no-wav`` accepts); its utterances need no wav.scp entry."""
        return not self.wav_scp and "feats.scp" in self.utt_tables

    @property
    def utt_ids(self) -> list[str]:
        """All utterance ids (the keys of ``utt2spk``) in C sort order."""
        return c_sorted(self.utt2spk)

    @property
    def spk_ids(self) -> list[str]:
        """All speaker ids in C sort order."""
        return c_sorted(set(self.utt2spk.values()))

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        """speaker id -> its utterance ids (C sorted), derived from ``utt2spk``."""
        out: dict[str, list[str]] = {}
        for utt in self.utt_ids:
            out.setdefault(self.utt2spk[utt], []).append(utt)
        return {spk: out[spk] for spk in c_sorted(out)}

    def recording_of(self, utt: str) -> str:
        """The recording id (a key of ``wav_scp``) holding ``utt``."""
        if self.segments is not None:
            try:
                return self.segments[utt][0]
            except KeyError:
                raise DataError(
                    "utterance not in segments", file=self.file_path("segments"), utt=utt
                ) from None
        return utt

    def select(self, utts: Iterable[str]) -> DataDir:
        """A new DataDir with only ``utts`` (unknown ids are ignored) in every table.

        Recordings no kept utterance uses and speakers with no kept utterance are dropped
        (Kaldi's subset_data_dir.sh / fix_data_dir.sh behaviour). ``path`` is not carried.
        """
        keep = {u for u in utts if u in self.utt2spk}

        def pick(table: dict, keys: set[str]) -> dict:
            return {k: v for k, v in table.items() if k in keys}

        utt2spk = pick(self.utt2spk, keep)
        spks = set(utt2spk.values())
        segments = None if self.segments is None else pick(self.segments, keep)
        recs = {segments[u][0] for u in keep if u in segments} if segments is not None else keep
        return DataDir(
            wav_scp=pick(self.wav_scp, recs),
            text=pick(self.text, keep),
            utt2spk=utt2spk,
            segments=segments,
            utt2dur=None if self.utt2dur is None else pick(self.utt2dur, keep),
            utt_tables={n: pick(t, keep) for n, t in self.utt_tables.items()},
            spk_tables={n: pick(t, spks) for n, t in self.spk_tables.items()},
        )

    def __len__(self) -> int:
        return len(self.utt2spk)

    def file_path(self, name: str) -> str:
        """``path/name`` when the data dir has a path, else the bare file name (for messages)."""
        return str(self.path / name) if self.path is not None else name


def _parse_float(value: str, file: Path, line: int, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{what} {value!r} is not a number", file=str(file), line=line) from None


def read_segments(
    path: Path, duplicates: list[TableLine] | None = None
) -> dict[str, tuple[str, float, float]]:
    """``segments`` as ``{utt: (rec_id, start_s, end_s)}``; malformed lines are DataErrors."""
    out: dict[str, tuple[str, float, float]] = {}
    for e in iter_table_lines(path):
        if e.key in out:
            repeated_key(path, e, duplicates)
            continue
        parts = e.value.split()
        if len(parts) != 3:
            raise DataError(
                f"expected '<utt> <rec> <start> <end>', got {len(parts) + 1} fields",
                file=str(path),
                line=e.line,
            )
        start = _parse_float(parts[1], path, e.line, "start time")
        end = _parse_float(parts[2], path, e.line, "end time")
        out[e.key] = (parts[0], start, end)
    return out


def read_utt2dur(path: Path, duplicates: list[TableLine] | None = None) -> dict[str, float]:
    """``utt2dur`` as ``{utt: seconds}``."""
    out: dict[str, float] = {}
    for e in iter_table_lines(path):
        if e.key in out:
            repeated_key(path, e, duplicates)
            continue
        out[e.key] = _parse_float(e.value, path, e.line, "duration")
    return out


def resolve_wav_root(wav_scp: dict[str, str], root: str | os.PathLike) -> dict[str, str]:
    """``wav_scp`` with relative audio paths (and relative ``archive.ark:offset`` entries) taken
    from ``root``; absolute paths and pipe commands (``... |``) are left as they are.

    Kaldi resolves a relative wav.scp path against the current directory; corpora that ship
    data dirs with paths relative to the corpus (speechocean762's ``WAVE/SPEAKER0001/...``)
    need the corpus folder as root.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("wav root not found", file=str(root), fix="pass the corpus folder")
    out = {}
    for rec, spec in wav_scp.items():
        s = spec.strip()
        relative = s and not s.endswith("|") and not os.path.isabs(s)
        out[rec] = str(root / s) if relative else spec
    return out


def _read_utt2spk(
    path: Path, duplicates: list[TableLine] | None = None, utts: Container[str] | None = None
) -> dict[str, str]:
    """``utt2spk`` (of ``utts`` only, if given), each line checked to be ``<utt> <spk>``."""
    out: dict[str, str] = {}
    for e in iter_table_lines(path):
        if utts is not None and e.key not in utts:
            continue
        if len(e.value.split()) != 1:
            raise DataError("expected '<utt> <spk>'", file=str(path), line=e.line, utt=e.key)
        if e.key in out:
            repeated_key(path, e, duplicates)
            continue
        out[e.key] = e.value
    return out


def _require(path: Path, names: Iterable[str]) -> None:
    if not path.is_dir():
        raise DataError("data dir not found", file=str(path), fix="check the path")
    for name in names:
        if not (path / name).is_file():
            raise DataError(
                f"missing {name}",
                file=str(path),
                fix="prepare the data dir with `pykaldi2 prepare`",
            )


def read_audio_tables(path: str | os.PathLike, utts: Collection[str] | None = None) -> DataDir:
    """The part of a data dir that audio needs: ``utt2spk``, ``wav.scp`` and ``segments`` (no
    ``text`` or other tables), of every utterance or, with ``utts``, of those only (a job's
    share, so that a job holds its own utterances' entries, not the corpus's). The files are
    streamed; lines are checked as :func:`read_data_dir` checks them.
    """
    path = Path(path)
    _require(path, ("wav.scp", "utt2spk"))
    want = None if utts is None else set(utts)
    utt2spk = _read_utt2spk(path / "utt2spk", utts=want)
    segments = None
    if (path / "segments").is_file():
        segments = read_segments(path / "segments")
        if want is not None:
            segments = {u: v for u, v in segments.items() if u in want}
    recs = (
        None
        if want is None
        else ({v[0] for v in segments.values()} if segments is not None else want)
    )
    wav_scp: dict[str, str] = {}
    for e in iter_table_lines(path / "wav.scp"):
        if recs is not None and e.key not in recs:
            continue
        if e.key in wav_scp:
            repeated_key(path / "wav.scp", e, None)
        wav_scp[e.key] = e.value
    return DataDir(wav_scp=wav_scp, text={}, utt2spk=utt2spk, segments=segments, path=path)


def read_data_dir(
    path: str | os.PathLike,
    *,
    duplicates: dict[str, list[TableLine]] | None = None,
    wav_root: str | os.PathLike | None = None,
) -> DataDir:
    """Read a Kaldi data dir.

    Needs ``utt2spk``, and ``wav.scp`` unless the dir has ``feats.scp``: a features-only data
    dir (what Kaldi's ``validate_data_dir.sh --no-wav`` accepts, e.g. a Kaldi feature dir
    without its audio) reads with an empty ``wav_scp``. An absent ``text`` (unlabelled data)
    gives an empty dict. ``spk2utt`` is not read (it is derived from ``utt2spk``). Malformed
    lines raise :class:`DataError`; so do duplicate keys, unless ``duplicates`` is given: then the first
    occurrence wins and the others are listed in ``duplicates[file_name]``. Relative audio
    paths of wav.scp are taken from ``wav_root`` when given (:func:`resolve_wav_root`). Cross-file
    consistency is checked by :func:`pykaldi2.data.validate.validate_data_dir`.
    """
    path = Path(path)
    features_only = (path / "feats.scp").is_file() and not (path / "wav.scp").is_file()
    _require(path, ("utt2spk",) if features_only else ("wav.scp", "utt2spk"))

    def dups(name: str) -> list[TableLine] | None:
        return None if duplicates is None else duplicates.setdefault(name, [])

    def table(name: str) -> dict[str, str]:
        return read_table(path / name, dups(name))

    utt2spk = _read_utt2spk(path / "utt2spk", dups("utt2spk"))
    has = {name: (path / name).is_file() for name in ("text", "segments", "utt2dur")}
    d = DataDir(
        wav_scp={} if features_only else table("wav.scp"),
        text=table("text") if has["text"] else {},
        utt2spk=utt2spk,
        segments=read_segments(path / "segments", dups("segments")) if has["segments"] else None,
        utt2dur=read_utt2dur(path / "utt2dur", dups("utt2dur")) if has["utt2dur"] else None,
        path=path,
        utt_tables={n: table(n) for n in UTT_TABLES if (path / n).is_file()},
        spk_tables={n: table(n) for n in SPK_TABLES if (path / n).is_file()},
    )
    if duplicates is not None:
        for name in [n for n, v in duplicates.items() if not v]:
            del duplicates[name]
    if wav_root is not None:
        d.wav_scp = resolve_wav_root(d.wav_scp, wav_root)
    return d


def _fmt_float(x: float) -> str:
    """Seconds as Kaldi writes them: short, no trailing zeros (``1.5``, ``-1``, ``0.01``)."""
    s = f"{x:.3f}".rstrip("0").rstrip(".")
    return s if s not in ("", "-0") else "0"


def data_dir_files(d: DataDir) -> dict[str, str]:
    """The text of every file of ``d`` by file name (what :func:`write_data_dir` writes)."""
    files = {
        "utt2spk": format_table(d.utt2spk),
        "spk2utt": format_table({s: " ".join(u) for s, u in d.spk2utt.items()}),
    }
    if not d.features_only:  # a features-only dir stays one
        files["wav.scp"] = format_table(d.wav_scp)
    if d.text:  # unlabelled data has no text file
        files["text"] = format_table(d.text)
    if d.segments is not None:
        files["segments"] = format_table(
            {u: f"{r} {_fmt_float(s)} {_fmt_float(e)}" for u, (r, s, e) in d.segments.items()}
        )
    if d.utt2dur is not None:
        files["utt2dur"] = format_table({u: f"{v:.3f}" for u, v in d.utt2dur.items()})
    for name, table in {**d.utt_tables, **d.spk_tables}.items():
        files[name] = format_table(table)
    return files


def write_data_dir(d: DataDir, path: str | os.PathLike) -> None:
    """Write ``d`` as a Kaldi data dir at ``path`` (atomically: all files or none).

    Writes wav.scp (but not for a features-only dir: no recordings, and a feats.scp), utt2spk,
    spk2utt, and text / segments / utt2dur / carried tables when present (non-empty / not
    None), each sorted in C order. An existing ``path`` is replaced. Sets ``d.path``.
    """
    path = Path(path)
    for utt, transcript in d.text.items():
        if "\n" in transcript:
            raise DataError("transcript contains a newline", utt=utt)
    ids = {"utterance": d.utt2spk, "recording": d.wav_scp, "speaker": d.spk2utt}
    for what, table in ids.items():
        for key in table:
            if not key or key != "".join(key.split()):
                raise DataError(
                    f"{what} id {key!r} is empty or contains whitespace",
                    file=str(path),
                    fix="Kaldi ids are single tokens: replace spaces with '_' or '-'",
                )
    files = data_dir_files(d)
    with atomic_dir(path) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        for name, content in files.items():
            (tmp / name).write_text(content, encoding="utf-8")
    d.path = path
