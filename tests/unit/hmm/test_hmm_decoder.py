"""The compiled decoder (pykaldi2.hmm.decoder) against slow references and the bindings.

The graph is the tiny HCLG of tests/unit/decoding/conftest.py (built here the same way);
real Kaldi graphs and models are in tests/unit/decoding/test_decoding_kaldi_reference.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.hmm.decoder import (
    Decoder,
    DeterminizeConfig,
    LatticeFasterDecoderConfig,
    TransitionTables,
    as_graph,
    determinize_lattice_pruned,
    read_graph,
)
from pykaldi2.hmm.decoder_reference import viterbi_reference, word_sequences
from pykaldi2.utils.errors import DataError, Pykaldi2Error

TOPO = """<Topology>
<TopologyEntry>
<ForPhones>
1 2 3 4
</ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.5 <Transition> 1 0.5 </State>
<State> 1 <PdfClass> 1 <Transition> 1 0.5 <Transition> 2 0.5 </State>
<State> 2 <PdfClass> 2 <Transition> 2 0.5 <Transition> 3 0.5 </State>
<State> 3 </State>
</TopologyEntry>
</Topology>
"""
# Words A = a b (#1), B = b c, C = a b c; optional silence; a backoff unigram G.
L_TEXT = (
    "0 0 1 0\n0 1 2 1\n1 2 3 0\n2 0 6 0\n0 3 3 2\n3 0 4 0\n0 4 2 3\n4 5 3 0\n5 0 4 0\n0 0 5 4\n0\n"
)
G_TEXT = "0 1 4 0 0.5\n1 0 1 1 1.0\n1 0 2 2 1.0\n1 0 3 3 1.0\n0 0 1 1 0.3\n0\n"


@pytest.fixture(scope="module")
def system():
    from types import SimpleNamespace

    from pykaldi2.kaldi import kaldifst, khg
    from pykaldi2.lang.hclg import make_hclg

    topo = khg.HmmTopology()
    topo.read(TOPO)
    ctx = khg.monophone_context_dependency([1, 2, 3, 4], topo.get_phone_to_num_pdf_classes())
    tm = khg.TransitionModel(ctx, topo)
    hclg = make_hclg(kaldifst.compile(L_TEXT), kaldifst.compile(G_TEXT), [5, 6], ctx, tm)
    tables = TransitionTables.from_trans_model(tm)
    return SimpleNamespace(fst=hclg.fst, graph=as_graph(hclg.fst), tables=tables, tm=tm)


def noisy_loglik(rng, T: int, P: int) -> np.ndarray:
    return (3.0 * rng.normal(size=(T, P))).astype(np.float32)


def test_graph_reader_vector_and_const_equal_the_fst(system, tmp_path):
    from pykaldi2.kaldi import kaldifst

    vec = tmp_path / "vector.fst"
    system.fst.write(str(vec))
    const = tmp_path / "const.fst"
    kaldifst.StdConstFst(system.fst).write(str(const))
    want = sorted(  # arcs of OpenFst's text form (the weight left out when 0)
        tuple(int(x) for x in f[:4]) + (float(f[4]) if len(f) == 5 else 0.0,)
        for f in map(str.split, system.fst.to_str().splitlines())
        if len(f) >= 4
    )
    for path, kind in ((vec, "vector"), (const, "const")):
        g = read_graph(path)
        assert g.fst_type == kind and g.num_states == system.fst.num_states
        a = g.arrays()
        got = sorted(
            zip(a["src"].tolist(), a["dst"].tolist(), a["ilabel"].tolist(), a["olabel"].tolist(),
                np.round(a["weight"], 4).tolist())
        )  # fmt: skip
        assert [w[:4] for w in got] == [w[:4] for w in want]
        np.testing.assert_allclose([w[4] for w in got], [w[4] for w in want], atol=1e-4)
        assert g.start == system.fst.start


def test_graph_reader_errors_name_the_file(tmp_path):
    from pykaldi2.hmm.decoder import check_graph_header

    with pytest.raises(DataError, match="not found"):
        read_graph(tmp_path / "missing.fst")
    with pytest.raises(DataError, match="not found"):
        check_graph_header(tmp_path / "missing.fst")
    bad = tmp_path / "text.fst"
    bad.write_text("0 1 2 3\n1\n")
    for check in (read_graph, check_graph_header):
        with pytest.raises(DataError, match=r"text\.fst.*not a readable OpenFst graph.*bad magic"):
            check(bad)


def test_graph_header_has_the_state_count(system, kaldi_ref, tmp_path):
    """check_graph_header reads what read_graph would load, from the header alone: our
    VectorFst and Kaldi's ConstFst HCLG (mkgraph's fstconvert --fst_type=const)."""
    from pykaldi2.hmm.decoder import check_graph_header

    ours = tmp_path / "HCLG.fst"
    system.fst.write(str(ours))
    kaldi = kaldi_ref / "an4" / "exp" / "tri1" / "graph" / "HCLG.fst"
    for path in (ours, kaldi):
        assert check_graph_header(path) == read_graph(path).num_states > 0
    log_arcs = tmp_path / "log.fst"
    data = bytearray(ours.read_bytes())
    i = data.index(b"standard")
    log_arcs.write_bytes(bytes(data[: i - 4]) + (3).to_bytes(4, "little") + b"log" + data[i + 8 :])
    with pytest.raises(DataError, match="'vector' FST of 'log' arcs"):
        check_graph_header(log_arcs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoder_best_path_equals_exhaustive_viterbi(system, seed):
    rng = np.random.default_rng(seed)
    ll = noisy_loglik(rng, 25, system.tm.num_pdfs)
    dec = Decoder(system.graph, LatticeFasterDecoderConfig(beam=40.0, lattice_beam=10.0))
    assert dec.decode(ll, system.tables.tid2pdf, 0.5)
    ali, words, g, a = dec.best_path()
    cost, ref_words, ref_ali = viterbi_reference(
        system.graph.arrays(), system.graph.start, ll, system.tables.tid2pdf, 0.5
    )
    assert g + 0.5 * a == pytest.approx(cost, abs=1e-3)
    assert words.tolist() == ref_words and ali.tolist() == ref_ali and len(ali) == 25


def test_decoder_matches_lattice_simple_decoder(system):
    """The kaldi-decoder binding's LatticeSimpleDecoder (no max_active) as a second reference."""
    from pykaldi2.kaldi import kaldi_decoder

    rng = np.random.default_rng(7)
    ll = noisy_loglik(rng, 40, system.tm.num_pdfs)
    M = 0.3 * ll[:, system.tables.tid2pdf[1:]]
    ref = kaldi_decoder.LatticeSimpleDecoder(
        system.fst, kaldi_decoder.LatticeSimpleDecoderConfig(beam=16.0, lattice_beam=6.0)
    )
    ref.decode(kaldi_decoder.DecodableCtc(np.ascontiguousarray(M)))
    _, path = ref.get_best_path(use_final_probs=True)
    from pykaldi2.kaldi import kaldifst

    _, ref_ali, ref_words, w = kaldifst.get_linear_symbol_sequence(path)
    dec = Decoder(system.graph, LatticeFasterDecoderConfig(beam=16.0, max_active=10_000))
    dec.decode(ll, system.tables.tid2pdf, 0.3)
    ali, words, g, a = dec.best_path()
    assert (list(ali), list(words)) == (list(ref_ali), list(ref_words))
    assert g == pytest.approx(w.value1, abs=1e-3) and 0.3 * a == pytest.approx(w.value2, abs=1e-2)


