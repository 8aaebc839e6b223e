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

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pykaldi2.hmm.model import GmmModel
from pykaldi2.utils.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class LdaStats:
    """acc-lda statistics. count: (C,); sums: (C, D); scatter: (D, D) total sum of x x^T."""

    count: np.ndarray
    sums: np.ndarray
    scatter: np.ndarray


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
class LdaMlltConfig:
    """steps/train_lda_mllt.sh options (same defaults) + the tree options of train_deltas."""

    num_leaves: int = 2500
    tot_gauss: int = 15000
    dim: int = 40
    splice: int = 3
    num_iters: int = 35
    max_iter_inc: int = 25
    realign_iters: list[int] = field(default_factory=lambda: [10, 20, 30])
    mllt_iters: list[int] = field(default_factory=lambda: [2, 4, 6, 12])
    beam: float = 10.0
    retry_beam_factor: float = 4.0
    careful: bool = False
    boost_silence: float = 1.0
    power: float = 0.25
    cluster_thresh: float = -1.0
    tree_thresh: float = 300.0
    tree_min_count: float = 0.0
    context_width: int = 3
    central_position: int = 1
    acoustic_scale: float = 0.1
    transition_scale: float = 1.0
    self_loop_scale: float = 0.1
    perturb_factor: float = 0.01
    min_count: float = 20.0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.splice < 0:
            raise ValueError(f"LdaMlltConfig: dim >= 1 and splice >= 0 needed: {self}")
        if self.num_leaves < 1 or self.tot_gauss < self.num_leaves:
            raise ValueError("LdaMlltConfig: need 1 <= num_leaves <= tot_gauss")
        if self.num_iters < 1 or not 0 <= self.max_iter_inc <= self.num_iters:
            raise ValueError("LdaMlltConfig: num_iters >= 1 and 0 <= max_iter_inc <= num_iters")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> LdaMlltConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"LdaMlltConfig: unknown keys {sorted(unknown)}")
        return cls(**d)


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
    from pykaldi2.hmm.align import compile_train_graphs, gmm_align_compiled
    from pykaldi2.hmm.inputs import apply_feat_transform
    from pykaldi2.hmm.model import gmm_info
    from pykaldi2.hmm.mono import _align_config, train_gmm_iters, write_exp_dir
    from pykaldi2.hmm.tri import build_triphone_model

    cfg = config or LdaMlltConfig()
    spliced = {u: splice_feats(x, cfg.splice, cfg.splice) for u, x in base_feats.items()}
    sil = np.isin(prev.tid2phone, list(sil_phones))
    weights = {u: (~sil[np.asarray(a, dtype=np.int64)]).astype(float) for u, a in prev_alis.items()}
    pdf_alis = {u: ali_to_pdf(prev, a) for u, a in prev_alis.items()}
    lda = est_lda(acc_lda(spliced, pdf_alis, prev.num_pdfs, weights), cfg.dim)
    del spliced
    state = {"transform": lda}

    def project() -> dict[str, np.ndarray]:
        return {
            u: apply_feat_transform(x, "lda", state["transform"], cfg.splice)
            for u, x in base_feats.items()
        }

    feats = project()
    model, alis = build_triphone_model(prev, feats, prev_alis, tree_inputs, cfg)
    model.feat_type, model.splice = "lda", cfg.splice
    graphs = compile_train_graphs(model, lex_fst, disambig_phones, texts)

    def on_realign(it: int, cur_alis) -> None:
        if it not in cfg.mllt_iters:
            return
        g_stats, beta = gmm_acc_mllt(model, feats, cur_alis, sil_phones)
        a = est_mllt(g_stats, beta)
        gmm_transform_means(model, a)
        state["transform"] = a @ state["transform"]
        feats.update(project())

    num_gauss = model.num_pdfs
    inc_gauss = max(0, (cfg.tot_gauss - num_gauss) // max(cfg.max_iter_inc, 1))
    alis, history = train_gmm_iters(
        model,
        graphs,
        feats,
        alis,
        cfg,
        sil_phones,
        first_iter=1,
        num_gauss=num_gauss,
        inc_gauss=inc_gauss,
        beam_schedule=lambda it: cfg.beam,
        on_realign=on_realign,
    )
    model.transform = state["transform"]
    final = gmm_align_compiled(model, graphs, feats, _align_config(cfg, cfg.beam))
    model.info = {"system": "tri_lda_mllt", "config": cfg.to_dict(), "gmm_info": gmm_info(model)}
    if exp_dir is not None:
        write_exp_dir(exp_dir, model, final.alis, history, cfg.to_dict())
    return model, final.alis, history
