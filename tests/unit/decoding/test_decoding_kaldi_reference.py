"""Decoding and lattices against files written by real Kaldi (../shared/data/kaldi_reference).

Kaldi's own models, HCLG.fst (ConstFst) and features, decoded as steps/decode.sh does
(gmm-latgen-faster --max-active 7000 --beam 13 --lattice-beam 6), must give Kaldi's best paths
(its decode.1.log: words and per-frame log-likelihoods) and lattices whose best paths are
Kaldi's lattices' (scoring_kaldi/penalty_*/LMWT.txt); Kaldi's lat.1.gz must be read and
written back byte for byte.
"""

from __future__ import annotations

import numpy as np
import pytest
from kaldi_decode_ref import decode_feats, kaldi_best_paths, kaldi_system

from pykaldi2.decoding.lattice import best_paths
from pykaldi2.decoding.lattice_io import decompressed, read_lattices, write_lattice_ark
from pykaldi2.decoding.scoring import compute_wer, read_text
from pykaldi2.decoding.wfst import DecoderConfig, decode_utterance, make_decoder
from pykaldi2.hmm.decoder import read_graph


def _symbols(path) -> dict[int, str]:
    return {int(i): w for w, i in (line.split() for line in open(path, encoding="utf-8"))}


def _wer_lines(decoded, words, decode_dir, lmwts, wips=(0.0, 0.5, 1.0)) -> dict[str, tuple]:
    """Our ``wer_LMWT_WIP`` lines next to Kaldi's (score_kaldi.sh on its own lattices)."""
    filt = read_text(decode_dir / "scoring_kaldi" / "test_filt.txt")
    out = {}
    for wip in wips:
        paths = {u: best_paths(clat, lmwts, wip) for u, (_, clat) in decoded.items()}
        for k, lm in enumerate(lmwts):
            hyp = {u: [words[w] for w in p[k].words] for u, p in paths.items()}
            name = f"wer_{lm}_{wip:.1f}"
            kaldi = (decode_dir / name).read_text().splitlines()[1]
            out[name] = (compute_wer(filt, hyp, mode="present").wer_line(), kaldi)
    return out


def _decode_all(corpus, exp, graph, data, acwt):
    system = kaldi_system(exp)
    config = DecoderConfig(acoustic_scale=acwt)  # decode.sh's beams and max_active
    decoder = make_decoder(read_graph(exp / graph / "HCLG.fst"), config)
    out = {}
    for utt, feats in sorted(decode_feats(corpus, data, system.model).items()):
        out[utt] = decode_utterance(None, system.scorer(feats), system.tables, config, utt, decoder)
    return out, _symbols(exp / graph / "words.txt")


@pytest.fixture(scope="module")
def an4_tri1(kaldi_ref):
    corpus = kaldi_ref / "an4"
    exp = corpus / "exp" / "tri1"
    decoded, words = _decode_all(corpus, exp, "graph", "data/test", 0.1)
    return exp, decoded, words


def test_kaldi_hclg_constfst_is_read(kaldi_ref):
    """mkgraph.sh's HCLG.fst is a ConstFst (README: mono 31554/77365, tri1 37294/91717)."""
    for exp, states, arcs in (("mono", 31554, 77365), ("tri1", 37294, 91717)):
        g = read_graph(kaldi_ref / "an4" / "exp" / exp / "graph" / "HCLG.fst")
        assert (g.fst_type, g.num_states, g.num_arcs) == ("const", states, arcs)


def test_an4_tri1_best_paths_and_costs_equal_kaldis(an4_tri1):
    exp, decoded, words = an4_tri1
    kaldi = kaldi_best_paths(exp / "decode_test" / "log" / "decode.1.log")
    assert set(decoded) == set(kaldi) and len(kaldi) == 130
    same = [
        utt for utt, (res, _) in decoded.items() if [words[w] for w in res.words] == kaldi[utt][0]
    ]
    assert len(same) == 130
    costs = np.array([res.cost(0.1) for res, _ in decoded.values()])
    want = np.array([kaldi[utt][1] for utt in decoded])
    # Kaldi logs 6 digits of the per-frame log-likelihood; the GMMs are computed in float64 here.
    np.testing.assert_allclose(costs, want, atol=0.05)
    res, _ = decoded["menk-an421-menk-b"]  # the old LatticeSimpleDecoder path ended at 1541.71
    assert res.cost(0.1) == pytest.approx(1484.13, abs=0.05) and res.reached_final


