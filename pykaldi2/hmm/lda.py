"""LDA and MLLT feature transforms: Kaldi's acc-lda/est-lda, gmm-acc-mllt/est-mllt,
gmm-transform-means, and steps/train_lda_mllt.sh.

LDA: classes are pdf_ids of the alignment (silence frames weighted 0, as weight-silence-post
0.0 in the script); the transform ``M`` (dim, D) maximizes between-class over within-class
scatter and makes the within-class covariance the identity (``M W M^T = I``).

MLLT (a global semi-tied covariance): with per-dimension statistics
``G_i = sum_t,g  gamma_tg / var_gi * (x_t - mu_g)(x_t - mu_g)^T`` and ``beta`` frames, the
objective ``beta log|det A| - 1/2 sum_i a_i G_i a_i^T`` is maximized row by row:
``a_i = c_i G_i^-1 sqrt(beta / (c_i G_i^-1 c_i^T))`` with ``c_i`` the i-th cofactor row of A,
200 sweeps from the identity as Kaldi's MlltAccs::Update.

Both accumulate exactly over every frame by default. Kaldi's ``--rand-prune 4.0`` keeps a
posterior below the threshold with probability post/threshold, weighted up to the threshold
(a random quarter of the frames for alignment posteriors); it only saves time, and makes the
statistics depend on the job split. LDA can replay it (``rand_prune``, with Kaldi's random
stream per job) to reproduce Kaldi's matrices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pykaldi2.hmm.blas import one_blas_thread
from pykaldi2.hmm.gmm import am_arrays
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.streams import FeaturePipeline, iter_alis, iter_feats, join
from pykaldi2.hmm.training import TreeConfig
from pykaldi2.utils.config import option
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write

log = logging.getLogger(__name__)


# ---- LDA ------------------------------------------------------------------------------------
@dataclass
class LdaStats:
    """acc-lda statistics. count: (C,); sums: (C, D); scatter: (D, D) total sum of x x^T."""

    count: np.ndarray
    sums: np.ndarray
    scatter: np.ndarray

    def add(self, other: LdaStats) -> LdaStats:
        self.count += other.count
        self.sums += other.sums
        self.scatter += other.scatter
        return self


class LdaAccumulator:
    """acc-lda over a stream: ``add(x (T, D), classes (T,), weights (T,))``."""

    def __init__(self, num_classes: int, rand_prune: float = 0.0) -> None:
        self.num_classes = num_classes
        self.stats: LdaStats | None = None
        self.rand_prune = rand_prune
        self._rng = None
        if rand_prune > 0:
            from pykaldi2.hmm.kaldi_rand import KaldiRandom

            self._rng = KaldiRandom(1)

    def _prune(self, w: np.ndarray) -> np.ndarray:
        """Kaldi's RandPrune of each weight, in frame order (one rand() per pruned weight)."""
        t = self.rand_prune
        out = w.copy()
        for i in np.flatnonzero((w != 0) & (np.abs(w) < t)).tolist():
            keep = self._rng.uniform() <= abs(w[i]) / t
            out[i] = (t if w[i] >= 0 else -t) if keep else 0.0
        return out

    def add(self, x: np.ndarray, cls: np.ndarray, weights: np.ndarray | None = None) -> None:
        x = np.asarray(x, dtype=np.float64)
        if len(cls) != len(x):
            raise DataError(f"alignment has {len(cls)} frames, features {len(x)}")
        if self.stats is None:
            d = x.shape[1]
            self.stats = LdaStats(
                np.zeros(self.num_classes), np.zeros((self.num_classes, d)), np.zeros((d, d))
            )
        w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
        if self._rng is not None:
            w = self._prune(w)
        s = self.stats
        s.count += np.bincount(cls, weights=w, minlength=self.num_classes)
        np.add.at(s.sums, cls, x * w[:, None])
        s.scatter += (x * w[:, None]).T @ x


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
    acc = LdaAccumulator(num_classes)
    for utt, cls in pdf_alis.items():
        if utt in feats:
            w = None if frame_weights is None else frame_weights[utt]
            try:
                acc.add(feats[utt], np.asarray(cls, dtype=np.int64), w)
            except DataError as e:
                raise DataError(str(e), utt=utt) from None
    if acc.stats is None:
        raise DataError("acc-lda: no utterance has both features and an alignment")
    return acc.stats


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


