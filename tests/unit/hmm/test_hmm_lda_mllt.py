"""LDA equals the direct generalized eigenproblem; MLLT reaches a stationary point."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from pykaldi2.hmm.lda import (
    acc_lda,
    est_lda,
    est_mllt,
    gmm_acc_mllt,
    gmm_acc_mllt_ref,
    lda_scatters,
    mllt_objf,
)


def _lda_data(rng, d=6, classes=5, n=400):
    centers = rng.normal(0, 3, (classes, d))
    mix = rng.normal(0, 1, (d, d))
    feats, alis = {}, {}
    for u in range(4):
        cls = rng.integers(0, classes, n)
        x = (centers[cls] + rng.normal(0, 1, (n, d))) @ mix
        feats[f"u{u}"], alis[f"u{u}"] = x.astype(np.float32), cls
    return feats, alis


def test_compose_transforms_and_affine():
    from pykaldi2.hmm.lda import compose_transforms
    from pykaldi2.hmm.streams import transform_feats

    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    b = rng.normal(size=(3, 4))
    a = rng.normal(size=(3, 3))
    aff = rng.normal(size=(3, 4))  # (3, 3 + 1): affine after b
    np.testing.assert_allclose(
        transform_feats(x, compose_transforms(a, b)),
        transform_feats(transform_feats(x, b), a),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        transform_feats(x, compose_transforms(aff, b)),
        transform_feats(transform_feats(x, b), aff),
        rtol=1e-4,
        atol=1e-5,
    )


def test_lda_matches_generalized_eigenproblem():
    rng = np.random.default_rng(0)
    feats, alis = _lda_data(rng)
    stats = acc_lda(feats, alis, num_classes=5)
    m = est_lda(stats, dim=3)
    w, b = lda_scatters(stats)
    # direct: B v = lambda W v, scipy normalizes v^T W v = 1
    vals, vecs = scipy.linalg.eigh(b, w)
    ref = vecs[:, ::-1][:, :3].T
    for row, ref_row in zip(m, ref):
        sign = np.sign(row @ ref_row)
        np.testing.assert_allclose(row, sign * ref_row, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(m @ w @ m.T, np.eye(3), atol=1e-8)
    np.testing.assert_allclose(np.diag(m @ b @ m.T), vals[::-1][:3], rtol=1e-8)


def test_lda_within_and_between_from_definition():
    rng = np.random.default_rng(1)
    feats, alis = _lda_data(rng, d=3, classes=3, n=50)
    w, b = lda_scatters(acc_lda(feats, alis, 3))
    x = np.concatenate([feats[u] for u in sorted(feats)]).astype(np.float64)
    c = np.concatenate([alis[u] for u in sorted(feats)])
    mean = x.mean(0)
    w_ref = sum(
        ((x[c == k] - x[c == k].mean(0)).T @ (x[c == k] - x[c == k].mean(0))) for k in range(3)
    ) / len(x)
    b_ref = sum(
        (c == k).sum() * np.outer(x[c == k].mean(0) - mean, x[c == k].mean(0) - mean)
        for k in range(3)
    ) / len(x)
    np.testing.assert_allclose(w, w_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(b, b_ref, rtol=1e-8, atol=1e-10)


def test_mllt_reaches_stationary_point():
    rng = np.random.default_rng(2)
    d, beta = 4, 1000.0
    g_stats = []
    for _ in range(d):
        r = rng.normal(0, 1, (d, 3 * d))
        g_stats.append(r @ r.T / (3 * d) * beta + np.eye(d))
    g_stats = np.stack(g_stats)
    a = est_mllt(g_stats, beta, num_iters=200)
    assert mllt_objf(a, g_stats, beta) > mllt_objf(np.eye(d), g_stats, beta)
    # gradient of beta log|det A| - 1/2 sum_i a_i G_i a_i^T vanishes at the optimum
    grad = beta * np.linalg.inv(a).T - np.einsum("ijk,ik->ij", g_stats, a)
    assert np.abs(grad).max() < 1e-3 * beta
    # each row update is exact: one more sweep does not change the objective
    before = mllt_objf(a, g_stats, beta)
    assert mllt_objf(est_mllt(g_stats, beta, num_iters=1, a=a), g_stats, beta) == pytest.approx(
        before, rel=1e-9
    )


def test_mllt_stats_fast_equal_reference(synth, mono_trained):
    from pykaldi2.hmm.inputs import feats_for_model

    model, alis, _, _ = mono_trained
    some = {u: alis[u] for u in sorted(alis)[:6]}
    feats = feats_for_model(model, synth.data, list(some))
    fast, beta = gmm_acc_mllt(model, feats, some, silence_phones=[1])
    ref, beta_ref = gmm_acc_mllt_ref(model, feats, some, silence_phones=[1])
    assert beta == pytest.approx(beta_ref, rel=1e-6)  # float32 posteriors summed
    np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    # MLLT on these statistics improves the objective
    a = est_mllt(fast, beta, num_iters=3)
    assert mllt_objf(a, fast, beta) > mllt_objf(np.eye(len(a)), fast, beta)
