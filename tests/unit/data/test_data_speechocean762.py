"""speechocean762 as shipped (Kaldi data dirs without speaker-prefixed utterance ids, tabs,
paths relative to the corpus) on a tiny made-up copy of real AN4 speech (tests/conftest.py)."""

from __future__ import annotations

from pykaldi2.cli.main import main
from pykaldi2.data.audio import load_utterance
from pykaldi2.data.datadir import read_data_dir
from pykaldi2.data.validate import validate_data_dir
from pykaldi2.lang.tokenizer import read_transcripts


def test_the_corpus_dirs_validate_unchanged(tiny_speechocean762):
    root = tiny_speechocean762
    for part in ("train", "test"):
        assert validate_data_dir(root / part) == []
        assert validate_data_dir(root / part, check_audio=True, wav_root=root) == []
    d = read_data_dir(root / "train", wav_root=root)
    assert d.text["000010000"] == "YES" and d.utt2spk["000010000"] == "0001"
    assert d.wav_scp["000010000"] == f"{root}/WAVE/SPEAKER0001/000010000.WAV"
    x, sr = load_utterance(d, "000010000", expected_sr=16000)
    assert sr == 16000 and len(x) > 8000
    assert read_transcripts([root / "train"])["000010000"] == "YES"  # tab after the id


def test_prepare_writes_train_dev_test(tiny_speechocean762, tmp_path, capsys):
    out = tmp_path / "data"
    assert (
        main(["prepare", "speechocean762", "--corpus-dir", str(tiny_speechocean762), str(out)]) == 0
    )
    assert "data/dev: 4 utterance(s), 1 speaker(s)" in capsys.readouterr().out
    dirs = {n: read_data_dir(out / n) for n in ("train", "dev", "test", "test_full")}
    assert [len(d) for d in dirs.values()] == [8, 4, 4, 8]
    # test speakers 0003 and 0006 in id order: 1st -> dev, 2nd -> test; nothing in both
    assert dirs["dev"].spk_ids == ["0003"] and dirs["test"].spk_ids == ["0006"]
    assert set(dirs["dev"].utt2spk) | set(dirs["test"].utt2spk) == set(dirs["test_full"].utt2spk)
    assert dirs["dev"].spk_tables["spk2gender"] == {"0003": "m"}
    for n, d in dirs.items():
        assert validate_data_dir(out / n, check_audio=True) == []  # absolute paths now
        assert all(p.startswith(str(tiny_speechocean762)) for p in d.wav_scp.values())
    # the WAV without a transcript (SPEAKER9601) is in no data dir
    assert not any("SPEAKER9601" in p for d in dirs.values() for p in d.wav_scp.values())


def test_prepare_names_a_wrong_folder(tmp_path, capsys):
    assert (
        main(["prepare", "speechocean762", "--corpus-dir", str(tmp_path), str(tmp_path / "d")]) == 1
    )
    err = capsys.readouterr().err
    assert "not a speechocean762 folder: no train/, test/, WAVE/" in err and str(tmp_path) in err
