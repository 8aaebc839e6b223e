"""Phone questions for tree building: Kaldi's cluster-phones and compile-questions.

cluster-phones (AutomaticallyObtainQuestions, tree/build-tree.cc) sums the statistics of pdf-class
1 (the middle state) per phone set (e.g. the word-position variants of one phone, ``sets.int``)
and clusters the sets top-down into a binary tree (TreeCluster: 2-means at each node, the node
whose split gains most splits next); the phone set of every node but the root becomes one
question, top-level questions first, then the sets themselves. train_deltas.sh appends
``extra_questions.int``. compile-questions then asks the sorted, de-duplicated questions at
every context position, and the prefix sets ``[0], [0 1], ...`` about the pdf-class.

Everything here follows Kaldi's code step for step, including its float (``BaseFloat``)
arithmetic on objective values and the k-means initialisation from ``rand()`` (glibc's, seeded
with 1 as in every fresh Kaldi process), so Kaldi's own tree statistics give Kaldi's
``questions.int``.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pykaldi2.hmm.kaldi_rand import KaldiRandom
from pykaldi2.hmm.tree_stats import TreeStats, objf32

log = logging.getLogger(__name__)


class _Gauss:
    """A GaussClusterable: count, sum and sum of squares (float64), Objf as a float32."""

    __slots__ = ("n", "x1", "x2")

    def __init__(self, n: float, x1: np.ndarray, x2: np.ndarray) -> None:
        self.n, self.x1, self.x2 = float(n), np.array(x1, dtype=np.float64), np.array(x2)

    def copy(self) -> _Gauss:
        return _Gauss(self.n, self.x1, self.x2)

    def add(self, o: _Gauss) -> None:
        self.n += o.n
        self.x1 += o.x1
        self.x2 += o.x2

    def sub(self, o: _Gauss) -> None:
        self.n -= o.n
        self.x1 -= o.x1
        self.x2 -= o.x2

    def objf(self) -> np.float32:
        return objf32(self.n, self.x1, self.x2)[()]

    def objf_plus(self, o: _Gauss) -> np.float32:
        return objf32(self.n + o.n, self.x1 + o.x1, self.x2 + o.x2)[()]

    def objf_minus(self, o: _Gauss) -> np.float32:
        return objf32(self.n - o.n, self.x1 - o.x1, self.x2 - o.x2)[()]


def _sum(points: Sequence[_Gauss]) -> _Gauss:
    tot = points[0].copy()
    for p in points[1:]:
        tot.add(p)
    return tot


def _sum_objf(clusters: Sequence[_Gauss | None]) -> np.float32:
    """SumClusterableObjf: float accumulation of the clusters' Objf, NULLs skipped."""
    ans = np.float32(0.0)
    for c in clusters:
        if c is not None:
            ans = np.float32(ans + c.objf())
    return ans


