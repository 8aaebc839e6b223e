"""compute_utt2dur: utterance durations in seconds (Kaldi's ``utils/data/get_utt2dur.sh``).

Durations come from the audio headers (no decoding) for files, from running the command for
pipes, and from ``segments`` when present (an end of -1 means the end of the recording).

    >>> d.utt2dur = compute_utt2dur(d)
"""

from __future__ import annotations

from pykaldi2.data.audio import audio_duration
from pykaldi2.data.datadir import DataDir
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import progress


def compute_utt2dur(d: DataDir) -> dict[str, float]:
    """utt id -> duration in seconds for every utterance of ``d``."""
    out: dict[str, float] = {}
    rec_dur: dict[str, float] = {}

    def duration_of(rec: str, utt: str) -> float:
        if rec not in rec_dur:
            if rec not in d.wav_scp:
                raise DataError(
                    f"recording {rec!r} not in wav.scp",
                    file=d.file_path("wav.scp"),
                    utt=utt,
                    fix="run `pykaldi2 fix-data-dir`",
                )
            rec_dur[rec] = audio_duration(d.wav_scp[rec], utt=utt)
        return rec_dur[rec]

    for utt in progress(d.utt_ids, desc="utt2dur", unit="utt"):
        if d.segments is not None:
            rec = d.recording_of(utt)
            _, start, end = d.segments[utt]
            if end == -1:
                end = duration_of(rec, utt)
            out[utt] = end - start
        else:
            out[utt] = duration_of(utt, utt)
    return out
