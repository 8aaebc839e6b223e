"""Tree building: a hand-checked split, fast == reference split search, Kaldi's stub map,
bottom-up clustering, Kaldi binary and text formats."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pykaldi2.hmm.event_map import (
    ConstantEventMap,
    SplitEventMap,
    map_context,
)
from pykaldi2.hmm.kaldi_io import KaldiReader, Tree, read_context_dependency, read_tree, tree_bytes
from pykaldi2.hmm.questions import Questions, compile_questions
from pykaldi2.hmm.tree import (
    best_split,
    best_split_ref,
    build_tree,
    cluster_bottom_up,
    get_stub_map,
)
from pykaldi2.hmm.tree_stats import TreeStats, kaldi_objf


def tree_text(to_pdf, context_width: int, central_position: int) -> str:
    """Kaldi's text form of a tree (copy-tree --binary=false)."""
    return tree_bytes(Tree(to_pdf, context_width, central_position), binary=False).decode()


def read_tree_text(text: str):
    """(to_pdf, N, P) of Kaldi's text form of a tree."""
    t = read_context_dependency(KaldiReader(text.encode(), "<text>", binary=False))
    return t.to_pdf, t.context_width, t.central_position


def _stats(events, samples):
    """TreeStats from per-event lists of 1-D samples."""
    n = np.array([len(s) for s in samples], dtype=float)
    x1 = np.array([[np.sum(s)] for s in samples], dtype=float)
    x2 = np.array([[np.sum(np.square(s))] for s in samples], dtype=float)
    return TreeStats(np.asarray(events), n, x1, x2, 3, 1)


def test_objective_is_kaldis_gauss_clusterable():
    # mean 0, var 4 over 10 frames, 1-D: -0.5 * 10 * (1 + log 4 + log 2pi)
    assert kaldi_objf(10, [0.0], [40.0]) == pytest.approx(-5 * (1 + math.log(4 * 2 * math.pi)))
    # a floored variance: var 0.001 < 0.01 -> -0.5 var/floor - 0.5 log(0.01) - 0.5 log 2pi
    want = 10 * (-0.5 * 0.001 / 0.01 - 0.5 * (math.log(0.01) + math.log(2 * math.pi)))
    assert kaldi_objf(10, [0.0], [0.01]) == pytest.approx(want)
    assert kaldi_objf(0, [0.0], [0.0]) == 0.0


def test_hand_checked_split():
    # phone 2 seen after phone 3 (values -1 +-1: mean -1, var 1) and after phone 4 (mean +1,
    # var 1), 10 frames each; right contexts carry no information.
    a = [-2.0, 0.0] * 5
    b = [0.0, 2.0] * 5
    stats = _stats([[3, 2, 5, 0], [4, 2, 5, 0], [3, 2, 6, 0], [4, 2, 6, 0]], [a, b, a, b])
    q = Questions(phone=[(3,), (3, 5), (4,), (5,)], pdf_class=[(0,)])
    split = best_split(stats, np.arange(4), q)
    # gain = objf(A) + objf(B) - objf(A+B) = -0.5*20*log(1) + 0.5*40*log(2) = 20 log 2
    # (each side: 20 frames, var 1; merged: 40 frames, mean 0, var 2); the first best wins
    assert split.key == 0 and split.yes_set == (3,)
    assert float(split.gain) == pytest.approx(20 * math.log(2), rel=1e-6)


def _random_stats(rng, n=60, dim=3):
    ev = np.stack(
        [
            rng.integers(0, 6, n),
            rng.integers(1, 4, n),
            rng.integers(0, 6, n),
            rng.integers(0, 3, n),
        ],
        axis=1,
    )
    ev = np.unique(ev, axis=0)
    ev[ev[:, 1] == 3, 0] = -1  # phone 3 context-independent: its left context is absent
    ev = np.unique(ev, axis=0)
    cnt = rng.integers(1, 30, len(ev)).astype(float)
    mean = rng.normal(0, 1, (len(ev), dim)) + np.maximum(ev[:, :1], 0) * 0.5
    var = rng.uniform(0.5, 2, (len(ev), dim))
    return TreeStats(ev, cnt, mean * cnt[:, None], (var + mean**2) * cnt[:, None], 3, 1)


