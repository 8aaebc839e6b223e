"""DataDir read/write round trip, C sort order, derived spk2utt, select, atomic writes."""

from __future__ import annotations

import pytest

from pykaldi2.data.datadir import DataDir, read_data_dir, write_data_dir
from pykaldi2.data.tables import c_sorted, format_table, read_table
from pykaldi2.utils.errors import DataError


def _small() -> DataDir:
    return DataDir(
        wav_scp={"rB": "/x/b.wav", "rA": "sox a.wav -t wav - |"},
        text={"spk1-u2": "HELLO  WORLD", "spk1-u1": "A", "spk2-u3": "B C", "Spk0-u0": "D"},
        utt2spk={"spk1-u2": "spk1", "spk1-u1": "spk1", "spk2-u3": "spk2", "Spk0-u0": "Spk0"},
        segments={
            "spk1-u2": ("rA", 1.5, 2.25),
            "spk1-u1": ("rA", 0.0, 1.5),
            "spk2-u3": ("rB", 0.0, -1.0),
            "Spk0-u0": ("rB", 3.0, 4.0),
        },
        utt2dur={"spk1-u2": 0.75, "spk1-u1": 1.5, "spk2-u3": 2.0, "Spk0-u0": 1.0},
        spk_tables={"spk2gender": {"spk1": "m", "spk2": "f", "Spk0": "f"}},
    )


def test_c_sort_order_is_byte_order():
    # C locale: upper case before lower case, '-' before letters and digits
    assert c_sorted(["b", "a-x", "B", "a1", "a"]) == ["B", "a", "a-x", "a1", "b"]


def test_round_trip_and_files_are_sorted(tmp_path):
    d = _small()
    write_data_dir(d, tmp_path / "d")
    assert d.path == tmp_path / "d"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "segments",
        "spk2gender",
        "spk2utt",
        "text",
        "utt2dur",
        "utt2spk",
        "wav.scp",
    ]
    lines = (tmp_path / "d" / "utt2spk").read_text().splitlines()
    assert [x.split()[0] for x in lines] == ["Spk0-u0", "spk1-u1", "spk1-u2", "spk2-u3"]
    assert (tmp_path / "d" / "spk2utt").read_text() == (
        "Spk0 Spk0-u0\nspk1 spk1-u1 spk1-u2\nspk2 spk2-u3\n"
    )
    assert "spk1-u2 rA 1.5 2.25\n" in (tmp_path / "d" / "segments").read_text()
    assert "spk2-u3 rB 0 -1\n" in (tmp_path / "d" / "segments").read_text()
    assert (tmp_path / "d" / "wav.scp").read_text().splitlines()[0] == "rA sox a.wav -t wav - |"
    e = read_data_dir(tmp_path / "d")
    assert e.wav_scp == d.wav_scp
    assert e.utt2spk == d.utt2spk
    assert e.text["spk1-u2"] == "HELLO  WORLD"  # value kept verbatim after the key
    assert e.segments == d.segments
    assert e.utt2dur == d.utt2dur
    assert e.spk_tables == d.spk_tables
    assert e.utt_ids == ["Spk0-u0", "spk1-u1", "spk1-u2", "spk2-u3"]
    assert e.spk2utt == {"Spk0": ["Spk0-u0"], "spk1": ["spk1-u1", "spk1-u2"], "spk2": ["spk2-u3"]}
    assert e.recording_of("spk1-u1") == "rA"


def test_recording_of_without_segments_is_the_utt():
    d = DataDir(wav_scp={"s-1": "a.wav"}, text={"s-1": "X"}, utt2spk={"s-1": "s"})
    assert d.recording_of("s-1") == "s-1"


def test_select_drops_unused_recordings_and_speakers():
    d = _small().select(["spk1-u1", "nonexistent"])
    assert d.utt_ids == ["spk1-u1"]
    assert d.wav_scp == {"rA": "sox a.wav -t wav - |"}
    assert d.spk_tables == {"spk2gender": {"spk1": "m"}}
    assert d.utt2dur == {"spk1-u1": 1.5}


