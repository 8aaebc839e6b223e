"""CMVN: stats / apply / sliding window against numpy references (and kaldi-native-fbank)."""

from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np
import pytest

from pykaldi2.features.cmvn import (
    SlidingCmnConfig,
    acc_cmvn_stats,
    apply_cmvn,
    apply_cmvn_sliding,
    cmvn_stats_per_speaker,
    compute_cmvn_stats,
)
from pykaldi2.features.reference import (
    apply_cmvn_reference,
    cmvn_stats_reference,
    sliding_cmn_reference,
)
from pykaldi2.utils.errors import Pykaldi2Error


def _feats(t=50, f=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((t, f)) * 3 + np.arange(f)).astype(np.float32)


def test_stats_layout_matches_reference_and_knf():
    x = _feats()
    st = compute_cmvn_stats(x)
    assert st.shape == (2, 7) and st.dtype == np.float64
    assert st[0, -1] == 50 and st[1, -1] == 0
    np.testing.assert_allclose(st, cmvn_stats_reference(x), rtol=1e-12)
    np.testing.assert_allclose(st, knf.compute_cmvn_stats(x), rtol=1e-6)


def test_stats_add_up():
    a, b = _feats(20, seed=1), _feats(30, seed=2)
    np.testing.assert_allclose(acc_cmvn_stats([a, b]), compute_cmvn_stats(np.vstack([a, b])))
    with pytest.raises(Pykaldi2Error, match="dims differ"):
        acc_cmvn_stats([a, a[:, :3]])


@pytest.mark.parametrize("norm_vars", [False, True])
def test_apply_cmvn_matches_reference(norm_vars):
    x = _feats()
    st = compute_cmvn_stats(_feats(seed=3))
    got = apply_cmvn(x, st, norm_vars=norm_vars)
    np.testing.assert_allclose(got, apply_cmvn_reference(x, st, norm_vars), atol=1e-5)
    opts = knf.CmvnOptions()
    opts.norm_vars = norm_vars
    np.testing.assert_allclose(got, knf.apply_cmvn(st, opts, x), atol=1e-4)
    back = apply_cmvn(got, st, norm_vars=norm_vars, reverse=True)
    np.testing.assert_allclose(back, x, atol=1e-4)
    # own stats: zero mean (and unit variance)
    own = apply_cmvn(x, compute_cmvn_stats(x), norm_vars=norm_vars)
    np.testing.assert_allclose(own.mean(0), 0, atol=1e-5)
    if norm_vars:
        np.testing.assert_allclose(own.std(0), 1, atol=1e-4)


def test_apply_cmvn_bad_stats():
    x = _feats()
    with pytest.raises(Pykaldi2Error, match="do not fit 6-dim"):
        apply_cmvn(x, np.zeros((2, 5)))
    with pytest.raises(Pykaldi2Error, match="frame count"):
        apply_cmvn(x, np.zeros((2, 7)))


@pytest.mark.parametrize(
    "cfg, t",
    [
        (SlidingCmnConfig(cmn_window=10, min_window=4), 37),
        (SlidingCmnConfig(cmn_window=10, min_window=4, norm_vars=True), 37),
        (SlidingCmnConfig(cmn_window=9, center=True), 30),
        (SlidingCmnConfig(cmn_window=8, center=True, norm_vars=True), 30),
        (SlidingCmnConfig(), 120),  # Kaldi defaults, utterance shorter than the window
        (SlidingCmnConfig(cmn_window=5, min_window=1, norm_vars=True), 12),  # 1-frame window
        (SlidingCmnConfig(cmn_window=50, min_window=100), 20),  # min window > utterance
    ],
)
def test_sliding_cmn_matches_reference(cfg, t):
    x = _feats(t, 4, seed=t)
    got = apply_cmvn_sliding(x, cfg)
    ref = sliding_cmn_reference(x, cfg.cmn_window, cfg.min_window, cfg.center, cfg.norm_vars)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_sliding_cmn_whole_window_is_global_cmn():
    x = _feats(40, 3)
    got = apply_cmvn_sliding(x, SlidingCmnConfig(cmn_window=100, center=True))
    np.testing.assert_allclose(got, apply_cmvn(x, compute_cmvn_stats(x)), atol=1e-5)


def test_per_speaker_stats():
    feats = {"a1": _feats(10, seed=1), "a2": _feats(12, seed=2), "b1": _feats(9, seed=3)}
    # a3 has no features (skipped, as Kaldi skips it); x9 has features but no speaker
    utt2spk = {"a1": "a", "a2": "a", "a3": "a", "b1": "b"}
    st = cmvn_stats_per_speaker({**feats, "x9": _feats(5, seed=4)}, utt2spk)
    assert list(st) == ["a", "b"]
    np.testing.assert_allclose(st["a"], compute_cmvn_stats(np.vstack([feats["a1"], feats["a2"]])))
    assert st["b"][0, -1] == 9
    with pytest.raises(Pykaldi2Error, match="speaker c has no utterance"):
        cmvn_stats_per_speaker(feats, {"c1": "c"})
