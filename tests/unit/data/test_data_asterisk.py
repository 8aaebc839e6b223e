"""The Asterisk prompts corpus: normalisation, split, a fake layout, and the real Debian files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pykaldi2.cli.main import main
from pykaldi2.data.corpora import asterisk
from pykaldi2.data.datadir import read_data_dir
from pykaldi2.data.validate import validate_data_dir
from pykaldi2.utils.errors import DataError

REAL = Path(asterisk.DEFAULT_SOUNDS_DIR)


@pytest.mark.parametrize(
    "raw, want",
    [
        ("Agent logged in.", "AGENT LOGGED IN"),
        (
            "Please press 1 to mute, or * for help; # to exit",
            "PLEASE PRESS ONE TO MUTE OR STAR FOR HELP POUND TO EXIT",
        ),
        (
            "That agent is already logged on.  Please enter",
            "THAT AGENT IS ALREADY LOGGED ON PLEASE ENTER",
        ),
        ("[this is a simple beep tone]", None),
        ("(10 seconds of silence)", None),
        ("<beep ascending>", None),
        ("at [@]", "AT"),
        ("Call-Forward on Busy.", "CALL FORWARD ON BUSY"),
        ('a polite "don\'t call" menu', "A POLITE DON'T CALL MENU"),
        ("a 28.8 kilobit modem", "A TWENTY EIGHT POINT EIGHT KILOBIT MODEM"),
        ("3D audio enabled", "THREE D AUDIO ENABLED"),
        ("visit www.asterisk.org", "VISIT WWW DOT ASTERISK DOT ORG"),
        ("with extension 1234", None),
        ('IAX (note: does not say "2")', "IAX"),
    ],
)
def test_normalize_text(raw: str, want: str | None) -> None:
    assert asterisk.normalize_text(raw) == want


def test_number_to_words() -> None:
    assert asterisk.number_to_words(0) == "ZERO"
    assert asterisk.number_to_words(19) == "NINETEEN"
    assert asterisk.number_to_words(40) == "FORTY"
    assert asterisk.number_to_words(99) == "NINETY NINE"
    with pytest.raises(ValueError):
        asterisk.number_to_words(100)


def test_split_is_deterministic_and_in_vocab() -> None:
    texts = {f"p{i}": f"WORD{i % 7} COMMON" for i in range(200)}
    texts["rare"] = "ONLY HERE"
    train, test = asterisk.split_prompts(texts, test_percent=30)
    assert (train, test) == asterisk.split_prompts(dict(reversed(texts.items())), 30)
    assert set(train) | set(test) == set(texts) and not set(train) & set(test)
    assert 20 <= len(test) <= 100 and "rare" in train
    vocab = {w for n in train for w in texts[n].split()}
    assert all(set(texts[n].split()) <= vocab for n in test)
    # Without the vocabulary rule the same hash decides alone: a superset of test.
    _, test_all = asterisk.split_prompts(texts, 30, test_in_vocab=False)
    assert set(test) <= set(test_all)


def _fake_corpus(root: Path, gz: bool) -> Path:
    sounds = root / "sounds" / "en"
    (sounds / "digits").mkdir(parents=True)
    lines = ["; Core Asterisk Sounds in English", ""]
    prompts = {f"digits/{i}": asterisk.number_to_words(i).lower() for i in range(10)}
    prompts.update({f"msg-{i}": f"Press {i % 10} now." for i in range(30)})
    prompts["beep"] = "[this is a simple beep tone]"
    for name, text in prompts.items():
        sf.write(sounds / f"{name}.wav", np.zeros(800, dtype=np.int16), 8000)
        lines.append(f"{name}: {text}")
    lines.append("no-wav-here: Hello.")
    data = ("\n".join(lines) + "\n").encode()
    if gz:
        (sounds / "core-sounds-en.txt.gz").write_bytes(gzip.compress(data))
    else:
        (root / "sounds" / "core-sounds-en.txt").write_bytes(data)
    return sounds


@pytest.mark.parametrize("gz", [False, True])
def test_prepare_fake_layout(tmp_path: Path, gz: bool) -> None:
    sounds = _fake_corpus(tmp_path, gz)
    dirs = asterisk.prepare_asterisk(sounds, tmp_path / "data", test_percent=20)
    train, test = (read_data_dir(tmp_path / "data" / n) for n in ("train", "test"))
    assert len(train) + len(test) == 40  # beep and the prompt without a wav are skipped
    assert len(test) == len(dirs["test"]) > 0
    assert train.text["allison-digits-7"] == "SEVEN"
    assert train.wav_scp["allison-digits-7"] == str((sounds / "digits" / "7.wav").resolve())
    assert set(train.utt2spk.values()) == {"allison"}
    assert validate_data_dir(tmp_path / "data" / "test", check_audio=True) == []


def test_prepare_cli_and_errors(tmp_path: Path) -> None:
    sounds = _fake_corpus(tmp_path, gz=False)
    out = tmp_path / "data"
    assert main(["prepare", "asterisk", "--corpus-dir", str(sounds), str(out)]) == 0
    assert (out / "train" / "text").is_file()
    with pytest.raises(DataError, match="Asterisk sounds folder not found"):
        asterisk.read_asterisk(tmp_path / "missing")
    bad = tmp_path / "bad.txt"
    bad.write_text("digits/1 one\n")
    with pytest.raises(DataError, match=r"bad.txt:1.*prompt name"):
        asterisk.read_asterisk(sounds, transcripts=bad)
    other = tmp_path / "other.txt"
    other.write_text("nothing-like-this: Hello.\n")
    with pytest.raises(DataError, match="none of the 1 prompts"):
        asterisk.read_asterisk(sounds, transcripts=other)


def test_real_debian_files(tmp_path: Path) -> None:
    if not (REAL / "digits" / "1.wav").is_file():
        pytest.skip(f"{REAL} not installed (make demo-deps)")
    try:
        asterisk.find_transcripts(REAL.resolve())
    except DataError:
        pytest.skip("asterisk-core-sounds-en (the transcripts) not installed (make demo-deps)")
    dirs = asterisk.prepare_asterisk(REAL, tmp_path / "data")
    assert len(dirs["train"]) > 450 and len(dirs["test"]) > 20
    assert dirs["train"].text.get("allison-digits-7", dirs["test"].text.get("allison-digits-7"))
    info = sf.info(next(iter(dirs["test"].wav_scp.values())))
    assert info.samplerate == asterisk.SAMPLE_RATE and info.channels == 1
    for d in dirs.values():
        for text in d.text.values():
            assert text and all(w.replace("'", "").isalpha() and w.isupper() for w in text.split())