def test_an4_tri1_lattices_give_kaldis_one_best(an4_tri1):
    """lattice-best-path of our lattices = of Kaldi's lat.1.gz, and = Kaldi's scoring output."""
    exp, decoded, words = an4_tri1
    kaldi_lats = dict(read_lattices(exp / "decode_test" / "lat.1.gz"))
    lmwts = [7.0, 10.0, 16.0]
    ours = {u: best_paths(clat, lmwts, 1.0) for u, (_, clat) in decoded.items()}
    theirs = {u: best_paths(kaldi_lats[u], lmwts, 1.0) for u in decoded}
    same = sum(all(a.words == b.words for a, b in zip(ours[u], theirs[u])) for u in decoded)
    assert same >= 129
    ref = read_text(exp / "decode_test" / "scoring_kaldi" / "penalty_1.0" / "16.txt")
    hyp = {u: [words[w] for w in p[2].words] for u, p in ours.items()}
    assert sum(hyp[u] == ref[u] for u in ref) >= 129
    # score_kaldi.sh's WER for every LMWT x WIP (Kaldi's best: 4.27 at 16_1.0).
    lines = _wer_lines(decoded, words, exp / "decode_test", list(range(5, 21)))
    assert lines["wer_16_1.0"][0] == lines["wer_16_1.0"][1].strip()
    assert all(a == b.strip() for a, b in lines.values()), lines  # all 48 as Kaldi's
    # Our determinization is Kaldi's: nearly every lattice has Kaldi's exact size (the rest
    # differ by paths at the lattice-beam edge, the GMMs being computed in float64 here).
    sizes = sum(
        (c.num_states, c.num_arcs) == (kaldi_lats[u].num_states, kaldi_lats[u].num_arcs)
        for u, (_, c) in decoded.items()
    )
    assert sizes >= 120


def test_yesno_mono_g1000_decodes_every_file_like_kaldi(kaldi_ref):
    """Kaldi: 0.00% WER on the 30 test files after scoring; the old decoder left
    global-1_1_1_1_0_1_0_0 partial with an inserted NO."""
    corpus = kaldi_ref / "yesno"
    exp = corpus / "exp" / "mono_g1000"
    decoded, words = _decode_all(corpus, exp, "graph_tgpr", "data/test_yesno", 0.083333)
    kaldi = kaldi_best_paths(exp / "decode_test_yesno" / "log" / "decode.1.log")
    ref = read_text(corpus / "data" / "test_yesno" / "text")
    assert len(decoded) == 30 and all(res.reached_final for res, _ in decoded.values())
    hyp = {u: [words[w] for w in res.words] for u, (res, _) in decoded.items()}
    assert hyp == {u: kaldi[u][0] for u in hyp}  # at the decoding acwt: one insertion, as Kaldi
    assert compute_wer(ref, hyp).wer_line().startswith("%WER 0.42 [ 1 / 240, 1 ins")
    lines = _wer_lines(decoded, words, exp / "decode_test_yesno", list(range(7, 18)))
    assert all(a == b.strip() for a, b in lines.values()), lines  # all 33, best 0.00%
    assert min(a for a, _ in lines.values()).startswith("%WER 0.00 [ 0 / 240")


def test_kaldi_lattice_archive_round_trips_byte_for_byte(kaldi_ref, tmp_path):
    for exp in ("mono", "tri1"):
        d = kaldi_ref / "an4" / "exp" / exp / "decode_test"
        lats = dict(read_lattices(d / "lat.1.gz"))
        assert len(lats) == 130
        write_lattice_ark(tmp_path / "lat.1.ark", lats, binary=True)
        assert (tmp_path / "lat.1.ark").read_bytes() == decompressed(d / "lat.1.gz")
        first5 = dict(list(lats.items())[:5])
        write_lattice_ark(tmp_path / "lat.txt", first5)  # text: lattice-copy ark,t:
        assert (tmp_path / "lat.txt").read_text() == (d / "lat.first5.txt").read_text()
        back = dict(read_lattices(d / "lat.first5.txt"))
        for u, lat in back.items():
            assert lat.word.tolist() == lats[u].word.tolist()
            assert lat.strings.tolist() == lats[u].strings.tolist()
            np.testing.assert_allclose(lat.ac_cost, lats[u].ac_cost, rtol=1e-5)
