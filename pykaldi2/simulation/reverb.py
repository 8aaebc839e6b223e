"""Reverberation with direct-path compensation, from simulated rooms or measured RIRs.

Speech and noise are convolved with the RIRs of two DIFFERENT source positions in the same
room, heard by the same receiver. The output is shifted left by ``shift`` samples, the position
of the direct-path peak of the speech RIR, so that the direct sound of the speech lands where
the dry speech was: frame-level targets (alignments) computed on the dry audio stay valid.
The noise is shifted by the same amount (the physical relation between the two is kept).

    >>> rev = Reverberator(ReverbConfig(enable=True), sr=16000)
    >>> speech_rir, noise_rir, shift, info = rev.draw(rng)
    >>> wet = reverberate(dry, speech_rir, shift)          # same length as dry

Shapes: signals and RIRs are (num_samples,) float32.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import fftconvolve

from pykaldi2.simulation.config import ReverbConfig
from pykaldi2.simulation.pool import AudioPool
from pykaldi2.simulation.rir import (
    Room,
    absorption_from_t60,
    direct_path_delay,
    hybrid_rir,
    image_source_rir,
)
from pykaldi2.utils.errors import DataError

_MAX_TRIES = 100


def reverberate(x: np.ndarray, rir: np.ndarray, shift: int = 0) -> np.ndarray:
    """``(x * rir)[shift : shift + len(x)]``: convolution, delay-compensated, same length as x."""
    x = np.asarray(x, np.float32)
    if len(rir) == 0:
        raise DataError("empty room impulse response")
    if not 0 <= shift < len(rir):
        raise DataError(f"RIR shift {shift} outside the RIR of {len(rir)} samples")
    y = fftconvolve(x, np.asarray(rir, np.float32))
    return np.ascontiguousarray(y[shift : shift + len(x)], dtype=np.float32)


def peak_shift(rir: np.ndarray) -> int:
    """Direct-path position of a measured RIR: the index of its largest magnitude.

    Measured RIRs are scaled to a peak magnitude of 1 (the direct path keeps the dry level).
    """
    return int(np.argmax(np.abs(rir)))


def _uniform_point(size, margin: float, rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(margin, s - margin) for s in size])


def _inside(p: np.ndarray, size, margin: float) -> bool:
    return bool(np.all(p >= margin) and np.all(p <= np.asarray(size) - margin))


def sample_positions(
    size: tuple[float, float, float],
    distance: tuple[float, float],
    margin: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mic, speech source, noise source) positions (3,) in metres.

    The speech source is at a distance drawn from ``distance`` in a uniformly random direction;
    the noise source anywhere at least ``distance[0]`` from the mic and from the speech source.
    Everything stays ``margin`` from the walls (rejection sampling; a room too small for the
    distance range falls back to uniform positions).
    """
    mic = _uniform_point(size, margin, rng)
    speech = None
    for _ in range(_MAX_TRIES):
        v = rng.standard_normal(3)
        p = mic + rng.uniform(*distance) * v / np.linalg.norm(v)
        if _inside(p, size, margin):
            speech = p
            break
    if speech is None:
        speech = _uniform_point(size, margin, rng)
    noise = _uniform_point(size, margin, rng)
    for _ in range(_MAX_TRIES):
        if min(np.linalg.norm(noise - mic), np.linalg.norm(noise - speech)) >= distance[0]:
            break
        noise = _uniform_point(size, margin, rng)
    return mic, speech, noise


class Reverberator:
    """Draws (speech RIR, noise RIR, shift) per utterance according to a :class:`ReverbConfig`."""

    def __init__(self, config: ReverbConfig, sr: int) -> None:
        self.config, self.sr = config, int(sr)
        self._pool: AudioPool | None = None

    def __getstate__(self):
        return {"config": self.config, "sr": self.sr, "_pool": None}

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int, dict]:
        """``(speech_rir, noise_rir, shift, info)``; info records room, T60, positions or ids."""
        if self.config.rir_dir is not None:
            return self._draw_measured(rng)
        return self._draw_simulated(rng)

    def _draw_simulated(self, rng: np.random.Generator):
        c = self.config
        size = (
            rng.uniform(*c.room_length),
            rng.uniform(*c.room_width),
            rng.uniform(*c.room_height),
        )
        t60 = float(rng.uniform(*c.t60))
        mic, speech, noise = sample_positions(size, c.source_distance, c.wall_margin, rng)
        room = Room(size, t60, tuple(mic), tuple(speech))
        noise_room = Room(size, t60, tuple(mic), tuple(noise))
        a = absorption_from_t60(size, t60, c.absorption_formula, c.sound_speed)
        length = min(t60, c.max_rir_seconds)
        if c.diffuse_tail:
            speech_rir, noise_rir = (
                hybrid_rir(r, self.sr, rng, length, absorption=a, c=c.sound_speed)
                for r in (room, noise_room)
            )
        else:
            speech_rir, noise_rir = (
                image_source_rir(r, self.sr, length, absorption=a, c=c.sound_speed)
                for r in (room, noise_room)
            )
        shift = direct_path_delay(room, self.sr, c.sound_speed)
        info = {
            "t60": t60,
            "room": [round(float(s), 3) for s in size],
            "absorption": round(a, 4),
            "mic": [round(float(v), 3) for v in mic],
            "speech_source": [round(float(v), 3) for v in speech],
            "noise_source": [round(float(v), 3) for v in noise],
        }
        return speech_rir, noise_rir, shift, info

    def _draw_measured(self, rng: np.random.Generator):
        if self._pool is None:
            self._pool = AudioPool(self.config.rir_dir, self.sr)
        pool = self._pool
        utt = pool.choice(rng)
        same_room = [u for u in pool.members(pool.group(utt)) if u != utt] or [utt]
        noise_utt = pool.choice(rng, same_room)
        speech_rir, noise_rir = pool.load(utt), pool.load(noise_utt)
        cap = max(1, int(math.ceil(self.config.max_rir_seconds * self.sr)))
        shift = peak_shift(speech_rir)
        if shift >= cap:
            raise DataError(
                f"direct-path peak at {shift / self.sr:.3f} s is past max_rir_seconds",
                file=self.config.rir_dir,
                utt=utt,
                fix="trim the leading silence of the RIR or raise reverb.max_rir_seconds",
            )
        info = {"rir_ids": [utt, noise_utt], "room_id": pool.group(utt)}
        # Like the simulated ones: direct-path (peak) gain 1, whatever the recording's level.
        speech_rir = speech_rir[:cap] / np.abs(speech_rir).max()
        noise_rir = noise_rir[:cap] / np.abs(noise_rir).max()
        return speech_rir, noise_rir, shift, info
