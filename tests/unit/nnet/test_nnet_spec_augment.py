"""Kaldi's spec-augment-layer (GeneralDropoutComponent with specaugment-max-proportion +
SpecAugmentTimeMaskComponent): the vectorised masks against Kaldi's loops, their statistics
against what the components' parameters imply, and the layer in TDNN-F (training only, no
parameters, same outputs in test mode)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pykaldi2.nnet.spec_augment import SpecAugmentLayer, masks_reference
from pykaldi2.nnet.tdnn import Tdnnf, TdnnfConfig


@pytest.mark.parametrize("seed", range(5))
def test_masks_equal_kaldis_loops(seed):
    layer = SpecAugmentLayer(0.5, 0.2, 20)
    lengths = np.array([1, 7, 60, 200, 141, 0])
    f, t = layer.masks(lengths, 200, 40, seed)
    f_ref, t_ref = masks_reference(np.random.default_rng(seed), lengths, 200, 40, 0.5, 0.2, 20)
    assert np.array_equal(f, f_ref) and np.array_equal(t, t_ref)
    assert np.all(t[lengths == 0] == 1) and np.all(t[1, 7:] == 1)  # nothing past the length


def test_mask_statistics_are_kaldis():
    """F = 80, p = 0.5: bands of 0..40 bins (mean 20), one contiguous (wrapped) run each; time:
    zeroed runs of 1..20 frames between kept runs of 1..80 (z = 0.2, M = 20), so about
    10.5 / 51 of the frames are zeroed."""
    layer = SpecAugmentLayer(0.5, 0.2, 20)
    n = 4000
    f, t = layer.masks(np.full(n, 400), 400, 80, seed=1)
    width = 80 - f.sum(1)
    assert width.min() == 0 and width.max() == 40
    assert abs(width.mean() - 20) < 0.5
    for row in f[:200]:  # the zeroed bins are one run on the circle of bins
        changes = np.count_nonzero(row != np.roll(row, 1))
        assert changes in (0, 2)
    assert abs((1 - t).mean() - 10.5 / 51) < 0.01
    runs = []
    for row in t[:300]:
        d = np.diff(np.concatenate([[1], row, [1]]))
        starts, ends = np.flatnonzero(d == -1), np.flatnonzero(d == 1)
        runs += list(ends - starts)
    runs = np.asarray(runs)
    assert runs.min() >= 1 and runs.max() <= 40  # two zeroed runs can only meet at the start
    assert np.mean(runs <= 20) > 0.99
    # 80% of the sequences start with a zeroed run (the kept one first only with prob. z)
    assert abs((t[:, 0] == 0).mean() - 0.8) < 0.03


def test_layer_applies_both_masks_in_training_only():
    torch.manual_seed(0)
    layer = SpecAugmentLayer(0.5, 0.2, 20)
    x = torch.randn(3, 50, 10) + 5.0
    lengths = torch.tensor([50, 30, 12])
    assert torch.equal(layer.eval()(x, lengths), x)
    layer.train()
    torch.manual_seed(3)
    y = layer(x, lengths)
    torch.manual_seed(3)
    assert torch.equal(layer(x, lengths), y)  # reproducible from torch's RNG
    zero = y == 0
    for s in range(3):
        bins = zero[s].all(0)  # masked bins: zero on every frame
        frames = zero[s].all(1)  # masked frames: zero in every bin
        expect = bins[None, :] | frames[:, None]
        assert torch.equal(zero[s], expect)
        assert torch.equal(y[s][~expect], x[s][~expect])
        assert not frames[lengths[s] :].any()


def test_tdnnf_with_spec_augment_has_no_parameters_and_is_unchanged_in_test_mode():
    cfg = dict(input_dim=8, num_classes=5, hidden=16, bottleneck=4, prefinal_dim=6,
               time_strides=[1, 0, 3], subsampling=3, xent_branch=True)  # fmt: skip
    torch.manual_seed(0)
    plain = Tdnnf(TdnnfConfig(**cfg))
    aug = Tdnnf(TdnnfConfig(**cfg, spec_augment=True))
    assert plain.state_dict().keys() == aug.state_dict().keys()
    aug.load_state_dict(plain.state_dict())
    x, lengths = torch.randn(2, 40, 8), torch.tensor([40, 33])
    plain.eval(), aug.eval()
    assert torch.equal(plain(x, lengths), aug(x, lengths))
    aug.train()
    torch.manual_seed(1)
    out = aug(x, lengths)
    assert out.shape == plain(x, lengths).shape and not torch.equal(out, plain.train()(x, lengths))
    with pytest.raises(Exception, match="spec_augment_time_zeroed_proportion"):
        TdnnfConfig(**cfg, spec_augment=True, spec_augment_time_zeroed_proportion=1.5)
