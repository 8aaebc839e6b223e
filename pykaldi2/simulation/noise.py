"""Additive noise at a signal-to-noise ratio: sources, length fitting, SNR scaling.

**SNR definition.** ``SNR = 10 log10(P_speech / P_noise)`` where ``P_speech`` is the mean power
of the speech signal *as it is in the mix* (after speed perturbation and reverberation, direct
path plus all reverberation, delay-compensated) and ``P_noise`` the mean power of the noise as
added (after its own reverberation). Both are averaged over the same samples:

* ``reference="utterance"`` (default): the whole utterance;
* ``reference="active"``: only frames a simple energy VAD marks as speech: 25 ms frames every
  10 ms whose energy is within ``vad_floor_db`` dB of the loudest frame (a sample is active when
  any active frame covers it). Use it for utterances with long silences, where the
  whole-utterance SNR understates how loud the speech is against the noise.

Volume perturbation, applied to the mix afterwards, leaves the SNR unchanged.

Noise sources (:class:`NoiseMaker`): a data dir of noise recordings, babble (the sum of k
utterances of a speech data dir, each scaled to equal power), or generated coloured noise
(white, pink, brown, ...: Gaussian noise shaped in the frequency domain to a power spectral
density ~ 1/f**alpha) when neither dir is configured. A recording is looped or cropped to the
speech length starting at a random offset.

Shapes: every signal is (num_samples,) float32.
"""

from __future__ import annotations

import numpy as np

from pykaldi2.simulation.config import NOISE_COLOURS, NoiseConfig
from pykaldi2.simulation.pool import AudioPool
from pykaldi2.utils.errors import DataError


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 noise of unit mean power with PSD ~ 1/f**alpha (``NOISE_COLOURS``)."""
    if colour not in NOISE_COLOURS:
        raise DataError(f"unknown noise colour {colour!r}: use one of {list(NOISE_COLOURS)}")
    if n <= 0:
        return np.zeros(0, np.float32)
    white = rng.standard_normal(n)
    alpha = NOISE_COLOURS[colour]
    if alpha != 0.0:
        spec = np.fft.rfft(white)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = f[1] if len(f) > 1 else 1.0  # no infinite DC gain; DC is removed below
        spec *= f ** (-alpha / 2.0)
        spec[0] = 0.0
        white = np.fft.irfft(spec, n)
    power = np.mean(white**2)
    if power <= 0:  # n == 1 with DC removed
        return np.zeros(n, np.float32)
    return (white / np.sqrt(power)).astype(np.float32)


def fit_to_length(noise: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Crop (longer) or loop (shorter) ``noise`` to n samples from a random start offset.

    Returns ``(out (n,), offset)``: ``out[i] = noise[(offset + i) % len(noise)]`` when looping.
    """
    m = len(noise)
    if m == 0:
        raise DataError("cannot fit an empty noise recording to the speech length")
    if m >= n:
        offset = int(rng.integers(m - n + 1))
        return np.asarray(noise[offset : offset + n], np.float32), offset
    offset = int(rng.integers(m))
    return np.asarray(noise, np.float32)[(offset + np.arange(n)) % m], offset


def active_mask(
    speech: np.ndarray,
    sr: int,
    floor_db: float = 30.0,
    frame_ms: float = 25.0,
    shift_ms: float = 10.0,
) -> np.ndarray:
    """(n,) bool: samples covered by a frame whose energy is within ``floor_db`` of the max."""
    x = np.asarray(speech, np.float64)
    n = len(x)
    size, shift = max(1, int(sr * frame_ms / 1000)), max(1, int(sr * shift_ms / 1000))
    if n <= size:
        return np.ones(n, bool)
    starts = np.arange(0, n - size + 1, shift)
    cs = np.concatenate([[0.0], np.cumsum(x**2)])
    energy = cs[starts + size] - cs[starts]
    if energy.max() <= 0:
        return np.ones(n, bool)
    active = starts[10.0 * np.log10(np.maximum(energy, 1e-30) / energy.max()) >= -floor_db]
    cover = np.zeros(n + 1, np.int64)
    np.add.at(cover, active, 1)
    np.add.at(cover, active + size, -1)
    return np.cumsum(cover[:n]) > 0


