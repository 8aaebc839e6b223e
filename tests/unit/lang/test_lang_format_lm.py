"""G.fst from our ARPA (toy and AN4), corpus dictionaries, and the lang CLI commands."""

from __future__ import annotations

import math

import pytest

from pykaldi2.cli.main import main
from pykaldi2.lang.arpa import read_arpa, write_arpa
from pykaldi2.lang.dicts import an4_lm_text, prepare_an4_dict, prepare_librispeech_dict
from pykaldi2.lang.format_lm import check_g, format_lm, g_sentence_cost
from pykaldi2.lang.kneser_ney import train_kneser_ney
from pykaldi2.lang.lang_dir import load_lang
from pykaldi2.lang.lexicon import read_dict_dir
from pykaldi2.lang.prepare_lang import prepare_lang
from pykaldi2.utils.errors import DataError

LN10 = math.log(10)


@pytest.fixture(scope="module")
def toy_lang(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    (d / "dict").mkdir()
    (d / "dict" / "lexicon.txt").write_text("YES Y EH S\nNO N OW\nMAYBE M EY B IY\n<UNK> SPN\n")
    (d / "dict" / "nonsilence_phones.txt").write_text("Y\nEH\nS\nN\nOW\nM\nEY\nB\nIY\n")
    (d / "dict" / "silence_phones.txt").write_text("SIL\nSPN\n")
    (d / "dict" / "optional_silence.txt").write_text("SIL\n")
    prepare_lang(d / "dict", "<UNK>", d / "lang")
    return d


def assert_g_matches_arpa(lang, lm, sentences):
    G = lang.read_G()
    for s in sentences:
        cost = g_sentence_cost(G, lang.words.ids(s), lang.word_disambig)
        assert cost == pytest.approx(-lm.sentence_log10_prob(s) * LN10, abs=1e-4), s


def test_g_from_toy_arpa(toy_lang, tmp_path):
    sents = [["YES", "NO"], ["NO", "NO", "YES"], ["YES"], ["NO", "<UNK>"]]
    lm = train_kneser_ney(sents, order=3, vocab=["MAYBE"])
    write_arpa(lm, tmp_path / "lm.arpa.gz")
    r = format_lm(toy_lang / "lang", tmp_path / "lm.arpa.gz", tmp_path / "lang_test")
    lang = load_lang(tmp_path / "lang_test")
    assert (tmp_path / "lang_test" / "L_disambig.fst").is_file()  # the lang dir was copied
    assert r.num_backoff_arcs > 0 and r.max_mass <= 1 + 1e-3
    G = lang.read_G()
    assert check_g(G, lang.words) == r
    # seen, backed-off and never-seen (MAYBE: unigram floor) sentences score as the ARPA says
    assert_g_matches_arpa(
        lang, lm, [["YES", "NO"], ["NO", "YES", "YES"], ["MAYBE"], ["<UNK>", "MAYBE", "NO"]]
    )


def test_g_rejects_words_not_in_lexicon(toy_lang, tmp_path):
    write_arpa(train_kneser_ney([["YES", "PERHAPS"]], order=2), tmp_path / "lm.arpa")
    with pytest.raises(DataError, match=r"1 words of the LM are not in words.txt.*PERHAPS"):
        format_lm(toy_lang / "lang", tmp_path / "lm.arpa", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an4_lang_and_lm(an4_dir, tmp_path):
    d = prepare_an4_dict(an4_dir, tmp_path / "dict")
    dd = read_dict_dir(tmp_path / "dict")  # what we wrote passes validation
    assert len(dd.nonsilence_phones) == 33 and dd.silence_phones == [["SIL"], ["SPN"]]
    words = {e.word for e in d.lexicon}
    assert {"NOVEMBER", "THIRTEEN", "<UNK>", "<sil>"} <= words and "A(2)" not in words
    assert len(words) == 103 and len(d.lexicon) == 132  # 101 an4.dic words + <sil> + <UNK>
    prepare_lang(tmp_path / "dict", "<UNK>", tmp_path / "lang")
    lang = load_lang(tmp_path / "lang")
    assert len(lang.words) == 103 + 4 and len(lang.phone_ids) == 2 * 5 + 33 * 4
    sents = an4_lm_text(an4_dir)
    assert len(sents) == 948 and sents[0] == ["YES"]
    lm = train_kneser_ney(sents, order=3, vocab=words)
    assert lm.counts()[0] == 103 + 2  # every word, plus <s> and </s>
    # on the test transcripts our trigram beats the corpus' flat an4.lm by far (measured 16.8
    # vs 106.0), and covers NOVEMBER/THIRTEEN, which an4.lm lacks
    test_sents = an4_lm_text(an4_dir, "an4_test")
    ppl, oov = lm.perplexity(test_sents)
    ppl_corpus, oov_corpus = read_arpa(an4_dir / "etc" / "an4.lm").perplexity(test_sents)
    assert oov == 0 and oov_corpus > 0 and ppl < 25 < 80 < ppl_corpus
    write_arpa(lm, tmp_path / "lm.arpa")
    format_lm(tmp_path / "lang", tmp_path / "lm.arpa", tmp_path / "lang_test")
    test = load_lang(tmp_path / "lang_test")
    assert_g_matches_arpa(
        test, lm, [["ENTER", "ONE", "TWO"], ["RUBOUT", "G", "M", "E"], ["NOVEMBER", "THIRTEEN"]]
    )


def test_librispeech_dict(tmp_path):
    lm_dir = tmp_path / "lm"
    lm_dir.mkdir()
    (lm_dir / "librispeech-lexicon.txt").write_text(
        "A\tAH0\nA\tEY1\nABOUT\tAH0 B AW1 T\nZOO\tZ UW1\nZOO\tZ UW1\n"
    )
    (lm_dir / "librispeech-vocab.txt").write_text("A\nABOUT\nZOO\nQUUX\n")
    d = prepare_librispeech_dict(lm_dir, tmp_path / "dict")
    dd = read_dict_dir(tmp_path / "dict")
    assert dd.nonsilence_phones == [["AH0"], ["AW1"], ["B"], ["EY1"], ["T"], ["UW1"], ["Z"]]
    assert dd.extra_questions == [["SIL", "SPN"], ["B", "T", "Z"], ["AH0"], ["AW1", "EY1", "UW1"]]
    assert [e.word for e in d.lexicon[:3]] == ["!SIL", "<SPOKEN_NOISE>", "<UNK>"]
    assert len(d.lexicon) == 7  # duplicate ZOO dropped
    prepare_lang(tmp_path / "dict", "<UNK>", tmp_path / "lang")
    assert "AH0_B" in load_lang(tmp_path / "lang").phones
    (lm_dir / "librispeech-lexicon.txt").write_text("A\tSIL\n")
    with pytest.raises(DataError, match="reserved phone 'SIL'"):
        prepare_librispeech_dict(lm_dir, tmp_path / "dict2")


def test_cli_pipeline(an4_dir, tmp_path, capsys):
    t = str(tmp_path)
    assert main(["prepare-dict", "an4", str(an4_dir), f"{t}/dict", "--lm-text", f"{t}/lm.txt"]) == 0
    assert main(["prepare-lang", f"{t}/dict", "<UNK>", f"{t}/lang", "--sil-topo", "ergodic",
                 "--sil-states", "5"]) == 0  # fmt: skip
    assert load_lang(f"{t}/lang").read_topo().num_pdf_classes(1) == 5
    (tmp_path / "extra.txt").write_text("YES ZEBRA\n")
    assert main(["train-lm", "--order", "2", "--words", f"{t}/lang/words.txt",
                 f"{t}/extra.txt", f"{t}/lm.arpa"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "1 OOV tokens (1 words) mapped to <UNK>" in out
    assert read_arpa(f"{t}/lm.arpa").ngrams[1].get(("YES", "<UNK>")) is not None
    assert main(["make-g", f"{t}/lang", f"{t}/lm.arpa", f"{t}/lang_test"]) == 0
    assert (tmp_path / "lang_test" / "G.fst").is_file()
    assert main(["validate-lang", f"{t}/lang_test"]) == 0
    # break the lang dir: a phone in no tree set, a topology that misses the silence phones
    sets = tmp_path / "lang_test" / "phones" / "sets.int"
    sets.write_text("\n".join(sets.read_text().splitlines()[1:]) + "\n")
    topo = tmp_path / "lang_test" / "topo"
    topo.write_text(
        topo.read_text().replace("<ForPhones>\n1 2 3 4 5 6 7 8 9 10\n", "<ForPhones>\n1\n")
    )
    capsys.readouterr()
    assert main(["validate-lang", f"{t}/lang_test"]) == 1
    problems = capsys.readouterr().out
    assert "sets.int: phone 'SIL' (1) is in 0 sets" in problems
    assert "topo: covers phones" in problems
    assert main(["prepare-lang", f"{t}/dict", "<NOPE>", f"{t}/lang2"]) == 1
    assert "<NOPE>" in capsys.readouterr().err
