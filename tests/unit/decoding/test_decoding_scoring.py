"""WER exactly as Kaldi's compute-wer prints it; best_wer; the compute-wer command."""

from __future__ import annotations

import random

import pytest

from pykaldi2.decoding.scoring import (
    EditCounts,
    WerStats,
    best_wer,
    compute_wer,
    levenshtein,
    read_text,
)
from pykaldi2.utils.errors import DataError


def test_wer_lines_match_kaldi_format_exactly():
    # The numbers of a Kaldi wer file: 55 errors in 773 words, 52 of 130 sentences wrong.
    stats = WerStats(ins=12, dels=20, subs=23, num_words=773, sent_errs=52, num_sent=130)
    assert stats.format() == (
        "%WER 7.12 [ 55 / 773, 12 ins, 20 del, 23 sub ]\n"
        "%SER 40.00 [ 52 / 130 ]\n"
        "Scored 130 sentences, 0 not present in hyp.\n"
    )
    partial = WerStats(ins=1, num_words=4, sent_errs=1, num_sent=2, num_absent=1)
    assert partial.format().splitlines()[0] == "%WER 25.00 [ 1 / 4, 1 ins, 0 del, 0 sub ] [PARTIAL]"


def test_compute_wer_known_example():
    ref = {"u1": "THE CAT SAT ON THE MAT".split(), "u2": "HELLO WORLD".split(), "u3": ["YES"]}
    hyp = {"u1": "THE CAT SAT THE MAT TODAY".split(), "u2": "HELLO WORD".split(), "u3": ["YES"]}
    stats = compute_wer(ref, hyp)
    # u1: ON deleted, TODAY inserted; u2: WORLD -> WORD.
    assert (stats.ins, stats.dels, stats.subs) == (1, 1, 1)
    assert stats.format() == (
        "%WER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ]\n"
        "%SER 66.67 [ 2 / 3 ]\n"
        "Scored 3 sentences, 0 not present in hyp.\n"
    )


def test_levenshtein_follows_kaldi_tie_breaking():
    assert levenshtein([], ["a", "b"]) == EditCounts(ins=2, dels=0, subs=0)
    assert levenshtein(["a", "b"], []) == EditCounts(ins=0, dels=2, subs=0)
    # Two substitutions or one deletion + one insertion cost the same: Kaldi's cell order
    # (match/sub, then deletion, then insertion) yields ins 1 del 1 here.
    assert levenshtein(list("ABC"), list("ACD")) == EditCounts(ins=1, dels=1, subs=0)
    assert levenshtein(list("AB"), list("BA")) == EditCounts(ins=1, dels=1, subs=0)
    assert levenshtein(list("ABC"), list("XYZ")) == EditCounts(ins=0, dels=0, subs=3)


def test_levenshtein_total_matches_kaldialign():
    kaldialign = pytest.importorskip("kaldialign")
    rng = random.Random(0)
    for _ in range(300):
        ref = [rng.choice("abcd") for _ in range(rng.randint(0, 8))]
        hyp = [rng.choice("abcd") for _ in range(rng.randint(0, 8))]
        assert levenshtein(ref, hyp).total == kaldialign.edit_distance(ref, hyp)["total"]


def test_modes_and_missing_hyps():
    ref = {"u1": ["A", "B"], "u2": ["C"]}
    hyp = {"u1": ["A", "B"]}
    with pytest.raises(DataError, match="u2"):
        compute_wer(ref, hyp)
    present = compute_wer(ref, hyp, mode="present")
    assert (present.num_sent, present.num_absent, present.num_words) == (1, 1, 2)
    assert present.format().endswith("Scored 1 sentences, 1 not present in hyp.\n")
    assert "[PARTIAL]" in present.wer_line()
    every = compute_wer(ref, hyp, mode="all")
    assert (every.num_sent, every.dels, every.num_words) == (2, 1, 3)
    assert compute_wer(ref, {"u1": ["A", "<UNK>", "B"], "u2": ["C"]}, ignore=["<UNK>"]).wer == 0.0
    with pytest.raises(DataError, match="mode"):
        compute_wer(ref, hyp, mode="lenient")


def test_best_wer_picks_lowest_then_first_name():
    a = WerStats(subs=3, num_words=10)
    b = WerStats(subs=2, num_words=10)
    assert best_wer({"wer_7_0.0": a, "wer_9_0.0": b, "wer_10_0.0": b})[0] == "wer_10_0.0"
    with pytest.raises(DataError):
        best_wer({})


def test_compute_wer_command(tmp_path, capsys):
    from pykaldi2.cli.main import main

    (tmp_path / "ref").write_text("u1 A B C\nu2 D\n")
    (tmp_path / "hyp").write_text("u1 A C D\nu2 D\n")
    assert (
        main(["compute-wer", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp")]) == 0
    )
    assert capsys.readouterr().out == (
        "%WER 50.00 [ 2 / 4, 1 ins, 1 del, 0 sub ]\n"
        "%SER 50.00 [ 1 / 2 ]\n"
        "Scored 2 sentences, 0 not present in hyp.\n"
    )
    (tmp_path / "dup").write_text("u1 A\nu1 B\n")
    assert (
        main(["compute-wer", "--ref", str(tmp_path / "dup"), "--hyp", str(tmp_path / "hyp")]) == 1
    )
    with pytest.raises(DataError, match="dup:2"):
        read_text(tmp_path / "dup")
