"""HCLG decoding of a tiny grammar: exact words, lattices, GMM decodables, decode dirs."""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.decoding.lattice import best_path, best_path_reference
from pykaldi2.decoding.lattice_io import read_lattice_ark
from pykaldi2.decoding.wfst import (
    DecoderConfig,
    decode_faster,
    decode_lattice,
    gmm_compute_likes,
    gmm_compute_likes_reference,
    gmm_decode_faster,
)
from pykaldi2.utils.errors import DataError, Pykaldi2Error

SENTENCES = [["A"], ["C"], ["B", "A", "C"], ["A", "A"], ["C", "B"]]


@pytest.mark.parametrize("words", SENTENCES, ids=lambda w: "_".join(w))
def test_hclg_decodes_tiny_grammar_exactly(tiny, words):
    ll = tiny.loglik_for(words)
    want = [tiny.words[w] for w in words]
    strict = DecoderConfig(allow_partial=False)
    best = decode_faster(tiny.hclg.fst, ll, tiny.tid2pdf, strict)
    assert best.words == want and best.reached_final
    res, lat = decode_lattice(tiny.hclg.fst, ll, tiny.tid2pdf, strict)
    assert res.words == want
    assert len(res.ali) == ll.shape[0]  # one transition-id per frame
    # The alignment follows the favoured pdfs exactly, so the acoustic cost is 0.
    assert tiny.tid2pdf[res.ali].tolist() == ll.argmax(1).tolist()
    assert res.ac_cost == pytest.approx(0.0, abs=1e-4)
    assert lat.num_arcs > len(res.ali)


def test_prefix_word_needs_its_disambiguation_symbol(tiny):
    # A = "a b" is a prefix of C = "a b c": both must be decodable from the same graph.
    for w in ("A", "C"):
        res = decode_faster(tiny.hclg.fst, tiny.loglik_for([w], sil=False), tiny.tid2pdf)
        assert res.words == [tiny.words[w]]
    assert max(tiny.hclg.disambig_tids) > tiny.tm.num_transition_ids


@pytest.mark.parametrize("words", SENTENCES[2:], ids=lambda w: "_".join(w))
def test_lattice_best_path_equals_decoder_best_path(tiny, words):
    ll = tiny.loglik_for(words, floor=-3.0)
    ll += np.random.default_rng(0).normal(0, 1.0, ll.shape).astype(np.float32)  # ambiguity
    cfg = DecoderConfig(acoustic_scale=0.1, lattice_beam=8.0)
    res, lat = decode_lattice(tiny.hclg.fst, ll, tiny.tid2pdf, cfg)
    path = best_path(lat, lmwt=1.0 / cfg.acoustic_scale)
    assert path.words == res.words
    assert path.ali == res.ali
    assert path.graph_cost == pytest.approx(res.graph_cost, abs=1e-3)
    assert path.ac_cost == pytest.approx(res.ac_cost, rel=1e-5, abs=1e-2)
    ref = best_path_reference(lat, lmwt=1.0 / cfg.acoustic_scale)
    assert ref.words == path.words and ref.ali == path.ali


def test_gmm_decodable_matches_matrix_decoding(tiny, tiny_am):
    am, P = tiny_am.am, tiny.tm.num_pdfs
    feats = tiny_am.feats_for(["B", "A", "C"])
    likes = gmm_compute_likes(am, feats)
    slow = np.array([[am.log_likelihood(p, f) for p in range(P)] for f in feats])
    np.testing.assert_allclose(likes, slow, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(likes, gmm_compute_likes_reference(am, feats), rtol=1e-5, atol=1e-4)
    want = [tiny.words[w] for w in ("B", "A", "C")]
    gmm = gmm_decode_faster(tiny.hclg.fst, am, tiny.tm, feats)
    res, _ = decode_lattice(tiny.hclg.fst, likes, tiny.tid2pdf)
    assert gmm.words == res.words == want
    assert gmm.ac_cost == pytest.approx(res.ac_cost, rel=1e-5)
    with pytest.raises(DataError, match="dim"):
        gmm_decode_faster(tiny.hclg.fst, am, tiny.tm, feats[:, :3])


def test_gmm_scorer_matches_reference_with_mixtures():
    from pykaldi2.kaldi import khg

    rng = np.random.default_rng(0)
    D, am = 5, khg.AmDiagGmm()
    for k in (1, 3, 2, 4):
        g = khg.DiagGmm()
        g.resize(k, D)
        g.set_weights((w := rng.random(k).astype(np.float32) + 0.1) / w.sum())
        inv_vars = (rng.random((k, D)) + 0.5).astype(np.float32)
        g.set_invvars_and_means(inv_vars, rng.normal(size=(k, D)).astype(np.float32))
        g.compute_gconsts()
        am.add_pdf(g)
    feats = rng.normal(size=(7, D)).astype(np.float32) * 2
    fast = gmm_compute_likes(am, feats)
    assert fast.shape == (7, 4)
    np.testing.assert_allclose(fast, gmm_compute_likes_reference(am, feats), rtol=1e-5, atol=1e-4)
    slow = np.array([[am.log_likelihood(p, f) for p in range(4)] for f in feats])
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-4)


