"""words_to_ids (sym2int.pl --map-oov): OOV words named with counts and utterances (#18 item 13)."""

from __future__ import annotations

import logging

import pytest

from pykaldi2.lang.symbols import SymbolTable
from pykaldi2.lang.transcripts import words_to_ids
from pykaldi2.utils.errors import DataError

WORDS = SymbolTable(["<eps>", "YES", "NO", "<UNK>"], name="lang/words.txt")


def test_oov_words_are_mapped_and_named(caplog):
    text = {"u1": "YES MAYBE NO", "u2": "NO", "u3": "MAYBE PERHAPS MAYBE"}
    with caplog.at_level(logging.WARNING, logger="pykaldi2.lang.transcripts"):
        ids, oovs = words_to_ids(text, WORDS, oov_word="<UNK>", source="d/text")
    assert ids == {"u1": [1, 3, 2], "u2": [2], "u3": [3, 3, 3]}
    assert dict(oovs.counts) == {"MAYBE": 3, "PERHAPS": 1} and oovs.utts == ["u1", "u3"]
    assert caplog.messages == [
        "d/text: 4 word tokens (2 distinct words) are not in lang/words.txt: MAYBE (3), "
        "PERHAPS (1); in 2 utterances: u1, u3 (mapped to <UNK>)"
    ]
    caplog.clear()
    _, oovs = words_to_ids([("u2", "NO YES")], WORDS, oov_word="<UNK>", source="d/text")
    assert not oovs.counts and not caplog.messages


def test_without_an_oov_word_they_are_an_error_and_long_lists_are_cut():
    text = {f"u{i:02d}": f"W{i} YES" for i in range(12)}
    with pytest.raises(DataError) as e:
        words_to_ids(text, WORDS, oov_word=None, source="d/text", words_file="x/words.txt")
    msg = str(e.value)
    assert msg.startswith("d/text: 12 word tokens (12 distinct words) are not in x/words.txt: ")
    assert "W0 (1), W1 (1), " in msg and "W9 (1), ... (2 more); in 12 utterances: u00, " in msg
    assert "u09, ... (2 more). Fix: " in msg
    with pytest.raises(DataError, match=r"1 word token \(1 distinct word\) is not in"):
        words_to_ids({"u1": "NOPE"}, WORDS, oov_word=None, source="d/text")
