import numpy as np
import pytest

from pykaldi2.simulation.reverb import reverberate, sample_positions
from pykaldi2.simulation.rir import (
    Room,
    direct_path_delay,
    hybrid_rir,
    image_source_rir,
    image_source_rir_reference,
    schroeder_t60,
)

SR = 8000


def test_vectorised_matches_reference():
    room = Room((4.0, 3.3, 2.7), 0.4, (1.1, 1.3, 1.5), (2.6, 2.2, 1.2))
    fast = image_source_rir(room, SR, 0.06)
    ref = image_source_rir_reference(room, SR, 0.06)
    assert fast.shape == ref.shape == (480,)
    # Covers early (sinc) and late (linear) images: 0.06 s > direct + 20 ms.
    np.testing.assert_allclose(fast, ref, atol=1e-5)
    assert np.count_nonzero(np.abs(ref) > 1e-3) > 100


@pytest.mark.parametrize(
    "size, t60",
    [
        ((4.0, 3.5, 2.8), 0.3),
        ((6.0, 5.0, 3.0), 0.6),
        ((8.0, 6.0, 3.5), 0.9),
        ((3.0, 3.0, 2.5), 0.2),
        ((9.6, 3.5, 2.5), 0.45),  # elongated: the pure image method is worst here
    ],
)
def test_schroeder_t60_matches_request(size, t60):
    rng = np.random.default_rng(1)
    mic, src, noise_src = sample_positions(size, (1.0, 2.5), 0.5, rng)
    for p in (src, noise_src):  # speech and noise RIRs
        h = hybrid_rir(Room(size, t60, tuple(mic), tuple(p)), SR, rng)
        assert len(h) == int(np.ceil(t60 * SR))
        for decay in ((-5.0, -25.0), (-5.0, -35.0)):  # T20 and T30
            assert abs(schroeder_t60(h, SR, decay) / t60 - 1) < 0.2, (p, decay)


def test_hybrid_keeps_the_image_method_early_part():
    room = Room((6.0, 5.0, 3.0), 0.6, (1.0, 1.2, 1.5), (2.5, 2.0, 1.4))
    h = hybrid_rir(room, SR, np.random.default_rng(0))
    ism = image_source_rir(room, SR)
    start = int(room.distance * SR / 343.0 + 0.08 * SR)  # 15 dB of 0.6 s is past 80 ms
    np.testing.assert_array_equal(h[:start], ism[:start])
    # The tail continues at the level of the images (within 3 dB over the next 20 ms).
    w = int(0.02 * SR)
    ratio = np.mean(h[start : start + w] ** 2) / np.mean(ism[start : start + w] ** 2)
    assert abs(10 * np.log10(ratio)) < 3


def test_pure_image_method_decays_slower_than_asked():
    # Why hybrid_rir exists (rir.py docstring): Eyring's absorption, pure image method.
    room = Room((6.0, 5.0, 3.0), 0.6, (1.0, 1.2, 1.5), (2.5, 2.0, 1.4))
    assert schroeder_t60(image_source_rir(room, SR), SR) > 1.1 * 0.6
    raw = image_source_rir(room, SR, highpass_hz=0)  # no DC removal: far longer still
    assert schroeder_t60(raw, SR) > 1.4 * 0.6


def test_schroeder_t60_of_exponential_decay():
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    h = rng.standard_normal(SR) * 10 ** (-3 * t / 0.5)  # amplitude -60 dB at 0.5 s
    assert schroeder_t60(h, SR) == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("hybrid", [False, True])
@pytest.mark.parametrize("src", [(2.6, 2.2, 1.0), (3.5, 0.6, 2.2)])
def test_direct_path_compensation_puts_click_at_zero(src, hybrid):
    room = Room((4.0, 3.3, 2.7), 0.5, (1.1, 1.3, 1.5), src)
    if hybrid:
        h = hybrid_rir(room, 16000, np.random.default_rng(0))
    else:
        h = image_source_rir(room, 16000)
    shift = direct_path_delay(room, 16000)
    assert abs(int(np.argmax(np.abs(h))) - shift) <= 1
    click = np.zeros(4000, np.float32)
    click[0] = 1000.0
    y = reverberate(click, h, shift)
    assert len(y) == len(click)
    assert int(np.argmax(np.abs(y))) <= 1
    assert y[0] == pytest.approx(1000.0, rel=0.1)  # direct path gain 1
