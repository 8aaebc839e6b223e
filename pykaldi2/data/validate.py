"""validate_data_dir: every problem of a Kaldi data dir, each with its file and line.

The Python counterpart of Kaldi's ``utils/validate_data_dir.sh``, but it reports all problems
instead of stopping at the first one::

    >>> problems = validate_data_dir("data/train", check_audio=True)
    >>> for p in problems: print(p)
    data/train/text:12: (utterance fash-an251-fash-b) empty transcript
    data/train/utt2spk:40: (utterance b-1) speaker 'a' sorts before 'c' of the utterance before

Speakers follow Kaldi's rule, not a naming convention: ``utt2spk`` sorted by utterance must also
be sorted by speaker (``sort -k2 -C``; e.g. speechocean762's ``000010011 0001``). Naming
utterances ``<speaker>-<rest>`` is the usual way to get there, not a requirement.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from pykaldi2.data.audio import is_ark_entry, is_pipe
from pykaldi2.data.datadir import SPK_TABLES, UTT_TABLES, DataDir, resolve_wav_root
from pykaldi2.data.tables import UTF8_BOM, TableLine, c_sort_key, c_sorted, read_table_lines
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import progress

#: Files a data dir must have (``text`` only when ``require_text``).
REQUIRED = ("wav.scp", "utt2spk", "spk2utt")


@dataclass(frozen=True)
class Problem:
    """One problem: the file (path or bare name), 1-based line if known, the utterance if any."""

    file: str
    line: int | None
    message: str
    utt: str | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        who = f" (utterance {self.utt})" if self.utt is not None else ""
        return f"{where}:{who} {self.message}"


class _Report:
    """Collects problems; ``lines[file][key]`` gives the line of a key when read from disk."""

    def __init__(self, base: Path | None) -> None:
        self.base = base
        self.problems: list[Problem] = []
        self.lines: dict[str, dict[str, int]] = {}

    def fname(self, name: str) -> str:
        return str(self.base / name) if self.base is not None else name

    def add(self, name: str, message: str, key: str | None = None, utt: str | None = None):
        line = self.lines.get(name, {}).get(key) if key is not None else None
        self.problems.append(Problem(self.fname(name), line, message, utt))

    def add_line(self, name: str, line: int, message: str, utt: str | None = None):
        self.problems.append(Problem(self.fname(name), line, message, utt))


def _check_lines(rep: _Report, name: str, entries: list[TableLine]) -> None:
    """Sorting and duplicates: problems visible only in the file itself."""
    first: dict[str, int] = {}
    unsorted: list[TableLine] = []
    prev: TableLine | None = None
    for e in entries:
        if e.key in first:
            rep.add_line(name, e.line, f"duplicate id {e.key!r} (first on line {first[e.key]})")
        else:
            first[e.key] = e.line
        if prev is not None and c_sort_key(e.key) < c_sort_key(prev.key):
            unsorted.append(e)
        prev = e
    if unsorted:
        e = unsorted[0]
        rep.add_line(
            name,
            e.line,
            f"not sorted: {e.key!r} sorts before the previous line's id "
            f"({len(unsorted)} line(s) out of order; sort with LC_ALL=C or run fix-data-dir)",
        )
    rep.lines[name] = first


def _read_raw(path: Path, rep: _Report, require_text: bool, require_wav: bool) -> DataDir:
    """Parse the files leniently (first occurrence wins), recording line-level problems."""
    raw: dict[str, list[TableLine]] = {}
    names = ("wav.scp", "text", "utt2spk", "spk2utt", "segments", "utt2dur")
    for name in (*names, *UTT_TABLES, *SPK_TABLES):
        if (path / name).is_file():
            try:
                raw[name] = read_table_lines(path / name)
            except DataError as e:
                rep.add_line(name, e.line or 0, str(e).split(": ", 1)[-1])
                raw[name] = []
            content = (path / name).read_bytes()
            if b"\r" in content:
                line = content.split(b"\r")[0].count(b"\n") + 1
                rep.add_line(name, line, "carriage return (Windows line end?); use dos2unix")
            if content.startswith(UTF8_BOM):
                rep.add_line(
                    name,
                    1,
                    "starts with a UTF-8 byte-order mark (U+FEFF, invisible; Kaldi reads it as "
                    "part of the first id): remove it, e.g. with fix-data-dir",
                )
        elif name == "wav.scp" and not require_wav:
            continue
        elif name in REQUIRED or (name == "text" and require_text):
            rep.add(name, "missing file")
    for name, entries in raw.items():
        _check_lines(rep, name, entries)

    def first(name: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in raw.get(name, []):
            out.setdefault(e.key, e.value)
        return out

    utt2spk = first("utt2spk")
    for e in raw.get("utt2spk", []):
        if len(e.value.split()) != 1:
            rep.add_line("utt2spk", e.line, "expected '<utt> <spk>'", e.key)
    segments = None
    if "segments" in raw:
        segments = {}
        for e in raw["segments"]:
            parts = e.value.split()
            try:
                if len(parts) != 3:
                    raise ValueError
                segments.setdefault(e.key, (parts[0], float(parts[1]), float(parts[2])))
            except ValueError:
                rep.add_line("segments", e.line, "expected '<utt> <rec> <start_s> <end_s>'", e.key)
    utt2dur = None
    if "utt2dur" in raw:
        utt2dur = {}
        for e in raw["utt2dur"]:
            try:
                utt2dur.setdefault(e.key, float(e.value))
            except ValueError:
                rep.add_line("utt2dur", e.line, f"duration {e.value!r} is not a number", e.key)
    d = DataDir(
        wav_scp=first("wav.scp"),
        text=first("text"),
        utt2spk=utt2spk,
        segments=segments,
        utt2dur=utt2dur,
        path=path,
        utt_tables={n: first(n) for n in UTT_TABLES if n in raw},
        spk_tables={n: first(n) for n in SPK_TABLES if n in raw},
    )
    if "spk2utt" in raw:
        derived = d.spk2utt
        listed = first("spk2utt")
        for spk, utts in listed.items():
            if spk not in derived:
                rep.add("spk2utt", f"speaker {spk!r} has no utterance in utt2spk", spk)
            elif utts.split() != derived[spk]:
                rep.add(
                    "spk2utt",
                    f"utterances of speaker {spk!r} differ from utt2spk "
                    "(rebuild spk2utt with fix-data-dir)",
                    spk,
                )
        for spk in derived:
            if spk not in listed:
                rep.add("spk2utt", f"speaker {spk!r} of utt2spk is missing", None)
    return d


def _check_keys(rep: _Report, name: str, keys: set[str], utts: set[str], ref: str) -> None:
    """Each utterance of ``ref`` must be in ``name`` and vice versa."""
    for u in c_sorted(utts - keys):
        rep.add(ref, f"utterance missing from {name}", u, utt=u)
    for u in c_sorted(keys - utts):
        rep.add(name, f"utterance not in {ref}", u, utt=u)


def _check_speakers(rep: _Report, d: DataDir) -> None:
    """Kaldi's ``sort -k2 -C utt2spk``: in utterance order the speakers must not decrease."""
    prev: tuple[str, str] | None = None
    for utt in d.utt_ids:
        spk = d.utt2spk[utt]
        if prev is not None and c_sort_key(spk) < c_sort_key(prev[1]):
            rep.add(
                "utt2spk",
                f"not sorted by speaker: speaker {spk!r} sorts before {prev[1]!r} of the "
                f"utterance before ({prev[0]!r}); Kaldi needs utt2spk sorted both by utterance "
                "and by speaker (fix: make the speaker ids prefixes of the utterance ids, "
                "e.g. <speaker>-<utterance>)",
                utt,
                utt=utt,
            )
            return
        prev = (utt, spk)


