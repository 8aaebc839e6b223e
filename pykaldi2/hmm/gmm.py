"""GMM statistics and re-estimation: Kaldi's gmm-acc-stats-ali, gmm-est and gmm-boost-silence.

:func:`gmm_acc_stats_ali` is the fast kernel: frames are grouped by pdf_id and each GMM scores
its frames in one ``DiagGmm.log_likelihoods_matrix`` call, posteriors and sums in numpy.
:func:`gmm_acc_stats_ali_ref` is the slow, obviously-correct reference (one
``AccumAmDiagGmm.accumulate_for_gmm`` call per frame, as gmm-acc-stats-ali.cc does); a unit
test checks that both give the same statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from pykaldi2.hmm.blas import one_blas_thread
from pykaldi2.hmm.model import GmmModel
from pykaldi2.utils.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class GmmAccs:
    """Accumulated statistics (Kaldi's ``*.acc``).

    Attributes:
        gmm: ``khg.AccumAmDiagGmm`` (per pdf: occupancy (G,), mean (G, D) and var (G, D) sums).
        trans: (num_transition_ids + 1,) float64 transition counts.
        tot_like: total log-likelihood of the frames under the model that accumulated them.
        num_frames: number of frames accumulated.
    """

    gmm: object
    trans: np.ndarray
    tot_like: float = 0.0
    num_frames: int = 0

    @property
    def like_per_frame(self) -> float:
        return self.tot_like / max(self.num_frames, 1)

    def pdf_occs(self) -> np.ndarray:
        """(num_pdfs,) float: occupancy of each pdf (Kaldi's ``--write-occs``)."""
        return np.asarray(
            [float(np.sum(self.gmm.get_acc(p).occupancy)) for p in range(self.gmm.num_accs)]
        )


def init_accs(model: GmmModel) -> GmmAccs:
    """Zero statistics for every pdf of ``model`` (all of mean, var, weight, transitions)."""
    from pykaldi2.kaldi import khg

    acc = khg.AccumAmDiagGmm()
    acc.init(model=model.am, flags=khg.GmmUpdateFlags.kGmmAll)
    return GmmAccs(gmm=acc, trans=np.zeros(model.tm.num_transition_ids + 1, dtype=np.float64))


def _check_ali(utt: str, feats: np.ndarray, ali: np.ndarray, model: GmmModel) -> None:
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


def _pairs(
    feats: Mapping[str, np.ndarray], alis: Mapping[str, np.ndarray]
) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    for utt, ali in alis.items():
        if utt not in feats:
            log.warning("no features for utterance %s; skipped", utt)
            continue
        yield utt, np.asarray(feats[utt], dtype=np.float32), np.asarray(ali, dtype=np.int64)


@one_blas_thread()
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
        ``accs`` with the statistics added.
    """
    accs = accs if accs is not None else init_accs(model)
    xs, pdfs = [], []
    for utt, x, ali in _pairs(feats, alis):
        _check_ali(utt, x, ali, model)
        xs.append(x)
        pdfs.append(model.tid2pdf[ali])
        accs.trans += np.bincount(ali, minlength=len(accs.trans))
    if not xs:
        return accs
    x_all = np.concatenate(xs)
    pdf_all = np.concatenate(pdfs)
    order = np.argsort(pdf_all, kind="stable")
    bounds = np.searchsorted(pdf_all[order], np.arange(model.num_pdfs + 1))
    for p in range(model.num_pdfs):
        idx = order[bounds[p] : bounds[p + 1]]
        if len(idx) == 0:
            continue
        x = x_all[idx]
        ll = model.am.get_pdf(p).log_likelihoods_matrix(x)  # (N, G)
        mx = ll.max(axis=1, keepdims=True)
        post = np.exp(ll - mx)
        norm = post.sum(axis=1, keepdims=True)
        post = (post / norm).astype(np.float64)
        accs.tot_like += float(np.sum(mx[:, 0] + np.log(norm[:, 0])))
        x64 = x.astype(np.float64)
        _add_gauss_stats(
            accs.gmm, model.am, p, post.sum(axis=0), post.T @ x64, post.T @ (x64 * x64)
        )
    accs.num_frames += len(x_all)
    return accs


def _add_gauss_stats(acc, am, pdf: int, occ: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> None:
    """Add sufficient statistics to ``AccumAmDiagGmm`` ``acc`` for the Gaussians of ``pdf``.

    The binding returns per-pdf accumulators by value, so statistics cannot be written into
    them. Instead each Gaussian g with occupancy n, sums x1 = sum(x) and x2 = sum(x^2) receives
    two frames of weight n/2 at ``m +- s`` (m = x1/n, s^2 = x2/n - m^2): their occupancy, sum
    and sum of squares are exactly n, x1, x2. Two binding calls per Gaussian, not one per frame.

    Args:
        occ: (G,) occupancies; x1, x2: (G, D) first- and second-order sums.
    """
    for g in np.flatnonzero(occ > 0):
        n = occ[g]
        m = x1[g] / n
        s = np.sqrt(np.maximum(x2[g] / n - m * m, 0.0))
        for sign in (1.0, -1.0):
            acc.accumulate_for_gaussian(
                am=am,
                data=(m + sign * s).astype(np.float32),
                gmm_index=pdf,
                gauss_index=int(g),
                weight=float(n / 2),
            )


def gmm_acc_stats_ali_ref(
    model: GmmModel,
    feats: Mapping[str, np.ndarray],
    alis: Mapping[str, np.ndarray],
) -> GmmAccs:
    """Slow reference of :func:`gmm_acc_stats_ali`: one binding call per frame, as in Kaldi."""
    accs = init_accs(model)
    for utt, x, ali in _pairs(feats, alis):
        _check_ali(utt, x, ali, model)
        for t, tid in enumerate(ali):
            accs.trans[tid] += 1.0
            accs.tot_like += accs.gmm.accumulate_for_gmm(
                model=model.am, data=x[t], gmm_index=int(model.tid2pdf[tid]), weight=1.0
            )
        accs.num_frames += len(ali)
    return accs


@dataclass
class EstStats:
    """What gmm-est logs: likelihood and the objective improvements."""

    like_per_frame: float
    num_frames: int
    gmm_impr_per_frame: float
    trans_impr_per_frame: float
    num_gauss: int


def gmm_est(
    model: GmmModel,
    accs: GmmAccs,
    *,
    mixup: int = 0,
    min_gaussian_occupancy: float = 10.0,
    min_gaussian_weight: float = 1.0e-5,
    min_variance: float = 0.001,
    power: float = 0.2,
    perturb_factor: float = 0.01,
    min_count: float = 20.0,
    update_flags: str = "mvwt",
    transition_floor: float = 0.01,
    transition_min_count: float = 5.0,
) -> EstStats:
    """Re-estimate ``model`` in place from ``accs`` (gmm-est), then mix up to ``mixup`` Gaussians.

    Mixing up (``--mix-up``) gives each pdf a share of the Gaussians proportional to
    ``occ ** power`` (``AmDiagGmm.split_by_count``), never more than one per ``min_count``
    frames; ``power=0.2`` and ``min_count=20`` are Kaldi's defaults.
    """
    from pykaldi2.kaldi import khg

    flags = khg.str_to_gmm_flags(update_flags)
    trans_impr = 0.0
    if "t" in update_flags:
        tcfg = khg.MleTransitionUpdateConfig(floor=transition_floor, mincount=transition_min_count)
        impr, count = model.tm.mle_update(accs.trans, tcfg)
        trans_impr = impr / max(count, 1.0)
    opts = khg.MleDiagGmmOptions()
    opts.min_gaussian_occupancy = min_gaussian_occupancy
    opts.min_gaussian_weight = min_gaussian_weight
    opts.min_variance = min_variance
    impr, count = khg.mle_am_diag_gmm_update(
        config=opts, amdiag_gmm_acc=accs.gmm, flags=flags, am_gmm=model.am
    )
    if mixup > model.am.num_gauss:
        model.am.split_by_count(
            state_occs=accs.pdf_occs().astype(np.float32),
            target_components=mixup,
            perturb_factor=perturb_factor,
            power=power,
            min_count=min_count,
        )
    model.am.compute_gconsts()
    return EstStats(
        like_per_frame=accs.like_per_frame,
        num_frames=accs.num_frames,
        gmm_impr_per_frame=impr / max(count, 1.0),
        trans_impr_per_frame=trans_impr,
        num_gauss=int(model.am.num_gauss),
    )


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