def test_max_active_bounds_the_search(system):
    rng = np.random.default_rng(3)
    ll = noisy_loglik(rng, 60, system.tm.num_pdfs)
    wide = Decoder(system.graph, LatticeFasterDecoderConfig(beam=30.0, min_active=0))
    wide.decode(ll, system.tables.tid2pdf, 1.0)
    narrow = Decoder(
        system.graph, LatticeFasterDecoderConfig(beam=30.0, max_active=3, min_active=2)
    )
    narrow.decode(ll, system.tables.tid2pdf, 1.0)
    assert narrow.peak_tokens < wide.peak_tokens
    _, _, g1, a1 = wide.best_path()
    _, _, g2, a2 = narrow.best_path()
    assert g2 + a2 >= g1 + a1 - 1e-3  # pruning can only lose the best path, never beat it


def test_determinized_lattice_keeps_every_word_sequence_within_the_beam(system):
    beam = 5.0
    for seed in range(4):
        rng = np.random.default_rng(10 + seed)
        ll = noisy_loglik(rng, 14, system.tm.num_pdfs)
        dec = Decoder(system.graph, LatticeFasterDecoderConfig(beam=20.0, lattice_beam=beam))
        dec.decode(ll, system.tables.tid2pdf, 0.5)
        from pykaldi2.decoding.compact_lattice import CompactLattice
        from pykaldi2.decoding.lattice import Lattice

        raw = Lattice.from_dict(dec.raw_lattice())
        for phone in (True, False):
            d, complete = dec.compact_lattice(
                system.tables.phone_start, DeterminizeConfig(phone_determinize=phone)
            )
            clat = CompactLattice.from_dict(d)
            assert complete
            want, got = word_sequences(raw, 0.5), word_sequences(clat, 0.5)
            best = min(want.values())
            within = {s for s, c in want.items() if c <= best + beam - 1e-3}
            assert within <= set(got)  # everything within the beam is kept ...
            for s, c in got.items():  # ... at its best weight, nothing outside the lattice
                assert c == pytest.approx(want[s], abs=2e-3)
            # Deterministic on words: no state has two arcs with one word (no epsilons).
            pairs = list(zip(clat.src.tolist(), clat.word.tolist()))
            assert len(pairs) == len(set(pairs)) and 0 not in clat.word.tolist()
            # Each arc's transition-ids plus the final string cover all frames on every path.
            assert all(len(clat.path_ali(p, f)) == 14 for p, f in _paths(clat))


