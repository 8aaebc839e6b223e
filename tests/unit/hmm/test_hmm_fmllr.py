"""fMLLR: the fast statistics equal FmllrDiagGmmAccs' frame-by-frame ones, the row-by-row
update never lowers the auxiliary function, reaches its optimum (checked against a generic
optimizer) and undoes a known speaker transform."""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.hmm.fmllr import (
    FmllrOptions,
    fmllr_auxf,
    fmllr_stats,
    fmllr_stats_ref,
    fmllr_update,
)
from pykaldi2.hmm.gmm import arrays_from_normal


def _gmm(rng, num_pdfs=4, per_pdf=3, dim=3):
    g = num_pdfs * per_pdf
    offsets = np.arange(0, g + 1, per_pdf)
    w = rng.uniform(0.5, 1.5, g)
    w /= np.add.reduceat(w, offsets[:-1])[np.repeat(np.arange(num_pdfs), per_pdf)]
    return arrays_from_normal(
        offsets, w, rng.normal(0, 3, (g, dim)), rng.uniform(0.5, 2.0, (g, dim))
    )


def _sample(rng, arrays, n):
    """Frames drawn from the GMMs: (x (n, D), pdf (n,))."""
    pdf = rng.integers(0, arrays.num_pdfs, n)
    x = np.empty((n, arrays.dim))
    for t, p in enumerate(pdf):
        lo, hi = arrays.offsets[p], arrays.offsets[p + 1]
        g = rng.choice(np.arange(lo, hi), p=arrays.weights[lo:hi] / arrays.weights[lo:hi].sum())
        x[t] = arrays.means[g] + rng.normal(size=arrays.dim) / np.sqrt(arrays.inv_vars[g])
    return x, pdf


def test_fast_stats_equal_reference():
    rng = np.random.default_rng(0)
    a = _gmm(rng)
    x, pdf = _sample(rng, a, 60)
    w = rng.uniform(0, 1, 60)
    w[::7] = 0.0  # silence frames
    fast, _ = fmllr_stats(a, x, pdf, w, block=16)
    ref = fmllr_stats_ref(a, x, pdf, w)
    assert fast.beta == pytest.approx(ref.beta, rel=1e-9)
    np.testing.assert_allclose(fast.k, ref.k, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fast.g, ref.g, rtol=1e-8, atol=1e-10)


def test_update_undoes_a_speaker_transform_and_is_optimal():
    import scipy.optimize

    rng = np.random.default_rng(1)
    a = _gmm(rng, num_pdfs=6, per_pdf=2, dim=3)
    y, pdf = _sample(rng, a, 4000)
    # the speaker's features x: y = A x + b  <=>  x = A^-1 (y - b)
    a_true = np.eye(3) + rng.normal(0, 0.15, (3, 3))
    b_true = rng.normal(0, 0.5, 3)
    x = (y - b_true) @ np.linalg.inv(a_true).T
    stats, _ = fmllr_stats(a, x, pdf)
    unit = np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1)
    w, impr = fmllr_update(stats, FmllrOptions(min_count=10, num_iters=40))
    assert impr > 0 and fmllr_auxf(w, stats) == pytest.approx(fmllr_auxf(unit, stats) + impr)
    np.testing.assert_allclose(w, np.concatenate([a_true, b_true[:, None]], axis=1), atol=0.1)
    # every sweep raises the auxiliary function
    prev, cur = fmllr_auxf(unit, stats), unit
    for _ in range(5):
        cur, _ = fmllr_update(stats, FmllrOptions(min_count=10, num_iters=1), w0=cur)
        q = fmllr_auxf(cur, stats)
        assert q >= prev - 1e-9
        prev = q
    # a generic optimizer of the same auxiliary function finds the same maximum
    res = scipy.optimize.minimize(
        lambda v: -fmllr_auxf(v.reshape(3, 4), stats), unit.ravel(), method="BFGS"
    )
    assert fmllr_auxf(w, stats) >= -res.fun - 1e-6 * abs(res.fun)
    np.testing.assert_allclose(w, res.x.reshape(3, 4), atol=1e-3)
    # too few frames: the start transform stays
    small, _ = fmllr_stats(a, x[:20], pdf[:20])
    np.testing.assert_array_equal(fmllr_update(small)[0], unit)
