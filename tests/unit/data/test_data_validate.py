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
        utt2spk="s1-a s1\ns1-b s1\ns2-c s0\n",  # s2-c: speaker sorts before s1, no text
        spk2utt="s1 s1-a\n",
    )
    problems = [str(p) for p in validate_data_dir(d)]
    base = str(d)
    expected = [
        f"{base}/text:2: (utterance s1-a) empty transcript",
        f"{base}/text:3: duplicate id 's1-a' (first on line 2)",
        f"{base}/text:4: (utterance x-z) utterance not in utt2spk",
        f"{base}/utt2spk:3: (utterance s2-c) utterance missing from text",
        f"{base}/utt2spk:3: (utterance s2-c) not sorted by speaker: speaker 's0' sorts before "
        "'s1' of the utterance before ('s1-b')",
        f"{base}/utt2spk:3: (utterance s2-c) utterance missing from wav.scp",
        f"{base}/wav.scp:3: (utterance rec9) utterance not in utt2spk",
        f"{base}/spk2utt:1: utterances of speaker 's1' differ from utt2spk",
        f"{base}/spk2utt: speaker 's0' of utt2spk is missing",
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
    assert any("wav.scp:1" in p and "unreadable or corrupt audio" in p for p in problems), problems


def test_crlf_and_in_memory(tmp_path):
    good = _good(tmp_path)
    (good / "text").write_bytes((good / "text").read_bytes().replace(b"\n", b"\r\n"))
    problems = [str(p) for p in validate_data_dir(good)]
    assert len(problems) == 1 and "text:1: carriage return" in problems[0]
    d = DataDir(
        wav_scp={"a-1": "x", "a-2": "x"},
        text={"a-1": " ", "a-2": "A"},
        utt2spk={"a-1": "c", "a-2": "b"},
    )
    problems = [str(p) for p in validate_data_dir(d)]
    assert problems == [
        "text: (utterance a-1) empty transcript",
        "utt2spk: (utterance a-2) not sorted by speaker: speaker 'b' sorts before 'c' of the "
        "utterance before ('a-1'); Kaldi needs utt2spk sorted both by utterance and by speaker "
        "(fix: make the speaker ids prefixes of the utterance ids, e.g. <speaker>-<utterance>)",
    ]
    assert validate_data_dir(d, spk_sort=False) == validate_data_dir(d)[:1]  # --no-spk-sort


def test_cli_prints_all_and_exits_1(tmp_path, capsys):
    good = _good(tmp_path)
    (good / "text").write_text("s1-a YES\ns1-b\ns2-c\n")
    assert main(["validate-data-dir", str(good)]) == 1
    out = capsys.readouterr()
    assert out.out.count("empty transcript") == 2
    assert "2 problem(s)" in out.err


def _speechocean_like(root: Path) -> Path:
    """A data dir in speechocean762's layout: utterance ids that do not start with the speaker
    id (``000010011`` of ``0001``), a tab after the id in text and wav.scp, and wav.scp paths
    relative to the corpus folder."""
    for spk, utt in (("0001", "000010011"), ("0001", "000010035"), ("0005", "000050003")):
        wav = root / "WAVE" / f"SPEAKER{spk}" / f"{utt}.WAV"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, np.zeros(1600, np.int16), 16000)
    return _write(
        root / "train",
        wav_scp="".join(
            f"{u}\tWAVE/SPEAKER{s}/{u}.WAV\n"
            for s, u in (("0001", "000010011"), ("0001", "000010035"), ("0005", "000050003"))
        ),
        text="000010011\tWE CALL IT BEAR\n000010035\tZERO THREE\n000050003\tI SEE\n",
        utt2spk="000010011 0001\n000010035 0001\n000050003 0005\n",
        spk2utt="0001 000010011 000010035\n0005 000050003\n",
        spk2gender="0001\tm\n0005\tf\n",
    )


def test_kaldi_rule_not_prefixes_tabs_and_wav_root(tmp_path, monkeypatch):
    """Kaldi's validate_data_dir.sh accepts utterance ids without speaker prefixes as long as
    utt2spk sorted by utterance is also sorted by speaker (sort -k2 -C): so do we."""
    d = _speechocean_like(tmp_path / "corpus")
    assert validate_data_dir(d) == []
    assert main(["validate-data-dir", str(d)]) == 0
    # audio paths are relative to the corpus folder, not to the data dir or the cwd
    monkeypatch.chdir(tmp_path)
    problems = [str(p) for p in validate_data_dir(d, check_audio=True)]
    assert len(problems) == 3 and all("audio file not found: WAVE/" in p for p in problems)
    root = tmp_path / "corpus"
    assert validate_data_dir(d, check_audio=True, wav_root=root) == []
    assert main(["validate-data-dir", "--check-audio", "--wav-root", str(root), str(d)]) == 0
    # fix-data-dir --wav-root writes the resolved (absolute) paths
    assert (
        main(["fix-data-dir", "--wav-root", str(root), "--out", str(tmp_path / "abs"), str(d)]) == 0
    )
    wav_scp = (tmp_path / "abs" / "wav.scp").read_text().splitlines()
    assert wav_scp[0] == f"000010011 {root}/WAVE/SPEAKER0001/000010011.WAV"
    assert validate_data_dir(tmp_path / "abs", check_audio=True) == []
    from pykaldi2.data.datadir import read_data_dir

    assert read_data_dir(d).text["000010011"] == "WE CALL IT BEAR"


