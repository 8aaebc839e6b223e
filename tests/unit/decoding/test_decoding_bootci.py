"""compute-wer-bootci: per-utterance errors, bootstrap intervals (fast vs a loop reference),
the probability of improvement, best_hyp_file and the command."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from pykaldi2.decoding.scoring import (
    _replicate,
    best_hyp_file,
    bootstrap_improvement,
    bootstrap_wer,
    compute_wer,
    utterance_errors,
)
from pykaldi2.utils.errors import DataError


def _random_texts(n: int, seed: int):
    rnd = random.Random(seed)
    vocab = list("ABCDEFG")
    ref = {f"u{i}": [rnd.choice(vocab) for _ in range(rnd.randint(1, 8))] for i in range(n)}
    hyp = {}
    for u, words in ref.items():
        h = [w if rnd.random() > 0.2 else rnd.choice(vocab) for w in words]
        if rnd.random() < 0.2:
            h.insert(rnd.randint(0, len(h)), rnd.choice(vocab))
        if rnd.random() < 0.2 and h:
            h.pop(rnd.randrange(len(h)))
        hyp[u] = h
    return ref, hyp


@pytest.mark.parametrize("mode", ["strict", "present", "all"])
def test_utterance_errors_sum_to_compute_wer(mode):
    ref, hyp = _random_texts(40, 0)
    if mode != "strict":
        del hyp["u3"], hyp["u17"]
    stats = compute_wer(ref, hyp, mode=mode, ignore=["G"])
    utts, errs, words = utterance_errors(ref, hyp, mode=mode, ignore=["G"])
    assert sum(errs) == stats.word_errs and sum(words) == stats.num_words
    assert len(utts) == stats.num_sent and ("u3" in utts) == (mode != "present")


def _reference_bootstrap(errs, words, replications, seed):
    """Slow: one replication at a time over the same index draws."""
    wers = []
    for block in _replicate(len(errs), replications, seed):
        for row in block:
            e = sum(errs[i] for i in row)
            w = sum(words[i] for i in row)
            wers.append(e / w)
    mean = sum(wers) / len(wers)
    std = math.sqrt(sum((x - mean) ** 2 for x in wers) / len(wers))
    return 100 * mean, 100 * 1.96 * std


def test_bootstrap_wer_matches_the_loop_reference():
    ref, hyp = _random_texts(30, 1)
    _, errs, words = utterance_errors(ref, hyp)
    b = bootstrap_wer(errs, words, replications=2500, seed=3)  # 3 blocks, the last partial
    mean, interval = _reference_bootstrap(errs, words, 2500, 3)
    assert b.mean == pytest.approx(mean, rel=1e-9) and b.interval == pytest.approx(interval)
    assert b.wer == pytest.approx(100 * sum(errs) / sum(words))
    assert b.mean - b.interval < b.wer < b.mean + b.interval
    assert abs(b.mean - b.wer) < 0.5 * b.interval  # the bootstrap is centred on the WER
    assert bootstrap_wer(errs, words, 2500, seed=3) == b  # seeded: reproducible


def test_bootstrap_wer_of_identical_utterances_has_no_spread():
    b = bootstrap_wer([1] * 20, [10] * 20, replications=500)
    assert (b.wer, b.mean) == (10.0, pytest.approx(10.0)) and b.interval == pytest.approx(0.0)
    assert b.line("Set1") == "Set1: %WER 10.00 95% Conf Interval [ 10.00, 10.00 ]"


def test_probability_of_improvement():
    errs1 = [2, 0, 1, 3, 0, 1, 0, 0, 2, 1]
    assert bootstrap_improvement(errs1, errs1, replications=2000) == 0.0
    assert bootstrap_improvement(errs1, [0] * 10, replications=2000) == pytest.approx(
        1 - 0.1**10  # fewer errors unless every draw is one of the error-free utterances
    )
    # one utterance better by one error, the rest equal: improved iff it is drawn at all
    better = list(errs1)
    better[3] -= 1
    p = bootstrap_improvement(errs1, better, replications=20000, seed=1)
    assert p == pytest.approx(1 - 0.9**10, abs=0.015)
    worse = [e + 1 for e in errs1]
    assert bootstrap_improvement(errs1, worse, replications=500) == 0.0
    with pytest.raises(DataError, match="same utterances"):
        bootstrap_improvement(errs1, errs1[:-1])


def test_best_hyp_file_reads_a_scored_decode_dir(tmp_path):
    d = tmp_path / "decode_test"
    hyp = d / "scoring_kaldi" / "penalty_0.5" / "0.9.txt"
    hyp.parent.mkdir(parents=True)
    hyp.write_text("u1 A\n")
    (d / "best_wer").write_text(f"%WER 4.27 [ 33 / 773, 3 ins, 5 del, 25 sub ] {d}/wer_0.9_0.5\n")
    assert best_hyp_file(d) == hyp and best_hyp_file(hyp) == hyp
    with pytest.raises(DataError, match="no best_wer"):
        best_hyp_file(tmp_path)
    (d / "best_wer").write_text(f"%WER 4.27 [ 33 / 773 ] {d}/wer_7_1.0\n")
    with pytest.raises(DataError, match="re-score"):
        best_hyp_file(d)


def test_best_hyp_file_of_a_one_setting_decode_dir(tmp_path):
    """decode-transducer's dir (hyp.txt, no lattices) is its hyp.txt; a lattice decode dir that
    was not scored, or a path that does not exist, is an error naming it."""
    d = tmp_path / "decode_test_beam4"
    d.mkdir()
    (d / "hyp.txt").write_text("u1 A\n")
    assert best_hyp_file(d) == d / "hyp.txt"
    (d / "lat.1.gz").write_bytes(b"")
    with pytest.raises(DataError, match="no best_wer"):
        best_hyp_file(d)
    with pytest.raises(DataError, match="no such") as e:
        best_hyp_file(tmp_path / "decode_dev_lm")
    assert "decode_dev_lm" in str(e.value)


def test_compute_wer_bootci_command(tmp_path, capsys):
    from pykaldi2.cli.main import main

    ref, hyp = _random_texts(25, 2)
    (tmp_path / "ref").write_text("".join(f"{u} {' '.join(w)}\n" for u, w in ref.items()))
    (tmp_path / "hyp1").write_text("".join(f"{u} {' '.join(w)}\n" for u, w in hyp.items()))
    (tmp_path / "hyp2").write_text("".join(f"{u} {' '.join(w)}\n" for u, w in ref.items()))
    args = ["compute-wer-bootci", "--replications", "300", str(tmp_path / "ref")]
    assert main([*args, str(tmp_path / "hyp1"), str(tmp_path / "hyp2")]) == 0
    out = capsys.readouterr().out.splitlines()
    wer1 = compute_wer(ref, hyp).wer
    assert out[0].startswith(f"Set1: %WER {wer1:.2f} 95% Conf Interval [ ")
    assert out[1].startswith("Set2: %WER 0.00 95% Conf Interval [ 0.00, 0.00 ]")
    assert out[2] == "Probability of Set2 improving Set1: 100.0%"
    (tmp_path / "short").write_text("u0 A\n")
    assert main([*args, str(tmp_path / "hyp1"), str(tmp_path / "short")]) == 1  # strict mode
    assert "no hypothesis" in capsys.readouterr().err
    assert np.isfinite(wer1)
