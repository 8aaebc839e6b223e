"""Modified Kneser-Ney: hand-computed values, the slow reference, normalization, ARPA I/O."""

from __future__ import annotations

import gzip
import math
import random

import pytest

from pykaldi2.lang.arpa import NgramLM, read_arpa, write_arpa
from pykaldi2.lang.kneser_ney import (
    kneser_ney_reference_prob,
    modified_kn_discounts,
    train_kneser_ney,
)
from pykaldi2.lang.train_lm import TrainLmConfig, map_oov, read_lm_text, train_lm
from pykaldi2.utils.errors import DataError

TOY = [["a", "b"], ["a", "c"], ["b"]]


def p(lm, w, h=()):
    return 10 ** lm.log10_prob(w, h)


def test_discount_formula():
    # t = (4, 2, 1, 1): Y = 4/8; D1 = 1 - 2Y*2/4; D2 = 2 - 3Y*1/2; D3+ = 3 - 4Y*1/1
    d = modified_kn_discounts([4, 2, 1, 1])
    assert (d.d1, d.d2, d.d3) == pytest.approx((0.5, 1.25, 1.0))
    assert (d(0), d(1), d(2), d(7)) == pytest.approx((0, 0.5, 1.25, 1.0))
    assert modified_kn_discounts([4, 2, 0, 1]) is None  # undefined: fallback


def test_hand_computed_bigram():
    """Worked by hand (fallback discounts 0.5, 1, 1.5: the corpus is too small for t3, t4).

    Continuation counts a=1 ({<s>}), b=2 ({a,<s>}), c=1, </s>=2: T=6, gamma=(.5+1+.5+1)/6=.5,
    p(a) = .5/6 + .5/4 = 5/24, p(b) = 1/6 + 1/8 = 7/24.
    Context a: (a b)=1, (a c)=1, gamma = 1/2: p(b|a) = .5/2 + .5*7/24 = 19/48.
    Context <s>: raw counts (<s> a)=2, (<s> b)=1, gamma = 1.5/3: p(a|<s>) = 1/3 + .5*5/24 = 7/16.
    """
    lm = train_kneser_ney(TOY, order=2)
    assert p(lm, "a") == pytest.approx(5 / 24)
    assert p(lm, "b") == pytest.approx(7 / 24)
    assert p(lm, "</s>") == pytest.approx(7 / 24)
    assert p(lm, "b", ["a"]) == pytest.approx(19 / 48)
    assert p(lm, "c", ["a"]) == pytest.approx(17 / 48)
    assert p(lm, "a", ["a"]) == pytest.approx(5 / 48)  # unseen: backoff 1/2 * 5/24
    assert p(lm, "a", ["<s>"]) == pytest.approx(7 / 16)
    assert p(lm, "b", ["<s>"]) == pytest.approx(5 / 16)
    assert lm.ngrams[0][("<s>",)] == (-99.0, pytest.approx(-0.30103, abs=1e-5))


def random_corpus(seed, n_sent, vocab, max_len=6):
    rng = random.Random(seed)
    return [[rng.choice(vocab) for _ in range(rng.randint(1, max_len))] for _ in range(n_sent)]


@pytest.mark.parametrize("order,seed,n_fallback", [(1, 10, 1), (2, 10, 0), (3, 10, 1), (4, 28, 1)])
def test_matches_slow_reference(order, seed, n_fallback, caplog):
    # zipf-ish words; seeds chosen so that Chen-Goodman discounts are defined at most orders
    # and the fallback discounts are used at the others: both paths are compared
    vocab = ["a"] * 8 + ["b"] * 4 + ["c"] * 2 + ["d", "e", "f", "g"]
    sents = random_corpus(seed, 12, vocab)
    with caplog.at_level("WARNING", logger="pykaldi2.lang.kneser_ney"):
        lm = train_kneser_ney(sents, order=order, vocab=["zz"])
    fallbacks = [r for r in caplog.records if "fallback" in r.getMessage()]
    assert len(fallbacks) == n_fallback
    rng = random.Random(0)
    words = sorted(set(vocab)) + ["</s>", "zz"]
    queries = [(w, ()) for w in words]
    for s in sents[:4]:  # seen contexts, plus a random word after each
        t = ["<s>", *s]
        for i in range(1, len(t)):
            queries.append((t[i], tuple(t[max(0, i - order + 1) : i])))
            queries.append((rng.choice(words), tuple(t[max(0, i - order + 1) : i])))
    queries.append(("a", ("zz", "zz", "zz")))  # unseen context
    for w, h in queries:
        ref = kneser_ney_reference_prob(sents, order, w, h, vocab=["zz"])
        assert p(lm, w, h) == pytest.approx(ref, rel=1e-9), (w, h)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_every_context_sums_to_one(order, tmp_path):
    vocab = list("abcdefghij")
    lm = train_kneser_ney(random_corpus(7, 60, vocab), order=order, vocab=["unseen"])
    write_arpa(lm, tmp_path / "lm.arpa.gz")
    back = read_arpa(tmp_path / "lm.arpa.gz")
    words = [w for w in lm.vocab if w != "<s>"]
    contexts = list(lm.contexts())
    assert len(contexts) > 10
    for model, tol in ((lm, 1e-9), (back, 1e-5)):
        assert sum(10 ** model.log10_prob(w) for w in words) == pytest.approx(1.0, abs=tol)
        for h in contexts:
            total = sum(10 ** model.log10_prob(w, h) for w in words)
            assert total == pytest.approx(1.0, abs=tol), h
    # the unseen vocabulary word gets the uniform floor only
    assert 0 < 10 ** lm.log10_prob("unseen") < min(10 ** lm.log10_prob(w) for w in "abc")


