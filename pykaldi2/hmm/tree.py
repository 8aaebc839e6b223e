"""Decision-tree building: Kaldi's build-tree (tree/build-tree.cc, build-tree-utils.cc).

The steps, each as Kaldi does it:

1. **Stub** (GetStubMap): one leaf per root of roots.txt (a "shared" root: all its phones and
   pdf-classes together; "not-shared": one leaf per pdf-class), tested by binary splits on the
   central phone (a table when every root has one phone).
2. **Splitting** (SplitDecisionTree): the leaf whose best question gains most log-likelihood
   is split, until ``max_leaves`` leaves or no split gains more than ``thresh`` (300). Questions
   are the compiled ones (:class:`~pykaldi2.hmm.questions.Questions`): phone sets at every
   context position, prefix sets of pdf-classes; roots marked not-split keep their stub leaves.
3. **Clustering** (ClusterEventMapRestrictedByMap): within each root, leaves are merged
   bottom-up (ClusterBottomUp) while the loss is at most ``cluster_thresh`` (-1: the smallest
   split gain of step 2).
4. **Rounding** (``--round-num-leaves``, default on): the number of leaves is brought down to a
   multiple of 8 by merging the cheapest pairs within roots (ClusterBottomUpCompartmentalized).
5. **Renumbering**: leaves (pdf-ids) numbered in the order of their ids.

Objective values are Kaldi's GaussClusterable objective rounded to float and combined in float
arithmetic, as Kaldi's ``BaseFloat`` does, so that on Kaldi's statistics the same questions win
and the same tree comes out. The result is an EventMap::

    SE <P> [phones] { ... } ... SE <key> [values] { yes no } ... CE <pdf_id>

:func:`best_split` is the fast kernel (statistics grouped by the key's value, every question
scored with one matrix product); :func:`best_split_ref` scores each question by summing its rows.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pykaldi2.hmm.blas import one_blas_thread
from pykaldi2.hmm.event_map import (
    PDF_CLASS,
    ConstantEventMap,
    SplitEventMap,
    TableEventMap,
    copy_event_map,
    map_events,
    renumber_event_map,
)
from pykaldi2.hmm.kaldi_io import Tree, tree_bytes
from pykaldi2.hmm.questions import Questions
from pykaldi2.hmm.tree_stats import TreeStats, objf32
from pykaldi2.utils.errors import DataError

log = logging.getLogger(__name__)

Root = tuple[bool, bool, Sequence[int]]  # (shared, split, phones)
f32 = np.float32


@dataclass
class Split:
    """A question for a leaf: its gain (float32), the EventMap key and the yes-set."""

    gain: np.float32
    key: int
    yes_set: tuple[int, ...]


def _keys(stats: TreeStats) -> list[int]:
    """Keys with questions, in Kaldi's (sorted) order: the pdf-class -1, then 0..W-1."""
    return [PDF_CLASS] + list(range(stats.context_width))


