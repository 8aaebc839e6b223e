import numpy as np
import pytest
import torch

from pykaldi2.simulation.config import SpecAugConfig
from pykaldi2.simulation.specaug import spec_augment, time_warp, time_warp_reference


def test_masks_within_bounds():
    cfg = SpecAugConfig(
        enable=True,
        num_freq_masks=2,
        max_freq_width=5,
        num_time_masks=3,
        max_time_width=40,
        max_time_fraction=0.1,
        time_warp=0,
    )
    feats = np.random.default_rng(0).standard_normal((200, 40)).astype(np.float32) + 5
    for seed in range(20):
        out, info = spec_augment(feats, cfg, np.random.default_rng(seed))
        assert len(info["freq_masks"]) == 2 and len(info["time_masks"]) == 3
        masked = np.zeros_like(feats, dtype=bool)
        for s, w in info["freq_masks"]:
            assert 0 <= w <= 5 and 0 <= s and s + w <= 40
            masked[:, s : s + w] = True
        for s, w in info["time_masks"]:
            assert 0 <= w <= 20 and 0 <= s and s + w <= 200  # 10% of 200 frames
            masked[s : s + w, :] = True
        assert np.all(out[masked] == 0)
        np.testing.assert_array_equal(out[~masked], feats[~masked])
    assert feats.min() > -10  # input untouched (no zeros written into it)
    assert np.count_nonzero(feats == 0) == 0


def test_time_warp_matches_reference_and_torch():
    feats = np.random.default_rng(1).standard_normal((120, 8)).astype(np.float32)
    fast = time_warp(feats, 50, 62)
    np.testing.assert_allclose(fast, time_warp_reference(feats, 50, 62), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(time_warp(torch.from_numpy(feats), 50, 62).numpy(), fast, atol=1e-6)
    np.testing.assert_array_equal(fast[62], feats[50])  # the centre moved
    np.testing.assert_array_equal(fast[0], feats[0])


def test_full_specaug_torch_and_disabled():
    cfg = SpecAugConfig(enable=True, time_warp=10, mask_value="mean")
    feats = torch.randn(300, 80)
    out, info = spec_augment(feats, cfg, np.random.default_rng(2))
    assert isinstance(out, torch.Tensor) and out.shape == feats.shape
    c, w = info["warp"]
    assert 10 <= c < 290 and abs(w - c) <= 10
    for _s, width in info["time_masks"]:
        assert width <= min(100, 0.15 * 300)
    same, info = spec_augment(feats, SpecAugConfig(enable=False), np.random.default_rng(2))
    assert torch.equal(same, feats) and info["warp"] is None


def test_rejects_wrong_rank():
    with pytest.raises(Exception, match=r"\(T, F\)"):
        spec_augment(np.zeros(10), SpecAugConfig(enable=True), np.random.default_rng(0))
