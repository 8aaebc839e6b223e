"""Corpus preparers on the real corpora: AN4, yesno, the LibriSpeech sample."""

from __future__ import annotations

import shutil

import pytest

from pykaldi2.cli.main import main
from pykaldi2.data.audio import load_utterance
from pykaldi2.data.corpora.an4 import prepare_an4
from pykaldi2.data.corpora.librispeech import prepare_librispeech
from pykaldi2.data.corpora.yesno import prepare_yesno
from pykaldi2.data.datadir import read_data_dir
from pykaldi2.data.validate import validate_data_dir
from pykaldi2.utils.errors import DataError


def test_an4_cli(an4_dir, tmp_path):
    out = tmp_path / "data"
    assert main(["prepare", "an4", "--corpus-dir", str(an4_dir), str(out)]) == 0
    train, test = read_data_dir(out / "train"), read_data_dir(out / "test")
    assert (len(train), len(test)) == (948, 130)
    assert (len(train.spk_ids), len(test.spk_ids)) == (74, 10)
    assert validate_data_dir(out / "train") == []
    assert validate_data_dir(out / "test") == []
    assert train.text["fash-an251-fash-b"] == "YES"
    assert test.text["fcaw-an406-fcaw-b"] == "RUBOUT G M E F THREE NINE"
    assert not any("<s>" in t or "(" in t for t in train.text.values())
    x, sr = load_utterance(train, "fash-an251-fash-b", expected_sr=16000)
    assert sr == 16000 and x.shape == (16000,)


def _an4_copy(an4_dir, tmp_path):
    """An AN4 copy with the etc/ files and symlinked audio (to damage it safely)."""
    corpus = tmp_path / "an4"
    shutil.copytree(an4_dir / "etc", corpus / "etc")
    (corpus / "flac").symlink_to(an4_dir / "flac")
    return corpus


def test_an4_bad_transcription_writes_nothing(an4_dir, tmp_path):
    corpus = _an4_copy(an4_dir, tmp_path)
    trans = corpus / "etc" / "an4_test.transcription"
    lines = trans.read_text().splitlines()
    lines[5] = lines[5].split("(")[0]  # no "(uttid)"
    trans.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"an4_test.transcription:6: expected"):
        prepare_an4(corpus, tmp_path / "data")
    # train was written (complete), test was not started: no half-finished dir anywhere
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["train"]


def test_an4_missing_audio(an4_dir, tmp_path):
    corpus = _an4_copy(an4_dir, tmp_path)
    ids = corpus / "etc" / "an4_train.fileids"
    ids.write_text(ids.read_text().replace("fash/an251-fash-b", "fash/an999-fash-b", 1))
    trans = corpus / "etc" / "an4_train.transcription"
    trans.write_text(trans.read_text().replace("(an251-fash-b)", "(an999-fash-b)", 1))
    with pytest.raises(DataError, match=r"no audio for an4_clstk/fash/an999-fash-b"):
        prepare_an4(corpus, tmp_path / "data")
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_yesno(yesno_dir, tmp_path):
    dirs = prepare_yesno(yesno_dir, tmp_path)
    train, test = dirs["train_yesno"], dirs["test_yesno"]
    assert (len(train), len(test)) == (30, 30)
    assert max(train.utt_ids) < min(test.utt_ids)  # first half / second half of sorted names
    assert train.text["global-0_0_0_0_1_1_1_1"] == "NO NO NO NO YES YES YES YES"
    assert set(train.utt2spk.values()) == {"global"}
    assert validate_data_dir(tmp_path / "test_yesno", check_audio=True) == []


def test_librispeech_sample(librispeech_sample_dir, tmp_path):
    assert (
        main(["prepare", "librispeech", "--corpus-dir", str(librispeech_sample_dir), str(tmp_path)])
        == 0
    )
    d = read_data_dir(tmp_path / "test_clean")
    assert d.utt_ids == [
        "1089-134686-0000",
        "1089-134686-0001",
        "1089-134691-0000",
        "1089-134691-0001",
    ]
    assert d.utt2spk["1089-134691-0001"] == "1089-134691"
    assert d.text["1089-134691-0000"] == "HE COULD WAIT NO LONGER"
    assert validate_data_dir(tmp_path / "test_clean", check_audio=True) == []
    with pytest.raises(DataError, match="part dev-clean not found"):
        prepare_librispeech(librispeech_sample_dir, tmp_path, parts=["dev-clean"])


def test_librispeech_genders_and_bad_id(librispeech_sample_dir, tmp_path):
    root = tmp_path / "LibriSpeech"
    shutil.copytree(librispeech_sample_dir / "LibriSpeech", root)
    (root / "SPEAKERS.TXT").write_text(
        ";ID |SEX| SUBSET | MINUTES | NAME\n1089 | M | test-clean | 1 | X\n"
    )
    d = prepare_librispeech(tmp_path, tmp_path / "out")["test_clean"]
    assert d.spk_tables["spk2gender"] == {"1089-134686": "m", "1089-134691": "m"}
    assert (tmp_path / "out" / "test_clean" / "spk2gender").is_file()
    tf = root / "test-clean" / "1089" / "134686" / "1089-134686.trans.txt"
    tf.write_text(tf.read_text() + "9999-1-0000 WRONG CHAPTER\n")
    with pytest.raises(DataError, match=r"1089-134686.trans.txt:3: utterance id '9999-1-0000'"):
        prepare_librispeech(tmp_path, tmp_path / "out2")
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_prepare_cli_errors(tmp_path, capsys):
    assert main(["prepare", "an4", "--corpus-dir", str(tmp_path / "nope"), str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "an4_train.fileids: AN4 list file not found" in err and "Fix:" in err
    argv = ["prepare", "librispeech", "--download", "--corpus-dir", str(tmp_path), str(tmp_path)]
    assert main(argv) == 1
    assert "--download needs --parts" in capsys.readouterr().err
    assert main(["prepare", "yesno", "--corpus-dir", str(tmp_path), str(tmp_path)]) == 1
    assert "no waves_yesno/*.wav" in capsys.readouterr().err
