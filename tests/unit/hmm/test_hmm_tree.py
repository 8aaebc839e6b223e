"""Tree building: a hand-checked split, fast == reference split search, Kaldi binary format."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pykaldi2.hmm.event_map import map_context
from pykaldi2.hmm.kaldi_io import read_tree
from pykaldi2.hmm.tree import best_split, best_split_ref, build_tree
from pykaldi2.hmm.tree_stats import TreeStats


def _stats(events, samples):
    """TreeStats from per-event lists of 1-D samples."""
    n = np.array([len(s) for s in samples], dtype=float)
    x1 = np.array([[np.sum(s)] for s in samples], dtype=float)
    x2 = np.array([[np.sum(np.square(s))] for s in samples], dtype=float)
    return TreeStats(np.asarray(events), n, x1, x2, 3, 1)


def test_hand_checked_split():
    # phone 2 seen after phone 3 (values -1 +-1: mean -1, var 1) and after phone 4 (mean +1,
    # var 1), 10 frames each; right contexts carry no information.
    a = [-2.0, 0.0] * 5
    b = [0.0, 2.0] * 5
    stats = _stats([[3, 2, 5, 0], [4, 2, 5, 0], [3, 2, 6, 0], [4, 2, 6, 0]], [a, b, a, b])
    split = best_split(stats, np.arange(4), questions=[[3], [4], [5], [3, 5]])
    # gain = objf(A) + objf(B) - objf(A+B) = -0.5*20*log(1) + 0.5*40*log(2) = 20 log 2
    # (each side: 20 frames, var 1; merged: 40 frames, mean 0, var 2)
    assert split.column == 0
    assert split.yes_set in {(3,), (3, 5)}
    assert split.gain == pytest.approx(20 * math.log(2), rel=1e-9)


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
    cnt = rng.integers(1, 30, len(ev)).astype(float)
    mean = rng.normal(0, 1, (len(ev), dim)) + ev[:, :1] * 0.5
    var = rng.uniform(0.5, 2, (len(ev), dim))
    x1 = mean * cnt[:, None]
    x2 = (var + mean**2) * cnt[:, None]
    return TreeStats(ev, cnt, x1, x2, 3, 1)


def test_fast_split_search_equals_reference():
    rng = np.random.default_rng(1)
    questions = [list(q) for r in (1, 2, 3) for q in itertools.combinations(range(1, 6), r)]
    for _ in range(5):
        stats = _random_stats(rng)
        rows = np.flatnonzero(rng.random(len(stats.count)) < 0.7)
        for min_count in (0.0, 50.0):
            fast = best_split(stats, rows, questions, min_count)
            ref = best_split_ref(stats, rows, questions, min_count)
            assert fast.gain == pytest.approx(ref.gain, rel=1e-9, abs=1e-9)
            assert (fast.column, fast.yes_set) == (ref.column, ref.yes_set)


def test_tree_in_kaldi_format_loads_and_maps_contexts(tmp_path):
    from pykaldi2.hmm.topo import read_topo
    from pykaldi2.kaldi import khg
    from pykaldi2.lang.topo import TopoConfig, make_topo

    rng = np.random.default_rng(2)
    stats = _random_stats(rng, n=120)
    stats.events[:, 1] = np.clip(stats.events[:, 1], 1, 3)
    questions = [[1], [2], [3], [4], [5], [1, 2], [3, 4, 5], [0, 1]]
    roots = [(True, True, [1]), (False, True, [2]), (True, True, [3, 4, 5])]
    n2c = {p: 3 for p in range(1, 6)}
    tree = build_tree(stats, questions, roots, n2c, max_leaves=14, thresh=0.0, cluster_thresh=0)
    assert tree.num_pdfs == 14
    path = tmp_path / "tree"
    path.write_bytes(tree.to_bytes())
    cd = read_tree(path)
    assert isinstance(cd, khg.ContextDependency)
    assert (cd.context_width, cd.central_position, cd.num_pdfs) == (3, 1, 14)
    assert "SE" in str(cd)
    for window in itertools.product(range(6), range(1, 6), range(6)):
        for pc in range(3):
            ok, pdf = cd.compute(list(window), pc)
            assert ok and pdf == map_context(tree.to_pdf, window, pc)
    # every statistics row lands on the pdf the builder assigned it
    for row, pdf in zip(stats.events, tree.row_pdf):
        assert cd.compute(row[:3].tolist(), int(row[3]))[1] == pdf
    # phones 3, 4, 5 share one root; a transition model can be built on the tree
    tm = khg.TransitionModel(
        ctx_dep=cd, hmm_topo=read_topo(make_topo([2, 3, 4, 5], [1], TopoConfig()))
    )
    assert tm.num_pdfs == 14


def test_post_clustering_merges_identical_leaves():
    a = [-1.0, 1.0] * 20
    stats = _stats([[3, 2, 5, 0], [4, 2, 5, 0], [3, 2, 6, 0], [4, 2, 6, 0]], [a, a, a, a])
    roots = [(False, True, [2])]
    tree = build_tree(stats, [[3], [5]], roots, {2: 3}, thresh=-1.0, cluster_thresh=1.0)
    # pdf-classes 1, 2 have no data and class 0 has identical data everywhere: one pdf
    assert tree.num_pdfs == 1