def _group(stats: TreeStats, rows: np.ndarray, col: int):
    """Per value of ``col``: (values, item counts, frame counts (V,), x1, x2 (V, D))."""
    vals, inv, items = np.unique(stats.events[rows, col], return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    vn = np.bincount(inv, weights=stats.count[rows], minlength=len(vals))
    v1 = np.zeros((len(vals), stats.dim))
    v2 = np.zeros_like(v1)
    np.add.at(v1, inv, stats.x1[rows])
    np.add.at(v2, inv, stats.x2[rows])
    return vals, items, vn, v1, v2


def _split_change(unsplit, yes_items, no_items, yes, no) -> np.ndarray:
    """Kaldi's objective change of splits (ComputeInitialSplit), float32: the no- and yes-side
    objectives summed in float (an empty side is left out), minus the unsplit objective."""
    o_no = objf32(*no)
    o_yes = objf32(*yes)
    this = np.where(
        (yes_items > 0) & (no_items > 0),
        (o_no + o_yes).astype(f32),
        np.where(yes_items > 0, o_yes, o_no),
    ).astype(f32)
    return (this - f32(unsplit)).astype(f32)


def best_split(stats: TreeStats, rows: np.ndarray, questions: Questions) -> Split | None:
    """Best question for the leaf holding ``rows`` of ``stats`` (None if nothing gains).

    Kaldi's FindBestSplit: for each key (pdf-class first, then context positions), a key absent
    from some event (a context-independent phone's context) is skipped; the first question with
    the largest float32 gain wins, and it must gain more than 0.
    """
    if len(rows) <= 1:
        return None
    tot = (stats.count[rows].sum(), stats.x1[rows].sum(0), stats.x2[rows].sum(0))
    unsplit = objf32(*tot)
    best: Split | None = None
    best_gain = f32(0.0)
    cols = stats.key_columns()
    for key in _keys(stats):
        vals, items, vn, v1, v2 = _group(stats, rows, cols[key])
        if vals[0] < 0:
            continue
        qs = questions.for_key(key)
        if not qs:
            continue
        pos = {int(v): i for i, v in enumerate(vals)}
        member = np.zeros((len(qs), len(vals)))
        for qi, q in enumerate(qs):
            for v in q:
                i = pos.get(v)
                if i is not None:
                    member[qi, i] = 1.0
        yes = (member @ vn, member @ v1, member @ v2)
        no = (tot[0] - yes[0], tot[1] - yes[1], tot[2] - yes[2])
        yes_items = member @ items
        change = _split_change(unsplit, yes_items, len(rows) - yes_items, yes, no)
        qi = int(np.argmax(change))
        if change[qi] > best_gain:
            best_gain = change[qi]
            best = Split(change[qi], key, tuple(qs[qi]))
    return best


def best_split_ref(stats: TreeStats, rows: np.ndarray, questions: Questions) -> Split | None:
    """Slow reference of :func:`best_split`: every question scored by summing its own rows,
    one at a time, as Kaldi's loop does."""

    def sums(r):
        return stats.count[r].sum(), stats.x1[r].sum(0), stats.x2[r].sum(0)

    if len(rows) <= 1:
        return None
    unsplit = objf32(*sums(rows))
    best, best_gain = None, f32(0.0)
    cols = stats.key_columns()
    for key in _keys(stats):
        v = stats.events[rows, cols[key]]
        if (v < 0).any():
            continue
        for q in questions.for_key(key):
            in_q = np.isin(v, list(q))
            yes, no = rows[in_q], rows[~in_q]
            parts = [objf32(*sums(r)) for r in (no, yes) if len(r)]
            this = f32(0.0)
            for o in parts:
                this = f32(this + o)
            change = f32(this - unsplit)
            if change > best_gain:
                best_gain, best = change, Split(change, key, tuple(q))
    return best


class _Splitter:
    """Kaldi's DecisionTreeSplitter: a leaf (with its rows and best split) or a split node."""

    def __init__(self, leaf: int, rows: np.ndarray, stats: TreeStats, questions: Questions):
        self.leaf, self.rows = leaf, rows
        self.stats, self.questions = stats, questions
        self.yes: _Splitter | None = None
        self.no: _Splitter | None = None
        self.split = best_split(stats, rows, questions)
        self.best = self.split.gain if self.split is not None else f32(0.0)

    def do_split(self, next_leaf: list[int]) -> None:
        if self.yes is None:
            s = self.split
            col = self.stats.key_columns()[s.key]
            in_yes = np.isin(self.stats.events[self.rows, col], list(s.yes_set))
            no_leaf = next_leaf[0]
            next_leaf[0] += 1
            self.yes = _Splitter(self.leaf, self.rows[in_yes], self.stats, self.questions)
            self.no = _Splitter(no_leaf, self.rows[~in_yes], self.stats, self.questions)
            self.leaf, self.rows = -1, None
        else:
            (self.yes if self.yes.best >= self.no.best else self.no).do_split(next_leaf)
        self.best = max(self.yes.best, self.no.best)

    def get_map(self):
        if self.yes is None:
            return ConstantEventMap(self.leaf)
        return SplitEventMap(
            self.split.key, list(self.split.yes_set), self.yes.get_map(), self.no.get_map()
        )


def get_stub_map(
    roots: Sequence[Root],
    num_pdf_classes: Mapping[int, int] | Sequence[int],
    central_position: int = 1,
) -> tuple[object, int]:
    """The initial tree (Kaldi's GetStubMap): ``(event_map, num_leaves)``, one leaf per shared
    root and one per pdf-class of a not-shared root, numbered in roots order; roots are told
    apart by binary splits on the central phone (a table when each root has one phone)."""
    p = central_position
    counter = [0]

    def stub(sets: list[list[int]], share: list[bool]):
        if len(sets) == 1:
            if share[0]:
                counter[0] += 1
                return ConstantEventMap(counter[0] - 1)
            n = max(int(num_pdf_classes[ph]) for ph in sets[0])
            table = []
            for _ in range(n):
                table.append(ConstantEventMap(counter[0]))
                counter[0] += 1
            return TableEventMap(PDF_CLASS, table)
        highest = max(max(s) for s in sets)
        if max(len(s) for s in sets) == 1 and len(sets) <= 2 * highest:
            table: list = [None] * (highest + 1)
            for s, sh in zip(sets, share):
                table[s[0]] = stub([s], [sh])
            return TableEventMap(p, table)
        half = len(sets) // 2
        first = sorted(ph for s in sets[:half] for ph in s)
        m1 = stub(sets[:half], share[:half])
        m2 = stub(sets[half:], share[half:])
        return SplitEventMap(p, first, m1, m2)

    sets = [sorted(int(p) for p in phones) for _, _, phones in roots]
    em = stub(sets, [bool(sh) for sh, _, _ in roots])
    return em, counter[0]


# ---- bottom-up clustering (tree/cluster-utils.cc) --------------------------------------------
class _Clusters:
    """Summed statistics of clusters with Kaldi's float Objf and Distance."""

    def __init__(self, n: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> None:
        self.n, self.x1, self.x2 = n.astype(np.float64), x1.copy(), x2.copy()
        self.obj = objf32(self.n, self.x1, self.x2)

    def distances(self, i: int, others: np.ndarray) -> np.ndarray:
        """Kaldi's Distance between cluster i and each of ``others``, float32 and >= 0:
        ``(objf(a) + objf(b)) - objf(a + b)`` in float arithmetic."""
        merged = objf32(
            self.n[i] + self.n[others], self.x1[i] + self.x1[others], self.x2[i] + self.x2[others]
        )
        d = ((self.obj[i] + self.obj[others]).astype(f32) - merged).astype(f32)
        return np.maximum(d, f32(0.0))

    def merge(self, i: int, j: int) -> None:
        self.n[i] += self.n[j]
        self.x1[i] += self.x1[j]
        self.x2[i] += self.x2[j]
        self.obj[i] = objf32(self.n[i], self.x1[i], self.x2[i])


def _renumber(assign: list[int], alive: Sequence[bool]) -> list[int]:
    """Follow merge chains; clusters renumbered by the index of their surviving point."""
    mapping, k = {}, 0
    for i, a in enumerate(alive):
        if a:
            mapping[i] = k
            k += 1
    out = []
    for i in range(len(assign)):
        j = i
        while assign[j] != j:
            j = assign[j]
        out.append(mapping[j])
    return out


def cluster_bottom_up(
    n: np.ndarray, x1: np.ndarray, x2: np.ndarray, thresh: float, min_clust: int = 0
) -> list[int]:
    """Kaldi's ClusterBottomUp: merge the closest pair while its distance is at most ``thresh``
    (and more than ``min_clust`` clusters remain). Returns the cluster (0..) of each point."""
    num = len(n)
    cl = _Clusters(n, x1, x2)
    thresh = f32(thresh)
    alive = [True] * num
    assign = list(range(num))
    dist: dict[tuple[int, int], np.float32] = {}
    queue: list = []
    for i in range(1, num):
        d = cl.distances(i, np.arange(i))
        for j in range(i):
            dist[i, j] = d[j]
            if d[j] <= thresh:
                queue.append((float(d[j]), i, j))
    heapq.heapify(queue)
    nclust = num

    def set_distances(i: int) -> None:
        ks = np.asarray([k for k in range(num) if k != i and alive[k]], dtype=np.int64)
        if not len(ks):
            return
        d = cl.distances(i, ks)
        for k, dk in zip(ks.tolist(), d):
            key = (i, k) if k < i else (k, i)
            dist[key] = dk
            if dk < thresh:
                heapq.heappush(queue, (float(dk), *key))
            if len(queue) >= num * num:  # Kaldi's ReconstructQueue
                queue[:] = [
                    (float(v), a, b)
                    for (a, b), v in dist.items()
                    if alive[a] and alive[b] and v <= thresh
                ]
                heapq.heapify(queue)

    while nclust > min_clust and queue:
        d, i, j = heapq.heappop(queue)
        if not (alive[i] and alive[j]):
            continue
        if abs(float(dist[i, j]) - d) > 1.0e-5 * abs(d):
            continue
        cl.merge(i, j)
        alive[j] = False
        assign[j] = i
        nclust -= 1
        set_distances(i)
    return _renumber(assign, alive)


def cluster_bottom_up_compartmentalized(
    parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], min_clust: int
) -> list[list[int]]:
    """Kaldi's ClusterBottomUpCompartmentalized with no threshold: merge the closest pair of
    any compartment (never across) until ``min_clust`` clusters remain. Returns per compartment
    the cluster of each point."""
    comps = [_Clusters(*p) for p in parts]
    alive = [[True] * len(p[0]) for p in parts]
    assign = [list(range(len(p[0]))) for p in parts]
    dist: dict[tuple[int, int, int], np.float32] = {}
    queue: list = []

    def push(c: int, i: int, ks: np.ndarray) -> None:
        d = comps[c].distances(i, ks)
        for k, dk in zip(ks.tolist(), d):
            key = (c, i, k) if k < i else (c, k, i)
            dist[key] = dk
            heapq.heappush(queue, (float(dk), *key))

    for c, p in enumerate(parts):
        for i in range(1, len(p[0])):
            push(c, i, np.arange(i))
    nclust = sum(len(p[0]) for p in parts)
    while nclust > min_clust and queue:
        d, c, i, j = heapq.heappop(queue)
        if not (alive[c][i] and alive[c][j]):
            continue
        if abs(float(dist[c, i, j]) - d) > 1.0e-5 * abs(d):
            continue
        comps[c].merge(i, j)
        alive[c][j] = False
        assign[c][j] = i
        nclust -= 1
        ks = np.asarray([k for k in range(len(alive[c])) if k != i and alive[c][k]], np.int64)
        if len(ks):
            push(c, i, ks)
    return [_renumber(a, al) for a, al in zip(assign, alive)]


# ---- build-tree ---------------------------------------------------------------------------------
@dataclass
class BuiltTree:
    """The result of :func:`build_tree`.

    Attributes:
        to_pdf: the EventMap (Python) -- ``map_context(to_pdf, phones, pdf_class)`` gives pdf_ids.
        num_pdfs: number of leaves.
        context_width, central_position: N and P.
        row_pdf: (N_stats,) pdf_id of each row of the statistics it was built from.
        info: what Kaldi's build-tree logs (leaves before/after clustering, like-impr ...).
    """

    to_pdf: object
    num_pdfs: int
    context_width: int
    central_position: int
    row_pdf: np.ndarray
    info: dict = field(default_factory=dict)

    def kaldi_tree(self):
        """The tree as :class:`pykaldi2.hmm.kaldi_io.Tree` (the ``tree`` file's contents)."""
        return Tree(self.to_pdf, self.context_width, self.central_position)

    def to_bytes(self) -> bytes:
        """Kaldi binary ``tree`` file contents (with the ``\\0B`` header, as build-tree's)."""
        return tree_bytes(self.kaldi_tree())

    def to_context_dependency(self):
        """The tree as ``khg.ContextDependency`` (for TransitionModel, graph compilation)."""
        return self.kaldi_tree().khg()


def _leaf_sums(stats: TreeStats, rows: np.ndarray, leaf_of_row: np.ndarray):
    """Summed statistics per leaf id among ``rows``: (leaf ids (sorted), n, x1, x2)."""
    leaves, inv = np.unique(leaf_of_row[rows], return_inverse=True)
    inv = inv.reshape(-1)
    n = np.bincount(inv, weights=stats.count[rows], minlength=len(leaves))
    x1 = np.zeros((len(leaves), stats.dim))
    x2 = np.zeros_like(x1)
    np.add.at(x1, inv, stats.x1[rows])
    np.add.at(x2, inv, stats.x2[rows])
    return leaves, n, x1, x2


def _objf_given(stats: TreeStats, leaf_of_row: np.ndarray) -> float:
    _, n, x1, x2 = _leaf_sums(stats, np.arange(len(stats.count)), leaf_of_row)
    return float(objf32(n, x1, x2).astype(np.float64).sum())


def _check_roots(stats: TreeStats, roots: Sequence[Root]) -> None:
    central = stats.events[:, stats.central_position]
    seen: dict[int, int] = {}
    for ri, (_, _, phones) in enumerate(roots):
        if not len(phones):
            raise DataError(f"line {ri + 1} has no phones", file="roots.txt")
        for p in phones:
            if int(p) in seen:
                raise DataError(
                    f"phone {p} is in two roots (lines {seen[int(p)] + 1}, {ri + 1})",
                    file="roots.txt",
                )
            seen[int(p)] = ri
    unknown = set(np.unique(central).tolist()) - set(seen)
    if unknown:
        raise DataError(
            f"phones {sorted(unknown)} have statistics but are in no root",
            file="roots.txt",
            fix="list every phone of phones.txt (except <eps> and #n) in roots.txt",
        )


@one_blas_thread()
def build_tree(
    stats: TreeStats,
    questions: Questions,
    roots: Sequence[Root],
    num_pdf_classes: Mapping[int, int] | Sequence[int],
    *,
    max_leaves: int = 0,
    thresh: float = 300.0,
    cluster_thresh: float = -1.0,
    round_num_leaves: bool = True,
) -> BuiltTree:
    """Build a decision tree from tree statistics (build-tree).

    Args:
        stats: summed :func:`~pykaldi2.hmm.tree_stats.acc_tree_stats` output.
        questions: :func:`~pykaldi2.hmm.questions.compile_questions` output.
        roots: ``(shared, split, phones)`` per line of roots.txt; every phone with statistics
            must be in exactly one root.
        num_pdf_classes: phone -> number of pdf-classes (``topo.get_phone_to_num_pdf_classes``).
        max_leaves: stop splitting at this many leaves (``--max-leaves``; 0: no limit).
        thresh: a split must gain more than this (``--thresh``, 300).
        cluster_thresh: merge same-root leaves while the loss is at most this; -1: the smallest
            split gain; 0: no merging (``--cluster-thresh``).
        round_num_leaves: reduce the number of leaves to a multiple of 8 (``--round-num-leaves``).
    """
    if thresh <= 0 and max_leaves <= 0:
        raise ValueError("build_tree: need thresh > 0 or max_leaves > 0")
    _check_roots(stats, roots)
    cols = stats.key_columns()
    all_rows = np.arange(len(stats.count))
    stub, num_leaves = get_stub_map(roots, num_pdf_classes, stats.central_position)
    stub_leaves = num_leaves
    log.info("build-tree: before building trees, map has %d leaves", num_leaves)
    stub_of_row = map_events(stub, stats.events, cols)

    # splitting, on the statistics of the roots to be split
    nonsplit = sorted(int(p) for _, split, phones in roots if not split for p in phones)
    split_rows = all_rows[~np.isin(stats.events[:, stats.central_position], nonsplit)]
    builders = [
        _Splitter(i, split_rows[stub_of_row[split_rows] == i], stats, questions)
        for i in range(int(stub_of_row[split_rows].max()) + 1 if len(split_rows) else 0)
    ]
    heap = [(-float(b.best), -i) for i, b in enumerate(builders)]
    heapq.heapify(heap)
    like_impr, smallest, count = f32(0.0), f32(1.0e20), 0
    next_leaf = [num_leaves]
    while heap and -heap[0][0] > thresh and (max_leaves <= 0 or next_leaf[0] < max_leaves):
        _, neg_i = heapq.heappop(heap)
        b = builders[-neg_i]
        smallest = min(smallest, b.best)
        like_impr = f32(like_impr + b.best)
        b.do_split(next_leaf)
        heapq.heappush(heap, (-float(b.best), neg_i))
        count += 1
    num_leaves = next_leaf[0]
    tree_split = copy_event_map(stub, {i: b.get_map() for i, b in enumerate(builders)})
    norm = stats.num_frames
    info = {
        "stub_leaves": stub_leaves,
        "num_splits": count,
        "leaves_after_split": num_leaves,
        "smallest_split": float(smallest) if count else None,
        "like_impr_per_frame": float(like_impr) / norm,
    }
    log.info(
        "build-tree: split %d times, %d leaves, like-impr %.5f per frame over %.0f frames",
        count,
        num_leaves,
        info["like_impr_per_frame"],
        norm,
    )
    if cluster_thresh < 0:
        cluster_thresh = float(smallest)
        log.info("build-tree: clustering threshold = smallest split %.3f", cluster_thresh)

    tree = tree_split
    removed = 0
    if cluster_thresh != 0:
        leaf_of_row = map_events(tree_split, stats.events, cols)
        mapping: dict[int, ConstantEventMap] = {}
        for comp in np.unique(stub_of_row).tolist():
            leaves, n, x1, x2 = _leaf_sums(stats, all_rows[stub_of_row == comp], leaf_of_row)
            assign = cluster_bottom_up(n, x1, x2, cluster_thresh)
            removed += len(leaves) - (max(assign) + 1)
            for k, a in enumerate(assign):
                mapping[int(leaves[k])] = ConstantEventMap(int(leaves[a]))
        tree = copy_event_map(tree_split, mapping)
        log.info("build-tree: removed %d leaves", removed)
    rounded = 0
    if round_num_leaves:
        required = ((num_leaves - removed) // 8) * 8
        tree, rounded = _round_leaves(stats, tree, stub, stub_of_row, required)
        if rounded:
            log.info("build-tree: rounded num leaves to a multiple of 8 by removing %d", rounded)
    final, num_pdfs = renumber_event_map(tree)
    row_pdf = map_events(final, stats.events, cols)
    info.update(
        removed_by_clustering=removed,
        removed_by_rounding=rounded,
        num_pdfs=num_pdfs,
        objf_change_clustering_per_frame=(
            _objf_given(stats, row_pdf)
            - _objf_given(stats, map_events(tree_split, stats.events, cols))
        )
        / norm,
    )
    log.info("build-tree: %d pdfs (%s)", num_pdfs, info)
    return BuiltTree(final, num_pdfs, stats.context_width, stats.central_position, row_pdf, info)


def _round_leaves(stats, tree, stub, stub_of_row, required: int):
    """ClusterEventMapToNClustersRestrictedByMap: merge within roots down to ``required``
    leaves. Returns ``(tree, number of leaves removed)``."""
    cols = stats.key_columns()
    num_comps = int(stub_of_row.max()) + 1
    if required < num_comps:
        log.warning("build-tree: num-clusters-required is less than size of map; not rounding")
        return tree, 0
    leaf_of_row = map_events(tree, stats.events, cols)
    all_rows = np.arange(len(stats.count))
    parts, ids = [], []
    need = required
    for comp in range(num_comps):
        rows = all_rows[stub_of_row == comp]
        if not len(rows):
            need -= 1
            continue
        leaves, n, x1, x2 = _leaf_sums(stats, rows, leaf_of_row)
        parts.append((n, x1, x2))
        ids.append(leaves)
    have = sum(len(i) for i in ids)
    if need > have:
        log.warning("build-tree: cannot get %d leaves (only %d non-empty)", required, have)
        return tree, 0
    assigns = cluster_bottom_up_compartmentalized(parts, need)
    mapping = {}
    removed = 0
    for leaves, assign in zip(ids, assigns):
        removed += len(leaves) - (max(assign) + 1)
        for k, a in enumerate(assign):
            mapping[int(leaves[k])] = ConstantEventMap(int(leaves[a]))
    return copy_event_map(tree, mapping), removed


__all__ = [
    "BuiltTree",
    "Root",
    "Split",
    "best_split",
    "best_split_ref",
    "build_tree",
    "cluster_bottom_up",
    "cluster_bottom_up_compartmentalized",
    "get_stub_map",
]
