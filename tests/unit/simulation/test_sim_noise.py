import pickle

import numpy as np
import pytest

from pykaldi2.simulation.config import NoiseConfig, SimulationConfig
from pykaldi2.simulation.noise import (
    NoiseMaker,
    active_mask,
    coloured_noise,
    fit_to_length,
    measure_snr,
    scale_to_snr,
)
from pykaldi2.simulation.simulator import Simulator
from pykaldi2.utils.errors import DataError


@pytest.mark.parametrize(
    "reverb, reference", [(False, "utterance"), (True, "utterance"), (True, "active")]
)
def test_output_snr_matches_request(speech, reverb, reference):
    x, sr = speech
    x = x[: 2 * sr]
    cfg = SimulationConfig.from_dict(
        {
            "noise": {"enable": True, "snr_db": [-5, 20], "snr_reference": reference},
            "reverb": {"enable": reverb, "t60": [0.2, 0.4], "max_rir_seconds": 0.4},
            "volume": {"enable": True},
        }
    )
    sim = Simulator(cfg)
    errors = []
    for i in range(12):
        res = sim.simulate(x, sr, sim.rng(0, i))
        snr = res.info["snr_db"]
        assert -5 <= snr <= 20
        # Measure on the output: the noise is what the mix adds to the (reverberant) speech.
        measured = measure_snr(res.speech, res.samples - res.speech, sr, reference)
        errors.append(measured - snr)
    assert np.max(np.abs(errors)) < 0.5, errors


def test_active_reference_ignores_silence(speech):
    x, sr = speech
    padded = np.concatenate([np.zeros(3 * sr, np.float32), x[:sr], np.zeros(3 * sr, np.float32)])
    noise = coloured_noise(len(padded), "white", np.random.default_rng(0))
    n_utt = scale_to_snr(padded, noise, 10.0, sr, "utterance")
    n_act = scale_to_snr(padded, noise, 10.0, sr, "active")
    assert measure_snr(padded, n_act, sr, "active") == pytest.approx(10.0, abs=1e-3)
    # Over the whole utterance (6/7 silence) the speech power is ~8.5 dB lower.
    assert (
        measure_snr(padded, n_act, sr, "utterance")
        < measure_snr(padded, n_utt, sr, "utterance") - 6
    )
    mask = active_mask(padded, sr)
    assert not mask[: 3 * sr - 400].any() and not mask[4 * sr + 400 :].any()
    assert mask[3 * sr : 4 * sr].mean() > 0.5


@pytest.mark.parametrize("colour, slope", [("white", 0.0), ("pink", -10.0), ("brown", -20.0)])
def test_coloured_noise_spectral_slope(colour, slope):
    n = coloured_noise(2**16, colour, np.random.default_rng(3))
    assert np.mean(n**2) == pytest.approx(1.0, rel=1e-3)
    psd = np.abs(np.fft.rfft(n)) ** 2
    f = np.arange(len(psd))
    band = (f >= 100) & (f <= 10000)
    fit = np.polyfit(np.log10(f[band]), 10 * np.log10(psd[band]), 1)[0]  # dB per decade
    assert fit == pytest.approx(slope, abs=1.5)


def test_fit_to_length_loops_and_crops():
    rng = np.random.default_rng(0)
    noise = np.arange(10, dtype=np.float32)
    looped, off = fit_to_length(noise, 25, rng)
    np.testing.assert_array_equal(looped, (off + np.arange(25)) % 10)
    cropped, off = fit_to_length(noise, 4, rng)
    np.testing.assert_array_equal(cropped, noise[off : off + 4])


def test_noise_dir_and_babble_sources(tmp_path, yesno_waves, make_data_dir, speech):
    x, sr = speech
    noise_dir = make_data_dir(tmp_path / "noise", yesno_waves[10:12], spk="n")
    babble_dir = make_data_dir(tmp_path / "babble", yesno_waves[20:26], spk="b")
    maker = NoiseMaker(
        NoiseConfig(enable=True, noise_dir=str(noise_dir), babble_dir=str(babble_dir)), sr
    )
    kinds = set()
    for i in range(10):
        n, info = maker.draw(len(x), np.random.default_rng(i))
        assert n.shape == x.shape and np.mean(n**2) > 0
        kinds.add(info["kind"])
        if info["kind"] == "babble":
            assert 3 <= len(info["ids"]) <= 6 and len(info["offsets"]) == len(info["ids"])
    assert kinds == {"noise", "babble"}
    # A pickled maker (DataLoader worker) reopens its dirs and draws the same noise.
    copy = pickle.loads(pickle.dumps(maker))
    np.testing.assert_array_equal(
        copy.draw(500, np.random.default_rng(1))[0], maker.draw(500, np.random.default_rng(1))[0]
    )


def test_silent_speech_is_a_clear_error():
    with pytest.raises(DataError, match="silent"):
        scale_to_snr(np.zeros(100, np.float32), np.ones(100, np.float32), 5.0)