def test_arpa_roundtrip_and_errors(tmp_path):
    lm = train_kneser_ney(TOY, order=3)
    write_arpa(lm, tmp_path / "lm.arpa")
    back = read_arpa(tmp_path / "lm.arpa")
    assert back.counts() == lm.counts() and back.order == 3
    for s in (["a", "b"], ["b", "b", "c"]):
        assert back.sentence_log10_prob(s) == pytest.approx(lm.sentence_log10_prob(s), abs=1e-5)
    text = (tmp_path / "lm.arpa").read_text()
    (tmp_path / "trunc.arpa").write_text(text.replace("\\end\\", ""))
    with pytest.raises(DataError, match="no \\\\end\\\\"):
        read_arpa(tmp_path / "trunc.arpa")
    (tmp_path / "count.arpa").write_text(text.replace("ngram 1=", "ngram 1=1"))
    with pytest.raises(DataError, match="declares"):
        read_arpa(tmp_path / "count.arpa")
    (tmp_path / "bad.arpa").write_text(text.replace("\ta\t", "\tx y z\t", 1))
    with pytest.raises(DataError, match=r"bad.arpa:\d+"):
        read_arpa(tmp_path / "bad.arpa")


def test_lm_text_and_oov_mapping(tmp_path):
    text = tmp_path / "text"
    text.write_text("u1 <s> A B </s>\nu2 A FOO BAR FOO\nu3\n")
    sents = read_lm_text(text, skip_first_field=True)
    assert sents == [["A", "B"], ["A", "FOO", "BAR", "FOO"]]
    mapped, oovs = map_oov(sents, {"A", "B", "<UNK>"}, "<UNK>")
    assert mapped[1] == ["A", "<UNK>", "<UNK>", "<UNK>"] and oovs == {"FOO": 2, "BAR": 1}
    (tmp_path / "bad").write_text("A </s> B\n")
    with pytest.raises(DataError, match=r"bad:1.*reserved"):
        read_lm_text(tmp_path / "bad")
    (tmp_path / "words.txt").write_text(
        "<eps> 0\nA 1\nB 2\nC 3\n<UNK> 4\n<sil> 5\n#0 6\n<s> 7\n</s> 8\n"
    )
    config = TrainLmConfig(order=2, skip_first_field=True)
    oovs = train_lm(text, tmp_path / "lm.arpa", words=tmp_path / "words.txt", config=config)
    assert oovs == {"FOO": 2, "BAR": 1}
    assert read_arpa(tmp_path / "lm.arpa").vocab == ["<s>", "</s>", "<UNK>", "A", "B", "C"]
    with pytest.raises(DataError, match="OOV word '<SPOKEN_NOISE>'"):
        train_lm(
            text,
            tmp_path / "x.arpa",
            words=tmp_path / "words.txt",
            config=TrainLmConfig(oov_word="<SPOKEN_NOISE>", skip_first_field=True),
        )


def test_gz_written(tmp_path):
    write_arpa(train_kneser_ney(TOY, order=1), tmp_path / "lm.arpa.gz")
    assert gzip.open(tmp_path / "lm.arpa.gz", "rt").read().startswith("\\data\\")


def test_perplexity_of_uniform_unigram():
    q = math.log10(1 / 4)
    lm = NgramLM([{("<s>",): (-99.0, None), **{(w,): (q, None) for w in ("a", "b", "c", "</s>")}}])
    ppl, oov = lm.perplexity([["a", "b"], ["c", "zebra"]])
    assert ppl == pytest.approx(4.0) and oov == 1
