"""prepare-dict graphemes: letters as phones, the apostrophe dropped or a phone, clear errors."""

from __future__ import annotations

import pytest

from pykaldi2.cli.main import main
from pykaldi2.lang.dicts import grapheme_pronunciation, prepare_grapheme_dict
from pykaldi2.lang.lexicon import read_dict_dir
from pykaldi2.lang.prepare_lang import prepare_lang
from pykaldi2.utils.errors import DataError


def _data_dir(path, lines: dict[str, str]):
    path.mkdir(parents=True)
    (path / "wav.scp").write_text("".join(f"{u} /x/{u}.wav\n" for u in lines))
    (path / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in lines))
    (path / "text").write_text("".join(f"{u} {t}\n" for u, t in lines.items()))
    return path


def test_grapheme_pronunciation() -> None:
    assert grapheme_pronunciation("HELLO") == ("H", "E", "L", "L", "O")
    assert grapheme_pronunciation("DON'T") == ("D", "O", "N", "T")
    assert grapheme_pronunciation("DON'T", "phone") == ("D", "O", "N", "APOS", "T")
    with pytest.raises(ValueError, match="apostrophe"):
        grapheme_pronunciation("A", "keep")


@pytest.mark.parametrize("apostrophe", ["drop", "phone"])
def test_prepare_grapheme_dict(tmp_path, apostrophe: str) -> None:
    train = _data_dir(tmp_path / "train", {"s-1": "PLEASE DON'T HANG UP", "s-2": "GOODBYE <UNK>"})
    dev = _data_dir(tmp_path / "dev", {"s-3": "HANG ON"})
    d = prepare_grapheme_dict([train, dev], tmp_path / "dict", apostrophe=apostrophe)
    lex = {e.word: e.phones for e in d.lexicon}
    assert set(lex) == {"PLEASE", "DON'T", "HANG", "UP", "GOODBYE", "ON", "<UNK>"}
    assert lex["<UNK>"] == ("SPN",)
    assert lex["GOODBYE"] == tuple("GOODBYE")
    letters = sorted(set("PLEASEDONTHANGUPGOODBYE"))
    expected = letters + (["APOS"] if apostrophe == "phone" else [])
    assert sorted(p for s in d.nonsilence_phones for p in s) == sorted(expected)
    # the written dir is valid: it reads back and prepare-lang accepts it
    back = read_dict_dir(tmp_path / "dict")
    assert back.lexicon == d.lexicon and back.optional_silence == "SIL"
    prepare_lang(tmp_path / "dict", "<UNK>", tmp_path / "lang")
    assert (tmp_path / "lang" / "L.fst").is_file()


def test_prepare_grapheme_dict_errors(tmp_path) -> None:
    bad = _data_dir(tmp_path / "bad", {"s-1": "OK '", "s-2": "FINE"})
    with pytest.raises(DataError, match="s-1"):
        prepare_grapheme_dict(bad, tmp_path / "dict")
    hashed = _data_dir(tmp_path / "hashed", {"s-1": "PRESS #"})
    with pytest.raises(DataError, match="disambiguation"):
        prepare_grapheme_dict(hashed, tmp_path / "dict2")


def test_prepare_dict_graphemes_cli(tmp_path, capsys) -> None:
    train = _data_dir(tmp_path / "train", {"s-1": "YOU'RE WELCOME"})
    out = tmp_path / "dict"
    assert main(["prepare-dict", "graphemes", str(train), str(out), "--apostrophe", "phone"]) == 0
    assert "YOU'RE Y O U APOS R E" in (out / "lexicon.txt").read_text().splitlines()
    assert "3 words" in capsys.readouterr().out
