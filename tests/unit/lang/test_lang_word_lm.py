"""The word n-gram of transducer shallow fusion (WordLm): a spelling of LM words scores the
n-gram's sentence log-probability whatever pieces spell it; leaving the vocabulary is
INVALID; partial words carry their look-ahead."""

from __future__ import annotations

import math

import pytest
from piece_table import PieceTable

from pykaldi2.lang.kneser_ney import train_kneser_ney
from pykaldi2.lang.word_lm import INVALID, WordLm
from pykaldi2.utils.errors import DataError

SENTS = [["THE", "CALL"], ["CALL", "THEM"], ["THE", "THEM", "CALL"], ["CALL"], ["THE", "CAT"]]
PIECES = ["\u2581THE", "\u2581CALL", "\u2581C", "\u2581", "A", "LL", "M", "T", "H", "E", "L"]


def _ids(tok, pieces):
    return [tok.table.index(p) for p in pieces]


@pytest.fixture
def lm():
    ngram = train_kneser_ney(SENTS + [["<UNK>"]], 3)
    return ngram, WordLm(ngram, PieceTable(PIECES))


def test_spellings_score_the_word_ngram(lm):
    ngram, wlm = lm
    assert "<UNK>" not in wlm.words and set(wlm.words) == {"THE", "CALL", "THEM", "CAT"}
    want = ngram.sentence_log10_prob(["THE", "THEM", "CALL"]) * math.log(10)
    spellings = [
        ["\u2581THE", "\u2581THE", "M", "\u2581CALL"],
        ["\u2581", "T", "H", "E", "\u2581THE", "M", "\u2581C", "A", "LL"],
        ["\u2581THE", "\u2581", "T", "H", "E", "M", "\u2581C", "A", "L", "L"],
    ]
    for sp in spellings:
        assert wlm.sentence_log_prob(_ids(wlm.tokenizer, sp)) == pytest.approx(want, abs=1e-4)
    # the empty hypothesis: p(</s> | <s>)
    assert wlm.sentence_log_prob([]) == pytest.approx(
        ngram.log10_prob("</s>", ("<s>",)) * math.log(10)
    )


def test_leaving_the_vocabulary_is_invalid(lm):
    _, wlm = lm
    tok = wlm.tokenizer
    for sp in (["\u2581THE", "LL"], ["A"], ["\u2581C", "\u2581CALL"],
               ["\u2581THE", "M", "M"]):  # fmt: skip
        assert wlm.sentence_log_prob(_ids(tok, sp)) <= INVALID / 2, sp
    # <unk> is never a word; blank scores 0
    lp = wlm.log_probs(wlm.initial_state())
    assert lp[0] == 0.0 and lp[1] == INVALID
    # "▁C" ends nothing yet and starts CALL / CAT: its look-ahead is the better of the two
    s = wlm.initial_state()
    c = tok.table.index("\u2581C")
    best = max(wlm.lm.log10_prob(w, ("<s>",)) for w in ("CALL", "CAT")) * math.log(10)
    assert lp[c] == pytest.approx(best, abs=1e-5)
    # a word in progress can be closed only if it is a word: "C" is not, "THE" is
    s_c = wlm.advance(s, c)
    assert wlm.final_log_prob(s_c) == INVALID
    s_the = wlm.advance(s, tok.table.index("\u2581THE"))
    assert wlm.final_log_prob(s_the) > INVALID / 2
    # every piece from a state scores at most 0 once a word is complete (look-ahead <= 0 sums)
    assert all(v <= 1e-6 for v in wlm.log_probs(s_the))


def test_a_piece_lm_is_not_a_word_lm():
    ngram = train_kneser_ney([["\u2581THE", "\u2581CALL"], ["\u2581CALL"]], 2)
    with pytest.raises(DataError, match="n-gram over pieces"):
        WordLm(ngram, PieceTable(PIECES))


def test_word_vectors_equal_the_ngram_lookups(lm):
    """The vectorized backoff (one vector of p(w | h) per history) = NgramLM.log10_prob per
    word, for seen, unseen and shortened histories."""
    ngram, wlm = lm
    for h in [(), ("<s>",), ("<s>", "THE"), ("THE", "CALL"), ("CAT", "THEM"), ("CALL",)]:
        want = [ngram.log10_prob(w, h) * math.log(10) for w in wlm.words]
        assert wlm._word_lps(h) == pytest.approx(want, abs=1e-9), h
