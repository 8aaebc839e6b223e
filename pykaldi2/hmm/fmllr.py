"""fMLLR (constrained MLLR) per speaker: Kaldi's FmllrDiagGmmAccs, gmm-est-fmllr and
gmm-est-fmllr-gpost, in numpy.

A speaker's transform W = [A b] (D, D + 1) maps features to ``A x + b``. With Gaussian
posteriors gamma_tg of the frames (the pdf from an alignment, the Gaussians within it), the
statistics are

    beta = sum_t,g gamma_tg
    K    = sum_t (sum_g gamma_tg mu_g / var_g) x+_t^T            (D, D + 1),  x+ = [x; 1]
    G_i  = sum_t (sum_g gamma_tg / var_gi) x+_t x+_t^T           (D + 1, D + 1), i < D

and W maximizes the auxiliary function

    Q(W) = beta log|det A| + tr(W K^T) - 1/2 sum_i w_i G_i w_i^T

(FmllrAuxFuncDiagGmm). The update (ComputeFmllrMatrixDiagGmmFull) starts from the unit
transform and sweeps the rows 40 times: with c the i-th row of the cofactors of A (extended
with 0), ``w_i = (alpha c + k_i) G_i^-1`` where alpha solves the quadratic
``alpha^2 e1 + alpha e2 - beta = 0`` (``e1 = c G_i^-1 c^T``, ``e2 = c G_i^-1 k_i^T``) for the
root with the larger Q. Each row update maximizes Q exactly, so Q never decreases.

:func:`fmllr_stats` is the fast kernel (per-frame Gaussian sums with one matrix product per pdf,
the outer products in blocks); :func:`fmllr_stats_ref` accumulates frame by frame, Gaussian by
Gaussian, as FmllrDiagGmmAccs does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from pykaldi2.hmm.gmm import GmmArrays
from pykaldi2.utils.config import ConfigMixin, option

log = logging.getLogger(__name__)


@dataclass
class FmllrStats:
    """Statistics of one speaker. beta: frames (posterior mass); k: (D, D+1); g: (D, D+1, D+1)."""

    beta: float
    k: np.ndarray
    g: np.ndarray

    @classmethod
    def zeros(cls, dim: int) -> FmllrStats:
        return cls(0.0, np.zeros((dim, dim + 1)), np.zeros((dim, dim + 1, dim + 1)))

    @property
    def dim(self) -> int:
        return int(self.k.shape[0])

    def add(self, other: FmllrStats) -> FmllrStats:
        self.beta += other.beta
        self.k += other.k
        self.g += other.g
        return self


def fmllr_stats(
    arrays: GmmArrays,
    x: np.ndarray,
    pdfs: np.ndarray,
    weights: np.ndarray | None = None,
    post_arrays: GmmArrays | None = None,
    post_x: np.ndarray | None = None,
    block: int = 4096,
) -> tuple[FmllrStats, float]:
    """fMLLR statistics of frames ``x`` (T, D) with pdfs ``pdfs`` (T,) (frame weights (T,),
    e.g. 0 for silence). The Gaussian posteriors come from ``post_arrays`` on ``post_x``
    (gmm-post-to-gpost with the speaker-independent alignment model) or, by default, from
    ``arrays`` on ``x`` (gmm-est-fmllr); the means and variances are ``arrays``'.

    Returns the statistics and the total weighted log-likelihood of the frames."""
    x = np.asarray(x, dtype=np.float64)
    t_frames, d = x.shape
    w = np.ones(t_frames) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = w != 0
    stats = FmllrStats.zeros(d)
    if not keep.any():
        return stats, 0.0
    src = arrays if post_arrays is None else post_arrays
    px = (x if post_x is None else np.asarray(post_x, dtype=np.float64))[keep]
    xk, wk, pk = x[keep], w[keep], pdfs[keep]
    n = len(xk)
    # per frame: a = sum_m gamma_m mu_m / var_m, b = sum_m gamma_m / var_m (each pdf's frames
    # at once: posteriors (F, M) times the pdf's (M, D) parameters)
    a = np.zeros((n, d))
    b = np.zeros((n, d))
    gamma = np.zeros(n)
    frame_ll = np.zeros(n)
    order = np.argsort(pk, kind="stable")
    ups, starts = np.unique(pk[order], return_index=True)
    ends = np.append(starts[1:], n)
    for p, s, e in zip(ups.tolist(), starts.tolist(), ends.tolist()):
        idx = order[s:e]
        lo, hi = int(src.offsets[p]), int(src.offsets[p + 1])
        xs = px[idx]
        ll = (
            src.gconsts[lo:hi].astype(np.float64)
            + xs @ src.means_invvars[lo:hi].T.astype(np.float64)
            - 0.5 * (xs * xs) @ src.inv_vars[lo:hi].T.astype(np.float64)
        )
        mx = ll.max(1, keepdims=True)
        pr = np.exp(ll - mx)
        norm = pr.sum(1, keepdims=True)
        pr /= norm
        frame_ll[idx] = mx[:, 0] + np.log(norm[:, 0])
        pr *= wk[idx, None]
        lo, hi = int(arrays.offsets[p]), int(arrays.offsets[p + 1])
        a[idx] = pr @ arrays.means_invvars[lo:hi].astype(np.float64)
        b[idx] = pr @ arrays.inv_vars[lo:hi].astype(np.float64)
        gamma[idx] = pr.sum(1)
    xp = np.concatenate([xk, np.ones((n, 1))], axis=1)
    stats.beta = float(gamma.sum())
    stats.k = a.T @ xp
    iu = np.triu_indices(d + 1)
    g_up = np.zeros((d, len(iu[0])))
    for s in range(0, n, block):
        xb = xp[s : s + block]
        outer = xb[:, iu[0]] * xb[:, iu[1]]  # (B, (D+1)(D+2)/2)
        g_up += b[s : s + block].T @ outer
    stats.g[:, iu[0], iu[1]] = g_up
    stats.g[:, iu[1], iu[0]] = g_up
    return stats, float(frame_ll @ wk)


def fmllr_stats_ref(
    arrays: GmmArrays, x: np.ndarray, pdfs: np.ndarray, weights: np.ndarray | None = None
) -> FmllrStats:
    """Slow reference of :func:`fmllr_stats`: frame by frame, Gaussian by Gaussian."""
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[1]
    stats = FmllrStats.zeros(d)
    for t in range(len(x)):
        wt = 1.0 if weights is None else float(weights[t])
        if wt == 0:
            continue
        p = int(pdfs[t])
        lo, hi = int(arrays.offsets[p]), int(arrays.offsets[p + 1])
        ll = np.array(
            [
                float(arrays.gconsts[g])
                + float(x[t] @ arrays.means_invvars[g].astype(np.float64))
                - 0.5 * float((x[t] ** 2) @ arrays.inv_vars[g].astype(np.float64))
                for g in range(lo, hi)
            ]
        )
        post = np.exp(ll - ll.max())
        post /= post.sum()
        xp = np.append(x[t], 1.0)
        for k, g in enumerate(range(lo, hi)):
            gam = wt * post[k]
            stats.beta += gam
            stats.k += gam * np.outer(arrays.means_invvars[g].astype(np.float64), xp)
            for i in range(d):
                stats.g[i] += gam * float(arrays.inv_vars[g, i]) * np.outer(xp, xp)
    return stats


def fmllr_auxf(w: np.ndarray, stats: FmllrStats) -> float:
    """Q(W) = beta log|det A| + tr(W K^T) - 1/2 sum_i w_i G_i w_i^T (FmllrAuxFuncDiagGmm)."""
    d = stats.dim
    _, logdet = np.linalg.slogdet(w[:, :d])
    return float(
        stats.beta * logdet + np.sum(w * stats.k) - 0.5 * np.einsum("ij,ijk,ik->", w, stats.g, w)
    )


@dataclass
class FmllrOptions(ConfigMixin):
    """Kaldi's FmllrOptions (full update): ``min_count`` frames to estimate a transform at all,
    ``num_iters`` sweeps over the rows."""

    min_count: float = option(500.0, ge=0)
    num_iters: int = option(40, ge=1)


def fmllr_update(
    stats: FmllrStats, opts: FmllrOptions | None = None, w0: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """The fMLLR transform (D, D + 1) from ``stats`` (FmllrDiagGmmAccs::Update, full), starting
    at ``w0`` (default the unit transform [I 0]); returns it and the auxf improvement. Below
    ``min_count`` frames the start transform is returned unchanged."""
    opts = opts or FmllrOptions()
    d = stats.dim
    w = np.concatenate([np.eye(d), np.zeros((d, 1))], axis=1) if w0 is None else np.array(w0, float)
    if stats.beta <= opts.min_count:
        log.warning("fMLLR: not updating, below min-count: count is %g", stats.beta)
        return w, 0.0
    g_inv = np.stack([np.linalg.inv(stats.g[i]) for i in range(d)])
    before = fmllr_auxf(w, stats)
    beta = stats.beta
    c = np.zeros(d + 1)
    for _ in range(opts.num_iters):
        # inverse of A = W[:, :d], inverted once per sweep and kept up to date row by row
        # (Sherman-Morrison) instead of Kaldi's inversion per row: the same cofactors
        a_inv = np.linalg.inv(w[:, :d])
        for i in range(d):
            c[:d] = a_inv[:, i]  # cofactor row of A, up to the constant det(A)
            k = stats.k[i]
            cg = g_inv[i] @ c
            e1 = float(c @ cg)
            e2 = float(cg @ k)
            disc = math.sqrt(e2 * e2 + 4 * e1 * beta)
            a1, a2 = (-e2 + disc) / (2 * e1), (-e2 - disc) / (2 * e1)
            q1 = beta * math.log(abs(a1 * e1 + e2)) - 0.5 * a1 * a1 * e1
            q2 = beta * math.log(abs(a2 * e1 + e2)) - 0.5 * a2 * a2 * e1
            alpha = a1 if q1 > q2 else a2
            row = g_inv[i] @ (alpha * c + k)
            delta = row[:d] - w[i, :d]
            w[i] = row
            col = a_inv[:, i].copy()
            a_inv -= np.outer(col, delta @ a_inv) / (1.0 + float(delta @ col))
    after = fmllr_auxf(w, stats)
    impr = after - before
    if impr < 0 and not np.isclose(after, before):
        log.warning("fMLLR: objective did not increase; keeping the start transform")
        return (np.concatenate([np.eye(d), np.zeros((d, 1))], axis=1) if w0 is None else w0), 0.0
    return w, impr
