"""``prepare-dict lexicon FILE DICT_DIR``: a dictionary dir from any Kaldi-style lexicon, as
Kaldi's LibriSpeech / speechocean762 local/prepare_dict.sh make it (stress kept or stripped)."""

from __future__ import annotations

from pykaldi2.cli.main import main
from pykaldi2.lang.lexicon import read_dict_dir


def test_lexicon_dict_with_stress_kept_and_stripped(tiny_speechocean762, tmp_path):
    lex = tiny_speechocean762 / "resource/lexicon.txt"  # WORD<TAB>P1 P2, AN4 phones + stress
    assert main(["prepare-dict", "lexicon", str(lex), str(tmp_path / "dict")]) == 0
    d = read_dict_dir(tmp_path / "dict")
    words = {e.word: e.phones for e in d.lexicon}
    assert {e.phones for e in d.lexicon if e.word == "AND"} == {
        ("AE1", "N", "D"),
        ("AH1", "N", "D"),
    }
    assert words["!SIL"] == ("SIL",)
    assert words["<SPOKEN_NOISE>"] == ("SPN",) and words["<UNK>"] == ("SPN",)
    assert "A(2)" not in words and {e.phones for e in d.lexicon if e.word == "A"} == {
        ("AH1",),
        ("EY1",),
    }
    assert d.silence_phones == [["SIL"], ["SPN"]] and d.optional_silence == "SIL"
    # Kaldi's prepare_dict.sh: stress variants on one line (one tree root), and the extra
    # questions are the silence phones then one set per stress mark ("" = no digit)
    assert ["AE1"] in d.nonsilence_phones and ["N"] in d.nonsilence_phones
    assert d.extra_questions[0] == ["SIL", "SPN"]
    stressed = [q for q in d.extra_questions[1:] if all(p.endswith("1") for p in q)]
    unstressed = [q for q in d.extra_questions[1:] if not any(p[-1].isdigit() for p in q)]
    assert len(d.extra_questions) == 3 and len(stressed) == 1 and len(unstressed) == 1
    assert "N" in unstressed[0] and "AE1" in stressed[0]
    assert main(["prepare-lang", str(tmp_path / "dict"), "<UNK>", str(tmp_path / "lang")]) == 0

    argv = ["prepare-dict", "lexicon", "--stress", "strip", str(lex), str(tmp_path / "d2")]
    assert main(argv) == 0
    d2 = read_dict_dir(tmp_path / "d2")
    assert {e.phones for e in d2.lexicon if e.word == "AND"} == {("AE", "N", "D"), ("AH", "N", "D")}
    assert d2.extra_questions == [["SIL", "SPN"]]
    assert not any(p[-1].isdigit() for line in d2.nonsilence_phones for p in line)


def test_lexicon_dict_errors_name_the_file(tmp_path, capsys):
    lex = tmp_path / "lexicon.txt"
    lex.write_text("HELLO\tHH AH0 L OW1\nSILENCE\tSIL\n")
    assert main(["prepare-dict", "lexicon", str(lex), str(tmp_path / "dict")]) == 1
    err = capsys.readouterr().err
    assert f"{lex}: word 'SILENCE' uses reserved phone 'SIL'" in err
    assert main(["prepare-dict", "lexicon", str(tmp_path / "nope.txt"), str(tmp_path / "d")]) == 1
    assert "nope.txt: lexicon not found" in capsys.readouterr().err