def test_fast_split_search_equals_reference():
    rng = np.random.default_rng(1)
    q = compile_questions(
        [list(c) for r in (1, 2, 3) for c in itertools.combinations(range(0, 6), r)], 3
    )
    for _ in range(6):
        stats = _random_stats(rng)
        for rows in (
            np.flatnonzero(rng.random(len(stats.count)) < 0.7),
            np.flatnonzero(stats.events[:, 1] == 3),
        ):
            fast, ref = best_split(stats, rows, q), best_split_ref(stats, rows, q)
            assert (fast is None) == (ref is None)
            if fast is not None:
                assert fast.gain == ref.gain  # float32, the same arithmetic
                assert (fast.key, fast.yes_set) == (ref.key, ref.yes_set)
                assert not (fast.key == 0 and (stats.events[rows, 0] < 0).any())


def test_stub_map_as_kaldi():
    # one phone per root: a table on the central phone; shared roots: one leaf
    em, n = get_stub_map(
        [(True, True, [1]), (False, True, [2]), (True, True, [3])], {1: 3, 2: 3, 3: 3}
    )
    assert n == 5 and tree_text(em, 3, 1).split()[4:7] == ["TE", "1", "4"]
    # several phones per root: halving splits on the central phone, leaves in roots order
    roots = [(True, True, [1, 2]), (True, True, [3, 4]), (True, True, [5, 6])]
    em, n = get_stub_map(roots, {p: 3 for p in range(1, 7)})
    assert n == 3
    assert em == SplitEventMap(
        1,
        [1, 2],
        ConstantEventMap(0),
        SplitEventMap(1, [3, 4], ConstantEventMap(1), ConstantEventMap(2)),
    )


def test_cluster_bottom_up_merges_closest_first():
    # four 1-D clusters: {0, 1} nearly identical, {2, 3} nearly identical, far apart
    n = np.array([10.0, 10.0, 10.0, 10.0])
    mu = np.array([0.0, 0.01, 5.0, 5.02])
    x1 = (n * mu)[:, None]
    x2 = (n * (mu**2 + 1.0))[:, None]
    assert cluster_bottom_up(n, x1, x2, thresh=1.0) == [0, 0, 1, 1]
    assert cluster_bottom_up(n, x1, x2, thresh=0.0) == [0, 1, 2, 3]
    assert cluster_bottom_up(n, x1, x2, thresh=1e9) == [0, 0, 0, 0]


