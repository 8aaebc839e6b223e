"""The piece n-gram of transducer shallow fusion: `train-lm --tokenizer` cuts the text into
the tokenizer's pieces; TokenLm scores symbol ids as the ARPA's backoff n-gram does."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pykaldi2.cli.main import main
from pykaldi2.lang.arpa import read_arpa
from pykaldi2.lang.token_lm import TokenLm
from pykaldi2.lang.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer
from pykaldi2.utils.errors import DataError


def test_piece_lm_from_an4_transcripts(an4_dir, tmp_path):
    import re

    lines = (an4_dir / "etc/an4_train.transcription").read_text().splitlines()[:200]
    text = [re.match(r"<s> (.*) </s>", ln)[1] for ln in lines]
    data = tmp_path / "data"
    data.mkdir()
    (data / "text").write_text("".join(f"u{i:04d} {t}\n" for i, t in enumerate(text)))
    tok = train_tokenizer([data], tmp_path / "tok", TokenizerConfig(vocab_size=40))
    arpa = tmp_path / "tokens.arpa"
    assert main(["train-lm", "--order", "4", "--skip-first-field", "--tokenizer",
                 str(tok.model_file), str(data / "text"), str(arpa)]) == 0  # fmt: skip
    ngram = read_arpa(arpa)
    tokenizer = Tokenizer(tok.model_file)
    pieces = {tokenizer.id_to_piece(i) for i in range(2, tokenizer.vocab_size)}
    assert set(ngram.vocab) - {"<s>", "</s>"} <= pieces  # the LM's words are pieces
    lm = TokenLm(ngram, tokenizer)
    ids = tokenizer.encode(text[3])
    # log_probs of every symbol = the ARPA's backoff probability of its piece, in nats
    s = lm.initial_state()
    for k, i in enumerate(ids):
        lp = lm.log_probs(s)
        assert lp[0] == 0.0 and lp[1] == 0.0  # blank and <unk> are not scored
        for j in range(2, tokenizer.vocab_size):
            want = ngram.log10_prob(tokenizer.id_to_piece(j), s) * math.log(10)
            assert lp[j] == pytest.approx(want, rel=1e-5)
        s = lm.advance(s, i)
        assert len(s) == min(3, k + 2)  # <s> and the pieces so far, at most order - 1
    want = ngram.sentence_log10_prob([tokenizer.id_to_piece(i) for i in ids]) * math.log(10)
    assert lm.sentence_log_prob(ids) == pytest.approx(want, rel=1e-5)
    # a seen sentence is likelier than its reverse
    assert lm.sentence_log_prob(ids) > lm.sentence_log_prob(ids[::-1])
    assert np.isfinite(lm.log_probs(lm.initial_state())).all()
    # a word LM is not a piece LM
    assert main(["train-lm", "--skip-first-field", str(data / "text"),
                 str(tmp_path / "words.arpa")]) == 0  # fmt: skip
    with pytest.raises(DataError, match="words that are not pieces of the tokenizer"):
        TokenLm.load(tmp_path / "words.arpa", tokenizer)
