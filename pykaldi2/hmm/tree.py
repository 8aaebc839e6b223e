"""Decision-tree building: Kaldi's build-tree (greedy splitting + post-clustering).

Each *root* (a line of roots.txt: ``shared|not-shared split|not-split phones...``) starts as
one leaf (shared: all its pdf-classes together) or one leaf per pdf-class (not-shared). The leaf
whose best question gains most log-likelihood is split, until ``max_leaves`` leaves or no split
gains ``thresh``. Then leaves of the same root are merged bottom-up while the loss is below
``cluster_thresh`` (-1: the gain of the last split, as Kaldi). The result is an EventMap::

    TE <P> ( per central phone: the root's subtree )      # TE -1 per pdf-class if not-shared
    SE <key> [phone set or pdf-classes] { yes no } ... CE <pdf_id>

:func:`best_split` is the fast kernel (statistics grouped by the key's value, every question
scored in one matrix product); :func:`best_split_ref` scores each question by summing its rows.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pykaldi2.hmm.blas import one_blas_thread
from pykaldi2.hmm.event_map import (
    PDF_CLASS,
    ConstantEventMap,
    SplitEventMap,
    TableEventMap,
)
from pykaldi2.hmm.kaldi_io import Tree, tree_bytes
from pykaldi2.hmm.tree_stats import TreeStats, gauss_objf
from pykaldi2.utils.errors import DataError

log = logging.getLogger(__name__)

Root = tuple[bool, bool, Sequence[int]]  # (shared, split, phones)


@dataclass
class Split:
    gain: float
    column: int  # column of TreeStats.events (W = the pdf-class)
    yes_set: tuple[int, ...]


def _questions_for(column: int, stats: TreeStats, values: np.ndarray, questions):
    if column != stats.pdf_class_key():
        return [tuple(q) for q in questions]
    vals = sorted(int(v) for v in values)
    if len(vals) <= 6:  # every non-empty proper subset of the pdf-classes present
        return [tuple(c) for r in range(1, len(vals)) for c in itertools.combinations(vals, r)]
    return [tuple(vals[:k]) for k in range(1, len(vals))]


def _columns(stats: TreeStats) -> list[int]:
    return list(range(stats.context_width + 1))


def best_split(
    stats: TreeStats, rows: np.ndarray, questions: Sequence[Sequence[int]], min_count: float = 0.0
) -> Split | None:
    """Best question for the leaf holding ``rows`` of ``stats`` (None if nothing splits it).

    For each key, statistics are summed per value of that key; a (Q, V) membership matrix then
    gives every question's "yes" statistics at once. Both sides must have > ``min_count``
    frames (and > 0).
    """
    n, x1, x2 = stats.count[rows], stats.x1[rows], stats.x2[rows]
    tot = (n.sum(), x1.sum(0), x2.sum(0))
    base = gauss_objf(*tot)
    best: Split | None = None
    for col in _columns(stats):
        vals, inv = np.unique(stats.events[rows, col], return_inverse=True)
        if len(vals) < 2:
            continue
        inv = inv.reshape(-1)
        vn = np.bincount(inv, weights=n, minlength=len(vals))
        v1 = np.zeros((len(vals), x1.shape[1]))
        v2 = np.zeros_like(v1)
        np.add.at(v1, inv, x1)
        np.add.at(v2, inv, x2)
        qs = _questions_for(col, stats, vals, questions)
        if not qs:
            continue
        member = np.zeros((len(qs), len(vals)))
        pos = {int(v): i for i, v in enumerate(vals)}
        for qi, q in enumerate(qs):
            for p in q:
                if p in pos:
                    member[qi, pos[p]] = 1.0
        yn, y1, y2 = member @ vn, member @ v1, member @ v2
        gain = gauss_objf(yn, y1, y2) + gauss_objf(tot[0] - yn, tot[1] - y1, tot[2] - y2) - base
        ok = (yn > max(min_count, 0.0)) & (tot[0] - yn > max(min_count, 0.0))
        if not ok.any():
            continue
        gain = np.where(ok, gain, -np.inf)
        qi = int(np.argmax(gain))
        if best is None or gain[qi] > best.gain + 1e-9:
            best = Split(float(gain[qi]), col, tuple(sorted(qs[qi])))
    return best


def best_split_ref(
    stats: TreeStats, rows: np.ndarray, questions: Sequence[Sequence[int]], min_count: float = 0.0
) -> Split | None:
    """Slow reference of :func:`best_split`: every question scored by summing its own rows."""

    def objf(r):
        return float(gauss_objf(stats.count[r].sum(), stats.x1[r].sum(0), stats.x2[r].sum(0)))

    base = objf(rows)
    tot = stats.count[rows].sum()
    best = None
    for col in _columns(stats):
        vals = np.unique(stats.events[rows, col])
        if len(vals) < 2:
            continue
        for q in _questions_for(col, stats, vals, questions):
            yes = rows[np.isin(stats.events[rows, col], list(q))]
            no = np.setdiff1d(rows, yes)
            ny = stats.count[yes].sum()
            if ny <= max(min_count, 0.0) or tot - ny <= max(min_count, 0.0):
                continue
            g = objf(yes) + objf(no) - base
            if best is None or g > best.gain + 1e-9:
                best = Split(g, col, tuple(sorted(q)))
    return best


class _Node:
    """A node of the tree under construction: a leaf (rows) or a split (col, yes_set, yes, no)."""

    def __init__(self, rows: np.ndarray, root: int) -> None:
        self.rows, self.root = rows, root
        self.split: Split | None = None
        self.yes: _Node | None = None
        self.no: _Node | None = None
        self.pdf = -1


@dataclass
class BuiltTree:
    """The result of :func:`build_tree`.

    Attributes:
        to_pdf: the EventMap (Python) -- ``map_context(to_pdf, phones, pdf_class)`` gives pdf_ids.
        num_pdfs: number of leaves after clustering.
        context_width, central_position: N and P.
        row_pdf: (N_stats,) pdf_id of each row of the statistics it was built from.
    """

    to_pdf: object
    num_pdfs: int
    context_width: int
    central_position: int
    row_pdf: np.ndarray

    def kaldi_tree(self):
        """The tree as :class:`pykaldi2.hmm.kaldi_io.Tree` (the ``tree`` file's contents)."""
        return Tree(self.to_pdf, self.context_width, self.central_position)

    def to_bytes(self) -> bytes:
        """Kaldi binary ``tree`` file contents (with the ``\\0B`` header, as build-tree's)."""
        return tree_bytes(self.kaldi_tree())

    def to_context_dependency(self):
        """The tree as ``khg.ContextDependency`` (for TransitionModel, graph compilation)."""
        return self.kaldi_tree().khg()


@one_blas_thread()
def build_tree(
    stats: TreeStats,
    questions: Sequence[Sequence[int]],
    roots: Sequence[Root],
    num_pdf_classes: Mapping[int, int],
    *,
    max_leaves: int = 0,
    thresh: float = 300.0,
    min_count: float = 0.0,
    cluster_thresh: float = -1.0,
) -> BuiltTree:
    """Build a decision tree from tree statistics (build-tree).

    Args:
        stats: :func:`~pykaldi2.hmm.tree_stats.acc_tree_stats` output.
        questions: phone sets asked about at every context position (:func:`cluster_phones`);
            questions about the pdf-class are generated from the classes present.
        roots: ``(shared, split, phones)`` per root (roots.txt); every phone of the topology
            must be in exactly one root.
        num_pdf_classes: phone -> number of pdf-classes (``topo.get_phone_to_num_pdf_classes``
            is a list indexed by phone; a dict works too).
        max_leaves: stop at this many leaves (0: no limit; Kaldi's ``--max-leaves``, the
            ``numleaves`` of train_deltas.sh).
        thresh: minimum log-likelihood gain of a split (Kaldi's ``--thresh``, 300).
        min_count: minimum frames on each side of a split.
        cluster_thresh: merge same-root leaves while the loss is below this; -1: the gain of
            the last split; 0: no merging.
    """
    w, pcol = stats.context_width, stats.pdf_class_key()
    central = stats.events[:, stats.central_position]
    seen_phones: dict[int, int] = {}
    for ri, (_, _, phones) in enumerate(roots):
        for p in phones:
            if p in seen_phones:
                raise DataError(
                    f"phone {p} is in two roots (lines {seen_phones[p] + 1}, {ri + 1})",
                    file="roots.txt",
                )
            seen_phones[int(p)] = ri
    unknown = set(np.unique(central).tolist()) - set(seen_phones)
    if unknown:
        raise DataError(
            f"phones {sorted(unknown)} have statistics but are in no root",
            file="roots.txt",
            fix="list every phone of phones.txt (except <eps> and #n) in roots.txt",
        )

    # initial leaves (Kaldi's GetStubMap)
    root_maps: list = []
    leaves: list[_Node] = []
    for ri, (shared, _, phones) in enumerate(roots):
        in_root = np.flatnonzero(np.isin(central, list(phones)))
        if shared:
            node = _Node(in_root, ri)
            leaves.append(node)
            root_maps.append(node)
        else:
            ncls = max(int(num_pdf_classes[int(p)]) for p in phones)
            table = []
            for c in range(ncls):
                node = _Node(in_root[stats.events[in_root, pcol] == c], ri)
                leaves.append(node)
                table.append(node)
            root_maps.append(("table", table))

    # greedy splitting (Kaldi's SplitDecisionTree)
    heap: list = []
    counter = itertools.count()

    def push(node: _Node) -> None:
        if not roots[node.root][1] or len(node.rows) < 2:
            return
        s = best_split(stats, node.rows, questions, min_count)
        if s is not None and s.gain > 0:
            node.split = s
            heapq.heappush(heap, (-s.gain, next(counter), node))

    for node in leaves:
        push(node)
    num_leaves = len(leaves)
    last_gain = 0.0
    while heap and (max_leaves <= 0 or num_leaves < max_leaves):
        neg_gain, _, node = heapq.heappop(heap)
        if -neg_gain < thresh:
            break
        s = node.split
        in_yes = np.isin(stats.events[node.rows, s.column], list(s.yes_set))
        node.yes = _Node(node.rows[in_yes], node.root)
        node.no = _Node(node.rows[~in_yes], node.root)
        last_gain = -neg_gain
        num_leaves += 1
        push(node.yes)
        push(node.no)
    log.info("build-tree: %d leaves after splitting (last gain %.1f)", num_leaves, last_gain)

    # post-clustering within each root (Kaldi's ClusterEventMapRestrictedByMap)
    final_leaves = [lf for r in root_maps for lf in _leaves_of(r)]
    thr = last_gain if cluster_thresh < 0 else cluster_thresh
    groups = _cluster_leaves(stats, final_leaves, thr)
    row_pdf = np.full(len(stats.count), -1, dtype=np.int64)
    for pdf, group in enumerate(groups):
        for lf in group:
            lf.pdf = pdf
            row_pdf[lf.rows] = pdf
    log.info("build-tree: %d pdfs after clustering (thresh %.1f)", len(groups), thr)

    table: list = [None] * (max(seen_phones) + 1)
    for ri, (_, _, phones) in enumerate(roots):
        sub = _to_event_map(root_maps[ri], w)
        for p in phones:
            table[int(p)] = sub
    to_pdf = TableEventMap(stats.central_position, table)
    return BuiltTree(to_pdf, len(groups), stats.context_width, stats.central_position, row_pdf)


def _leaves_of(r) -> list[_Node]:
    if isinstance(r, tuple):
        return [lf for n in r[1] for lf in _leaves_of(n)]
    if r.yes is None:
        return [r]
    return _leaves_of(r.yes) + _leaves_of(r.no)


def _to_event_map(r, w: int):
    if isinstance(r, tuple):
        return TableEventMap(PDF_CLASS, [_to_event_map(n, w) for n in r[1]])
    if r.yes is None:
        return ConstantEventMap(r.pdf)
    key = PDF_CLASS if r.split.column == w else r.split.column
    return SplitEventMap(
        key, list(r.split.yes_set), _to_event_map(r.yes, w), _to_event_map(r.no, w)
    )


def _cluster_leaves(stats: TreeStats, leaves: list[_Node], thresh: float) -> list[list[_Node]]:
    """Greedy bottom-up merging of leaves of the same root while the loss is below ``thresh``."""
    groups: list[list[_Node]] = []
    by_root: dict[int, list[int]] = {}
    for i, lf in enumerate(leaves):
        by_root.setdefault(lf.root, []).append(i)
    for _, idx in sorted(by_root.items()):
        clusters = [[leaves[i]] for i in idx]
        st = [
            (stats.count[lf.rows].sum(), stats.x1[lf.rows].sum(0), stats.x2[lf.rows].sum(0))
            for lf in (c[0] for c in clusters)
        ]
        while thresh > 0 and len(clusters) > 1:
            n = np.array([s[0] for s in st])
            a1 = np.stack([s[1] for s in st])
            a2 = np.stack([s[2] for s in st])
            own = gauss_objf(n, a1, a2)
            i, j = np.triu_indices(len(clusters), 1)
            loss = own[i] + own[j] - gauss_objf(n[i] + n[j], a1[i] + a1[j], a2[i] + a2[j])
            k = int(np.argmin(loss))
            if loss[k] >= thresh:
                break
            a, b = int(i[k]), int(j[k])
            clusters[a] += clusters[b]
            st[a] = (st[a][0] + st[b][0], st[a][1] + st[b][1], st[a][2] + st[b][2])
            del clusters[b], st[b]
        groups += clusters
    return groups