def test_tree_in_kaldi_formats_loads_and_maps_contexts(tmp_path):
    from pykaldi2.hmm.topo import read_topo
    from pykaldi2.kaldi import khg
    from pykaldi2.lang.topo import TopoConfig, TopoEntry, make_topo

    rng = np.random.default_rng(2)
    stats = _random_stats(rng, n=120)
    stats.events[:, 0] = np.maximum(stats.events[:, 0], 0)  # no CI phones here
    stats = TreeStats(*[np.asarray(v) for v in (stats.events, stats.count, stats.x1, stats.x2)])
    q = compile_questions([[1], [2], [3], [4], [5], [1, 2], [3, 4, 5], [0, 1]], 3)
    roots = [(True, True, [1]), (False, True, [2]), (True, True, [3, 4, 5])]
    n2c = {p: 3 for p in range(1, 6)}
    tree = build_tree(
        stats, q, roots, n2c, max_leaves=14, thresh=1e-3, cluster_thresh=0, round_num_leaves=False
    )
    assert tree.num_pdfs == 14 == tree.info["leaves_after_split"]
    path = tmp_path / "tree"
    path.write_bytes(tree.to_bytes())
    cd = read_tree(path)
    assert isinstance(cd, khg.ContextDependency)
    assert (cd.context_width, cd.central_position, cd.num_pdfs) == (3, 1, 14)
    # our text form is the binding's (Kaldi's copy-tree --binary=false), token for token
    assert tree_text(tree.to_pdf, 3, 1).split() == str(cd).split()
    assert read_tree_text(str(cd))[0] == tree.to_pdf
    for window in itertools.product(range(6), range(1, 6), range(6)):
        for pc in range(3):
            ok, pdf = cd.compute(list(window), pc)
            assert ok and pdf == map_context(tree.to_pdf, window, pc)
    for row, pdf in zip(stats.events, tree.row_pdf):
        assert cd.compute(row[:3].tolist(), int(row[3]))[1] == pdf
    topo = make_topo([2, 3, 4, 5], [1], TopoConfig(TopoEntry(), TopoEntry()))
    assert khg.TransitionModel(ctx_dep=cd, hmm_topo=read_topo(topo)).num_pdfs == 14
    # rounding to a multiple of 8 and clustering with the smallest split
    rounded = build_tree(stats, q, roots, n2c, max_leaves=14, thresh=1e-3)
    assert rounded.num_pdfs % 8 == 0 and rounded.num_pdfs <= 14
    assert (
        rounded.info["removed_by_clustering"] + rounded.info["removed_by_rounding"]
        == 14 - rounded.num_pdfs
    )


def test_post_clustering_merges_identical_leaves():
    a = [-1.0, 1.0] * 20
    stats = _stats([[3, 2, 5, 0], [4, 2, 5, 0], [3, 2, 6, 0], [4, 2, 6, 0]], [a, a, a, a])
    q = compile_questions([[3], [5]], 3)
    tree = build_tree(
        stats,
        q,
        [(False, True, [2])],
        {2: 3},
        thresh=1e-6,
        cluster_thresh=1.0,
        round_num_leaves=False,
    )
    # pdf-classes 1, 2 have no data and class 0 identical data everywhere: no split; the
    # three stub leaves stay (no stats to merge on)
    assert tree.num_pdfs == 3


@pytest.mark.parametrize("seed", range(6))
def test_two_means_refinement_equals_point_by_point_loop(seed):
    """cluster-phones' RefineClusters: the vectorized version (with its fast-forward of
    cycling passes) makes the same moves and float32 gains as Kaldi's point-by-point loop,
    also when float32 noise makes points flip between the clusters until num_iters."""
    from pykaldi2.hmm.questions import _Gauss, _refine_two, _refine_two_ref

    rng = np.random.default_rng(seed)
    n, d = 12 + seed * 5, 4
    points = []
    for _ in range(n):
        cnt = float(rng.integers(1, 10)) * (1e5 if seed % 2 else 10.0)
        mu = rng.normal(size=d) * (0.01 if seed % 2 else 1.0)
        x = rng.normal(mu, 1.0, size=(50, d))
        points.append(_Gauss(cnt, x.mean(0) * cnt, (x * x).mean(0) * cnt))
    # a phone set without data (Kaldi: zero stats) "gains" float32 rounding by moving
    points[0] = _Gauss(0.0, np.zeros(d), np.zeros(d))
    results = []
    for refine in (_refine_two, _refine_two_ref):
        assign = [i % 2 for i in range(n)]
        clusters = [None, None]
        for i, p in enumerate(points):
            c = assign[i]
            clusters[c] = p.copy() if clusters[c] is None else (clusters[c].add(p) or clusters[c])
        gains = [refine(points, clusters, assign, num_iters=30) for _ in range(3)]
        results.append((gains, assign, [c.n for c in clusters], [c.x1.tobytes() for c in clusters]))
    assert results[0] == results[1]
    if seed == 3:  # this one cycles: each call runs all num_iters passes and gains
        assert results[0][0][1] > 0 and results[0][0][2] > 0
