"""Sentencepiece tokenizer: training on a data dir's text, round trip, blank/unk ids, errors."""

from __future__ import annotations

import pytest

from pykaldi2.lang.tokenizer import (
    BLANK_ID,
    UNK_ID,
    Tokenizer,
    TokenizerConfig,
    encode_text,
    read_transcripts,
    train_tokenizer,
)
from pykaldi2.utils.errors import DataError, Pykaldi2Error

TEXT = {
    "u1": "HELLO WORLD",
    "u2": "THE QUICK BROWN FOX",
    "u3": "JUMPS OVER THE LAZY DOG",
    "u4": "ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN",
}


def _data_dir(path, text):
    path.mkdir(parents=True, exist_ok=True)
    (path / "text").write_text("".join(f"{u} {t}\n" for u, t in text.items()))
    return path


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_round_trip_and_ids(tmp_path, model_type):
    d = _data_dir(tmp_path / "train", TEXT)
    tok = train_tokenizer(
        [d], tmp_path / "tok", TokenizerConfig(model_type=model_type, vocab_size=40)
    )
    assert 4 <= tok.vocab_size <= 40
    assert tok.id_to_piece(BLANK_ID) == "<blk>"
    for t in TEXT.values():
        ids = tok.encode(t)
        assert ids and min(ids) > UNK_ID and max(ids) < tok.vocab_size
        assert tok.decode(ids) == t
    # blank and unk ids are ignored on decoding; reload from the file gives the same ids
    again = Tokenizer(tmp_path / "tok" / "tokenizer.model")
    assert again.encode("HELLO") == tok.encode("HELLO")
    assert again.decode([BLANK_ID, *tok.encode("HELLO"), UNK_ID]) == "HELLO"


def test_unknown_characters_error_or_skip(tmp_path):
    d = _data_dir(tmp_path / "train", TEXT)
    tok = train_tokenizer([d], tmp_path / "tok", TokenizerConfig(vocab_size=30))
    with pytest.raises(DataError, match=r"utterance bad.*'@'"):
        encode_text(tok, {"ok": "HELLO", "bad": "HELLO @ WORLD"}, source="data/test/text")
    res = encode_text(tok, {"ok": "HELLO", "bad": "HELLO @ WORLD"}, on_unknown="skip")
    assert list(res.tokens) == ["ok"] and res.skipped == ["bad"]


def test_bad_inputs(tmp_path):
    with pytest.raises(Pykaldi2Error, match="model_type"):
        TokenizerConfig(model_type="word")
    with pytest.raises(DataError, match="no text file"):
        read_transcripts([tmp_path])
    d = _data_dir(tmp_path / "train", TEXT)
    with pytest.raises(DataError, match="lower tokenizer.vocab_size"):
        train_tokenizer(
            [d], tmp_path / "tok", TokenizerConfig(vocab_size=5000, hard_vocab_limit=True)
        )
    assert not (tmp_path / "tok").exists()  # atomic: nothing half-written
    (tmp_path / "x.model").write_text("junk")
    with pytest.raises(Exception):  # noqa: B017  (sentencepiece's own parse error)
        Tokenizer(tmp_path / "x.model")