def _refine_two(points, clusters, assignments, num_iters: int = 100) -> np.float32:
    """RefineClusters for two clusters (top_n = 2): visit the points in order, move one to the
    other cluster when that gains, until a pass moves nothing.

    Kaldi caches, per point, the objective of each cluster with/without the point and
    recomputes it once the cluster has changed; here those values come from one vectorized
    evaluation per cluster state, and the gains of all points from one float32 vector
    operation, so a pass jumps from move to move (the same moves, in the same order, with the
    same float32 arithmetic as :func:`_refine_two_ref`'s point-by-point loop). Before any move
    the other cluster's value is the one Kaldi's InitPoint stores,
    ``-((objf(c) - objf(c + p)) - objf(c))`` in float arithmetic.
    """
    f32 = np.float32
    n = len(points)
    pn = np.array([p.n for p in points])
    p1 = np.stack([p.x1 for p in points])
    p2 = np.stack([p.x2 for p in points])
    sign = np.array([1.0, -1.0])[:, None]
    cobj = np.array([clusters[c].objf() for c in range(2)], dtype=np.float32)
    changed = [False, False]
    # vals[c] = (objf(c + p), objf(c - p)) for every point p, for cluster c's current stats
    vals = np.empty((2, 2, n), dtype=np.float32)

    def refresh(which) -> None:
        cnt = np.stack([clusters[k].n + sign * pn for k in which])
        s1 = np.stack([clusters[k].x1 + sign[..., None] * p1 for k in which])
        s2 = np.stack([clusters[k].x2 + sign[..., None] * p2 for k in which])
        vals[list(which)] = objf32(cnt, s1, s2)

    refresh((0, 1))
    a = np.asarray(assignments, dtype=np.int64)
    other = 1 - a
    co = cobj[other]
    init_plus = -((co - vals[other, 0, np.arange(n)]) - co)  # float32 throughout
    idx = np.arange(n)
    ans = f32(0.0)
    # With float32 objectives of ~1e6 a point can gain "25" by moving either way, so the passes
    # can cycle until num_iters. Passes are a function of the state (assignments and the exact
    # float64 cluster stats): once a state recurs bitwise, the passes in between repeat, and the
    # remaining whole periods only add their gains again, in the same float32 order.
    seen: dict[bytes, tuple[int, int]] = {}
    gains: list[np.float32] = []
    it = 0
    while it < num_iters:
        if changed[0] and changed[1]:
            key = a.tobytes() + b"".join(
                np.float64(c.n).tobytes() + c.x1.tobytes() + c.x2.tobytes() for c in clusters
            )
            if key in seen:
                it0, g0 = seen.pop(key)
                period, cycle = it - it0, gains[g0:]
                for _ in range((num_iters - it) // period):
                    for g in cycle:
                        ans = f32(ans + g)
                it += (num_iters - it) // period * period
                seen.clear()
                if it >= num_iters:
                    break
            else:
                seen[key] = (it, len(gains))
        it += 1
        moved = False
        p = 0
        while p < n:
            o = 1 - a
            own_minus = vals[a, 1, idx]
            other_plus = vals[o, 0, idx]
            if not (changed[0] and changed[1]):
                keep = ~np.asarray(changed)[o]
                other_plus = np.where(keep, init_plus, other_plus)
            impr = ((other_plus + own_minus) - cobj[o]) - cobj[a]
            hits = np.flatnonzero(impr[p:] > 0)
            if not len(hits):
                break
            q = p + int(hits[0])
            s, d = int(a[q]), 1 - int(a[q])
            ans = f32(ans + impr[q])
            gains.append(impr[q])
            moved = True
            a[q] = d
            assignments[q] = d
            clusters[s].sub(points[q])
            clusters[d].add(points[q])
            for c in (s, d):
                cobj[c] = clusters[c].objf()
                changed[c] = True
            refresh((0, 1))
            p = q + 1
        if not moved:
            break
    return ans


def _refine_two_ref(points, clusters, assignments, num_iters: int = 100) -> np.float32:
    """Point-by-point :func:`_refine_two` (Kaldi's loop, one point at a time): the test's
    reference."""
    f32 = np.float32
    n = len(points)
    pn = np.array([p.n for p in points])
    p1 = np.stack([p.x1 for p in points])
    p2 = np.stack([p.x2 for p in points])
    cobj = [c.objf() for c in clusters]
    changed = [False, False]
    batch: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def values(c: int) -> tuple[np.ndarray, np.ndarray]:
        if c not in batch:
            cl = clusters[c]
            batch[c] = (
                objf32(cl.n + pn, cl.x1 + p1, cl.x2 + p2),
                objf32(cl.n - pn, cl.x1 - p1, cl.x2 - p2),
            )
        return batch[c]

    plus0 = [values(c)[0] for c in range(2)]
    other = 1 - np.asarray(assignments)
    init_plus = [f32(-(f32(cobj[o] - plus0[o][p]) - cobj[o])) for p, o in enumerate(other)]
    ans = f32(0.0)
    for _ in range(num_iters):
        moved = False
        for p in range(n):
            s = assignments[p]
            o = 1 - s
            own_minus = values(s)[1][p]
            other_plus = values(o)[0][p] if changed[o] else init_plus[p]
            impr = f32(f32(f32(other_plus + own_minus) - cobj[o]) - cobj[s])
            if impr > 0:
                ans = f32(ans + impr)
                moved = True
                assignments[p] = o
                clusters[s].sub(points[p])
                clusters[o].add(points[p])
                for c in (s, o):
                    cobj[c] = clusters[c].objf()
                    changed[c] = True
                    batch.pop(c, None)
        if not moved:
            break
    return ans


def _kmeans_two_once(points, rand: KaldiRandom, num_iters: int = 20):
    """ClusterKMeansOnce with two clusters: a pseudo-random interleaved start, then refinement.
    Returns (objective improvement, clusters, assignments)."""
    n = len(points)
    if n == 1:
        skip = 1
    else:
        skip = 1 + rand() % (n - 1)
        while math.gcd(skip, n) != 1:
            if skip == n - 1:
                skip = 0
            skip += 1
    clusters: list[_Gauss | None] = [None, None]
    assignments = [0] * n
    i = j = 0
    for _ in range(n):
        if clusters[j] is None:
            clusters[j] = points[i].copy()
        else:
            clusters[j].add(points[i])
        assignments[i] = j
        i, j = (i + skip) % n, (j + 1) % 2
    all_stats = _sum([c for c in clusters if c is not None])
    ans = np.float32(_sum_objf(clusters) - all_stats.objf())
    for _ in range(num_iters):
        impr = _refine_two(points, clusters, assignments)
        ans = np.float32(ans + impr)
        if impr == 0:
            break
    return ans, clusters, assignments


def _kmeans_two(points, rand: KaldiRandom, num_tries: int = 10):
    """ClusterKMeans (k = 2, Kaldi's num_tries = 10 of AutomaticallyObtainQuestions)."""
    best = None
    for i in range(num_tries):
        res = _kmeans_two_once(points, rand)
        if i == 0 or res[0] > best[0]:
            best = res
    return best


@dataclass(eq=False)
class _Node:
    points: list[int]
    total: _Gauss
    parent: _Node | None = None
    is_leaf: bool = True
    index: int = 0
    best_split: np.float32 = np.float32(0.0)
    split: tuple | None = None
    children: list[_Node] = field(default_factory=list)


def tree_cluster(points: Sequence[_Gauss], max_clust: int, rand: KaldiRandom):
    """TreeCluster with branch factor 2 (tree/cluster-utils.cc).

    Returns ``(assignments, clust_assignments, num_leaves)``: the leaf cluster of each point,
    the parent of each cluster (leaves first, then the non-leaf nodes with the root last; the
    root is its own parent) and the number of leaves.
    """
    leaves: list[_Node] = []
    nonleaves: list[_Node] = []
    queue: list = []
    order = iter(range(1 << 30))

    def find_best_split(node: _Node) -> None:
        if len(node.points) == 0:
            log.warning("tree clustering: leaf with no data")
            return
        if len(node.points) <= 1:
            return
        impr, clusters, assign = _kmeans_two([points[i] for i in node.points], rand)
        node.best_split = impr
        node.split = (clusters, assign)
        if impr > 0:
            heapq.heappush(queue, (-float(impr), next(order), node))

    top = _Node(points=list(range(len(points))), total=_sum(list(points)))
    leaves.append(top)
    find_best_split(top)
    while len(leaves) < max_clust and queue:
        _, _, node = heapq.heappop(queue)
        clusters, assign = node.split
        kids = []
        for c in range(2):
            kid = _Node(points=[], total=clusters[c], parent=node)
            if c == 0:
                kid.index = node.index
                leaves[kid.index] = kid
            else:
                kid.index = len(leaves)
                leaves.append(kid)
            kids.append(kid)
        for p, a in zip(node.points, assign):
            kids[a].points.append(p)
        node.children, node.points, node.split = kids, [], None
        node.is_leaf = False
        node.index = len(nonleaves)
        nonleaves.append(node)
        for kid in kids:
            find_best_split(kid)

    def nonleaf_out(i: int) -> int:
        return len(leaves) + len(nonleaves) - 1 - i

    assignments = [-1] * len(points)
    for li, leaf in enumerate(leaves):
        for p in leaf.points:
            assignments[p] = li
    clust = [0] * (len(leaves) + len(nonleaves))
    for li, leaf in enumerate(leaves):
        clust[li] = 0 if leaf.parent is None else nonleaf_out(leaf.parent.index)
    for ni, node in enumerate(nonleaves):
        idx = nonleaf_out(ni)
        clust[idx] = idx if node.parent is None else nonleaf_out(node.parent.index)
    return assignments, clust, len(leaves)


def _sets_of_phones(phone_sets, assignments, clust_assignments) -> list[list[int]]:
    """ObtainSetsOfPhones: the phones under every node (not the root), top-level first, then
    the original sets; duplicates and empty sets removed."""
    raw: list[list[int]] = [[] for _ in clust_assignments]
    for i, c in enumerate(assignments):
        raw[c] += list(phone_sets[i])
    top = len(clust_assignments) - 1
    for j, parent in enumerate(clust_assignments):
        raw[j].sort()
        if parent < top:
            raw[parent] += raw[j]
    raw.reverse()
    raw += [list(s) for s in phone_sets]
    out, seen = [], set()
    for s in raw:
        if s and tuple(s) not in seen:
            seen.add(tuple(s))
            out.append(s)
    return out


def cluster_phones(
    stats: TreeStats,
    phone_sets: Sequence[Sequence[int]],
    pdf_classes: Sequence[int] = (1,),
    extra_questions: Sequence[Sequence[int]] = (),
) -> list[list[int]]:
    """Questions (phone sets) by top-down binary clustering of ``phone_sets`` (cluster-phones),
    with ``extra_questions`` appended as train_deltas.sh does: the lines of ``questions.int``.

    Args:
        stats: tree statistics (:func:`~pykaldi2.hmm.tree_stats.acc_tree_stats`).
        phone_sets: the units to cluster (each list of phones is kept together; sets.int).
        pdf_classes: pdf-classes whose stats describe a phone (``--pdf-class-list``, default
            the middle state 1).
        extra_questions: extra_questions.int.
    """
    sets = [sorted(int(p) for p in s) for s in phone_sets]
    if not sets or any(not s for s in sets):
        raise ValueError("cluster_phones: empty phone set")
    c = stats.central_position
    keep = np.isin(stats.events[:, stats.pdf_class_key()], list(pdf_classes))
    points = []
    empty = 0
    for s in sets:
        rows = keep & np.isin(stats.events[:, c], s)
        points.append(_Gauss(stats.count[rows].sum(), stats.x1[rows].sum(0), stats.x2[rows].sum(0)))
        if points[-1].n == 0:
            empty += 1
            log.warning("cluster-phones: no stats available for phone set: %s", s)
    if empty + 1 >= len(sets):
        log.warning("cluster-phones: all or all but one of the phone sets have no data")
    assignments, clust, _ = tree_cluster(points, len(points), KaldiRandom(1))
    questions = _sets_of_phones(sets, assignments, clust)
    return questions + [sorted(int(p) for p in q) for q in extra_questions]


@dataclass
class Questions:
    """Compiled questions (Kaldi's ``questions.qst``).

    Attributes:
        phone: phone sets asked about at every context position, sorted and unique.
        pdf_class: sets of pdf-classes asked about: ``[0], [0, 1], ...`` (max classes - 1).
    """

    phone: list[tuple[int, ...]]
    pdf_class: list[tuple[int, ...]]

    def for_key(self, key: int) -> list[tuple[int, ...]]:
        """The questions of an EventMap key (-1: the pdf-class, else a context position)."""
        return self.pdf_class if key == -1 else self.phone


def compile_questions(questions: Sequence[Sequence[int]], max_num_pdf_classes: int) -> Questions:
    """compile-questions: sort each question, drop duplicates (warning as Kaldi), and add the
    pdf-class questions of a topology with at most ``max_num_pdf_classes`` classes per phone."""
    qs = [tuple(sorted(int(p) for p in q)) for q in questions]
    for q in qs:
        if len(set(q)) != len(q):
            raise ValueError(f"compile-questions: question with duplicate phones: {list(q)}")
    uniq = sorted(set(qs))
    if len(uniq) != len(qs):
        log.warning("compile-questions: %d duplicate questions", len(qs) - len(uniq))
    pdf_class = [tuple(range(i + 1)) for i in range(max_num_pdf_classes - 1)]
    return Questions(phone=uniq, pdf_class=pdf_class)
