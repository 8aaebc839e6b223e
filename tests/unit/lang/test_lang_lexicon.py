"""Lexicon reading, dictionary dir validation, word positions, disambiguation symbols."""

from __future__ import annotations

import pytest

from pykaldi2.lang.lexicon import (
    LexiconEntry,
    add_lex_disambig,
    add_word_position,
    read_dict_dir,
    read_lexicon,
)
from pykaldi2.lang.symbols import SymbolTable
from pykaldi2.utils.errors import DataError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def make_dict(d, lexicon="A AH\nAND AE N D\n<UNK> SPN\n", nonsil="AH\nAE\nN\nD\n", opt="SIL\n"):
    d.mkdir(exist_ok=True)
    write(d / "lexicon.txt", lexicon)
    write(d / "nonsilence_phones.txt", nonsil)
    write(d / "silence_phones.txt", "SIL\nSPN\n")
    write(d / "optional_silence.txt", opt)
    return d


def test_read_lexicon_and_lexiconp(tmp_path):
    lex = read_lexicon(write(tmp_path / "lexicon.txt", "A AH\nA  EY\n\nAND AE N D\n"))
    assert lex == [
        LexiconEntry("A", ("AH",)),
        LexiconEntry("A", ("EY",)),
        LexiconEntry("AND", ("AE", "N", "D")),
    ]
    lexp = read_lexicon(write(tmp_path / "lexiconp.txt", "A 1.0 AH\nA 0.25 EY\n"))
    assert [e.prob for e in lexp] == [1.0, 0.25]


@pytest.mark.parametrize(
    "name,text,line,needle",
    [
        ("lexicon.txt", "A AH\nB\n", 2, "empty pronunciation"),
        ("lexiconp.txt", "A 1.0 AH\nB x B\n", 2, "bad pronunciation probability"),
        ("lexiconp.txt", "A 1.5 AH\n", 1, "not in (0, 1]"),
        ("lexiconp.txt", "A 0.5\n", 1, "empty pronunciation"),
        ("lexicon.txt", "A AH\n<s> SIL\n", 2, "reserved"),
        ("lexicon.txt", "A AH\nB B\nA AH\n", 3, "duplicate pronunciation"),
    ],
)
def test_malformed_lexicon_lines(tmp_path, name, text, line, needle):
    path = write(tmp_path / name, text)
    with pytest.raises(DataError) as e:
        read_lexicon(path)
    assert f"{path}:{line}" in str(e.value) and needle in str(e.value)


def test_duplicates_can_be_skipped(tmp_path):
    path = write(tmp_path / "lexicon.txt", "A AH\nA AH\n")
    assert len(read_lexicon(path, on_duplicate="skip")) == 1


def test_word_position():
    lex = add_word_position([LexiconEntry("A", ("AH",)), LexiconEntry("AND", ("AE", "N", "D"))])
    assert [e.phones for e in lex] == [("AH_S",), ("AE_B", "N_I", "D_E")]


def test_add_lex_disambig_homophones_and_prefixes():
    lex = [
        LexiconEntry("RED", ("R", "EH", "D")),
        LexiconEntry("READ", ("R", "EH", "D")),
        LexiconEntry("RE", ("R", "EH")),
        LexiconEntry("REDS", ("R", "EH", "D", "Z")),
        LexiconEntry("A", ("AH",)),
    ]
    out, max_disambig = add_lex_disambig(lex)
    assert [e.phones for e in out] == [
        ("R", "EH", "D", "#1"),  # homophone and prefix of REDS
        ("R", "EH", "D", "#2"),
        ("R", "EH", "#1"),  # prefix of RED
        ("R", "EH", "D", "Z"),
        ("AH",),
    ]
    assert max_disambig == 2
    assert add_lex_disambig([LexiconEntry("A", ("AH",))])[1] == 0


def test_dict_dir_validation(tmp_path):
    d = read_dict_dir(make_dict(tmp_path / "ok"))
    assert d.all_phones == ["SIL", "SPN", "AH", "AE", "N", "D"] and d.optional_silence == "SIL"
    with pytest.raises(DataError, match="undeclared phone 'EY'"):
        read_dict_dir(make_dict(tmp_path / "a", lexicon="A EY\n"))
    with pytest.raises(DataError, match="not in silence_phones"):
        read_dict_dir(make_dict(tmp_path / "b", opt="AH\n"))
    with pytest.raises(DataError, match="declared twice"):
        read_dict_dir(make_dict(tmp_path / "c", nonsil="AH\nAE\nN\nD\nSIL\n"))
    with pytest.raises(DataError, match="word-position suffix"):
        read_dict_dir(make_dict(tmp_path / "e", nonsil="AH\nAE\nN\nD\nX_B\n"))


def test_symbol_table_roundtrip_and_errors(tmp_path):
    t = SymbolTable(["<eps>", "A", "B"])
    t.write(tmp_path / "words.txt")
    back = SymbolTable.read(tmp_path / "words.txt")
    assert back == t and back.id("B") == 2 and back.sym(1) == "A" and list(back)[0] == ("<eps>", 0)
    write(tmp_path / "bad.txt", "<eps> 0\nA one\n")
    with pytest.raises(DataError, match=r"bad.txt:2"):
        SymbolTable.read(tmp_path / "bad.txt")
    write(tmp_path / "dup.txt", "<eps> 0\nA 1\nB 1\n")
    with pytest.raises(DataError, match=r"dup.txt:3"):
        SymbolTable.read(tmp_path / "dup.txt")
    with pytest.raises(DataError, match="not in the symbol table"):
        t.id("C")
