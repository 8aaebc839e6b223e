"""validate_data_dir reports every problem with its file and line; the CLI exits non-zero."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from pykaldi2.cli.main import main
from pykaldi2.data.datadir import DataDir, write_data_dir
from pykaldi2.data.validate import validate_data_dir


def _write(d: Path, **files: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (d / name.replace("_scp", ".scp")).write_text(content)
    return d


def _good(tmp_path: Path) -> Path:
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, np.int16), 16000)
    d = DataDir(
        wav_scp={"s1-a": str(wav), "s1-b": str(wav), "s2-c": str(wav)},
        text={"s1-a": "YES", "s1-b": "NO", "s2-c": "YES NO"},
        utt2spk={"s1-a": "s1", "s1-b": "s1", "s2-c": "s2"},
    )
    write_data_dir(d, tmp_path / "good")
    return tmp_path / "good"


def test_valid_dir_has_no_problems(tmp_path):
    good = _good(tmp_path)
    assert validate_data_dir(good, check_audio=True) == []
    assert main(["validate-data-dir", "--check-audio", str(good)]) == 0


def test_every_problem_is_reported_with_file_and_line(tmp_path):
    d = _write(
        tmp_path / "bad",
        wav_scp="s1-a a.wav\ns1-b b.wav\nrec9 c.wav\n",
        text="s1-b NO\ns1-a\ns1-a YES\nx-z HI\n",  # unsorted, empty, duplicate, extra utt
        utt2spk="s1-a s1\ns1-b s1\ns2-c s9\n",  # s2-c: speaker not a prefix, no text
        spk2utt="s1 s1-a\n",
    )
    problems = [str(p) for p in validate_data_dir(d)]
    base = str(d)
    expected = [
        f"{base}/text:2: (utterance s1-a) empty transcript",
        f"{base}/text:3: duplicate id 's1-a' (first on line 2)",
        f"{base}/text:4: (utterance x-z) utterance not in utt2spk",
        f"{base}/utt2spk:3: (utterance s2-c) utterance missing from text",
        f"{base}/utt2spk:3: (utterance s2-c) speaker id 's9' is not a prefix",
        f"{base}/utt2spk:3: (utterance s2-c) utterance missing from wav.scp",
        f"{base}/wav.scp:3: (utterance rec9) utterance not in utt2spk",
        f"{base}/spk2utt:1: utterances of speaker 's1' differ from utt2spk",
        f"{base}/spk2utt: speaker 's9' of utt2spk is missing",
        f"{base}/text:2: not sorted: 's1-a' sorts before",
        f"{base}/wav.scp:3: not sorted: 'rec9' sorts before",
    ]
    for e in expected:
        assert any(p.startswith(e) for p in problems), (e, problems)
    assert len(problems) == len(expected), problems


def test_segments_problems(tmp_path):
    d = _write(
        tmp_path / "seg",
        wav_scp="r1 a.wav\n",
        text="s-1 A\ns-2 B\ns-3 C\n",
        utt2spk="s-1 s\ns-2 s\ns-3 s\n",
        spk2utt="s s-1 s-2 s-3\n",
        segments="s-1 r1 0.5 0.5\ns-2 r2 0 1\ns-3 r1 -1 2\n",
        utt2dur="s-1 0\ns-2 1\n",
    )
    problems = [str(p) for p in validate_data_dir(d)]
    b = str(d)
    for e in [
        f"{b}/segments:1: (utterance s-1) end time 0.5 <= start time 0.5",
        f"{b}/segments:2: (utterance s-2) recording 'r2' not in wav.scp",
        f"{b}/segments:3: (utterance s-3) start time -1.0 is negative",
        f"{b}/utt2dur:1: (utterance s-1) non-positive duration 0.0",
        f"{b}/utt2spk:3: (utterance s-3) utterance missing from utt2dur",
    ]:
        assert any(p.startswith(e) for p in problems), (e, problems)
    assert len(problems) == 5, problems


def test_missing_files_and_audio(tmp_path):
    d = _write(tmp_path / "m", wav_scp="s-1 /nonexistent/x.wav\ns-2 nosuchprogram -x |\n")
    (tmp_path / "m" / "utt2spk").write_text("s-1 s\ns-2 s\n")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF1234WAVEjunk")
    problems = [str(p) for p in validate_data_dir(d)]
    assert problems == [f"{d}/spk2utt: missing file", f"{d}/text: missing file"]
    assert validate_data_dir(d, require_text=False) == validate_data_dir(d)[:1]
    problems = [str(p) for p in validate_data_dir(d, check_audio=True)]
    assert any(
        "wav.scp:1" in p and "audio file not found: /nonexistent/x.wav" in p for p in problems
    )
    assert any("wav.scp:2" in p and "'nosuchprogram'" in p for p in problems)
    (tmp_path / "m" / "wav.scp").write_text(f"s-1 {tmp_path / 'corrupt.wav'}\ns-2 cat x |\n")
    problems = [str(p) for p in validate_data_dir(d, check_audio=True)]
    assert any("wav.scp:1" in p and "unreadable audio" in p for p in problems), problems


def test_crlf_and_in_memory(tmp_path):
    good = _good(tmp_path)
    (good / "text").write_bytes((good / "text").read_bytes().replace(b"\n", b"\r\n"))
    problems = [str(p) for p in validate_data_dir(good)]
    assert len(problems) == 1 and "text:1: carriage return" in problems[0]
    d = DataDir(wav_scp={"a-1": "x"}, text={"a-1": " "}, utt2spk={"a-1": "b"})
    problems = [str(p) for p in validate_data_dir(d)]
    assert problems == [
        "text: (utterance a-1) empty transcript",
        "utt2spk: (utterance a-1) speaker id 'b' is not a prefix of the utterance id "
        "(Kaldi needs utterances sorted by speaker: name them <spk>-<rest>)",
    ]


def test_cli_prints_all_and_exits_1(tmp_path, capsys):
    good = _good(tmp_path)
    (good / "text").write_text("s1-a YES\ns1-b\ns2-c\n")
    assert main(["validate-data-dir", str(good)]) == 1
    out = capsys.readouterr()
    assert out.out.count("empty transcript") == 2
    assert "2 problem(s)" in out.err
