"""fix_data_dir, subset_data_dir, combine_data, compute_utt2dur (+ their CLI commands)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pykaldi2.cli.main import main
from pykaldi2.data.datadir import DataDir, read_data_dir, write_data_dir
from pykaldi2.data.durations import compute_utt2dur
from pykaldi2.data.fix import fix_data_dir
from pykaldi2.data.subset import combine_data, subset_data_dir
from pykaldi2.data.validate import validate_data_dir
from pykaldi2.utils.errors import DataError


def _wavs(tmp_path: Path, durs: dict[str, float], sr: int = 8000) -> DataDir:
    """A data dir of silent wav files with the given durations, 2 speakers a/b."""
    d = DataDir(wav_scp={}, text={}, utt2spk={})
    for utt, dur in durs.items():
        p = tmp_path / f"{utt}.wav"
        sf.write(p, np.zeros(int(dur * sr), np.int16), sr)
        d.wav_scp[utt] = str(p)
        d.text[utt] = "WORD"
        d.utt2spk[utt] = utt.split("-")[0]
    return d


def test_fix_drops_and_reports(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text("b-2 x.wav\na-1 x.wav\nc-3 x.wav\na-1 y.wav\nr-0 z.wav\n")
    (d / "text").write_text("a-1 HI\nb-2\nc-3 YO\nz-9 ORPHAN\n")
    (d / "utt2spk").write_text("c-3 c\na-1 a\nb-2 b\nd-4 d\n")
    (d / "spk2gender").write_text("a m\nb f\nc m\nd f\n")
    report = fix_data_dir(d)
    assert report.dropped == {
        "missing from text": ["d-4"],
        "with an empty transcript": ["b-2"],
        "missing from wav.scp": ["d-4"],
    }
    assert report.num_dropped == 2
    assert report.kept == 2
    assert [(e.key, e.line) for e in report.duplicates["wav.scp"]] == [("a-1", 4)]
    assert report.dropped_recordings == ["b-2", "r-0"]
    assert report.dropped_speakers == ["b", "d"]
    text = str(report)
    assert "dropped 2" in text and "duplicate line(s) in wav.scp" in text
    assert validate_data_dir(d) == []
    assert (d / "wav.scp").read_text() == "a-1 x.wav\nc-3 x.wav\n"
    assert (d / "spk2gender").read_text() == "a m\nc m\n"
    assert (d / "spk2utt").read_text() == "a a-1\nc c-3\n"


def test_fix_segments_and_keep_empty(tmp_path):
    d = DataDir(
        wav_scp={"r": "r.wav"},
        text={"s-1": "A", "s-2": "", "s-3": "C", "s-4": "D"},
        utt2spk={"s-1": "s", "s-2": "s", "s-3": "s", "s-4": "s"},
        segments={"s-1": ("r", 0, 1), "s-2": ("r", 1, 2), "s-3": ("r", 2, 2), "s-4": ("q", 0, 1)},
    )
    write_data_dir(d, tmp_path / "d")
    assert (
        main(
            ["fix-data-dir", str(tmp_path / "d"), "--keep-empty-text", "--out", str(tmp_path / "o")]
        )
        == 0
    )
    fixed = read_data_dir(tmp_path / "o")
    assert fixed.utt_ids == ["s-1", "s-2"]
    assert read_data_dir(tmp_path / "d").utt_ids == ["s-1", "s-2", "s-3", "s-4"]  # untouched


def test_subset_modes(tmp_path):
    d = _wavs(tmp_path, {"a-1": 0.3, "a-2": 0.1, "b-3": 0.2, "b-4": 0.4})
    assert subset_data_dir(d, first=2).utt_ids == ["a-1", "a-2"]
    assert subset_data_dir(d, shortest=2).utt_ids == ["a-2", "b-3"]
    # with features, their lengths decide (feat-to-len, as subset_data_dir.sh): no audio read
    d.utt_tables["utt2num_frames"] = {"a-1": "5", "a-2": "30", "b-3": "20", "b-4": "10"}
    d.wav_scp = {u: "/nonexistent.wav" for u in d.wav_scp}
    assert subset_data_dir(d, shortest=2).utt_ids == ["a-1", "b-4"]
    del d.utt_tables["utt2num_frames"]
    assert subset_data_dir(d, spk_list=["b"]).utt_ids == ["b-3", "b-4"]
    (tmp_path / "list").write_text("b-4\na-2 extra fields ignored\n")
    s = subset_data_dir(d, utt_list=tmp_path / "list")
    assert s.utt_ids == ["a-2", "b-4"] and set(s.wav_scp) == {"a-2", "b-4"}
    (tmp_path / "bad").write_text("a-1\nq-9\n")
    with pytest.raises(DataError, match=r"bad:2: utterance 'q-9' is not in the data dir"):
        subset_data_dir(d, utt_list=tmp_path / "bad")
    with pytest.raises(DataError, match="exactly one"):
        subset_data_dir(d, first=1, shortest=1)
    with pytest.raises(DataError, match="only 4"):
        subset_data_dir(d, first=5)


def test_subset_cli(tmp_path):
    d = _wavs(tmp_path, {"a-1": 0.3, "a-2": 0.1, "b-3": 0.2})
    write_data_dir(d, tmp_path / "d")
    assert (
        main(["subset-data-dir", str(tmp_path / "d"), str(tmp_path / "s"), "--shortest", "1"]) == 0
    )
    assert read_data_dir(tmp_path / "s").utt_ids == ["a-2"]
    assert main(["subset-data-dir", str(tmp_path / "d"), str(tmp_path / "s"), "--first", "9"]) == 1


def test_compute_utt2dur(tmp_path):
    d = _wavs(tmp_path, {"a-1": 0.5, "b-2": 0.25})
    assert compute_utt2dur(d) == {"a-1": 0.5, "b-2": 0.25}
    seg = DataDir(
        wav_scp={"r": d.wav_scp["a-1"]},
        text={"a-x": "A", "a-y": "B"},
        utt2spk={"a-x": "a", "a-y": "a"},
        segments={"a-x": ("r", 0.1, 0.2), "a-y": ("r", 0.2, -1)},
    )
    assert compute_utt2dur(seg) == pytest.approx({"a-x": 0.1, "a-y": 0.3})
    write_data_dir(d, tmp_path / "d")
    assert main(["compute-utt2dur", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "utt2dur").read_text() == "a-1 0.500\nb-2 0.250\n"


def test_combine(tmp_path):
    a = _wavs(tmp_path, {"a-1": 0.1, "a-2": 0.1})
    b = _wavs(tmp_path, {"b-1": 0.1})
    b.segments = {"b-1": ("b-1", 0.0, 0.05)}
    c = combine_data([a, b])
    assert c.utt_ids == ["a-1", "a-2", "b-1"]
    assert c.segments == {
        "a-1": ("a-1", 0.0, -1.0),
        "a-2": ("a-2", 0.0, -1.0),
        "b-1": ("b-1", 0.0, 0.05),
    }
    assert validate_data_dir(c) == []
    write_data_dir(a, tmp_path / "A")
    write_data_dir(a, tmp_path / "A2")
    with pytest.raises(DataError, match=r"A2: duplicate utterance id 'a-1'"):
        combine_data([read_data_dir(tmp_path / "A"), read_data_dir(tmp_path / "A2")])
    assert (
        main(["combine-data", str(tmp_path / "C"), str(tmp_path / "A"), str(tmp_path / "A2")]) == 1
    )
    assert not (tmp_path / "C").exists()
    write_data_dir(b, tmp_path / "B")
    assert (
        main(["combine-data", str(tmp_path / "C"), str(tmp_path / "A"), str(tmp_path / "B")]) == 0
    )
    assert read_data_dir(tmp_path / "C").utt_ids == ["a-1", "a-2", "b-1"]
