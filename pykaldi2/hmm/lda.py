"""LDA and MLLT feature transforms: Kaldi's acc-lda/est-lda, gmm-acc-mllt/est-mllt, and
steps/train_lda_mllt.sh.

LDA: classes are pdf_ids of the alignment (silence frames weighted 0, as weight-silence-post
0.0 in the script); the transform ``M`` (dim, D) maximizes between-class over within-class
scatter and makes the within-class covariance the identity (``M W M^T = I``).

MLLT (a global semi-tied covariance): with per-dimension statistics
``G_i = sum_t,g  gamma_tg / var_gi * (x_t - mu_g)(x_t - mu_g)^T`` and ``beta`` frames, the
objective ``beta log|det A| - 1/2 sum_i a_i G_i a_i^T`` is maximized row by row:
``a_i = c_i G_i^-1 sqrt(beta / (c_i G_i^-1 c_i^T))`` with ``c_i`` the i-th cofactor row of A.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pykaldi2.hmm.blas import one_blas_thread
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.training import TreeConfig
from pykaldi2.utils.config import option
from pykaldi2.utils.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class LdaStats:
    """acc-lda statistics. count: (C,); sums: (C, D); scatter: (D, D) total sum of x x^T."""

    count: np.ndarray
    sums: np.ndarray
    scatter: np.ndarray


@one_blas_thread()
def acc_lda(
    feats: Mapping[str, np.ndarray],
    pdf_alis: Mapping[str, np.ndarray],
    num_classes: int,
    frame_weights: Mapping[str, np.ndarray] | None = None,
) -> LdaStats:
    """Class statistics for LDA (acc-lda).

    Args:
        feats: utt -> (T, D) (spliced) features.
        pdf_alis: utt -> (T,) class (pdf_id) per frame.
        num_classes: number of classes C.
        frame_weights: utt -> (T,) weights (0 for silence frames), default 1.
    """
    d = next(iter(feats.values())).shape[1]
    count = np.zeros(num_classes)
    sums = np.zeros((num_classes, d))
    scatter = np.zeros((d, d))
    for utt, cls in pdf_alis.items():
        if utt not in feats:
            continue
        x = np.asarray(feats[utt], dtype=np.float64)
        w = np.ones(len(x)) if frame_weights is None else np.asarray(frame_weights[utt], float)
        if len(cls) != len(x):
            raise DataError(f"alignment has {len(cls)} frames, features {len(x)}", utt=utt)
        count += np.bincount(cls, weights=w, minlength=num_classes)
        np.add.at(sums, cls, x * w[:, None])
        scatter += (x * w[:, None]).T @ x
    return LdaStats(count, sums, scatter)


def lda_scatters(stats: LdaStats) -> tuple[np.ndarray, np.ndarray]:
    """Within-class (W) and between-class (B) covariance, (D, D) each."""
    n = stats.count.sum()
    if n <= 0:
        raise DataError("LDA statistics are empty (all frames silence?)", fix="check alignments")
    mean = stats.sums.sum(0) / n
    total = stats.scatter / n - np.outer(mean, mean)
    seen = stats.count > 0
    mu = stats.sums[seen] / stats.count[seen, None]
    between = (mu * stats.count[seen, None]).T @ mu / n - np.outer(mean, mean)
    return total - between, between


def est_lda(stats: LdaStats, dim: int = 40) -> np.ndarray:
    """The LDA transform (est-lda): (dim, D), rows by decreasing between/within ratio.

    Solved as Kaldi does: W = L L^T (Cholesky), eigenvectors U of L^-1 B L^-T, M = U^T L^-1.
    """
    within, between = lda_scatters(stats)
    if dim > within.shape[0]:
        raise DataError(f"LDA dim {dim} > feature dim {within.shape[0]}", fix="lower --dim")
    try:
        chol = np.linalg.cholesky(within)
    except np.linalg.LinAlgError:
        raise DataError(
            "within-class covariance is singular", fix="more data, or fewer spliced frames"
        ) from None
    linv = np.linalg.inv(chol)
    vals, vecs = np.linalg.eigh(linv @ between @ linv.T)
    order = np.argsort(vals)[::-1][:dim]
    log.info("est-lda: top eigenvalues %s", np.round(vals[order][:5], 3).tolist())
    return vecs[:, order].T @ linv


# ---- MLLT -------------------------------------------------------------------------------------
@one_blas_thread()
def gmm_acc_mllt(
    model: GmmModel,
    feats: Mapping[str, np.ndarray],
    alis: Mapping[str, np.ndarray],
    silence_phones: Sequence[int] = (),
) -> tuple[np.ndarray, float]:
    """MLLT statistics (gmm-acc-mllt): G (D, D, D) with G[i] the stats of row i, and beta.

    Silence frames get weight 0 (weight-silence-post 0.0 in train_lda_mllt.sh).
    """
    d = model.dim
    sil = np.isin(model.tid2phone, list(silence_phones))
    xs, pdfs = [], []
    for utt, ali in alis.items():
        if utt not in feats:
            continue
        ali = np.asarray(ali, dtype=np.int64)
        keep = ~sil[ali]
        xs.append(np.asarray(feats[utt], dtype=np.float32)[keep])
        pdfs.append(model.tid2pdf[ali[keep]])
    x_all, pdf_all = np.concatenate(xs), np.concatenate(pdfs)
    g_stats = np.zeros((d, d, d))
    beta = 0.0
    for p in np.unique(pdf_all):
        x = x_all[pdf_all == p]
        gmm = model.am.get_pdf(int(p))
        ll = gmm.log_likelihoods_matrix(x)
        post = np.exp(ll - ll.max(1, keepdims=True))
        post /= post.sum(1, keepdims=True)
        means = np.asarray(gmm.means, dtype=np.float64)
        ivars = np.asarray(gmm.inv_vars, dtype=np.float64)
        x64 = x.astype(np.float64)
        for g in range(post.shape[1]):
            gam = post[:, g]
            diff = x64 - means[g]
            scat = (diff * gam[:, None]).T @ diff  # (D, D)
            g_stats += ivars[g][:, None, None] * scat[None]
        beta += float(post.sum())
    return g_stats, beta


def gmm_acc_mllt_ref(
    model: GmmModel,
    feats: Mapping[str, np.ndarray],
    alis: Mapping[str, np.ndarray],
    silence_phones: Sequence[int] = (),
) -> tuple[np.ndarray, float]:
    """Slow reference of :func:`gmm_acc_mllt`: frame by frame, Gaussian by Gaussian."""
    d = model.dim
    g_stats = np.zeros((d, d, d))
    beta = 0.0
    sil = set(int(p) for p in silence_phones)
    for utt, ali in alis.items():
        x_utt = np.asarray(feats[utt], dtype=np.float64)
        for t, tid in enumerate(ali):
            if int(model.tid2phone[tid]) in sil:
                continue
            gmm = model.am.get_pdf(int(model.tid2pdf[tid]))
            ll = gmm.log_likelihoods_matrix(x_utt[t : t + 1].astype(np.float32))[0]
            post = np.exp(ll - ll.max())
            post /= post.sum()
            for g in range(len(post)):
                diff = x_utt[t] - np.asarray(gmm.means[g], dtype=np.float64)
                for i in range(d):
                    g_stats[i] += post[g] * float(gmm.inv_vars[g][i]) * np.outer(diff, diff)
            beta += 1.0
    return g_stats, beta


def mllt_objf(a: np.ndarray, g_stats: np.ndarray, beta: float) -> float:
    """beta log|det A| - 1/2 sum_i a_i G_i a_i^T (the auxiliary function MLLT maximizes)."""
    _, logdet = np.linalg.slogdet(a)
    return float(beta * logdet - 0.5 * np.einsum("ij,ijk,ik->", a, g_stats, a))


def est_mllt(
    g_stats: np.ndarray, beta: float, num_iters: int = 10, a: np.ndarray | None = None
) -> np.ndarray:
    """MLLT matrix A (D, D) by Kaldi's iterative row-by-row update (est-mllt)."""
    d = g_stats.shape[0]
    a = np.eye(d) if a is None else np.array(a, dtype=np.float64)
    g_inv = np.stack([np.linalg.inv(g_stats[i]) for i in range(d)])
    before = mllt_objf(a, g_stats, beta)
    for _ in range(num_iters):
        for i in range(d):
            cof = np.linalg.det(a) * np.linalg.inv(a).T  # cofactor matrix
            c = cof[i]
            gc = c @ g_inv[i]
            a[i] = gc * np.sqrt(beta / float(gc @ c))
    after = mllt_objf(a, g_stats, beta)
    log.info("est-mllt: objective improvement %.4f per frame", (after - before) / max(beta, 1))
    return a


