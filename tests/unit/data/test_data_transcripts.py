"""check_transcribed: utterances without a transcript listed, refused above the fraction."""

from __future__ import annotations

import logging

import pytest

from pykaldi2.data.transcripts import check_transcribed
from pykaldi2.utils.errors import DataError


def test_missing_transcripts_are_listed_then_refused(caplog):
    utts = [f"u{i:02d}" for i in range(20)]
    text = {u: "A" for u in utts if u not in ("u03", "u07")}
    with caplog.at_level(logging.WARNING, logger="pykaldi2.data.transcripts"):
        keep = check_transcribed(utts, text, text_file="d/text", max_missing_fraction=0.1)
    assert keep == [u for u in utts if u in text]  # 2 of 20 = the fraction: allowed
    assert caplog.messages == [
        "d/text: 2 of 20 utterances have no transcript and are left out of training: u03, u07"
    ]
    with pytest.raises(DataError) as e:
        check_transcribed(utts, text, text_file="d/text", max_missing_fraction=0.05,
                          option="tokenizer.max_missing")  # fmt: skip
    assert str(e.value).startswith(
        "d/text: 2 of 20 utterances (10.0%) have no transcript, more than "
        "tokenizer.max_missing=0.05 allows: u03, u07. Fix: "
    )
    many = check_transcribed(utts, {}, text_file="t", max_missing_fraction=1.0)
    assert many == [] and caplog.messages[-1].endswith("u00, u01, u02, u03, u04, u05, u06, "
                                                       "u07, u08, u09 ...")  # fmt: skip
    caplog.clear()
    assert check_transcribed(utts, text.keys() | {"u03", "u07"}, text_file="t") == utts
    assert not caplog.messages
