"""fix_data_dir: make a data dir consistent (Kaldi's ``utils/fix_data_dir.sh``).

Sorts every file, keeps only utterances present in every per-utterance file (utt2spk, text,
segments, utt2dur, feats.scp, ...), drops duplicate lines (first wins), segments with bad
times or unknown recordings, optionally empty transcripts, then recordings and speakers left
without utterances, and rebuilds spk2utt. What was dropped, and why, is reported.

    >>> report = fix_data_dir("data/train")
    >>> print(report)          # "dropped 3 utterance(s): 2 missing from text, 1 empty transcript"
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pykaldi2.data.datadir import DataDir, read_data_dir, write_data_dir
from pykaldi2.data.tables import TableLine, c_sorted


@dataclass
class FixReport:
    """What :func:`fix_data_dir` dropped: utterances by reason, and duplicate lines by file."""

    dropped: dict[str, list[str]] = field(default_factory=dict)
    duplicates: dict[str, list[TableLine]] = field(default_factory=dict)
    dropped_recordings: list[str] = field(default_factory=list)
    dropped_speakers: list[str] = field(default_factory=list)
    kept: int = 0

    @property
    def num_dropped(self) -> int:
        """Distinct utterances dropped (one may be dropped for several reasons)."""
        return len({u for utts in self.dropped.values() for u in utts})

    def __str__(self) -> str:
        lines = [f"kept {self.kept} utterance(s), dropped {self.num_dropped}"]
        for reason, utts in self.dropped.items():
            shown = " ".join(utts[:5]) + (" ..." if len(utts) > 5 else "")
            lines.append(f"  {len(utts)} {reason}: {shown}")
        for name, dups in self.duplicates.items():
            lines.append(
                f"  {len(dups)} duplicate line(s) in {name} (kept the first): "
                + " ".join(f"{e.key}@{e.line}" for e in dups[:5])
            )
        if self.dropped_recordings:
            lines.append(f"  {len(self.dropped_recordings)} unused recording(s) in wav.scp")
        if self.dropped_speakers:
            lines.append(f"  {len(self.dropped_speakers)} speaker(s) without utterances")
        return "\n".join(lines)


def _bad_utts(d: DataDir, drop_empty_text: bool, has_text: bool) -> dict[str, list[str]]:
    """Reason -> utterances of ``utt2spk`` to drop."""
    utts = set(d.utt2spk)
    bad: dict[str, set[str]] = {}

    def drop(reason: str, which) -> None:
        which = set(which) & utts
        if which:
            bad.setdefault(reason, set()).update(which)

    if has_text:
        drop("missing from text", utts - set(d.text))
        if drop_empty_text:
            drop("with an empty transcript", {u for u, t in d.text.items() if not t.strip()})
    if d.segments is not None:
        drop("missing from segments", utts - set(d.segments))
        if not d.features_only:
            drop(
                "with a segment of an unknown recording",
                {u for u, (r, _, _) in d.segments.items() if r not in d.wav_scp},
            )
        drop(
            "with bad segment times",
            {u for u, (_, s, e) in d.segments.items() if s < 0 or (e != -1 and e <= s)},
        )
    elif not d.features_only:
        drop("missing from wav.scp", utts - set(d.wav_scp))
    if d.utt2dur is not None:
        drop("missing from utt2dur", utts - set(d.utt2dur))
    for name, table in d.utt_tables.items():
        drop(f"missing from {name}", utts - set(table))
    return {reason: c_sorted(v) for reason, v in bad.items()}


def fix_data_dir_in_memory(
    d: DataDir, *, drop_empty_text: bool = True, has_text: bool | None = None
) -> tuple[DataDir, FixReport]:
    """The consistent part of ``d`` and a report of what was dropped (``d`` is unchanged)."""
    has_text = bool(d.text) if has_text is None else has_text
    report = FixReport(dropped=_bad_utts(d, drop_empty_text, has_text))
    gone = {u for utts in report.dropped.values() for u in utts}
    fixed = d.select(u for u in d.utt2spk if u not in gone)
    report.kept = len(fixed)
    report.dropped_recordings = c_sorted(set(d.wav_scp) - set(fixed.wav_scp))
    report.dropped_speakers = c_sorted(set(d.utt2spk.values()) - set(fixed.utt2spk.values()))
    return fixed, report


def fix_data_dir(
    src: str | os.PathLike,
    dest: str | os.PathLike | None = None,
    *,
    drop_empty_text: bool = True,
    wav_root: str | os.PathLike | None = None,
) -> FixReport:
    """Fix the data dir ``src`` and write it to ``dest`` (default: in place, atomically).

    With ``wav_root``, relative audio paths of wav.scp are written as paths under it.
    """
    src = Path(src)
    duplicates: dict[str, list[TableLine]] = {}
    d = read_data_dir(src, duplicates=duplicates, wav_root=wav_root)
    fixed, report = fix_data_dir_in_memory(
        d, drop_empty_text=drop_empty_text, has_text=(src / "text").is_file()
    )
    report.duplicates = duplicates
    write_data_dir(fixed, dest if dest is not None else src)
    return report
