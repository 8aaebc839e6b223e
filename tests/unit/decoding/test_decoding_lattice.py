"""Raw lattices: text archives, the vectorized best path vs references, LM-weight sweeps."""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.decoding.lattice import (
    Lattice,
    best_path,
    best_path_reference,
    best_paths,
    nbest_words,
)
from pykaldi2.decoding.lattice_io import read_lattice_ark, write_lattice_ark
from pykaldi2.decoding.scoring import compute_wer
from pykaldi2.decoding.sweep import sweep_lattices
from pykaldi2.utils.errors import DataError, Pykaldi2Error


def make_lattice(arcs, finals, start=0) -> Lattice:
    """arcs: (src, dst, ilabel, olabel, graph, ac); finals: {state: (graph, ac)}."""
    a = np.asarray(arcs, dtype=np.float64).reshape(-1, 6)
    S = int(max(a[:, :2].max(initial=0), max(finals, default=0))) + 1
    fg, fa = np.full(S, np.inf), np.full(S, np.inf)
    for s, (g, ac) in finals.items():
        fg[s], fa[s] = g, ac
    i = a[:, :4].astype(np.int64)
    return Lattice(S, start, i[:, 0], i[:, 1], i[:, 2], i[:, 3], a[:, 4], a[:, 5], fg, fa)


def random_dag(rng, num_states=30, num_arcs=90) -> Lattice:
    """A random acyclic lattice (states shuffled so ids are not a topological order)."""
    perm = rng.permutation(num_states - 1) + 1
    order = np.concatenate([[0], perm])  # order[k] is the k-th state topologically
    arcs = []
    for k in range(num_states - 1):  # a chain keeps every state reachable
        arcs.append(
            (order[k], order[k + 1], rng.integers(0, 5), rng.integers(0, 3), *rng.random(2) * 5)
        )
    for _ in range(num_arcs - len(arcs)):
        u, v = sorted(rng.choice(num_states, 2, replace=False))
        arcs.append(
            (order[u], order[v], rng.integers(0, 5), rng.integers(0, 4), *rng.random(2) * 5)
        )
    finals = {int(order[k]): (float(rng.random()), 0.0) for k in range(num_states - 5, num_states)}
    return make_lattice(arcs, finals)


def two_paths() -> Lattice:
    """Word 1 (cheap LM, poor acoustics) vs words 2 3 (dear LM, good acoustics).

    cost = graph + ac / lmwt + wip * num_words: ``3 + 40 / lmwt + wip`` vs ``6.5 + 2 wip``.
    """
    return make_lattice(
        [(0, 1, 5, 1, 3.0, 40.0), (0, 2, 6, 2, 6.0, 0.0), (2, 1, 7, 3, 0.5, 0.0)], {1: (0.0, 0.0)}
    )


def test_best_paths_match_reference_on_random_dags():
    rng = np.random.default_rng(1)
    lmwts, wips = [1.0, 7.0, 12.0, 17.0] * 2, [0.0] * 4 + [0.5] * 4
    for _ in range(20):
        lat = random_dag(rng)
        fast = best_paths(lat, lmwts, wips)
        for path, lm, wip in zip(fast, lmwts, wips):
            ref = best_path_reference(lat, lm, wip)
            cost = [p.graph_cost + p.ac_cost / lm + wip * len(p.words) for p in (path, ref)]
            assert cost[0] == pytest.approx(cost[1], abs=1e-9)
            assert (path.words, path.ali) == (ref.words, ref.ali)


def test_best_paths_chunks_many_weight_pairs(monkeypatch):
    import pykaldi2.decoding.lattice as lattice_mod

    lat = random_dag(np.random.default_rng(4))
    lmwts, wips = list(range(7, 18)) * 2, [0.0] * 11 + [1.0] * 11
    whole = best_paths(lat, lmwts, wips)
    monkeypatch.setattr(lattice_mod, "_MAX_ARC_PAIRS", lat.num_arcs * 5)  # chunks of 5 pairs
    assert best_paths(lat, lmwts, wips) == whole


def test_best_path_matches_kaldifst_shortest_path():
    from pykaldi2.kaldi import kaldifst

    rng = np.random.default_rng(2)
    for _ in range(5):
        lat = random_dag(rng)
        for lm in (1.0, 10.0):
            k = lat.to_kaldifst()
            kaldifst.scale_lattice(kaldifst.lattice_scale(1.0, 1.0 / lm), k)
            ok, ilabels, olabels, w = kaldifst.get_linear_symbol_sequence(kaldifst.shortest_path(k))
            assert ok
            p = best_path(lat, lm)
            assert (p.ali, p.words) == (list(ilabels), list(olabels))
            assert p.graph_cost + p.ac_cost / lm == pytest.approx(w.value1 + w.value2, abs=1e-4)