def test_duplicate_key_is_a_data_error_with_line(tmp_path):
    (tmp_path / "utt2spk").write_text("a-1 a\na-2 a\na-1 a\n")
    with pytest.raises(DataError, match=r"utt2spk:3: duplicate key 'a-1' \(first on line 1\)"):
        read_table(tmp_path / "utt2spk")
    dups: list = []
    assert read_table(tmp_path / "utt2spk", dups) == {"a-1": "a", "a-2": "a"}
    assert [(e.key, e.line) for e in dups] == [("a-1", 3)]


def test_malformed_lines_are_data_errors(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text("a-1 x.wav\n")
    (d / "utt2spk").write_text("a-1 a b\n")
    with pytest.raises(DataError, match=r"utt2spk:1.*expected '<utt> <spk>'"):
        read_data_dir(d)
    (d / "utt2spk").write_text("a-1 a\n")
    (d / "segments").write_text("a-1 r 0.0 x1\n")
    with pytest.raises(DataError, match=r"segments:1: end time 'x1' is not a number"):
        read_data_dir(d)
    with pytest.raises(DataError, match="missing wav.scp"):
        read_data_dir(tmp_path)


def test_non_utf8_is_a_data_error(tmp_path):
    (tmp_path / "text").write_bytes(b"a-1 OK\na-2 \xff\xfe\n")
    with pytest.raises(DataError, match=r"text:2: not valid UTF-8"):
        read_table(tmp_path / "text")


def test_write_is_atomic(tmp_path):
    d = _small()
    write_data_dir(d, tmp_path / "d")
    before = (tmp_path / "d" / "text").read_text()
    d.text["spk1-u1"] = "BAD\nNEWLINE"
    with pytest.raises(DataError, match="newline"):
        write_data_dir(d, tmp_path / "d")
    assert (tmp_path / "d" / "text").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_format_table_empty_value():
    assert format_table({"b": "", "a": "x y"}) == "a x y\nb\n"


def test_ids_with_whitespace_are_refused(tmp_path):
    d = DataDir(wav_scp={"s-1": "a.wav"}, text={"s-1": "A"}, utt2spk={"s-1": "s x"})
    with pytest.raises(DataError, match=r"speaker id 's x' is empty or contains whitespace"):
        write_data_dir(d, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_read_audio_tables_reads_a_jobs_share_only(tmp_path):
    """What a compute-feats job reads: utt2spk, segments and the wav.scp lines of its own
    utterances' recordings (text and the other tables not at all)."""
    from pykaldi2.data.datadir import read_audio_tables

    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text("r1 /a/r1.wav\nr2 /a/r2.wav\nr3 /a/r3.wav\n")
    (d / "segments").write_text("s-u1 r1 0 1.5\ns-u2 r2 0 2\ns-u3 r2 2 3\ns-u4 r3 0 1\n")
    (d / "utt2spk").write_text("s-u1 s\ns-u2 s\ns-u3 s\ns-u4 s\n")
    (d / "text").write_text("s-u1 not read\n")
    job = read_audio_tables(d, ["s-u2", "s-u3"])
    assert job.utt2spk == {"s-u2": "s", "s-u3": "s"} and job.text == {}
    assert job.segments == {"s-u2": ("r2", 0.0, 2.0), "s-u3": ("r2", 2.0, 3.0)}
    assert job.wav_scp == {"r2": "/a/r2.wav"}
    whole = read_audio_tables(d)
    assert len(whole) == 4 and sorted(whole.wav_scp) == ["r1", "r2", "r3"]
    (d / "wav.scp").write_text("r1 /a/r1.wav\nr2 /a/r2.wav\nr2 /b/r2.wav\n")
    with pytest.raises(DataError, match=r"wav.scp:3: duplicate key 'r2' \(first on line 2\)"):
        read_audio_tables(d, ["s-u2"])
