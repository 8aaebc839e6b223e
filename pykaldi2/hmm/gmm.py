"""GMM statistics and re-estimation: Kaldi's gmm-acc-stats-ali, gmm-sum-accs, gmm-est,
gmm-mixup and gmm-boost-silence, in numpy.

The Gaussians of an ``AmDiagGmm`` are handled as flat arrays (:class:`GmmArrays`: all Gaussians
of all pdfs stacked, ``offsets`` marking each pdf's range) in Kaldi's natural parameters
(weights, gconsts, means * inverse variances, inverse variances; float32 as Kaldi stores them).
Statistics (:class:`GmmAccs`) are flat too: per Gaussian occupancy and first/second-order sums
in float64, plus transition counts, so that jobs' statistics add up and go to disk as one file.

:class:`GmmAccumulator` is the fast kernel: frames are buffered (a bounded number), grouped by
pdf and scored in one matrix product per pdf. :func:`gmm_acc_stats_ali_ref` is the slow,
obviously-correct reference (one ``AccumAmDiagGmm.accumulate_for_gmm`` call per frame, Kaldi's
own code, as gmm-acc-stats-ali.cc does); a unit test checks that both give the same statistics.

Re-estimation follows Kaldi's MleDiagGmmUpdate (a Gaussian with too little occupancy or weight
is not updated, and removed unless it is the pdf's last) and the transition model's MleUpdate.
Mixing up is Kaldi's SplitByCount (Gaussians allotted to pdfs by ``occ ** power``, at most one
per ``min_count`` frames, ties between pdfs broken as Kaldi's ``std::priority_queue``
breaks them; the heaviest component split, means perturbed by ``perturb_factor``
standard deviations), with the perturbations of Kaldi's RandGauss replayed from a fresh stream
(:class:`~pykaldi2.hmm.kaldi_rand.KaldiRandom`, seed 1 as every Kaldi process) in pdf order: the
same inputs give Kaldi's split Gaussians, whatever the job split or order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from pykaldi2.hmm.model import GmmModel
from pykaldi2.utils.config import ConfigMixin, option
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write

log = logging.getLogger(__name__)


# ---- the Gaussians as arrays -----------------------------------------------------------------
@dataclass
class GmmArrays:
    """All Gaussians of an acoustic model. G Gaussians in total, P pdfs, dimension D.

    Attributes:
        offsets: (P + 1,) int: pdf p owns Gaussians ``offsets[p]:offsets[p + 1]``.
        weights: (G,) float32.
        means: (G, D) float32.
        inv_vars: (G, D) float32, 1 / variance.
        means_invvars: (G, D) float32, mean / variance (Kaldi's stored form).
        gconsts: (G,) float32 (Kaldi's ComputeGconsts).
    """

    offsets: np.ndarray
    weights: np.ndarray
    means: np.ndarray
    inv_vars: np.ndarray
    means_invvars: np.ndarray
    gconsts: np.ndarray

    @property
    def num_pdfs(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_gauss(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return int(self.inv_vars.shape[1])

    def pdf_of_gauss(self) -> np.ndarray:
        """(G,) int: the pdf of each Gaussian."""
        return np.repeat(np.arange(self.num_pdfs), np.diff(self.offsets))

    def to_am(self):
        """A ``khg.AmDiagGmm`` with these Gaussians (gconsts computed by Kaldi's code)."""
        from pykaldi2.kaldi import khg

        am = khg.AmDiagGmm()
        for p in range(self.num_pdfs):
            a, b = int(self.offsets[p]), int(self.offsets[p + 1])
            gmm = khg.DiagGmm(nmix=b - a, dim=self.dim)
            gmm.set_weights(np.ascontiguousarray(self.weights[a:b], dtype=np.float32))
            gmm.set_invvars_and_means(
                np.ascontiguousarray(self.inv_vars[a:b], dtype=np.float32),
                np.ascontiguousarray(self.means[a:b], dtype=np.float32),
            )
            gmm.compute_gconsts()
            am.add_pdf(gmm)
        return am


def am_arrays(am) -> GmmArrays:
    """The Gaussians of a ``khg.AmDiagGmm`` as :class:`GmmArrays`."""
    w, mu, mi, iv, gc, sizes = [], [], [], [], [], [0]
    for p in range(am.num_pdfs):
        g = am.get_pdf(p)
        w.append(np.asarray(g.weights, dtype=np.float32).reshape(-1))
        mu.append(np.asarray(g.means, dtype=np.float32))
        mi.append(np.asarray(g.means_invvars, dtype=np.float32))
        iv.append(np.asarray(g.inv_vars, dtype=np.float32))
        gc.append(np.asarray(g.gconsts, dtype=np.float32).reshape(-1))
        sizes.append(len(w[-1]))
    return GmmArrays(
        offsets=np.cumsum(sizes).astype(np.int64),
        weights=np.concatenate(w),
        means=np.concatenate(mu),
        inv_vars=np.concatenate(iv),
        means_invvars=np.concatenate(mi),
        gconsts=np.concatenate(gc),
    )


def arrays_from_normal(
    offsets: np.ndarray, weights: np.ndarray, means: np.ndarray, variances: np.ndarray
) -> GmmArrays:
    """Kaldi's stored form from weights (G,), means and variances (G, D)
    (DiagGmmNormal::CopyToDiagGmm: inverse variances and mean * inverse variance in float),
    gconsts as DiagGmm::ComputeGconsts."""
    iv = (np.float32(1.0) / variances.astype(np.float32)).astype(np.float32)
    mu = means.astype(np.float32)
    a = GmmArrays(
        offsets=np.asarray(offsets, dtype=np.int64),
        weights=np.asarray(weights, dtype=np.float32),
        means=mu,
        inv_vars=iv,
        means_invvars=(mu * iv).astype(np.float32),
        gconsts=np.zeros(len(weights), np.float32),
    )
    a.gconsts = _gconsts(a)
    return a


# ---- statistics ----------------------------------------------------------------------------------
@dataclass
class GmmAccs:
    """Accumulated statistics (Kaldi's ``*.acc``: transition counts + AccumAmDiagGmm).

    Attributes:
        offsets: (P + 1,) the Gaussian ranges of the model that accumulated them.
        occ: (G,) float64 occupancies; x1, x2: (G, D) float64 sums of x and x^2.
        trans: (num_transition_ids + 1,) float64 transition counts.
        tot_like: total log-likelihood of the frames under the model that accumulated them.
        num_frames: number of frames accumulated.
        num_done, num_err: utterances accumulated / skipped.
    """

    offsets: np.ndarray
    occ: np.ndarray
    x1: np.ndarray
    x2: np.ndarray
    trans: np.ndarray
    tot_like: float = 0.0
    num_frames: int = 0
    num_done: int = 0
    num_err: int = 0

    @property
    def like_per_frame(self) -> float:
        return self.tot_like / max(self.num_frames, 1)

    def pdf_occs(self) -> np.ndarray:
        """(P,) float: occupancy of each pdf (gmm-est's ``--write-occs``)."""
        return np.add.reduceat(self.occ, self.offsets[:-1]) * (np.diff(self.offsets) > 0)

    def add(self, other: GmmAccs) -> GmmAccs:
        """Add ``other`` (from the same model) into these statistics (gmm-sum-accs)."""
        if not np.array_equal(self.offsets, other.offsets) or len(self.trans) != len(other.trans):
            raise DataError("gmm-sum-accs: statistics of different models", fix="re-accumulate")
        self.occ += other.occ
        self.x1 += other.x1
        self.x2 += other.x2
        self.trans += other.trans
        self.tot_like += other.tot_like
        self.num_frames += other.num_frames
        self.num_done += other.num_done
        self.num_err += other.num_err
        return self


def init_accs(model: GmmModel, arrays: GmmArrays | None = None) -> GmmAccs:
    """Zero statistics for every Gaussian and transition of ``model``."""
    offsets = (arrays or am_arrays(model.am)).offsets
    g, d = int(offsets[-1]), model.dim
    return GmmAccs(
        offsets=offsets.copy(),
        occ=np.zeros(g),
        x1=np.zeros((g, d)),
        x2=np.zeros((g, d)),
        trans=np.zeros(model.tm.num_transition_ids + 1),
    )


def write_accs(path: str | os.PathLike, accs: GmmAccs) -> None:
    """Write statistics (``N.JOB.acc``) as an ``.npz``, atomically."""
    with atomic_write(path, "wb") as f:
        np.savez(
            f,
            offsets=accs.offsets,
            occ=accs.occ,
            x1=accs.x1,
            x2=accs.x2,
            trans=accs.trans,
            counts=np.asarray([accs.tot_like, accs.num_frames, accs.num_done, accs.num_err]),
        )


def read_accs(path: str | os.PathLike) -> GmmAccs:
    """Read statistics written by :func:`write_accs`."""
    try:
        with np.load(os.fspath(path)) as z:
            like, frames, done, err = z["counts"].tolist()
            return GmmAccs(
                z["offsets"], z["occ"], z["x1"], z["x2"], z["trans"],
                like, int(frames), int(done), int(err),
            )  # fmt: skip
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"cannot read GMM statistics: {e}", file=str(path)) from None


def gmm_sum_accs(paths: Iterable[str | os.PathLike]) -> GmmAccs:
    """gmm-sum-accs: the sum of the statistics files ``paths`` (in the given order)."""
    total = None
    for p in paths:
        a = read_accs(p)
        total = a if total is None else total.add(a)
    if total is None:
        raise DataError("gmm-sum-accs: no statistics files")
    return total


def check_ali(utt: str, feats: np.ndarray, ali: np.ndarray, model: GmmModel) -> None:
    """A clear error when ``ali`` (T,) does not fit ``feats`` (T, D) and ``model``."""
    if feats.ndim != 2 or feats.shape[1] != model.dim:
        raise DataError(
            f"features have shape {feats.shape}, the model wants (T, {model.dim})",
            utt=utt,
            fix="use the same feature type (and LDA/deltas) the model was trained on",
        )
    if len(ali) != feats.shape[0]:
        raise DataError(
            f"alignment has {len(ali)} frames, features have {feats.shape[0]}",
            utt=utt,
            fix="re-align with these features",
        )
    if len(ali) and (ali.min() < 1 or ali.max() > model.tm.num_transition_ids):
        raise DataError(
            "alignment has transition-ids outside the model",
            utt=utt,
            fix="the alignment belongs to another model; run convert_ali",
        )


class GmmAccumulator:
    """gmm-acc-stats-ali over a stream of utterances with bounded memory.

    Frames are buffered up to ``buffer_frames`` and then accumulated pdf by pdf: posteriors of
    the pdf's Gaussians (log-likelihoods ``gconst + x . (mu/var) - 0.5 x^2 . (1/var)``, as
    DiagGmm::LogLikelihoods) and their weighted sums, in float64.

    >>> acc = GmmAccumulator(model)
    >>> for utt, x, ali in stream:
    ...     acc.add(utt, x, ali)
    >>> accs = acc.finish()
    """

    def __init__(self, model: GmmModel, buffer_frames: int = 50000) -> None:
        self.model = model
        self.arrays = am_arrays(model.am)
        self.accs = init_accs(model, self.arrays)
        self.buffer_frames = buffer_frames
        self._x: list[np.ndarray] = []
        self._pdf: list[np.ndarray] = []
        self._w: list[np.ndarray | None] = []
        self._xs: list[np.ndarray] = []
        self._n = 0

    def add(
        self,
        utt: str,
        feats: np.ndarray,
        ali: np.ndarray,
        weights: np.ndarray | None = None,
        stats_feats: np.ndarray | None = None,
    ) -> None:
        """Add one utterance: ``feats`` (T, D), ``ali`` (T,) transition-ids and optional (T,)
        frame weights (e.g. 0 for silence). With ``stats_feats`` (T, D'), posteriors come
        from ``feats`` and the statistics from ``stats_feats`` (gmm-acc-stats-twofeats; the
        model's accumulators then have dimension D')."""
        ali = np.asarray(ali, dtype=np.int64)
        x = np.asarray(feats, dtype=np.float32)
        check_ali(utt, x, ali, self.model)
        if stats_feats is not None:
            self._xs.append(np.asarray(stats_feats, dtype=np.float32))
        if weights is None:
            self.accs.trans += np.bincount(ali, minlength=len(self.accs.trans))
        else:
            self.accs.trans += np.bincount(ali, weights=weights, minlength=len(self.accs.trans))
        self._x.append(x)
        self._pdf.append(self.model.tid2pdf[ali])
        self._w.append(None if weights is None else np.asarray(weights, dtype=np.float64))
        self._n += len(x)
        self.accs.num_done += 1
        if self._n >= self.buffer_frames:
            self._flush()

    def _flush(self) -> None:
        if not self._x:
            return
        x_all = np.concatenate(self._x)
        pdf_all = np.concatenate(self._pdf)
        w_all = (
            None
            if all(w is None for w in self._w)
            else np.concatenate(
                [np.ones(len(x)) if w is None else w for x, w in zip(self._x, self._w)]
            )
        )
        xs_all = np.concatenate(self._xs) if self._xs else None
        self._x, self._pdf, self._w, self._xs, self._n = [], [], [], [], 0
        accumulate_frames(self.arrays, self.accs, x_all, pdf_all, w_all, xs_all)

    def finish(self) -> GmmAccs:
        """Accumulate what is buffered and return the statistics."""
        self._flush()
        return self.accs


def accumulate_frames(
    arrays: GmmArrays,
    accs: GmmAccs,
    x_all: np.ndarray,
    pdf_all: np.ndarray,
    weights: np.ndarray | None = None,
    x_stats: np.ndarray | None = None,
) -> None:
    """Add frames ``x_all`` (N, D) of pdfs ``pdf_all`` (N,) (frame weights (N,) optional) to
    ``accs``: Gaussian posteriors within each pdf, occupancies and first/second-order sums.
    With ``x_stats`` (N, D'), the posteriors come from ``x_all`` and the sums from
    ``x_stats`` (gmm-acc-stats-twofeats)."""
    order = np.argsort(pdf_all, kind="stable")
    pdfs, starts = np.unique(pdf_all[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for p, s, e in zip(pdfs.tolist(), starts.tolist(), ends.tolist()):
        idx = order[s:e]
        a, b = int(arrays.offsets[p]), int(arrays.offsets[p + 1])
        x = x_all[idx].astype(np.float64)
        ll = (
            arrays.gconsts[a:b].astype(np.float64)
            + x @ arrays.means_invvars[a:b].T.astype(np.float64)
            - 0.5 * (x * x) @ arrays.inv_vars[a:b].T.astype(np.float64)
        )  # (N, G_p)
        mx = ll.max(axis=1, keepdims=True)
        post = np.exp(ll - mx)
        norm = post.sum(axis=1, keepdims=True)
        post /= norm
        frame_ll = mx[:, 0] + np.log(norm[:, 0])
        if weights is not None:
            w = weights[idx]
            post *= w[:, None]
            accs.tot_like += float(frame_ll @ w)
            accs.num_frames += int(np.count_nonzero(w))
        else:
            accs.tot_like += float(frame_ll.sum())
            accs.num_frames += len(idx)
        accs.occ[a:b] += post.sum(axis=0)
        if x_stats is not None:
            x = x_stats[idx].astype(np.float64)
        accs.x1[a:b] += post.T @ x
        accs.x2[a:b] += post.T @ (x * x)


def gmm_acc_stats_ali(
    model: GmmModel,
    feats: Mapping[str, np.ndarray],
    alis: Mapping[str, np.ndarray],
    accs: GmmAccs | None = None,
) -> GmmAccs:
    """Accumulate GMM and transition statistics along fixed alignments (gmm-acc-stats-ali).

    Args:
        model: the model whose Gaussians give the posteriors within each pdf.
        feats: utt -> (T, D) float features.
        alis: utt -> (T,) transition_ids. Utterances without features are skipped.
        accs: statistics to add to (new ones when ``None``).

    Returns:
        The statistics (``accs`` with these added, if given).
    """
    acc = GmmAccumulator(model)
    for utt, ali in alis.items():
        if utt not in feats:
            log.warning("no features for utterance %s; skipped", utt)
            acc.accs.num_err += 1
            continue
        acc.add(utt, feats[utt], ali)
    out = acc.finish()
    return out if accs is None else accs.add(out)


def gmm_acc_stats_ali_ref(
    model: GmmModel, feats: Mapping[str, np.ndarray], alis: Mapping[str, np.ndarray]
) -> GmmAccs:
    """Slow reference of :func:`gmm_acc_stats_ali`: one Kaldi ``accumulate_for_gmm`` call per
    frame (float posteriors, as gmm-acc-stats-ali.cc), converted to :class:`GmmAccs`."""
    from pykaldi2.kaldi import khg

    kacc = khg.AccumAmDiagGmm()
    kacc.init(model=model.am, flags=khg.GmmUpdateFlags.kGmmAll)
    accs = init_accs(model)
    for utt, ali in alis.items():
        if utt not in feats:
            continue
        x = np.asarray(feats[utt], dtype=np.float32)
        ali = np.asarray(ali, dtype=np.int64)
        check_ali(utt, x, ali, model)
        for t, tid in enumerate(ali):
            accs.trans[tid] += 1.0
            accs.tot_like += kacc.accumulate_for_gmm(
                model=model.am, data=x[t], gmm_index=int(model.tid2pdf[tid]), weight=1.0
            )
        accs.num_frames += len(ali)
        accs.num_done += 1
    for p in range(kacc.num_accs):
        a, b = int(accs.offsets[p]), int(accs.offsets[p + 1])
        k = kacc.get_acc(p)
        accs.occ[a:b] = np.asarray(k.occupancy).reshape(-1)
        accs.x1[a:b] = np.asarray(k.mean_accumulator)
        accs.x2[a:b] = np.asarray(k.variance_accumulator)
    return accs


# ---- re-estimation ---------------------------------------------------------------------------------
@dataclass
class MleOptions(ConfigMixin):
    """MleDiagGmmOptions (Kaldi's defaults) and MleTransitionUpdateConfig."""

    min_gaussian_occupancy: float = option(10.0, ge=0)
    min_gaussian_weight: float = option(1.0e-5, ge=0)
    min_variance: float = option(0.001, gt=0)
    remove_low_count_gaussians: bool = True
    transition_floor: float = option(0.01, ge=0, le=1)
    transition_min_count: float = option(5.0, ge=0)


@dataclass
class EstStats:
    """What gmm-est logs: likelihood and the objective improvements."""

    like_per_frame: float
    num_frames: int
    gmm_impr_per_frame: float
    trans_impr_per_frame: float
    num_gauss: int
    floored_elements: int = 0
    removed: int = 0
    info: dict = field(default_factory=dict)


def _ml_objective(arrays: GmmArrays, accs: GmmAccs) -> float:
    """Kaldi's MlObjective summed over pdfs: occ . gconst + x1 . (mu/var) - 0.5 x2 . (1/var)."""
    return float(
        accs.occ @ arrays.gconsts.astype(np.float64)
        + np.sum(accs.x1 * arrays.means_invvars)
        - 0.5 * np.sum(accs.x2 * arrays.inv_vars)
    )


def mle_am_diag_gmm_update(arrays: GmmArrays, accs: GmmAccs, opts: MleOptions):
    """MleAmDiagGmmUpdate (flags mvw): new :class:`GmmArrays` and ``(objf change, count,
    floored variance elements, removed Gaussians)``.

    Per pdf: a Gaussian with occupancy > ``min_gaussian_occupancy`` and weight >
    ``min_gaussian_weight`` gets weight occ/total, mean x1/occ, variance x2/occ - mean^2
    floored at ``min_variance``; the others keep their parameters and are removed (weights
    renormalized) unless the last of the pdf, which keeps weight max(occ/total, floor).
    """
    if not np.array_equal(arrays.offsets, accs.offsets):
        raise DataError("gmm-est: statistics do not belong to this model", fix="re-accumulate")
    pdf = arrays.pdf_of_gauss()
    sizes = np.diff(arrays.offsets)
    occ_sum = accs.pdf_occs()[pdf]
    prob = np.where(occ_sum > 0, accs.occ / np.where(occ_sum > 0, occ_sum, 1.0), 1.0 / sizes[pdf])
    ok = (accs.occ > opts.min_gaussian_occupancy) & (prob > opts.min_gaussian_weight)
    var = 1.0 / arrays.inv_vars.astype(np.float64)
    means = arrays.means_invvars.astype(np.float64) * var
    w = prob.copy()
    occ_safe = np.where(ok, accs.occ, 1.0)[:, None]
    new_mean = accs.x1 / occ_safe
    new_var = accs.x2 / occ_safe - new_mean**2
    floored = ok[:, None] & (new_var < opts.min_variance)
    new_var = np.maximum(new_var, opts.min_variance)
    means[ok] = new_mean[ok]
    var[ok] = new_var[ok]
    # low-count Gaussians: removed in order, except the pdf's last one
    remove = np.zeros(len(w), dtype=bool)
    for p in np.unique(pdf[~ok]).tolist():
        a, b = int(arrays.offsets[p]), int(arrays.offsets[p + 1])
        low = np.flatnonzero(~ok[a:b]) + a
        if opts.remove_low_count_gaussians:
            take = low[: (b - a) - 1]
            remove[take] = True
            low = low[len(take) :]
        w[low] = np.maximum(prob[low], opts.min_gaussian_weight)
    new = arrays_from_normal(arrays.offsets, w, means, var)
    count = float(accs.occ.sum())
    impr = _ml_objective(new, accs) - _ml_objective(arrays, accs)
    if remove.any():
        keep = ~remove
        new_sizes = np.bincount(pdf[keep], minlength=arrays.num_pdfs)
        wk = new.weights[keep].astype(np.float64)
        wk /= np.bincount(pdf[keep], weights=wk, minlength=arrays.num_pdfs)[pdf[keep]]
        new = GmmArrays(
            offsets=np.concatenate([[0], np.cumsum(new_sizes)]).astype(np.int64),
            weights=wk.astype(np.float32),
            means=new.means[keep],
            inv_vars=new.inv_vars[keep],
            means_invvars=new.means_invvars[keep],
            gconsts=np.zeros(int(keep.sum()), np.float32),
        )
        new.gconsts = _gconsts(new)
    return new, (impr, count, int(floored.sum()), int(remove.sum()))


def _gconsts(a: GmmArrays) -> np.ndarray:
    """Kaldi's DiagGmm::ComputeGconsts in float: log w - D/2 log 2 pi + 1/2 sum log(1/var)
    - 1/2 sum (mu/var)^2 var."""
    iv = a.inv_vars.astype(np.float64)
    mi = a.means_invvars.astype(np.float64)
    with np.errstate(divide="ignore"):
        g = (
            np.log(a.weights.astype(np.float64))
            - 0.5 * a.dim * np.log(2 * np.pi)
            + 0.5 * np.log(iv).sum(1)
            - 0.5 * (mi * mi / iv).sum(1)
        )
    return g.astype(np.float32)


class _StdPriorityQueue:
    """``std::priority_queue`` (a max-heap on ``less``) with libstdc++'s push_heap / pop_heap,
    so that equal keys leave the queue in the order they leave Kaldi's: GetSplitTargets meets
    ties often (at gmm-mixup the occupancies are whole frame counts; AN4 tri1: pdfs 323 and
    378, 720 frames each), and which of the tied pdfs gets the Gaussian decides the model."""

    def __init__(self, less) -> None:
        self.c: list = []
        self.less = less

    def _sift_up(self, hole: int, top: int, value) -> None:  # std::__push_heap
        c, less = self.c, self.less
        parent = (hole - 1) // 2
        while hole > top and less(c[parent], value):
            c[hole] = c[parent]
            hole = parent
            parent = (hole - 1) // 2
        c[hole] = value

    def push(self, value) -> None:
        self.c.append(value)
        self._sift_up(len(self.c) - 1, 0, value)

    def top(self):
        return self.c[0]

    def pop(self) -> None:  # std::pop_heap (__pop_heap + __adjust_heap), then pop_back
        c, less = self.c, self.less
        n = len(c) - 1
        value, c[n] = c[n], c[0]
        hole = child = 0
        while child < (n - 1) // 2:  # n >= 1 here: // truncates as C++'s /
            child = 2 * (child + 1)
            if less(c[child], c[child - 1]):
                child -= 1
            c[hole] = c[child]
            hole = child
        if n % 2 == 0 and n >= 2 and child == (n - 2) // 2:
            child = 2 * (child + 1)
            c[hole] = c[child - 1]
            hole = child - 1
        if n > 0:
            self._sift_up(hole, 0, value)
        c.pop()


def get_split_targets(occs: np.ndarray, target: int, power: float, min_count: float) -> np.ndarray:
    """Kaldi's GetSplitTargets: Gaussians per pdf for ``target`` in total, given out one at a
    time to the pdf with the largest ``occ ** power / n`` (a float ``pow``, compared in
    double), none beyond one per ``min_count`` frames. Ties are broken as Kaldi's
    ``std::priority_queue`` breaks them (:class:`_StdPriorityQueue`). Returns (P,) int
    targets."""
    occs = np.asarray(occs, dtype=np.float32)
    num = len(occs)
    # pow in double, stored in a float (model-common.cc: BaseFloat occ = pow(occ, power))
    score = np.power(occs.astype(np.float64), float(np.float32(power))).astype(np.float32)
    # entries [key, pdf, n, score]: key = score / (n + 1e-10) in double, as CountStats' <
    queue = _StdPriorityQueue(lambda a, b: a[0] < b[0])
    for p in range(num):
        queue.push((float(score[p]) / (1 + 1.0e-10), p, 1, float(score[p])))
    total = num
    while total < target:
        _, p, n, sc = queue.top()
        if sc == 0:
            log.warning("mixing up: could not split up to %d (min-count %g)", target, min_count)
            break
        queue.pop()
        if np.float32(n + 1) * np.float32(min_count) >= occs[p]:  # in float, as Kaldi
            sc = 0.0  # min-count reached: this pdf gets no more Gaussians
        else:
            n += 1
            total += 1
        queue.push((sc / (n + 1.0e-10), p, n, sc))
    out = np.ones(num, dtype=np.int64)
    for _, p, n, _ in queue.c:
        out[p] = n
    return out


def split_by_count(
    arrays: GmmArrays,
    occs: np.ndarray,
    target: int,
    *,
    perturb_factor: float = 0.01,
    power: float = 0.2,
    min_count: float = 20.0,
    seed: int = 1,
) -> GmmArrays:
    """Mix up to about ``target`` Gaussians (AmDiagGmm::SplitByCount + DiagGmm::Split).

    A pdf below its target splits its heaviest component repeatedly: the weight is halved
    and shared with a copy, and ``mu/var`` moves by +-``perturb_factor`` * r * sqrt(1/var) with
    r drawn by Kaldi's RandGauss from a fresh ``KaldiRandom(seed)``, pdf after pdf (seed 1 is
    what every Kaldi process starts with)."""
    from pykaldi2.hmm.kaldi_rand import KaldiRandom

    rng = KaldiRandom(seed)
    targets = get_split_targets(occs, target, power, min_count)
    sizes = np.diff(arrays.offsets)
    if not (targets > sizes).any():
        return arrays
    w_out, mu_out, mi_out, iv_out, new_sizes = [], [], [], [], []
    for p in range(arrays.num_pdfs):
        a, b = int(arrays.offsets[p]), int(arrays.offsets[p + 1])
        w = arrays.weights[a:b].copy()
        mu = arrays.means[a:b].copy()
        mi = arrays.means_invvars[a:b].copy()
        iv = arrays.inv_vars[a:b].copy()
        if targets[p] > len(w) and len(w) > 0:
            k, extra = len(w), targets[p] - len(w)
            w = np.concatenate([w, np.zeros(extra, np.float32)])
            mi = np.concatenate([mi, np.zeros((extra, arrays.dim), np.float32)])
            iv = np.concatenate([iv, np.zeros((extra, arrays.dim), np.float32)])
            while k < targets[p]:
                m = int(np.argmax(w[:k]))
                w[m] = w[m] / np.float32(2.0)
                w[k] = w[m]
                r = rng.standard_normal(arrays.dim) * np.sqrt(iv[m].astype(np.float64))
                r = (np.float32(perturb_factor) * r.astype(np.float32)).astype(np.float32)
                iv[k] = iv[m]
                mi[k] = mi[m] + r
                mi[m] = mi[m] - r
                k += 1
            mu = (mi / iv).astype(np.float32)
        w_out.append(w)
        mu_out.append(mu)
        mi_out.append(mi)
        iv_out.append(iv)
        new_sizes.append(len(w))
    mi = np.concatenate(mi_out)
    out = GmmArrays(
        offsets=np.concatenate([[0], np.cumsum(new_sizes)]).astype(np.int64),
        weights=np.concatenate(w_out),
        means=np.concatenate(mu_out),
        inv_vars=np.concatenate(iv_out),
        means_invvars=mi,
        gconsts=np.zeros(len(mi), np.float32),
    )
    out.gconsts = _gconsts(out)
    return out


def gmm_est(
    model: GmmModel,
    accs: GmmAccs,
    *,
    mixup: int = 0,
    power: float = 0.2,
    perturb_factor: float = 0.01,
    min_count: float = 20.0,
    opts: MleOptions | None = None,
    update_transitions: bool = True,
    seed: int = 1,
) -> EstStats:
    """Re-estimate ``model`` in place from ``accs`` (gmm-est), then mix up to ``mixup``.

    Mixing up (``--mix-up``) gives each pdf a share of the Gaussians proportional to
    ``occ ** power`` (``power=0.2`` and ``min_count=20`` are gmm-est's defaults; the training
    scripts pass ``--power 0.25``); ``seed`` starts the perturbations' stream (see
    :func:`split_by_count`; 1 as Kaldi).
    """
    from pykaldi2.kaldi import khg

    opts = opts or MleOptions()
    trans_impr = 0.0
    if update_transitions:
        tcfg = khg.MleTransitionUpdateConfig(
            floor=opts.transition_floor, mincount=opts.transition_min_count
        )
        impr, count = model.tm.mle_update(accs.trans, tcfg)
        trans_impr = impr / max(count, 1.0)
    arrays = am_arrays(model.am)
    new, (impr, count, floored, removed) = mle_am_diag_gmm_update(arrays, accs, opts)
    if mixup > 0:  # as Kaldi: a pdf below its share is split even when the total is reached
        new = split_by_count(
            new,
            accs.pdf_occs(),
            mixup,
            perturb_factor=perturb_factor,
            power=power,
            min_count=min_count,
            seed=seed,
        )
    model.am = new.to_am()
    return EstStats(
        like_per_frame=accs.like_per_frame,
        num_frames=accs.num_frames,
        gmm_impr_per_frame=impr / max(count, 1.0),
        trans_impr_per_frame=trans_impr,
        num_gauss=int(model.am.num_gauss),
        floored_elements=floored,
        removed=removed,
    )


def gmm_mixup(
    model: GmmModel,
    occs: np.ndarray,
    mixup: int,
    *,
    power: float = 0.2,
    perturb_factor: float = 0.01,
    min_count: float = 20.0,
    seed: int = 1,
) -> None:
    """gmm-mixup: mix ``model`` up to ``mixup`` Gaussians given pdf occupancies (P,)."""
    new = split_by_count(
        am_arrays(model.am),
        occs,
        mixup,
        perturb_factor=perturb_factor,
        power=power,
        min_count=min_count,
        seed=seed,
    )
    model.am = new.to_am()


def gmm_boost_silence(model: GmmModel, silence_phones: Iterable[int], boost: float = 1.0):
    """A copy of ``model.am`` with the weights of silence pdfs scaled by ``boost``.

    Kaldi's gmm-boost-silence: the alignment then prefers silence where it is unsure. With
    ``boost == 1`` the model itself is returned (no copy).
    """
    from pykaldi2.kaldi import khg

    if boost == 1.0:
        return model.am
    phones = sorted(set(int(p) for p in silence_phones))
    if not phones:
        raise DataError("gmm_boost_silence: no silence phones given", fix="pass lang sil phones")
    _, pdfs = khg.get_pdfs_for_phones(model.tm, phones)
    am = khg.AmDiagGmm()
    am.copy_from_am_diag_gmm(model.am)
    for p in pdfs:
        g = am.get_pdf(p)
        g.set_weights(np.asarray(g.weights, dtype=np.float32) * boost)
        g.compute_gconsts()
    return am