def test_lmwt_and_wip_sweep_change_the_result(tmp_path):
    lat = two_paths()
    assert best_path(lat, 7.0).words == [2, 3]  # 8.71 vs 6.5
    assert best_path(lat, 17.0).words == [1]  # 5.35 vs 6.5
    assert best_path(lat, 10.0, 0.0).words == [2, 3]  # 7.0 vs 6.5
    assert best_path(lat, 10.0, 1.0).words == [1]  # 8.0 vs 8.5
    write_lattice_ark(tmp_path / "lat.1.ark", {"u1": lat})
    sweep = sweep_lattices([tmp_path / "lat.1.ark"], [7, 10, 17], [0.0, 1.0])
    assert sweep[(7.0, 0.0)] == {"u1": [2, 3]} and sweep[(17.0, 0.0)] == {"u1": [1]}
    ref = {"u1": ["one"]}
    names = {0: "<eps>", 1: "one", 2: "two", 3: "three"}
    wer = {k: compute_wer(ref, {"u1": [names[w] for w in v["u1"]]}).wer for k, v in sweep.items()}
    assert wer[(7.0, 0.0)] == 200.0 and wer[(17.0, 0.0)] == 0.0 and wer[(10.0, 1.0)] == 0.0


def test_lattice_ark_roundtrip_and_kaldi_text_form(tmp_path):
    rng = np.random.default_rng(3)
    lats = {"utt-a": random_dag(rng), "utt-b": two_paths()}
    write_lattice_ark(tmp_path / "lat.1.ark", lats)
    back = dict(read_lattice_ark(tmp_path / "lat.1.ark"))
    assert list(back) == list(lats)
    for k, lat in lats.items():
        got = back[k]
        assert got.start == lat.start and got.num_states == lat.num_states
        key = lambda x: np.lexsort((x.dst, x.src))  # noqa: E731
        a, b = key(lat), key(got)
        for f in ("src", "dst", "ilabel", "olabel"):
            assert getattr(got, f)[b].tolist() == getattr(lat, f)[a].tolist()
        # Kaldi's printer keeps 6 significant digits.
        np.testing.assert_allclose(got.graph_cost[b], lat.graph_cost[a], rtol=1e-5)
        np.testing.assert_allclose(got.ac_cost[b], lat.ac_cost[a], rtol=1e-5)
        np.testing.assert_allclose(got.final_graph, lat.final_graph, rtol=1e-5)
    text = (tmp_path / "lat.1.ark").read_text()
    # Kaldi's text Lattice entry: "key \n", OpenFst's printer (start state first, then state by
    # state: arcs, then the final weight), tab-separated, "g,a" weights, weight One omitted,
    # an empty line at the end.
    assert text.startswith("utt-a \n0\t")
    assert "utt-b \n0\t1\t5\t1\t3,40\n0\t2\t6\t2\t6,0\n1\n2\t1\t7\t3\t0.5,0\n\n" in text


def test_bad_lattices_give_clear_errors(tmp_path):
    bad = tmp_path / "lat.1.ark"
    bad.write_text("u1 \n0\t1\t2\t3\tx,y\n\n")
    with pytest.raises(DataError, match="lat.1.ark:1 \\(u1\\)"):
        list(read_lattice_ark(bad))
    cyclic = make_lattice([(0, 1, 1, 0, 1.0, 0.0), (1, 0, 1, 0, 1.0, 0.0)], {1: (0.0, 0.0)})
    with pytest.raises(Pykaldi2Error, match="cycle"):
        best_path(cyclic)
    with pytest.raises(Pykaldi2Error, match="cycle"):
        best_path_reference(cyclic)
    unreachable = make_lattice([(0, 1, 1, 0, 1.0, 0.0)], {2: (0.0, 0.0)})
    assert best_path(unreachable) is None and best_path_reference(unreachable) is None


def all_word_sequences(lat: Lattice, lmwt: float, wip: float) -> dict[tuple[int, ...], float]:
    """Brute force: every path, the cheapest cost of each distinct word sequence."""
    best: dict[tuple[int, ...], float] = {}
    stack = [(lat.start, (), 0.0)]
    while stack:
        s, words, c = stack.pop()
        if np.isfinite(lat.final_graph[s]):
            total = c + lat.final_graph[s] + lat.final_ac[s] / lmwt
            best[words] = min(best.get(words, np.inf), total)
        for a in np.flatnonzero(lat.src == s):
            w = int(lat.olabel[a])
            step = lat.graph_cost[a] + lat.ac_cost[a] / lmwt + (wip if w else 0.0)
            stack.append((int(lat.dst[a]), words + ((w,) if w else ()), c + step))
    return best


def test_nbest_words_match_brute_force():
    rng = np.random.default_rng(5)
    for _ in range(5):
        lat = random_dag(rng, num_states=12, num_arcs=24)
        for lm, wip in ((1.0, 0.0), (10.0, 0.5)):
            brute = sorted(all_word_sequences(lat, lm, wip).items(), key=lambda x: x[1])
            got = nbest_words(lat, 4, lm, wip)
            assert len(got) == min(4, len(brute))
            for (words, cost), (bw, bc) in zip(got, brute):
                assert cost == pytest.approx(bc, abs=1e-4)
                assert tuple(words) == bw
            assert got[0][0] == best_path(lat, lm, wip).words
