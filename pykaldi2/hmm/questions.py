"""Phone questions for tree building: Kaldi's cluster-phones (+ compile-questions).

Phone sets (e.g. the word-position variants of one phone, ``sets.int``) are clustered top-down
into a binary tree by their central-phone Gaussian statistics; the phone set of every tree node
becomes one question "is the phone at this position in the set?". Extra questions (silence vs
non-silence, ``extra_questions.int``) are appended.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pykaldi2.hmm.tree_stats import TreeStats, gauss_objf


def _set_stats(stats: TreeStats, phone_sets, pdf_classes) -> tuple[np.ndarray, ...]:
    """(S,) counts and (S, D) sums of the central-phone stats of each phone set."""
    c = stats.central_position
    keep = np.isin(stats.events[:, stats.pdf_class_key()], list(pdf_classes))
    n = np.zeros(len(phone_sets))
    x1 = np.zeros((len(phone_sets), stats.dim))
    x2 = np.zeros_like(x1)
    for i, ps in enumerate(phone_sets):
        rows = keep & np.isin(stats.events[:, c], list(ps))
        n[i] = stats.count[rows].sum()
        x1[i] = stats.x1[rows].sum(0)
        x2[i] = stats.x2[rows].sum(0)
    return n, x1, x2


def _two_means(n, x1, x2, iters: int = 10) -> np.ndarray:
    """Split items in two, maximizing the summed Gaussian log-likelihood of both clusters.

    Deterministic: start from the split at the weighted median along the principal direction
    of the item means, then move items to the cluster where they cost least (k-means with the
    objective-change distance, Kaldi's ClusterKMeans). Returns a (S,) bool "in cluster 1".
    """
    w = np.maximum(n, 1e-10)
    means = x1 / w[:, None]
    mu = (means * w[:, None]).sum(0) / w.sum()
    cov = ((means - mu).T * w) @ (means - mu)
    _, vecs = np.linalg.eigh(cov)
    proj = (means - mu) @ vecs[:, -1]
    order = np.argsort(proj, kind="stable")
    side = np.zeros(len(n), dtype=bool)
    side[order[len(n) // 2 :]] = True
    for _ in range(iters):
        changed = False
        for i in range(len(n)):
            a = side.copy()
            b = side.copy()
            a[i], b[i] = False, True
            if a.all() or (~a).all() or b.all() or (~b).all():
                continue
            obj = [
                gauss_objf(n[s].sum(), x1[s].sum(0), x2[s].sum(0))
                + gauss_objf(n[~s].sum(), x1[~s].sum(0), x2[~s].sum(0))
                for s in (a, b)
            ]
            best = bool(obj[1] > obj[0])
            if best != side[i]:
                side[i] = best
                changed = True
        if not changed:
            break
    return side


def cluster_phones(
    stats: TreeStats,
    phone_sets: Sequence[Sequence[int]],
    pdf_classes: Sequence[int] = (1,),
    extra_questions: Sequence[Sequence[int]] = (),
) -> list[list[int]]:
    """Questions (phone sets) by top-down binary clustering of ``phone_sets`` (cluster-phones).

    Args:
        stats: tree statistics (:func:`acc_tree_stats`).
        phone_sets: the units to cluster (each list of phones is kept together).
        pdf_classes: pdf-classes whose stats describe a phone (Kaldi's ``--pdf-class-list``,
            default the middle state 1).
        extra_questions: questions appended as they are.

    Returns:
        Sorted, de-duplicated phone lists; each node of the clustering tree is one question.
    """
    sets = [sorted(int(p) for p in s) for s in phone_sets if len(s)]
    n, x1, x2 = _set_stats(stats, sets, pdf_classes)
    questions: list[list[int]] = []

    def recurse(items: np.ndarray) -> None:
        questions.append(sorted(p for i in items for p in sets[i]))
        seen = items[n[items] > 0]
        if len(items) < 2:
            return
        if len(seen) < 2:  # no stats to split on: split the list in halves
            half = len(items) // 2
            recurse(items[:half])
            recurse(items[half:])
            return
        side = _two_means(n[seen], x1[seen], x2[seen])
        left = [i for i, s in zip(seen, side) if not s]
        right = [i for i, s in zip(seen, side) if s]
        unseen = [i for i in items if n[i] <= 0]
        left += unseen  # phones without data go with the first cluster
        recurse(np.asarray(sorted(left)))
        recurse(np.asarray(sorted(right)))

    recurse(np.arange(len(sets)))
    questions += [sorted(int(p) for p in q) for q in extra_questions if len(q)]
    out, seen_q = [], set()
    for q in questions:
        if tuple(q) not in seen_q:
            seen_q.add(tuple(q))
            out.append(q)
    return out