def gmm_transform_means(model: GmmModel, a: np.ndarray) -> None:
    """Apply A to every Gaussian mean in place (gmm-transform-means); variances stay."""
    am = model.am
    for p in range(am.num_pdfs):
        gmm = am.get_pdf(p)
        means = np.asarray(gmm.means, dtype=np.float64) @ a.T
        gmm.set_means(means.astype(np.float32))
        gmm.compute_gconsts()


# ---- training ----------------------------------------------------------------------------------
@dataclass
class LdaMlltConfig(TreeConfig):
    """steps/train_lda_mllt.sh options (same defaults): LDA to ``dim`` from +-``splice``
    spliced frames, MLLT re-estimated at ``mllt_iters``."""

    num_leaves: int = option(2500, ge=1)
    tot_gauss: int = option(15000, ge=1)
    dim: int = 40
    splice: int = 3
    mllt_iters: list[int] = field(default_factory=lambda: [2, 4, 6, 12])

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1 or self.splice < 0:
            raise ValueError(f"LdaMlltConfig: need dim >= 1 and splice >= 0: {self}")


@one_blas_thread()
def train_lda_mllt(
    base_feats: Mapping[str, np.ndarray],
    texts: Mapping[str, Sequence[int]],
    lex_fst,
    disambig_phones: Sequence[int],
    sil_phones: Sequence[int],
    tree_inputs,
    prev: GmmModel,
    prev_alis: Mapping[str, np.ndarray],
    config: LdaMlltConfig | None = None,
    exp_dir: str | os.PathLike | None = None,
) -> tuple[GmmModel, dict[str, np.ndarray], list[dict]]:
    """LDA+MLLT triphone training (steps/train_lda_mllt.sh).

    Args:
        base_feats: utt -> (T, F) CMVN'd base features (no deltas): they are spliced
            +-``splice`` frames and projected to ``dim`` by LDA, then MLLT.
        prev, prev_alis: the model and alignments of the previous system (e.g. tri1).
        (others as :func:`~pykaldi2.hmm.tri.train_deltas`)

    Returns:
        ``(model, alis, history)``; ``model.transform`` is the (dim, (2 splice + 1) F) matrix
        and ``model.feat_type == "lda"``.
    """
    from pykaldi2.features.transforms import splice_feats
    from pykaldi2.hmm.ali import ali_to_pdf
    from pykaldi2.hmm.inputs import apply_feat_transform
    from pykaldi2.hmm.tri import train_triphone

    cfg = config or LdaMlltConfig()
    spliced = {u: splice_feats(x, cfg.splice, cfg.splice) for u, x in base_feats.items()}
    sil = np.isin(prev.tid2phone, list(sil_phones))
    weights = {u: (~sil[np.asarray(a, dtype=np.int64)]).astype(float) for u, a in prev_alis.items()}
    pdf_alis = {u: ali_to_pdf(prev, a) for u, a in prev_alis.items()}
    lda = est_lda(acc_lda(spliced, pdf_alis, prev.num_pdfs, weights), cfg.dim)
    del spliced

    def project(transform) -> dict[str, np.ndarray]:
        return {
            u: apply_feat_transform(x, "lda", transform, cfg.splice) for u, x in base_feats.items()
        }

    feats = project(lda)
    holder: list[GmmModel] = []

    def setup(model: GmmModel) -> None:
        model.feat_type, model.splice, model.transform = "lda", cfg.splice, lda
        holder.append(model)

    def on_realign(it: int, cur_alis) -> None:
        if it not in cfg.mllt_iters:
            return
        model = holder[0]
        g_stats, beta = gmm_acc_mllt(model, feats, cur_alis, sil_phones)
        a = est_mllt(g_stats, beta)
        gmm_transform_means(model, a)
        model.transform = a @ model.transform
        feats.update(project(model.transform))

    return train_triphone(
        prev,
        prev_alis,
        feats,
        texts,
        lex_fst,
        disambig_phones,
        sil_phones,
        tree_inputs,
        cfg,
        "tri_lda_mllt",
        exp_dir,
        on_realign=on_realign,
        setup=setup,
    )