def test_bad_inputs_give_clear_errors(tiny):
    with pytest.raises(DataError, match="pdfs"):
        decode_faster(tiny.hclg.fst, np.zeros((5, 3), np.float32), tiny.tid2pdf)
    bad = tiny.loglik_for(["A"])
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        decode_lattice(tiny.hclg.fst, bad, tiny.tid2pdf)
    with pytest.raises(DataError, match="zero frames"):
        decode_faster(tiny.hclg.fst, bad[:0], tiny.tid2pdf, utt="u0")
    with pytest.raises(Pykaldi2Error):
        DecoderConfig(beam=-1)
    # Too few frames for any word: no final state; strict decoding refuses.
    with pytest.raises(Pykaldi2Error, match="final"):
        decode_faster(tiny.hclg.fst, bad[:2] * 0, tiny.tid2pdf, DecoderConfig(allow_partial=False))


def test_decode_dir_parallel_and_score(tiny, tmp_path):
    from pykaldi2.decoding.batch import decode_dir, split_pairs
    from pykaldi2.decoding.sweep import score_dir

    graph = tmp_path / "graph"
    graph.mkdir()
    tiny.hclg.fst.write(str(graph / "HCLG.fst"))
    (graph / "words.txt").write_text("".join(f"{w} {i}\n" for w, i in tiny.words.items()))
    utts = {f"u{i}": ws for i, ws in enumerate(SENTENCES[:4])}
    inputs = [(u, tiny.loglik_for(ws)) for u, ws in utts.items()]
    out = tmp_path / "decode"
    out.mkdir()
    (out / "lat.3.ark").write_text("stale \n0\t1\t1\t1\n1\n\n")  # from an earlier nj=3 run
    summary = decode_dir(graph, split_pairs(inputs, 2), out, tiny.tm, num_utts=len(inputs))
    assert summary.num_done == 4 and not summary.failed
    hyp = (out / "hyp.txt").read_text().splitlines()
    assert hyp == [" ".join([u, *ws]) for u, ws in utts.items()]
    assert sorted(p.name for p in out.glob("lat.*")) == ["lat.1.gz", "lat.2.gz"]
    assert (out / "num_jobs").read_text() == "2\n"
    keys = [[k for k, _ in read_lattice_ark(out / f"lat.{j}.gz")] for j in (1, 2)]
    assert keys == [["u0", "u1"], ["u2", "u3"]]  # job J's utterances, as split_scp.pl splits
    assert "# Ended (code 0)" in (out / "log" / "decode.2.log").read_text()
    ref = tmp_path / "text"
    ref.write_text("".join(" ".join([u, *ws]) + "\n" for u, ws in utts.items()))
    name, stats = score_dir(out, ref, lm_weights=[7, 10, 17], word_ins_penalties=[0.0, 1.0])
    assert stats.word_errs == 0 and stats.num_words == 7
    assert sorted(p.name for p in out.glob("wer_*")) == sorted(
        f"wer_{lm}_{w}" for lm in (7, 10, 17) for w in ("0.0", "1.0")
    )
    assert (out / "best_wer").read_text() == f"{stats.wer_line()} {out / name}\n"
    assert (out / "scoring_kaldi" / "penalty_1.0" / "17.txt").is_file()
    (graph / "HCLG.fst").write_text("not an fst")
    with pytest.raises(Pykaldi2Error, match="HCLG.fst: not a readable OpenFst graph"):
        decode_dir(graph, split_pairs(inputs, 2), tmp_path / "decode2", tiny.tm)


def test_partial_output_when_no_final_state(tiny):
    """Too few frames to finish a word: with allow_partial (the default) both decoders return
    the best partial path and mark it, like Kaldi's decoders, instead of failing."""
    ll = tiny.loglik_for(["A"])[:2]
    best = decode_faster(tiny.hclg.fst, ll, tiny.tid2pdf)
    res, lat = decode_lattice(tiny.hclg.fst, ll, tiny.tid2pdf)
    assert not best.reached_final and not res.reached_final
    assert len(res.ali) == 2 and lat.num_arcs >= 2


def test_decode_dir_on_slurm_equals_run_pl(tiny, tmp_path, fake_slurm):
    """The decoding jobs as SLURM tasks (sbatch / squeue stand-ins): the same lattices and
    hyps as run.pl's, logs in DECODE_DIR/log, the queue's files in DECODE_DIR/q."""
    from pykaldi2.decoding.batch import decode_dir, split_pairs

    graph = tmp_path / "graph"
    graph.mkdir()
    tiny.hclg.fst.write(str(graph / "HCLG.fst"))
    (graph / "words.txt").write_text("".join(f"{w} {i}\n" for w, i in tiny.words.items()))
    inputs = [(f"u{i}", tiny.loglik_for(ws)) for i, ws in enumerate(SENTENCES[:4])]
    for name, cmd in (("local", "run.pl"), ("cluster", "slurm.pl --time 1:00:00")):
        decode_dir(graph, split_pairs(inputs, 2), tmp_path / name, tiny.tm, cmd=cmd)
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    import gzip

    assert (cluster / "hyp.txt").read_text() == (local / "hyp.txt").read_text()
    for f in ("lat.1.gz", "lat.2.gz"):  # (the gzip header names the temp file)
        assert gzip.decompress((cluster / f).read_bytes()) == gzip.decompress(
            (local / f).read_bytes()
        )
    assert "# Running on" in (cluster / "log" / "decode.2.log").read_text()
    assert (cluster / "q" / "decode.sh").is_file() and not (local / "q").exists()
    assert "--time" in (fake_slurm / "sbatch.calls").read_text()