def _paths(clat):
    """All (arcs, final state) paths of a small compact lattice."""
    out, stack = [], [(clat.start, [])]
    while stack:
        s, arcs = stack.pop()
        if np.isfinite(clat.final_graph[s]):
            out.append((arcs, s))
        for i in np.flatnonzero(clat.src == s).tolist():
            stack.append((int(clat.dst[i]), arcs + [i]))
    return out


def random_dag(rng, num_states: int, num_arcs: int):
    """A random acyclic raw lattice, state ids shuffled (not a topological order), words 0-3."""
    from pykaldi2.decoding.lattice import Lattice

    order = np.concatenate([[0], rng.permutation(num_states - 1) + 1])
    pairs = [(k, k + 1) for k in range(num_states - 1)]  # a chain keeps all states connected
    pairs += [
        tuple(sorted(rng.choice(num_states, 2, replace=False)))
        for _ in range(num_arcs - len(pairs))
    ]
    u, v = (np.asarray(x) for x in zip(*pairs))
    A = len(pairs)
    fg = np.full(num_states, np.inf)
    fg[order[-4:]] = rng.random(4)
    return Lattice(
        num_states, 0, order[u], order[v], rng.integers(1, 6, A), rng.integers(0, 4, A),
        rng.random(A) * 5, rng.random(A) * 5, fg, np.where(np.isfinite(fg), 0.0, np.inf),
    )  # fmt: skip


def test_determinize_random_raw_lattices_without_phones():
    """lattice-determinize-pruned on random acyclic lattices with epsilon words."""
    from pykaldi2.decoding.compact_lattice import CompactLattice

    for seed in range(5):
        rng = np.random.default_rng(seed)
        raw = random_dag(rng, num_states=14, num_arcs=30)
        d, complete = determinize_lattice_pruned(raw.to_dict(), beam=4.0)
        clat = CompactLattice.from_dict(d)
        want, got = word_sequences(raw), word_sequences(clat)
        best = min(want.values())
        assert {s for s, c in want.items() if c <= best + 4.0 - 1e-4} <= set(got)
        for s, c in got.items():
            assert c == pytest.approx(want[s], abs=1e-4)


def test_bad_inputs_give_clear_errors(system):
    dec = Decoder(system.graph)
    P = system.tm.num_pdfs
    with pytest.raises(DataError, match="utterance u1.*shape"):
        dec.decode(np.zeros((5, P + 1), np.float32), system.tables.tid2pdf, 0.1, "u1")
    with pytest.raises(DataError, match="zero frames"):
        dec.decode(np.zeros((0, P), np.float32), system.tables.tid2pdf, 0.1, "u2")
    bad = np.zeros((5, P), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        dec.decode(bad, system.tables.tid2pdf, 0.1, "u3")
    with pytest.raises(DataError, match="transition-id"):
        dec.decode(np.zeros((5, 3), np.float32), np.array([0, 0, 1, 2]), 0.1, "u4")
    with pytest.raises(Pykaldi2Error, match="max_active"):
        LatticeFasterDecoderConfig(max_active=1)
    with pytest.raises(Pykaldi2Error, match="min_active"):
        LatticeFasterDecoderConfig(min_active=8000)


def test_one_decoder_serves_many_utterances(system):
    """Reused pools give the same results as a fresh decoder."""
    rng = np.random.default_rng(5)
    lls = [noisy_loglik(rng, T, system.tm.num_pdfs) for T in (30, 8, 50, 12)]
    shared = Decoder(system.graph)
    for ll in lls:
        shared.decode(ll, system.tables.tid2pdf, 0.5)
        fresh = Decoder(system.graph)
        fresh.decode(ll, system.tables.tid2pdf, 0.5)
        a, b = shared.best_path(), fresh.best_path()
        assert a[0].tolist() == b[0].tolist() and a[2:] == b[2:]
        assert shared.compact_lattice(system.tables.phone_start)[0]["label"].tolist() == (
            fresh.compact_lattice(system.tables.phone_start)[0]["label"].tolist()
        )


def test_decoder_frees_its_search_memory_and_can_determinize_in_place(system):
    """After decode the token/link pools are freed (peak_tokens, num_frames and the final cost
    stay); compact_lattice(keep_raw=False) gives the same lattice as from a copy, then the
    raw lattice is gone with a clear error until the next decode."""
    rng = np.random.default_rng(11)
    dec = Decoder(system.graph, LatticeFasterDecoderConfig(beam=20.0, lattice_beam=5.0))
    for T in (40, 9):
        ll = noisy_loglik(rng, T, system.tm.num_pdfs)
        reached = dec.decode(ll, system.tables.tid2pdf, 0.5)
        assert dec.pool_bytes == 0 and dec.peak_tokens > 0
        assert dec.num_frames == T and dec.reached_final == reached
        kept, complete = dec.compact_lattice(system.tables.phone_start)
        moved, complete2 = dec.compact_lattice(system.tables.phone_start, keep_raw=False)
        assert complete == complete2 and kept.keys() == moved.keys()
        for k in kept:
            assert np.array_equal(np.asarray(kept[k]), np.asarray(moved[k])), k
        with pytest.raises(RuntimeError, match="no lattice"):
            dec.raw_lattice()
