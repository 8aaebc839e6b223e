"""Kaldi-compatible fbank and MFCC (compute-fbank-feats, compute-mfcc-feats) via kaldi-native-fbank.

Each feature type is a typed config dataclass (Kaldi's option names, in snake case) plus an
extractor; a registry maps the name used on the command line ("fbank", "mfcc") to both::

    >>> cfg = FbankConfig(num_mel_bins=80)
    >>> feats = make_extractor(cfg).compute(samples, sr=16000)   # (T, 80) float32
    >>> cfg2 = config_from_dict(cfg.to_dict())                     # round trip, keyed by feat_type

Samples are float in the int16 range (as Kaldi reads a 16-bit wav), shape (S,).

Defaults follow Kaldi except two, chosen deliberately:

* ``dither`` is 0.0 (Kaldi: 1.0). With dither the same audio gives different features on each run;
  features here are reproducible bit for bit. Digital silence (all-zero frames) is still safe: the
  log of a zero mel energy is floored at float epsilon, as in Kaldi. Set ``dither=1.0`` to match a
  Kaldi recipe exactly in distribution.
* ``FbankConfig.num_mel_bins`` is 80 (Kaldi: 23), the usual choice for neural acoustic models.
  MFCC keeps Kaldi's 23 bins and 13 cepstra.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pykaldi2.utils.config import ConfigMixin, check_keys, option
from pykaldi2.utils.errors import Pykaldi2Error

if TYPE_CHECKING:
    import numpy as np

WINDOW_TYPES = ("povey", "hamming", "hanning", "rectangular", "sine", "blackman")


@dataclass
class FrameConfig(ConfigMixin):
    """Framing and windowing options shared by fbank and MFCC (Kaldi's FrameExtractionOptions)."""

    sample_frequency: float = option(16000.0, gt=0)
    frame_length_ms: float = option(25.0, gt=0)
    frame_shift_ms: float = option(10.0, gt=0)
    dither: float = option(0.0, ge=0)
    preemphasis_coefficient: float = option(0.97, ge=0, le=1)
    remove_dc_offset: bool = True
    window_type: str = "povey"
    round_to_power_of_two: bool = True
    blackman_coeff: float = 0.42
    snip_edges: bool = True
    # Mel filterbank (Kaldi's MelBanksOptions); high_freq <= 0 is an offset from Nyquist.
    num_mel_bins: int = option(23, ge=1)
    low_freq: float = option(20.0, ge=0)
    high_freq: float = 0.0
    # Energy.
    use_energy: bool = False
    energy_floor: float = option(0.0, ge=0)
    raw_energy: bool = True
    htk_compat: bool = False

    feat_type: ClassVar[str] = ""
    _knf_options: ClassVar[str] = ""  # the kaldi_native_fbank options class

    def __post_init__(self) -> None:
        self.validate()

    # -- validation and (de)serialisation -------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`Pykaldi2Error` naming the bad option and the fix."""

        def bad(msg: str) -> None:
            raise Pykaldi2Error(f"{type(self).__name__}: {msg}")

        if self.sample_frequency <= 0:
            bad(f"sample_frequency must be > 0, got {self.sample_frequency}")
        if not 0 < self.frame_shift_ms <= self.frame_length_ms:
            bad(
                f"need 0 < frame_shift_ms <= frame_length_ms, got shift {self.frame_shift_ms} "
                f"length {self.frame_length_ms}"
            )
        if self.window_type not in WINDOW_TYPES:
            bad(f"window_type {self.window_type!r} is not one of {', '.join(WINDOW_TYPES)}")
        if self.dither < 0:
            bad(f"dither must be >= 0, got {self.dither}")
        if not 0.0 <= self.preemphasis_coefficient <= 1.0:
            bad(f"preemphasis_coefficient must be in [0, 1], got {self.preemphasis_coefficient}")
        if self.num_mel_bins < 3:
            bad(f"num_mel_bins must be >= 3, got {self.num_mel_bins}")
        nyquist = self.sample_frequency / 2
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        if not 0 <= self.low_freq < high <= nyquist:
            bad(
                f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist:g} Hz); got low_freq "
                f"{self.low_freq:g}, high_freq {self.high_freq:g} (= {high:g} Hz)"
            )

    def to_dict(self) -> dict[str, Any]:
        """All options plus ``feat_type``, JSON/YAML-safe."""
        return {"feat_type": self.feat_type, **super().to_dict()}

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], source: str | None = None, *, where: str | None = None
    ) -> FrameConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        d = dict(d)
        ft = d.pop("feat_type", cls.feat_type)
        if ft != cls.feat_type:
            raise Pykaldi2Error(f"{cls.__name__}.from_dict: feat_type {ft!r} != {cls.feat_type!r}")
        check_keys(d, cls.field_names(), what=f"{cls.feat_type} option(s)", source=source)
        return super().from_dict(d, source, where=where)

    # -- derived quantities ---------------------------------------------------------------------
    @property
    def frame_shift(self) -> float:
        """Frame shift in seconds."""
        return self.frame_shift_ms / 1000.0

    @property
    def dim(self) -> int:
        """Feature dimension F."""
        raise NotImplementedError

    def num_frames(self, num_samples: int) -> int:
        """Number of frames Kaldi produces for ``num_samples`` samples (feature-window.cc)."""
        shift = int(self.sample_frequency * self.frame_shift_ms / 1000)
        size = int(self.sample_frequency * self.frame_length_ms / 1000)
        if self.snip_edges:
            return 0 if num_samples < size else 1 + (num_samples - size) // shift
        return (num_samples + shift // 2) // shift

    def check_audio_files(self, paths) -> None:
        """Check, from their headers only, that every audio file of ``paths`` can be turned
        into features (what ``transcribe`` does before decoding any): a missing path or a
        folder, a file that is not audio, or one shorter than one frame (after resampling to
        ``sample_frequency``; an empty WAV) is a DataError naming the file."""
        from pykaldi2.data.audio import audio_file_info
        from pykaldi2.utils.errors import DataError

        for path in paths:
            n, sr = audio_file_info(path)
            if self.num_frames(int(n * self.sample_frequency / sr)) < 1:
                raise DataError(
                    f"no audio to transcribe: {n} samples ({1000.0 * n / sr:.1f} ms at {sr} Hz), "
                    f"less than one {self.frame_length_ms:g} ms frame",
                    file=str(path),
                    fix="leave the file out (a transcript needs at least one frame of audio)",
                )

    def knf_options(self):
        """The equivalent kaldi_native_fbank Fbank/MfccOptions (every field copied)."""
        import kaldi_native_fbank as knf

        opts = getattr(knf, self._knf_options)()
        for f in dataclasses.fields(self):
            *path, attr = _KNF_NAMES.get(f.name, f.name).split(".")
            target = opts
            for p in path:
                target = getattr(target, p)  # a reference into opts (pybind11 readwrite)
            setattr(target, attr, getattr(self, f.name))
        return opts


#: our field -> kaldi_native_fbank option path, where they differ; the rest share the name.
_KNF_NAMES = {
    "sample_frequency": "frame_opts.samp_freq",
    "preemphasis_coefficient": "frame_opts.preemph_coeff",
    "num_mel_bins": "mel_opts.num_bins",
    **{
        name: f"frame_opts.{name}"
        for name in (
            "frame_length_ms",
            "frame_shift_ms",
            "dither",
            "remove_dc_offset",
            "window_type",
            "round_to_power_of_two",
            "blackman_coeff",
            "snip_edges",
        )
    },
    **{name: f"mel_opts.{name}" for name in ("low_freq", "high_freq")},
}


@dataclass
class FbankConfig(FrameConfig):
    """compute-fbank-feats options. ``dim = num_mel_bins (+1 with use_energy)``."""

    num_mel_bins: int = option(80, ge=1)
    use_log_fbank: bool = True
    use_power: bool = True

    feat_type: ClassVar[str] = "fbank"
    _knf_options: ClassVar[str] = "FbankOptions"

    @property
    def dim(self) -> int:
        return self.num_mel_bins + int(self.use_energy)


@dataclass
class MfccConfig(FrameConfig):
    """compute-mfcc-feats options. ``dim = num_ceps``; c0 is replaced by log energy if use_energy."""

    num_ceps: int = option(13, ge=1)
    use_energy: bool = True
    cepstral_lifter: float = option(22.0, ge=0)

    feat_type: ClassVar[str] = "mfcc"
    _knf_options: ClassVar[str] = "MfccOptions"

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.num_ceps <= self.num_mel_bins:
            raise Pykaldi2Error(
                f"MfccConfig: need 1 <= num_ceps <= num_mel_bins, got {self.num_ceps} and "
                f"{self.num_mel_bins}"
            )

    @property
    def dim(self) -> int:
        return self.num_ceps


FeatureConfig = FbankConfig | MfccConfig

#: feat_type -> config class; the names used by ``--feat-type`` and in saved configs.
FEATURE_TYPES: dict[str, type[FrameConfig]] = {"fbank": FbankConfig, "mfcc": MfccConfig}


def config_class(feat_type: str) -> type[FrameConfig]:
    """The config class registered as ``feat_type``."""
    try:
        return FEATURE_TYPES[feat_type]
    except KeyError:
        raise Pykaldi2Error(
            f"unknown feature type {feat_type!r}; choose one of {', '.join(FEATURE_TYPES)}"
        ) from None


def config_from_dict(d: dict[str, Any]) -> FrameConfig:
    """Build a config from :meth:`FrameConfig.to_dict` output (dispatch on ``feat_type``)."""
    if "feat_type" not in d:
        raise Pykaldi2Error(f"feature config has no 'feat_type' key: {sorted(d)}")
    return config_class(d["feat_type"]).from_dict(d)


class FeatureExtractor:
    """Computes features of one config with kaldi-native-fbank (compute-{fbank,mfcc}-feats).

    ``compute`` does a whole utterance; ``stream`` starts a :class:`FeatureStream` that takes
    audio in chunks and gives each frame as soon as it is complete (streaming recognition). Both
    give the same frames. The knf options object is built once.
    """

    def __init__(self, config: FrameConfig) -> None:
        self.config = config
        self._opts = config.knf_options()

    def stream(self) -> FeatureStream:
        """A new streaming extractor (one per utterance / audio stream)."""
        return FeatureStream(self)

    def compute(self, samples: np.ndarray, sr: float) -> np.ndarray:
        """Features of one utterance.

        Args:
            samples: (S,) waveform, float in the int16 range (int16 arrays are accepted).
            sr: its sample rate; must equal ``config.sample_frequency`` (no silent resampling).

        Returns:
            (T, F) float32, ``T = config.num_frames(S)``, ``F = config.dim``; T may be 0 for
            audio shorter than one frame.
        """
        import numpy as np

        stream = self.stream()
        head = stream.accept_waveform(samples, sr)
        tail = stream.input_finished()
        return np.concatenate([head, tail]) if len(tail) else head


class FeatureStream:
    """Streaming feature extraction of one audio stream (Kaldi's OnlineFbank / OnlineMfcc).

        >>> stream = make_extractor(FbankConfig()).stream()
        >>> for chunk in chunks:                          # (S_i,) samples each
        ...     new = stream.accept_waveform(chunk, 16000)   # (N_i, F), maybe N_i = 0
        >>> last = stream.input_finished()                # frames that needed the end of input

    Frames handed out are discarded from the knf buffer, so memory stays bounded.
    """

    def __init__(self, extractor: FeatureExtractor) -> None:
        import kaldi_native_fbank as knf

        self.config = extractor.config
        cls = knf.OnlineFbank if isinstance(self.config, FbankConfig) else knf.OnlineMfcc
        self._online = cls(extractor._opts)
        self._next = 0  # index of the first frame not handed out yet
        self.finished = False

    def accept_waveform(self, samples: np.ndarray, sr: float) -> np.ndarray:
        """Add (S,) samples; return the (N, F) float32 frames completed by them."""
        import numpy as np

        if self.finished:
            raise Pykaldi2Error("FeatureStream: accept_waveform after input_finished")
        if not math.isclose(float(sr), self.config.sample_frequency):
            raise Pykaldi2Error(
                f"audio sample rate {sr:g} Hz != {self.config.feat_type} sample_frequency "
                f"{self.config.sample_frequency:g} Hz; set --sample-frequency {sr:g} or resample"
            )
        samples = np.asarray(samples)
        if samples.ndim != 1:
            raise Pykaldi2Error(f"expected mono samples of shape (S,), got shape {samples.shape}")
        self._online.accept_waveform(float(sr), np.ascontiguousarray(samples, dtype=np.float32))
        return self._take()

    def input_finished(self) -> np.ndarray:
        """Signal the end of the audio; return the last (N, F) frames."""
        if not self.finished:
            self._online.input_finished()
            self.finished = True
        return self._take()

    @property
    def num_frames(self) -> int:
        """Frames handed out so far."""
        return self._next

    def _take(self) -> np.ndarray:
        import numpy as np

        ready = self._online.num_frames_ready
        out = np.empty((ready - self._next, self.config.dim), dtype=np.float32)
        for i, t in enumerate(range(self._next, ready)):
            out[i] = self._online.get_frame(t)
        if ready > self._next:
            self._online.pop(ready - self._next)
        self._next = ready
        return out


def make_extractor(config: FrameConfig) -> FeatureExtractor:
    """The extractor for ``config`` (any registered feature type)."""
    return FeatureExtractor(config)


# ---------------------------------------------------------------------------------------------
# Kaldi option names (--num-mel-bins=80), for the CLI and for Kaldi .conf files
# ---------------------------------------------------------------------------------------------
#: Kaldi flag name -> config field, where they differ by more than '-' vs '_'.
_KALDI_RENAMES = {"frame-length": "frame_length_ms", "frame-shift": "frame_shift_ms"}


def kaldi_option_names() -> dict[str, str]:
    """Kaldi flag (without ``--``) -> config field, over all registered feature types."""
    out: dict[str, str] = {}
    for cls in FEATURE_TYPES.values():
        for f in dataclasses.fields(cls):
            flag = next((k for k, v in _KALDI_RENAMES.items() if v == f.name), None)
            out[flag or f.name.replace("_", "-")] = f.name
    return out


def kaldi_option_help(flag: str) -> str:
    """'fbank: 80, mfcc: 23'-style defaults of a Kaldi flag, for --help."""
    field = kaldi_option_names()[flag]
    parts = []
    for name, cls in FEATURE_TYPES.items():
        f = next((f for f in dataclasses.fields(cls) if f.name == field), None)
        if f is not None:
            parts.append(f"{name}: {f.default}")
    return "default " + ", ".join(parts)


def _field_type(name: str) -> str:
    for cls in FEATURE_TYPES.values():
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f.type if isinstance(f.type, str) else f.type.__name__
    raise KeyError(name)


def parse_kaldi_options(options: dict[str, str], where: str = "options") -> dict[str, Any]:
    """{Kaldi flag or field name: string value} -> {field: typed value} (bools: true/false)."""
    names = kaldi_option_names()
    out: dict[str, Any] = {}
    for key, raw in options.items():
        flag = key.lstrip("-")
        field = names.get(flag) or (flag if flag in names.values() else None)
        if field is None:
            raise Pykaldi2Error(
                f"{where}: unknown feature option --{flag}; valid: "
                + ", ".join("--" + n for n in sorted(names))
            )
        kind, text = _field_type(field), str(raw).strip()
        try:
            if kind == "bool":
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                out[field] = text.lower() in ("true", "1")
            else:
                out[field] = {"int": int, "float": float, "str": str}[kind](text)
        except ValueError:
            raise Pykaldi2Error(f"{where}: --{flag} expects a {kind}, got {text!r}") from None
    return out


def read_kaldi_conf(path: str) -> dict[str, Any]:
    """A Kaldi feature config file (``--num-mel-bins=80`` per line, ``#`` comments)."""
    opts: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if not line.startswith("--") or "=" not in line:
                raise Pykaldi2Error(f"{path}:{n}: expected --name=value, got {line!r}")
            k, v = line[2:].split("=", 1)
            opts[k] = v
    return parse_kaldi_options(opts, where=path)