#: Words Kaldi's validate_data_dir.sh refuses in ``text`` (sentence boundaries, disambiguation).
ILLEGAL_WORDS = ("<s>", "</s>", "#0")


def _check_text(rep: _Report, d: DataDir) -> None:
    for utt, words in d.text.items():
        tokens = words.split()
        if not tokens:
            rep.add("text", "empty transcript", utt, utt=utt)
        bad = [w for w in ILLEGAL_WORDS if w in tokens]
        if bad:
            rep.add(
                "text",
                f"illegal symbol(s) {' '.join(bad)} (reserved for the LM and graphs; remove them)",
                utt,
                utt=utt,
            )


def _check_segments(rep: _Report, d: DataDir, audio: bool = True) -> None:
    assert d.segments is not None
    for utt, (rec, start, end) in d.segments.items():
        if audio and rec not in d.wav_scp:
            rep.add("segments", f"recording {rec!r} not in wav.scp", utt, utt=utt)
        if start < 0:
            rep.add("segments", f"start time {start} is negative", utt, utt=utt)
        if end != -1 and end <= start:
            rep.add("segments", f"end time {end} <= start time {start}", utt, utt=utt)


def _check_audio(rep: _Report, d: DataDir, sample_rate: int | None) -> None:
    """Read every used recording as compute-feats does (pipes run, archives and files decoded),
    and check each utterance's segment against its length, its rate against ``sample_rate``
    (default: the most common rate of the data dir) and WAV headers against the file size."""
    from collections import Counter

    from pykaldi2.data.audio import MAX_OVERSHOOT_S, read_audio, wav_truncation

    segs: dict[str, list[tuple[str, float, float]]] = {}
    for u in d.utt2spk:
        if d.segments is None:
            segs.setdefault(u, []).append((u, 0.0, -1.0))
        elif u in d.segments:
            rec, b, e = d.segments[u]
            segs.setdefault(rec, []).append((u, b, e))
    rates: dict[str, int] = {}
    for rec in progress(c_sorted(set(segs) & set(d.wav_scp)), desc="check audio", unit="rec"):
        spec = d.wav_scp[rec].strip()
        if not spec:
            continue  # reported as an empty audio path
        if is_pipe(spec):
            try:
                prog = shlex.split(spec[:-1])[0]
            except (ValueError, IndexError):
                rep.add("wav.scp", "unparsable pipe command", rec)
                continue
            if shutil.which(prog) is None and not Path(prog).is_file():
                rep.add("wav.scp", f"program {prog!r} of the pipe command not found", rec)
                continue
        elif not is_ark_entry(spec) and (problem := wav_truncation(spec)):
            rep.add("wav.scp", f"{spec}: {problem}", rec)
        try:
            x, sr = read_audio(spec, utt=rec)
        except DataError as e:  # the message names the pipe command itself
            rep.add("wav.scp", e.message if is_pipe(spec) else f"{e.message}: {spec}", rec)
            continue
        rates[rec] = sr
        dur = len(x) / sr
        for utt, b, e in segs[rec]:
            if d.segments is not None and e != -1 and e > dur + MAX_OVERSHOOT_S:
                rep.add("segments", f"end {e} s is past the end of {rec} ({dur:.3f} s)", utt, utt)
            elif d.segments is not None and b >= dur:
                rep.add("segments", f"start {b} s is past the end of {rec} ({dur:.3f} s)", utt, utt)
    if rates:
        expected = sample_rate or Counter(rates.values()).most_common(1)[0][0]
        for rec, sr in rates.items():
            if sr != expected:
                why = "the expected" if sample_rate else "the data dir's usual"
                rep.add(
                    "wav.scp",
                    f"sample rate {sr} Hz, not {why} {expected} Hz (compute-feats refuses it "
                    "unless told to resample)",
                    rec,
                )


