"""The fast GMM accumulation (grouped by pdf) equals Kaldi's per-frame accumulation."""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.hmm.gmm import gmm_acc_stats_ali, gmm_acc_stats_ali_ref, gmm_boost_silence


def test_fast_stats_equal_reference(synth, mono_trained):
    model, alis, _ = mono_trained
    assert model.am.num_gauss > model.num_pdfs  # mixed-up GMMs: real posteriors
    fast = gmm_acc_stats_ali(model, synth.feats, alis)
    ref = gmm_acc_stats_ali_ref(model, synth.feats, alis)
    assert fast.num_frames == ref.num_frames
    assert fast.tot_like == pytest.approx(ref.tot_like, rel=1e-5)
    np.testing.assert_array_equal(fast.trans, ref.trans)
    for p in range(model.num_pdfs):
        a, b = fast.gmm.get_acc(p), ref.gmm.get_acc(p)
        np.testing.assert_allclose(a.occupancy, b.occupancy, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(a.mean_accumulator, b.mean_accumulator, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(
            a.variance_accumulator, b.variance_accumulator, rtol=1e-4, atol=1e-3
        )


def test_boost_silence_scales_only_silence_weights(mono_trained):
    model = mono_trained[0]
    boosted = gmm_boost_silence(model, [1], boost=2.0)
    for p in range(model.num_pdfs):
        w0 = np.asarray(model.am.get_pdf(p).weights)
        w1 = np.asarray(boosted.get_pdf(p).weights)
        factor = 2.0 if p < 3 else 1.0  # phone 1 (silence) has pdfs 0..2
        np.testing.assert_allclose(w1, w0 * factor, rtol=1e-6)
