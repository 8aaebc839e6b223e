"""Tree statistics: Kaldi's acc-tree-stats and the Gaussian clustering objective.

Statistics are kept per *event*: the phones in the context window plus the pdf-class, e.g. for
triphones ``(left, center, right, pdf_class)``; phone 0 stands for the utterance boundary, as in
Kaldi. Each event holds a frame count, the sum of the features and the sum of their squares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from pykaldi2.hmm.ali import split_to_phones
from pykaldi2.hmm.model import GmmModel
from pykaldi2.utils.errors import DataError

#: Kaldi's GaussClusterable variance floor.
VAR_FLOOR = 0.01
_LOG_2PI = float(np.log(2 * np.pi))


@dataclass
class TreeStats:
    """Sufficient statistics per context event (Kaldi's ``treeacc``).

    Attributes:
        events: (N, W + 1) int: phones at window positions 0..W-1, then the pdf-class.
        count: (N,) frame counts.
        x1: (N, D) sums of features.
        x2: (N, D) sums of squared features.
        context_width: W; central_position: P.
    """

    events: np.ndarray
    count: np.ndarray
    x1: np.ndarray
    x2: np.ndarray
    context_width: int = 3
    central_position: int = 1

    @property
    def dim(self) -> int:
        return int(self.x1.shape[1])

    def pdf_class_key(self) -> int:
        """Column of ``events`` holding the pdf-class (Kaldi's key -1)."""
        return self.context_width


def gauss_objf(count, x1, x2, var_floor: float = VAR_FLOOR):
    """Log-likelihood of data under its own ML diagonal Gaussian (GaussClusterable::Objf).

    Args:
        count: (...,) frame counts; x1, x2: (..., D) sums of x and x^2.

    Returns:
        (...,) ``-0.5 * count * (sum(log var) + D * (1 + log 2 pi))``, 0 where count <= 0.
    """
    count = np.asarray(count, dtype=np.float64)
    safe = np.where(count > 0, count, 1.0)[..., None]
    mean = x1 / safe
    var = np.maximum(x2 / safe - mean * mean, var_floor)
    d = x1.shape[-1]
    obj = -0.5 * count * (np.log(var).sum(-1) + d * (1.0 + _LOG_2PI))
    return np.where(count > 0, obj, 0.0)


def tid_to_pdf_class(model: GmmModel) -> np.ndarray:
    """(num_transition_ids + 1,) int: the pdf-class of each transition-id (Kaldi's
    TransitionIdToPdfClass: the self-loop pdf-class for self-loops, else the forward one; they
    differ in the chain topology)."""
    topo = model.tm.topo
    out = np.full(model.tm.num_transition_ids + 1, -1, dtype=np.int64)
    for tid in range(1, len(out)):
        st = topo.topology_for_phone(int(model.tid2phone[tid]))[int(model.tid2hmm_state[tid])]
        out[tid] = st.self_loop_pdf_class if model.tid_is_self_loop[tid] else st.forward_pdf_class
    return out


def acc_tree_stats(
    model: GmmModel,
    feats: Mapping[str, np.ndarray],
    alis: Mapping[str, np.ndarray],
    ci_phones: Iterable[int] = (),
    context_width: int = 3,
    central_position: int = 1,
) -> TreeStats:
    """Accumulate per-context Gaussian statistics from alignments (acc-tree-stats).

    Args:
        model: the model the alignments belong to (gives phones and HMM states per frame).
        feats: utt -> (T, D) features; alis: utt -> (T,) transition_ids.
        ci_phones: context-independent phones (silence): their own context is not recorded
            (set to 0), as Kaldi's ``--ci-phones``.
        context_width, central_position: N and P (3 and 1 for triphones).

    Returns:
        :class:`TreeStats` with one row per distinct event seen.
    """
    if not 0 <= central_position < context_width:
        raise ValueError(f"central_position {central_position} not in [0, {context_width})")
    ci = set(int(p) for p in ci_phones)
    tid2pdf_class = tid_to_pdf_class(model)
    ev_rows, xs = [], []
    for utt, ali in alis.items():
        if utt not in feats:
            continue
        x = np.asarray(feats[utt], dtype=np.float64)
        if len(x) != len(ali):
            raise DataError(
                f"alignment has {len(ali)} frames, features {len(x)}", utt=utt, fix="re-align"
            )
        segs = split_to_phones(model, ali)
        phones = [p for p, _, _ in segs]
        ev = np.zeros((len(ali), context_width + 1), dtype=np.int64)
        for i, (p, start, n) in enumerate(segs):
            for pos in range(context_width):
                j = i + pos - central_position
                ev[start : start + n, pos] = phones[j] if 0 <= j < len(phones) else 0
            if p in ci:
                ev[start : start + n, :context_width] = 0
                ev[start : start + n, central_position] = p
        ev[:, context_width] = tid2pdf_class[np.asarray(ali, dtype=np.int64)]
        ev_rows.append(ev)
        xs.append(x)
    if not ev_rows:
        raise DataError("acc_tree_stats: no aligned utterance has features", fix="check inputs")
    ev_all = np.concatenate(ev_rows)
    x_all = np.concatenate(xs)
    uniq, inv = np.unique(ev_all, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    count = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    x1 = np.zeros((len(uniq), x_all.shape[1]))
    x2 = np.zeros_like(x1)
    np.add.at(x1, inv, x_all)
    np.add.at(x2, inv, x_all * x_all)
    return TreeStats(uniq, count, x1, x2, context_width, central_position)


def sum_stats(stats: TreeStats, rows: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Summed (count, x1 (D,), x2 (D,)) of the given rows."""
    return float(stats.count[rows].sum()), stats.x1[rows].sum(0), stats.x2[rows].sum(0)