def validate_data_dir(
    data: str | os.PathLike | DataDir,
    *,
    check_audio: bool = False,
    require_text: bool = True,
    require_wav: bool = True,
    spk_sort: bool = True,
    wav_root: str | os.PathLike | None = None,
    sample_rate: int | None = None,
) -> list[Problem]:
    """All problems of a data dir (a path, or an in-memory :class:`DataDir`); [] when valid.

    Checks (Kaldi's utils/validate_data_dir.sh, all reported at once): required files,
    unsorted files, duplicate ids, malformed lines, CRLF line ends, a UTF-8 byte-order mark,
    utterances missing from some file (text, segments, utt2dur, feats.scp, ...), wav.scp /
    utterance mismatch, empty transcripts and the illegal words ``<s> </s> #0``, utt2spk not
    sorted by speaker when sorted by utterance (unless ``spk_sort`` is False: Kaldi's
    ``--no-spk-sort``), wav.scp present (unless ``require_wav`` is False: Kaldi's
    ``--no-wav``, for a features-only dir, which then needs feats.scp), spk2utt consistent
    with utt2spk, bad segments (end <= start, negative start, unknown recording),
    non-positive durations, and with ``check_audio`` every used recording read as
    compute-feats reads it (missing or undecodable files, failing pipe commands, truncated
    WAVs, segments past the end of their audio, sample rates other than ``sample_rate`` or the
    most common one). Relative audio paths are taken from
    ``wav_root`` when given (else the current directory, as Kaldi does). Line numbers are known
    only when reading from disk.
    """
    from_disk = not isinstance(data, DataDir)
    if isinstance(data, DataDir):
        rep = _Report(data.path)
        d = data
    else:
        path = Path(data)
        rep = _Report(path)
        if not path.is_dir():
            return [Problem(str(path), None, "data dir not found")]
        d = _read_raw(path, rep, require_text, require_wav)
        if wav_root is not None:
            d.wav_scp = resolve_wav_root(d.wav_scp, wav_root)
    utts = set(d.utt2spk)
    if not utts:
        rep.add("utt2spk", "no utterances")
    if d.text:
        _check_keys(rep, "text", set(d.text), utts, "utt2spk")
    elif require_text and not (from_disk and not (d.path / "text").is_file()):  # else reported
        rep.add("text", "no transcripts (pass require_text=False / --no-text for unlabelled data)")
    _check_text(rep, d)
    if spk_sort:
        _check_speakers(rep, d)
    no_audio = (
        not require_wav and not d.wav_scp and not (from_disk and (d.path / "wav.scp").is_file())
    )
    if no_audio and "feats.scp" not in d.utt_tables:
        rep.add("feats.scp", "missing file (a data dir without wav.scp needs its features)")
    if d.segments is not None:
        _check_keys(rep, "segments", set(d.segments), utts, "utt2spk")
        _check_segments(rep, d, audio=not no_audio)
    elif not no_audio:
        _check_keys(rep, "wav.scp", set(d.wav_scp), utts, "utt2spk")
    for rec, spec in d.wav_scp.items():
        if not spec.strip():
            rep.add("wav.scp", "empty audio path", rec)
    if d.utt2dur is not None:
        _check_keys(rep, "utt2dur", set(d.utt2dur), utts, "utt2spk")
        for utt, dur in d.utt2dur.items():
            if dur <= 0:
                rep.add("utt2dur", f"non-positive duration {dur}", utt, utt=utt)
    for name, table in d.utt_tables.items():
        _check_keys(rep, name, set(table), utts, "utt2spk")
    spks = set(d.utt2spk.values())
    for name, table in d.spk_tables.items():
        for s in c_sorted(spks - set(table)):
            rep.add(name, f"speaker {s!r} missing")
        for s in c_sorted(set(table) - spks):
            rep.add(name, f"speaker {s!r} not in utt2spk", s)
    if check_audio:
        _check_audio(rep, d, sample_rate)
    return sorted(
        rep.problems, key=lambda p: (p.file, p.line if p.line is not None else 0, p.message)
    )