def test_what_kaldi_rejects_is_still_rejected(tmp_path):
    d = _speechocean_like(tmp_path / "corpus")
    # speaker 0005 before 0001 in utterance order: Kaldi's sort -k2 -C fails
    (d / "utt2spk").write_text("000010011 0005\n000010035 0005\n000050003 0001\n")
    (d / "spk2utt").write_text("0001 000050003\n0005 000010011 000010035\n")
    (d / "spk2gender").write_text("0001 m\n0005 f\n")
    problems = [str(p) for p in validate_data_dir(d)]
    assert problems == [
        f"{d}/utt2spk:3: (utterance 000050003) not sorted by speaker: speaker '0001' sorts "
        "before '0005' of the utterance before ('000010035'); Kaldi needs utt2spk sorted both "
        "by utterance and by speaker (fix: make the speaker ids prefixes of the utterance ids, "
        "e.g. <speaker>-<utterance>)"
    ]
    assert validate_data_dir(d, spk_sort=False) == []


def test_illegal_words_and_bom(tmp_path):
    good = _good(tmp_path)
    (good / "text").write_text("s1-a <s> YES </s>\ns1-b NO #0\ns2-c YES NO\n")
    problems = [str(p) for p in validate_data_dir(good)]
    assert problems == [
        f"{good}/text:1: (utterance s1-a) illegal symbol(s) <s> </s> (reserved for the LM and "
        "graphs; remove them)",
        f"{good}/text:2: (utterance s1-b) illegal symbol(s) #0 (reserved for the LM and graphs; "
        "remove them)",
    ]
    # a UTF-8 byte-order mark is named (not "utterance not in utt2spk" with an invisible
    # U+FEFF), dropped on read, and fix-data-dir writes the file without it
    (good / "text").write_bytes(b"\xef\xbb\xbfs1-a YES\ns1-b NO\ns2-c YES NO\n")
    problems = [str(p) for p in validate_data_dir(good)]
    assert len(problems) == 1 and "text:1: starts with a UTF-8 byte-order mark" in problems[0]
    from pykaldi2.data.datadir import read_data_dir
    from pykaldi2.data.fix import fix_data_dir

    assert read_data_dir(good).text["s1-a"] == "YES"
    report = fix_data_dir(good)
    assert report.num_dropped == 0
    assert (good / "text").read_bytes().startswith(b"s1-a YES\n")
    assert validate_data_dir(good) == []


def test_check_audio_reads_what_compute_feats_reads(tmp_path, caplog):
    """#18.6 and #18.12: --check-audio used to say OK for a truncated WAV or FLAC, a failing
    pipe, a segment past the end of its audio and a 16 kHz file in an 8 kHz set."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(8000 * 3) * 1000).astype(np.int16)  # 3 s at 8 kHz
    for name in ("a", "b", "c", "d"):
        sf.write(tmp_path / f"{name}.wav", x, 8000, subtype="PCM_16")
    full = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "short.wav").write_bytes(full[: 44 + 1600])  # header says 3 s, 0.1 s left
    sf.write(tmp_path / "t.flac", x, 8000)
    flac = (tmp_path / "t.flac").read_bytes()
    (tmp_path / "t.flac").write_bytes(flac[: len(flac) // 3])
    sf.write(tmp_path / "wide.wav", x, 16000, subtype="PCM_16")
    recs = {
        "r1": f"{tmp_path}/a.wav",
        "r2": f"{tmp_path}/short.wav",
        "r3": f"{tmp_path}/t.flac",
        "r4": f"cat {tmp_path}/missing.wav |",  # cat exists, the pipe fails
        "r5": f"{tmp_path}/wide.wav",
        "r6": f"{tmp_path}/b.wav",
        "r7": f"{tmp_path}/c.wav",
    }
    utts = {f"s-{r}": (r, 0.0, 1.0) for r in recs}
    utts["s-r7"] = ("r7", 0.5, 4.0)  # the audio is 3 s long
    d = _write(
        tmp_path / "d",
        wav_scp="".join(f"{r} {v}\n" for r, v in recs.items()),
        segments="".join(f"{u} {r} {b} {e}\n" for u, (r, b, e) in utts.items()),
        utt2spk="".join(f"{u} s\n" for u in utts),
        spk2utt="s " + " ".join(utts) + "\n",
        text="".join(f"{u} A\n" for u in utts),
    )
    assert validate_data_dir(d) == []  # the cheap checks see nothing
    problems = [str(p) for p in validate_data_dir(d, check_audio=True)]
    expected = [
        f"{d}/segments:2: (utterance s-r2) end 1.0 s is past the end of r2 (0.100 s)",
        f"{d}/segments:7: (utterance s-r7) end 4.0 s is past the end of r7 (3.000 s)",
        f"{d}/wav.scp:2: {tmp_path}/short.wav: truncated WAV: the header declares 3.000 s of "
        "audio, the file holds 0.100 s",
        f"{d}/wav.scp:3: unreadable or corrupt audio",
        f"{d}/wav.scp:4: pipe command 'cat {tmp_path}/missing.wav' failed with exit status 1",
        f"{d}/wav.scp:5: sample rate 16000 Hz, not the data dir's usual 8000 Hz",
    ]
    assert len(problems) == len(expected), problems
    for e, p in zip(expected, problems):
        assert p.startswith(e), (e, p)
    # with the rate given, every other rate is named
    problems = [str(p) for p in validate_data_dir(d, check_audio=True, sample_rate=16000)]
    assert sum("not the expected 16000 Hz" in p for p in problems) == 4  # r1 r2 r6 r7
    # compute-feats reads the truncated WAV too, but now warns, naming file and utterance
    from pykaldi2.data import audio
    from pykaldi2.data.audio import read_audio

    audio._warned_truncated.clear()  # once per file and process: the check above warned too
    with caplog.at_level("WARNING"):
        got, _ = read_audio(recs["r2"], utt="s-r2")
    assert len(got) == 800
    assert f"{tmp_path}/short.wav (utterance s-r2): truncated WAV" in caplog.text