def est_lda(stats: LdaStats, dim: int = 40, full: bool = False) -> np.ndarray:
    """The LDA transform (est-lda): (dim, D), rows by decreasing between/within ratio
    (``full``: all D rows, Kaldi's ``--write-full-matrix``).

    Solved as Kaldi does: W = L L^T (Cholesky), eigenvectors U of L^-1 B L^-T, M = U^T L^-1.
    """
    within, between = lda_scatters(stats)
    if dim > within.shape[0]:
        raise DataError(f"LDA dim {dim} > feature dim {within.shape[0]}", fix="lower --dim")
    try:
        chol = np.linalg.cholesky(within)
    except np.linalg.LinAlgError:
        smooth = 1.0e-3 * np.trace(within) / len(within)
        log.info("est-lda: Cholesky failed, adding %g to the diagonal", smooth)
        chol = np.linalg.cholesky(within + smooth * np.eye(len(within)))
    linv = np.linalg.inv(chol)
    vals, vecs = np.linalg.eigh(linv @ between @ linv.T)
    order = np.argsort(vals)[::-1]
    log.info(
        "est-lda: data count %.0f; top eigenvalues %s",
        stats.count.sum(),
        np.round(vals[order][:5], 3).tolist(),
    )
    m = vecs[:, order].T @ linv
    return m if full else m[:dim]


