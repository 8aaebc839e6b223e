"""Typed, validated configuration of the simulation chain (``sim.yaml``).

Every range is a ``(min, max)`` pair drawn uniformly per utterance; ``enable`` switches a stage
on, ``prob`` is the chance it is applied to a given utterance. Unknown keys are an error, so a
typo in ``sim.yaml`` never silently disables a stage (the bug this module exists to avoid: the
original PyKaldi2 read its SNR and T60 settings and then ignored them).

    >>> cfg = SimulationConfig.from_dict({"noise": {"enable": True, "snr_db": [0, 20]}})
    >>> cfg.noise.snr_db
    (0.0, 20.0)
    >>> SimulationConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pykaldi2.utils.config import ConfigMixin, check_keys
from pykaldi2.utils.errors import DataError

Range = tuple[float, float]

#: Spectral slopes of the generated noises: power spectral density ~ 1 / f**alpha.
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0, "violet": -2.0}
#: How the speech power of the SNR is measured (see :mod:`pykaldi2.simulation.noise`).
SNR_REFERENCES = ("utterance", "active")


def _range(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> Range:
    """Validate and normalise a ``[min, max]`` pair (a scalar means a fixed value)."""
    if isinstance(value, int | float):
        value = (value, value)
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a [min, max] pair of numbers, got {value!r}") from None
    if a > b:
        raise DataError(f"{name}: min {a} > max {b}", fix="write the range as [min, max]")
    if lo is not None and a < lo:
        raise DataError(f"{name}: {a} is below the allowed minimum {lo}")
    if hi is not None and b > hi:
        raise DataError(f"{name}: {b} is above the allowed maximum {hi}")
    return (a, b)


def _prob(name: str, p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise DataError(f"{name} must be a probability in [0, 1], got {p}")
    return p


@dataclass
class NoiseConfig(ConfigMixin):
    """Additive noise at an SNR drawn uniformly from ``snr_db``.

    Sources: ``noise_dir`` (a Kaldi data dir of noise recordings), ``babble_dir`` (a data dir of
    speech; ``babble_speakers`` of its utterances summed at equal power). When both are set each
    utterance picks one uniformly; when neither is set, coloured noise of a colour drawn from
    ``colours`` is generated. ``snr_reference`` is "utterance" (speech power over the whole
    utterance) or "active" (over frames an energy VAD marks as speech, ``vad_floor_db`` below the
    loudest frame). ``reverberate`` convolves the noise with the RIR of a second source position
    in the same room when reverberation is applied. (When ``babble_dir`` is the data being
    simulated, an utterance can, rarely, be mixed with itself.)
    """

    enable: bool = False
    prob: float = 1.0
    snr_db: Range | float = (0.0, 20.0)
    noise_dir: str | None = None
    babble_dir: str | None = None
    babble_speakers: tuple[int, int] | int = (3, 6)
    colours: tuple[str, ...] = ("white", "pink", "brown")
    snr_reference: str = "utterance"
    vad_floor_db: float = 30.0
    reverberate: bool = True

    def __post_init__(self) -> None:
        self.prob = _prob("noise.prob", self.prob)
        self.snr_db = _range("noise.snr_db", self.snr_db, -30.0, 100.0)
        k = _range("noise.babble_speakers", self.babble_speakers, 1)
        self.babble_speakers = (int(k[0]), int(k[1]))
        self.colours = tuple(self.colours)
        bad = [c for c in self.colours if c not in NOISE_COLOURS]
        if bad or not self.colours:
            raise DataError(
                f"noise.colours {list(self.colours)}: use some of {list(NOISE_COLOURS)}"
            )
        if self.snr_reference not in SNR_REFERENCES:
            raise DataError(f"noise.snr_reference must be one of {SNR_REFERENCES}")
        if self.vad_floor_db <= 0:
            raise DataError("noise.vad_floor_db must be > 0 dB")
        for key in ("noise_dir", "babble_dir"):
            v = getattr(self, key)
            if v is not None:
                setattr(self, key, os.fspath(v))


@dataclass
class ReverbConfig(ConfigMixin):
    """Reverberation by room impulse responses.

    Simulated (image method) shoebox rooms: ``room_size`` ranges in metres (length, width,
    height), target ``t60`` in seconds, wall absorption from the T60 by ``absorption_formula``
    ("eyring" or "sabine"); with ``diffuse_tail`` (default) the RIR after the early reflections
    is a noise tail decaying at exactly ``t60`` (:func:`pykaldi2.simulation.rir.hybrid_rir`),
    without it the pure image method (which decays slower than asked); source-to-receiver
    distance in ``source_distance`` and at least
    ``wall_margin`` metres from every wall. Or measured RIRs: ``rir_dir`` is a Kaldi data dir of
    RIR recordings whose speaker column is the room id (the noise RIR is drawn from the same
    room). ``max_rir_seconds`` caps the RIR length.
    """

    enable: bool = False
    prob: float = 1.0
    t60: Range | float = (0.2, 0.8)
    room_length: Range | float = (3.0, 10.0)
    room_width: Range | float = (3.0, 8.0)
    room_height: Range | float = (2.5, 4.0)
    source_distance: Range | float = (0.5, 3.0)
    wall_margin: float = 0.5
    absorption_formula: str = "eyring"
    diffuse_tail: bool = True
    sound_speed: float = 343.0
    max_rir_seconds: float = 1.0
    rir_dir: str | None = None

    def __post_init__(self) -> None:
        self.prob = _prob("reverb.prob", self.prob)
        self.t60 = _range("reverb.t60", self.t60, 0.05, 5.0)
        for key in ("room_length", "room_width", "room_height"):
            setattr(self, key, _range(f"reverb.{key}", getattr(self, key), 1.0, 100.0))
        self.source_distance = _range("reverb.source_distance", self.source_distance, 0.1)
        if self.absorption_formula not in ("eyring", "sabine"):
            raise DataError("reverb.absorption_formula must be 'eyring' or 'sabine'")
        if self.wall_margin < 0 or 2 * self.wall_margin >= min(
            self.room_length[0], self.room_width[0], self.room_height[0]
        ):
            raise DataError(
                "reverb.wall_margin must be >= 0 and leave room inside the smallest room"
            )
        if self.max_rir_seconds <= 0 or self.sound_speed <= 0:
            raise DataError("reverb.max_rir_seconds and reverb.sound_speed must be > 0")
        if self.rir_dir is not None:
            self.rir_dir = os.fspath(self.rir_dir)


@dataclass
class SpeedConfig(ConfigMixin):
    """Speed perturbation like ``sox speed``: one factor drawn from ``factors`` per utterance."""

    enable: bool = False
    prob: float = 1.0
    factors: tuple[float, ...] = (0.9, 1.0, 1.1)

    def __post_init__(self) -> None:
        self.prob = _prob("speed.prob", self.prob)
        self.factors = tuple(float(f) for f in self.factors)
        if not self.factors or any(not 0.5 <= f <= 2.0 for f in self.factors):
            raise DataError("speed.factors must be a non-empty list of factors in [0.5, 2]")


@dataclass
class VolumeConfig(ConfigMixin):
    """Volume perturbation: a gain drawn uniformly from ``gain_db`` (applied to the mix)."""

    enable: bool = False
    prob: float = 1.0
    gain_db: Range | float = (-6.0, 6.0)

    def __post_init__(self) -> None:
        self.prob = _prob("volume.prob", self.prob)
        self.gain_db = _range("volume.gain_db", self.gain_db, -60.0, 60.0)


@dataclass
class SpecAugConfig(ConfigMixin):
    """SpecAugment on (T, F) features (Park et al. 2019; defaults like icefall's).

    ``num_freq_masks`` masks of width uniform in [0, ``max_freq_width``] bins;
    ``num_time_masks`` masks of width uniform in [0, min(``max_time_width``,
    ``max_time_fraction`` * T)] frames; time warp by up to ``time_warp`` frames (0 disables) with
    probability ``time_warp_prob``. Masked cells are set to 0 or, with ``mask_value: mean``, to
    the utterance mean.
    """

    enable: bool = False
    prob: float = 1.0
    num_freq_masks: int = 2
    max_freq_width: int = 27
    num_time_masks: int = 10
    max_time_width: int = 100
    max_time_fraction: float = 0.15
    time_warp: int = 80
    time_warp_prob: float = 1.0
    mask_value: str = "zero"

    def __post_init__(self) -> None:
        self.prob = _prob("specaug.prob", self.prob)
        self.time_warp_prob = _prob("specaug.time_warp_prob", self.time_warp_prob)
        for key in ("num_freq_masks", "max_freq_width", "num_time_masks", "max_time_width"):
            if int(getattr(self, key)) < 0:
                raise DataError(f"specaug.{key} must be >= 0")
            setattr(self, key, int(getattr(self, key)))
        if self.time_warp < 0:
            raise DataError("specaug.time_warp must be >= 0")
        if not 0.0 <= self.max_time_fraction <= 1.0:
            raise DataError("specaug.max_time_fraction must be in [0, 1]")
        if self.mask_value not in ("zero", "mean"):
            raise DataError("specaug.mask_value must be 'zero' or 'mean'")


@dataclass
class SimulationConfig(ConfigMixin):
    """The whole chain; ``seed`` is the base seed of every per-utterance random generator."""

    seed: int = 0
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    specaug: SpecAugConfig = field(default_factory=SpecAugConfig)

    def __post_init__(self) -> None:
        self.build_sections()
        if not isinstance(self.seed, int) or self.seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {self.seed!r}")

    @classmethod
    def from_dict(
        cls, d: dict[str, Any] | None, source: str | None = None, *, where: str | None = None
    ) -> SimulationConfig:
        """A config from nested dicts (``sim.yaml``); :meth:`from_yaml` reads the file."""
        check_keys(d or {}, cls.field_names(), what="simulation config section(s)", source=source)
        return super().from_dict(d, source, where=where)

    def to_yaml(self, path: str | os.PathLike) -> None:
        """Write the resolved config atomically."""
        import yaml

        from pykaldi2.utils.io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
