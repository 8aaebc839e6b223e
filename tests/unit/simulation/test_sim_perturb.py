import numpy as np
import pytest

from pykaldi2.features.extractors import FbankConfig, make_extractor
from pykaldi2.simulation.perturb import rescale_ali, speed_perturb, speed_ratio, volume_perturb


@pytest.mark.parametrize("factor", [0.9, 1.0, 1.1])
def test_speed_changes_duration_and_targets_follow(speech, factor):
    x, sr = speech
    x = x[: sr * 2]
    y = speed_perturb(x, factor)
    assert abs(len(y) - len(x) / factor) <= 1
    cfg = FbankConfig(sample_frequency=sr, num_mel_bins=23)
    feats = make_extractor(cfg).compute(y, sr)
    t_in = cfg.num_frames(len(x))
    ali = np.arange(t_in) // 7  # a fake pdf_id sequence with segments
    ali2 = rescale_ali(ali, cfg.num_frames(len(y)))
    assert len(ali2) == feats.shape[0]
    assert abs(len(ali2) - t_in / factor) <= 2
    # Segments keep their relative position and order.
    assert np.all(np.diff(ali2) >= 0) and ali2[0] == ali[0] and ali2[-1] == ali[-1]


def test_speed_perturb_changes_pitch():
    sr = 8000
    t = np.arange(sr) / sr
    x = (1000 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    y = speed_perturb(x, 1.1)
    f = np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(np.abs(np.fft.rfft(y)))]
    assert f == pytest.approx(550, abs=3)
    assert speed_ratio(0.9) == (10, 9)


def test_rescale_ali_nearest_neighbour():
    ali = np.array([1, 1, 2, 3])
    np.testing.assert_array_equal(rescale_ali(ali, 8), [1, 1, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(rescale_ali(ali, 2), [1, 3])  # centres 0.25, 0.75
    soft = np.eye(4)
    assert rescale_ali(soft, 6).shape == (6, 4)
    assert len(rescale_ali(ali, 0)) == 0


def test_volume():
    x = np.ones(10, np.float32)
    assert volume_perturb(x, 20.0)[0] == pytest.approx(10.0)
    assert volume_perturb(x, -6.0)[0] == pytest.approx(0.501, abs=1e-3)