# ---- MLLT ------------------------------------------------------------------------------------
class MlltAccumulator:
    """gmm-acc-mllt over a stream with bounded memory: frames are buffered and accumulated pdf
    by pdf (Gaussian posteriors of the frame's pdf, ``G_i += gamma / var_i (x - mu)(x - mu)^T``).

    ``rand_prune > 0`` replays Kaldi's ``--rand-prune``: each non-zero float posterior below it,
    frame by frame and Gaussian by Gaussian, is kept with probability post/rand_prune (weight
    rand_prune) by Kaldi's random stream of a fresh process."""

    def __init__(self, model: GmmModel, buffer_frames: int = 20000, rand_prune: float = 0.0):
        self.model = model
        self.arrays = am_arrays(model.am)
        d = model.dim
        self.g = np.zeros((d, d, d))
        self.beta = 0.0
        self.buffer_frames = buffer_frames
        self.rand_prune = rand_prune
        self._rng = None
        if rand_prune > 0:
            from pykaldi2.hmm.kaldi_rand import KaldiRandom

            self._rng = KaldiRandom(1)
        self._x: list[np.ndarray] = []
        self._pdf: list[np.ndarray] = []
        self._n = 0

    def add(self, x: np.ndarray, ali: np.ndarray, keep: np.ndarray | None = None) -> None:
        """Frames ``x`` (T, D) with transition-ids ``ali``; ``keep`` (T,) bool drops frames
        (silence, weight 0)."""
        ali = np.asarray(ali, dtype=np.int64)
        x = np.asarray(x, dtype=np.float32)
        if keep is not None:
            x, ali = x[keep], ali[keep]
        self._x.append(x)
        self._pdf.append(self.model.tid2pdf[ali])
        self._n += len(x)
        if self._n >= self.buffer_frames:
            self._flush()

    def _posteriors(self, x_all, pdf_all):
        """Per pdf group: (frame indices, (N, G_p) posteriors); float32 as Kaldi's
        ComponentPosteriors when replaying its pruning."""
        a = self.arrays
        order = np.argsort(pdf_all, kind="stable")
        pdfs, starts = np.unique(pdf_all[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        out = []
        for p, s, e in zip(pdfs.tolist(), starts.tolist(), ends.tolist()):
            lo, hi = int(a.offsets[p]), int(a.offsets[p + 1])
            idx = order[s:e]
            x = x_all[idx].astype(np.float64)
            ll = (
                a.gconsts[lo:hi].astype(np.float64)
                + x @ a.means_invvars[lo:hi].T.astype(np.float64)
                - 0.5 * (x * x) @ a.inv_vars[lo:hi].T.astype(np.float64)
            )
            if self._rng is not None:
                ll = ll.astype(np.float32)
                post = np.exp(ll - ll.max(1, keepdims=True)).astype(np.float32)
                post = (
                    post * (np.float32(1.0) / post.sum(1, keepdims=True, dtype=np.float32))
                ).astype(np.float32)
            else:
                post = np.exp(ll - ll.max(1, keepdims=True))
                post /= post.sum(1, keepdims=True)
            out.append((p, idx, post))
        return out

    def _prune(self, groups, n_frames: int) -> None:
        """Kaldi's RandPrune over the posteriors in frame order, Gaussians in index order."""
        t = np.float32(self.rand_prune)
        where = [None] * n_frames
        for k, (_, idx, _) in enumerate(groups):
            for r, f in enumerate(idx.tolist()):
                where[f] = (k, r)
        for f in range(n_frames):
            k, r = where[f]
            row = groups[k][2][r]
            for g in range(len(row)):
                v = row[g]
                if v != 0 and v < t:
                    row[g] = t if self._rng.uniform() <= float(np.float32(v / t)) else 0.0

    def _flush(self) -> None:
        if not self._x:
            return
        x_all, pdf_all = np.concatenate(self._x), np.concatenate(self._pdf)
        self._x, self._pdf, self._n = [], [], 0
        a = self.arrays
        groups = self._posteriors(x_all, pdf_all)
        if self._rng is not None:
            self._prune(groups, len(x_all))
        for p, idx, post in groups:
            lo, hi = int(a.offsets[p]), int(a.offsets[p + 1])
            x = x_all[idx].astype(np.float64)
            post = post.astype(np.float64)
            means = a.means_invvars[lo:hi].astype(np.float64) / a.inv_vars[lo:hi].astype(np.float64)
            ivars = a.inv_vars[lo:hi].astype(np.float64)
            for g in range(hi - lo):
                diff = x - means[g]
                scat = (diff * post[:, g : g + 1]).T @ diff
                self.g += ivars[g][:, None, None] * scat[None]
            self.beta += float(post.sum())

    def result(self) -> tuple[np.ndarray, float]:
        """(G (D, D, D), beta)."""
        self._flush()
        return self.g, self.beta


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
    sil = np.isin(model.tid2phone, list(silence_phones))
    acc = MlltAccumulator(model)
    for utt, ali in alis.items():
        if utt in feats:
            ali = np.asarray(ali, dtype=np.int64)
            acc.add(feats[utt], ali, ~sil[ali])
    return acc.result()


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


@one_blas_thread()
def est_mllt(
    g_stats: np.ndarray, beta: float, num_iters: int = 200, a: np.ndarray | None = None
) -> np.ndarray:
    """MLLT matrix A (D, D) by Kaldi's row-by-row update from the identity (est-mllt,
    MlltAccs::Update: 200 sweeps)."""
    d = g_stats.shape[0]
    if beta < 10 * d:
        log.warning("est-mllt: %s count %g", "very small" if beta > 2 * d else "insufficient", beta)
    a = np.eye(d) if a is None else np.array(a, dtype=np.float64)
    g_inv = np.stack([np.linalg.inv(g_stats[i]) for i in range(d)])
    before = mllt_objf(a, g_stats, beta)
    for _ in range(num_iters):
        for i in range(d):
            c = np.linalg.inv(a).T[i]  # the cofactor row up to a constant
            gc = g_inv[i] @ c
            a[i] = gc * np.sqrt(beta / float(c @ gc))
    after = mllt_objf(a, g_stats, beta)
    log.info(
        "est-mllt: objective improvement %.4f per frame over %.0f frames",
        (after - before) / max(beta, 1),
        beta,
    )
    return a


def gmm_transform_means(model: GmmModel, a: np.ndarray) -> None:
    """Apply A to every Gaussian mean in place (gmm-transform-means); variances stay."""
    am = model.am
    for p in range(am.num_pdfs):
        gmm = am.get_pdf(p)
        means = np.asarray(gmm.means, dtype=np.float64) @ a.T
        gmm.set_means(means.astype(np.float32))
        gmm.compute_gconsts()


def compose_transforms(a: np.ndarray, b: np.ndarray, b_is_affine: bool = False) -> np.ndarray:
    """compose-transforms A B (``--b-is-affine``): the transform applying B then A. A may be
    linear (D', D) or affine (D', D + 1); an affine B's offset goes through A."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[1] == b.shape[0]:
        out = a @ b
        return out
    if a.shape[1] == b.shape[0] + 1:  # a affine
        out = a[:, :-1] @ b
        if b_is_affine:
            out[:, -1] += a[:, -1]
            return out
        return np.concatenate([out, a[:, -1:]], axis=1)
    raise DataError(f"compose-transforms: shapes {a.shape} and {b.shape} do not fit")


def write_kaldi_matrix(path: str | os.PathLike, m: np.ndarray) -> None:
    """A Kaldi binary float matrix file (``final.mat``, ``0.mat``), atomically."""
    import kaldiio

    with atomic_write(path, "wb") as f:
        kaldiio.save_mat(f, np.asarray(m, dtype=np.float32))


# ---- the jobs --------------------------------------------------------------------------------
@dataclass
class LdaAccJob:
    """acc-lda of one job: spliced features, classes = pdfs of ``model``, silence weight 0."""

    model: str
    data: str
    pipe: FeaturePipeline
    ali_in: list[str]
    silence_phones: list[int]
    out: str
    rand_prune: float = 0.0


def lda_acc_job(job: LdaAccJob) -> int:
    model = GmmModel.load(job.model)
    sil = np.isin(model.tid2phone, job.silence_phones)
    acc = LdaAccumulator(model.num_pdfs, job.rand_prune)
    n = 0
    for utt, x, ali in join(iter_feats(job.data, job.pipe), iter_alis(job.ali_in)):
        ali = np.asarray(ali, dtype=np.int64)
        if len(ali) != len(x):
            raise DataError(f"alignment has {len(ali)} frames, features {len(x)}", utt=utt)
        acc.add(x, model.tid2pdf[ali], (~sil[ali]).astype(np.float64))
        n += 1
    if acc.stats is None:
        raise DataError("acc-lda: no utterance has features and an alignment", file=job.data)
    with atomic_write(job.out, "wb") as f:
        np.savez(f, count=acc.stats.count, sums=acc.stats.sums, scatter=acc.stats.scatter)
    log.info("acc-lda: done %d utterances", n)
    return n


@dataclass
class MlltAccJob:
    """gmm-acc-mllt of one job with the current model, features and alignments."""

    model: str
    data: str
    pipe: FeaturePipeline
    ali_in: list[str]
    silence_phones: list[int]
    out: str
    rand_prune: float = 0.0


def mllt_acc_job(job: MlltAccJob) -> int:
    model = GmmModel.load(job.model)
    sil = np.isin(model.tid2phone, job.silence_phones)
    acc = MlltAccumulator(model, rand_prune=job.rand_prune)
    n = 0
    for _, x, ali in join(iter_feats(job.data, job.pipe), iter_alis(job.ali_in)):
        ali = np.asarray(ali, dtype=np.int64)
        acc.add(x, ali, ~sil[ali])
        n += 1
    g, beta = acc.result()
    with atomic_write(job.out, "wb") as f:
        np.savez(f, g=g, beta=np.asarray(beta))
    log.info("gmm-acc-mllt: done %d utterances, %.0f frames", n, beta)
    return n


# ---- training ----------------------------------------------------------------------------------
@dataclass
class LdaMlltConfig(TreeConfig):
    """steps/train_lda_mllt.sh options (same defaults): LDA to ``dim`` from +-``splice``
    spliced frames (splice-feats' default 4: 9 frames), MLLT re-estimated at ``mllt_iters``.
    ``lda_rand_prune`` and ``mllt_rand_prune`` replay Kaldi's ``--rand-prune`` (4.0 in the
    script) in acc-lda and gmm-acc-mllt; 0 (ours): exact statistics."""

    num_leaves: int = option(2500, ge=1)
    tot_gauss: int = option(15000, ge=1)
    dim: int = 40
    splice: int = 4
    mllt_iters: list[int] = field(default_factory=lambda: [2, 4, 6, 12])
    lda_rand_prune: float = 0.0
    mllt_rand_prune: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1 or self.splice < 0:
            raise ValueError(f"LdaMlltConfig: need dim >= 1 and splice >= 0: {self}")


def estimate_lda_stage(tr, cfg: LdaMlltConfig, prev_mdl: Path, prev_alis: list[Path], silence):
    """acc-lda per job on the previous alignments, est-lda: writes ``0.mat`` (and the full
    matrix ``full.mat``), returns the (dim, D) LDA matrix."""
    from pykaldi2.utils.jobs import job_log

    splice = FeaturePipeline(feat_type="splice", splice=cfg.splice)
    jobs = [
        LdaAccJob(
            model=str(prev_mdl),
            data=str(tr.splits[j]),
            pipe=splice,
            ali_in=[str(a) for a in prev_alis],
            silence_phones=list(silence),
            out=str(tr.path(f"lda.{j + 1}.acc")),
            rand_prune=cfg.lda_rand_prune,
        )
        for j in range(tr.nj)
    ]
    tr.runner(lda_acc_job, jobs, log=tr.log("lda_acc.JOB.log"), desc="acc-lda")
    stats = None
    for j in jobs:
        with np.load(j.out) as z:
            part = LdaStats(z["count"], z["sums"], z["scatter"])
        stats = part if stats is None else stats.add(part)
        os.unlink(j.out)
    with job_log(tr.log("lda_est.log"), f"est-lda --dim={cfg.dim}"):
        full = est_lda(stats, cfg.dim, full=True)
    write_kaldi_matrix(tr.path("full.mat"), full)
    write_kaldi_matrix(tr.path("0.mat"), full[: cfg.dim])
    return full[: cfg.dim]


def estimate_mllt(tr, model: GmmModel, x: int, silence, rand_prune: float = 0.0) -> GmmModel:
    """gmm-acc-mllt per job, est-mllt, gmm-transform-means, compose-transforms (MLLT at
    iteration ``x``); returns the model with the new transform."""
    from pykaldi2.utils.jobs import job_log

    jobs = [
        MlltAccJob(
            model=str(tr.mdl(x)),
            data=str(tr.splits[j]),
            pipe=p,
            ali_in=[str(tr.ali_paths()[j])],
            silence_phones=list(silence),
            out=str(tr.path(f"{x}.{j + 1}.macc")),
            rand_prune=rand_prune,
        )
        for j, p in enumerate(tr.pipes(FeaturePipeline.for_model(model)))
    ]
    tr.runner(mllt_acc_job, jobs, log=tr.log(f"macc.{x}.JOB.log"), desc="gmm-acc-mllt")
    g, beta = None, 0.0
    for j in jobs:
        with np.load(j.out) as z:
            g = z["g"] if g is None else g + z["g"]
            beta += float(z["beta"])
        os.unlink(j.out)
    with job_log(tr.log(f"mupdate.{x}.log"), "est-mllt"):
        a = est_mllt(g, beta)
    gmm_transform_means(model, a)
    model.transform = compose_transforms(a, model.transform)
    model.info = {**model.info, "mllt_done": x}
    write_kaldi_matrix(tr.path(f"{x}.mat"), model.transform)
    model.save(tr.mdl(x))
    return model


def train_lda_mllt(
    data_dir: str | os.PathLike,
    lang_dir: str | os.PathLike,
    ali_dir: str | os.PathLike,
    exp_dir: str | os.PathLike,
    config: LdaMlltConfig | None = None,
    *,
    nj: int | None = None,
    runner=None,
    cmd: str | None = None,
) -> tuple[GmmModel, list[dict]]:
    """LDA+MLLT triphone training (steps/train_lda_mllt.sh) into ``exp_dir``.

    The base features (CMN'd MFCC) are spliced +-``splice`` frames and projected to ``dim`` by
    LDA estimated on the previous system's alignments (``ali_dir``); a new tree is built on
    them, then training re-estimates MLLT at ``mllt_iters``. The model's ``transform`` is the
    (dim, (2 splice + 1) F) matrix (also written as ``final.mat``), ``feat_type == "lda"``.

    Returns:
        ``(model, history)`` as :func:`~pykaldi2.hmm.mono.train_mono`.
    """
    from pykaldi2.hmm.training import copy_lang_files, gauss_schedule, training_setup
    from pykaldi2.hmm.tri import build_tree_stage, default_nj, prev_alignments
    from pykaldi2.lang.lang_dir import load_lang
    from pykaldi2.utils.jobs import JobRunner

    cfg = config or LdaMlltConfig()
    nj = default_nj(ali_dir, nj)
    prev_mdl, prev_alis = prev_alignments(ali_dir)
    silence = load_lang(lang_dir).silence_phones
    own = runner is None
    runner = runner or JobRunner(nj, cmd=cmd)
    try:
        tr = training_setup(data_dir, lang_dir, exp_dir, nj, runner, cfg.max_missing_text_fraction)
        first = 1
        if tr.start(cfg, "tri_lda_mllt") and (x := tr.resume_point(1, cfg.num_iters)) is not None:
            first, model = x, GmmModel.load(tr.mdl(x))
        else:
            copy_lang_files(lang_dir, exp_dir)
            lda = estimate_lda_stage(tr, cfg, prev_mdl, prev_alis, silence)
            pipe = FeaturePipeline(feat_type="lda", transform=lda, splice=cfg.splice)
            model = build_tree_stage(tr, cfg, prev_mdl, prev_alis, pipe)
        splice_opts = f"--left-context={cfg.splice} --right-context={cfg.splice}\n"
        (tr.path("splice_opts")).write_text(splice_opts)

        def before_acc(x: int, model: GmmModel) -> GmmModel:
            if x in cfg.mllt_iters and model.info.get("mllt_done") != x:
                return estimate_mllt(tr, model, x, silence, cfg.mllt_rand_prune)
            return model

        schedule = gauss_schedule(cfg.num_leaves, cfg.tot_gauss, cfg.max_iter_inc)
        model = tr.iterate(model, cfg, schedule, first=first, before_acc=before_acc)
        return tr.finish(model, cfg, "tri_lda_mllt")
    finally:
        if own:
            runner.close()