def _powers(speech, noise, sr, reference, floor_db) -> tuple[float, float]:
    speech, noise = np.asarray(speech, np.float64), np.asarray(noise, np.float64)
    if speech.shape != noise.shape:
        raise DataError(f"speech {speech.shape} and noise {noise.shape} lengths differ")
    if reference == "active":
        m = active_mask(speech, sr, floor_db)
        speech, noise = speech[m], noise[m]
    elif reference != "utterance":
        raise DataError(f"unknown SNR reference {reference!r}: use 'utterance' or 'active'")
    return float(np.mean(speech**2)), float(np.mean(noise**2))


def measure_snr(
    speech: np.ndarray,
    noise: np.ndarray,
    sr: int = 16000,
    reference: str = "utterance",
    floor_db: float = 30.0,
) -> float:
    """SNR in dB of ``speech`` against ``noise`` (both (n,)) by the module's definition."""
    ps, pn = _powers(speech, noise, sr, reference, floor_db)
    return float(10.0 * np.log10(ps / pn))


def scale_to_snr(
    speech: np.ndarray,
    noise: np.ndarray,
    snr_db: float,
    sr: int = 16000,
    reference: str = "utterance",
    floor_db: float = 30.0,
) -> np.ndarray:
    """``noise`` scaled so that :func:`measure_snr` (speech, result) == ``snr_db``."""
    ps, pn = _powers(speech, noise, sr, reference, floor_db)
    if ps <= 0:
        raise DataError("speech is silent: an SNR is undefined", fix="drop the utterance")
    if pn <= 0:
        raise DataError("noise is silent over the speech: cannot reach an SNR")
    gain = np.sqrt(ps / (pn * 10.0 ** (snr_db / 10.0)))
    return (np.asarray(noise, np.float64) * gain).astype(np.float32)


def babble(
    utterances: list[np.ndarray], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[int]]:
    """Sum of the utterances, each fitted to n samples and scaled to unit power.

    Returns ``(babble (n,), offsets)``.
    """
    out = np.zeros(n, np.float64)
    offsets = []
    for u in utterances:
        x, off = fit_to_length(u, n, rng)
        p = float(np.mean(np.asarray(x, np.float64) ** 2))
        if p > 0:
            out += x / np.sqrt(p)
        offsets.append(off)
    return out.astype(np.float32), offsets


class NoiseMaker:
    """Draws a noise signal for one utterance according to a :class:`NoiseConfig`.

    Data dirs are opened when the first noise is drawn (so a Simulator pickles cheaply into
    DataLoader workers).
    """

    def __init__(self, config: NoiseConfig, sr: int) -> None:
        self.config, self.sr = config, int(sr)
        self._pools: dict[str, AudioPool] | None = None

    def _get_pools(self) -> dict[str, AudioPool]:
        if self._pools is None:
            c = self.config
            dirs = {"noise": c.noise_dir, "babble": c.babble_dir}
            self._pools = {k: AudioPool(v, self.sr) for k, v in dirs.items() if v is not None}
        return self._pools

    def __getstate__(self):
        return {"config": self.config, "sr": self.sr, "_pools": None}

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """An unscaled (n,) float32 noise and a record of what it is (kind, ids, offsets)."""
        pools = self._get_pools()
        if not pools:
            colour = self.config.colours[int(rng.integers(len(self.config.colours)))]
            return coloured_noise(n, colour, rng), {"kind": "coloured", "colour": colour}
        kinds = sorted(pools)
        kind = kinds[int(rng.integers(len(kinds)))]
        pool = pools[kind]
        if kind == "noise":
            utt = pool.choice(rng)
            x, off = fit_to_length(pool.load(utt), n, rng)
            return x, {"kind": "noise", "ids": [utt], "offsets": [off]}
        lo, hi = self.config.babble_speakers
        k = int(rng.integers(lo, hi + 1))
        ids = [pool.choice(rng) for _ in range(k)]
        x, offs = babble([pool.load(u) for u in ids], n, rng)
        return x, {"kind": "babble", "ids": ids, "offsets": offs}
