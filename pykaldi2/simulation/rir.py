"""Room impulse responses of shoebox rooms by the image-source method (Allen & Berkley 1979).

Why our own numpy code and not pyroomacoustics: pyroomacoustics 0.10.1 does ship a cp311
manylinux wheel (checked with ``pip download``), but it would be a compiled dependency (and its
own dependency tree) for one function, and its RIRs are normalised and delayed its own way,
while we need the exact direct-path delay to keep frame labels aligned. The shoebox image
method is short enough to own and to test against a plain reference: see
:func:`image_source_rir` (vectorised) and :func:`image_source_rir_reference` (six nested loops),
compared in ``tests/unit/simulation/test_sim_rir.py``.

The model, for a room ``[0, Lx] x [0, Ly] x [0, Lz]`` with the same absorption ``a`` on every
wall (reflection coefficient ``beta = sqrt(1 - a)``):

* per axis, image ``(n, q)`` (n in Z, q in {0, 1}) sits at ``(1 - 2q) s + 2 n L`` and has made
  ``|n - q| + |n|`` wall reflections;
* an image at distance ``d`` adds ``beta**k / (4 pi d)`` at delay ``d / c`` seconds;
* the absorption for a target T60 from Eyring, ``a = 1 - exp(-24 ln10 V / (c S T60))``, or
  Sabine, ``a = 24 ln10 V / (c S T60)``; every RIR is scaled so that the direct path has gain
  1 (``4 pi d0`` times the physical one): reverberation keeps the dry speech level.

Fractional delays: images arriving within ``SINC_MS`` of the direct path get a Hann-windowed
sinc of ``SINC_TAPS`` taps (exact early reflections); later images, which are millions in a
reverberant room and only shape the diffuse tail, are spread over their two neighbouring
samples by linear interpolation (a ``bincount``), O(1) per image, in chunks of bounded memory.
A 20 Hz high-pass removes the DC that all-positive images pile up in the tail (Allen & Berkley).

**Why the RIRs used for simulation are hybrid** (:func:`hybrid_rir`): a pure image-method RIR
does not decay at the T60 its absorption was computed for. Measured here by Schroeder
integration: without the high-pass, Eyring's absorption gave T20s 44-76% too long; with it
still 10-28% too long (the late energy comes from the directions with the fewest wall hits;
Lehmann & Johansson 2008), and the decay is not exponential: after fitting the absorption to
each room's T20, T30s of a second source position were up to 50-60% long in elongated rooms. So,
like Lehmann & Johansson's diffuse reverberation model (2010) and gpuRIR, the image method
gives the direct path and early reflections (until 15 dB of nominal decay, at most 80 ms) and
an exponentially decaying Gaussian tail, level-matched to the images, gives the rest at
exactly the requested T60. Over 80 random RIRs (rooms 3-10 x 3-8 x 2.5-4 m, T60 0.2-0.9 s,
sources 0.5-3 m away) T20 came out within -18%..+16% of the request and T30 within -11%..+10%;
it also costs under 1 ms of CPU per RIR instead of up to 0.3 s.

Shapes: positions are (3,) metres; an RIR is (num_samples,) float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pykaldi2.utils.errors import DataError

_LN10 = math.log(10.0)


@dataclass(frozen=True)
class Room:
    """A shoebox room with a receiver (mic) and a source. All in metres, seconds."""

    size: tuple[float, float, float]
    t60: float
    mic: tuple[float, float, float]
    source: tuple[float, float, float]

    def __post_init__(self) -> None:
        for name in ("mic", "source"):
            p = getattr(self, name)
            if any(not 0.0 < x < size for x, size in zip(p, self.size)):
                raise DataError(f"{name} position {p} is not inside the room {self.size}")

    @property
    def volume(self) -> float:
        lx, ly, lz = self.size
        return lx * ly * lz

    @property
    def surface(self) -> float:
        lx, ly, lz = self.size
        return 2.0 * (lx * ly + lx * lz + ly * lz)

    @property
    def distance(self) -> float:
        return float(np.linalg.norm(np.subtract(self.source, self.mic)))


def absorption_from_t60(
    size: tuple[float, float, float], t60: float, formula: str = "eyring", c: float = 343.0
) -> float:
    """Wall absorption coefficient ``a`` that gives reverberation time ``t60`` (seconds).

    Raises DataError when Sabine asks for ``a >= 1`` (T60 too short for the room).
    """
    lx, ly, lz = size
    v, s = lx * ly * lz, 2.0 * (lx * ly + lx * lz + ly * lz)
    x = 24.0 * _LN10 * v / (c * s * t60)
    if formula == "eyring":
        return float(1.0 - math.exp(-x))
    if formula == "sabine":
        if x >= 1.0:
            raise DataError(
                f"T60 {t60:.3f} s is too short for a {lx}x{ly}x{lz} m room by Sabine's formula",
                fix="use absorption_formula: eyring or a longer T60",
            )
        return float(x)
    raise DataError(f"unknown absorption formula {formula!r}: use 'eyring' or 'sabine'")


def _axis_images(src: float, mic: float, length: float, n_max: int):
    """Per-axis image offsets (image - mic) and reflection counts, shapes (2 (2 n_max + 1),)."""
    n = np.repeat(np.arange(-n_max, n_max + 1), 2)
    q = np.tile(np.array([0, 1]), 2 * n_max + 1)
    offset = (1 - 2 * q) * src + 2 * n * length - mic
    return offset.astype(np.float64), np.abs(n - q) + np.abs(n)


def _windowed_sinc(frac_delay: np.ndarray, taps: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer tap offsets (taps,) relative to floor(delay), and kernels (M, taps)."""
    offsets = np.arange(-taps // 2 + 1, taps // 2 + 1)
    x = offsets[None, :] - frac_delay[:, None]
    win = 0.5 * (1.0 + np.cos(2.0 * np.pi * x / taps))
    return offsets, np.sinc(x) * win


def _rir_length(room: Room, sr: int, length_s: float | None) -> int:
    return int(math.ceil((room.t60 if length_s is None else length_s) * sr))


def _beta(room: Room, absorption: float | None, formula: str, c: float) -> float:
    if absorption is None:
        absorption = absorption_from_t60(room.size, room.t60, formula, c)
    if not 0.0 < absorption <= 1.0:
        raise DataError(f"wall absorption must be in (0, 1], got {absorption}")
    return math.sqrt(1.0 - absorption)


#: Images within this many ms of the direct path get a windowed sinc of SINC_TAPS taps.
SINC_MS, SINC_TAPS = 20.0, 32
#: High-pass cut-off (Hz) applied to every RIR (see _highpass)
HIGHPASS_HZ = 20.0
#: Images handled per chunk: bounds the memory of one RIR (~50 MB) whatever the room and T60.
_CHUNK = 1 << 19


class _ImageSet:
    """Every image within ``c * n / sr`` metres of the mic, enumerated in chunks.

    Vectorised: the (y, z) image pairs are sorted by distance once, so every x image takes a
    prefix of them and no candidate outside the sphere is ever formed.
    """

    def __init__(self, room: Room, sr: int, n: int, c: float) -> None:
        self.sr, self.n, self.c = sr, n, c
        self.direct = room.distance * sr / c
        self.scale = 4.0 * math.pi * room.distance
        d_max = c * n / sr
        (dx, kx), (dy, ky), (dz, kz) = (
            _axis_images(s, m, size, int(math.ceil(d_max / (2 * size))) + 1)
            for s, m, size in zip(room.source, room.mic, room.size)
        )
        self.k_max = int(kx.max() + ky.max() + kz.max())
        keep = np.abs(dx) <= d_max
        self.dx, self.kx = dx[keep], kx[keep]
        d2_yz = (dy[:, None] ** 2 + dz[None, :] ** 2).ravel()
        k_yz = (ky[:, None] + kz[None, :]).ravel()
        order = np.argsort(d2_yz, kind="stable")
        self.d2_yz, self.k_yz = d2_yz[order], k_yz[order]
        self.counts = np.searchsorted(self.d2_yz, d_max**2 - self.dx**2, side="right")

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(dist (M,) metres, reflections (M,))`` of about ``_CHUNK`` images at a time."""
        ends = np.cumsum(self.counts)
        i0 = 0
        while i0 < len(self.dx):
            base = ends[i0 - 1] if i0 else 0
            i1 = max(i0 + 1, int(np.searchsorted(ends, base + _CHUNK, side="right")))
            cnt = self.counts[i0:i1]
            x_idx = np.repeat(np.arange(i0, i1), cnt)
            yz_idx = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            yield (
                np.sqrt(self.dx[x_idx] ** 2 + self.d2_yz[yz_idx]),
                self.kx[x_idx] + self.k_yz[yz_idx],
            )
            i0 = i1

    def render(self, beta: float, sinc_ms: float, sinc_taps: int, highpass_hz: float) -> np.ndarray:
        """The (n,) float32 RIR for wall reflection coefficient ``beta``."""
        table = beta ** np.arange(self.k_max + 1)
        h = np.zeros(self.n + sinc_taps + 2)
        for dist, k in self.chunks():
            amp = table[k] * self.scale / (4.0 * np.pi * dist)
            _accumulate(
                h,
                dist * (self.sr / self.c),
                amp,
                self.n,
                self.direct + sinc_ms * 1e-3 * self.sr,
                sinc_taps,
            )
        return _highpass(h[: self.n], self.sr, highpass_hz)


def image_source_rir(
    room: Room,
    sr: int,
    length_s: float | None = None,
    *,
    absorption: float | None = None,
    formula: str = "eyring",
    c: float = 343.0,
    sinc_ms: float = SINC_MS,
    sinc_taps: int = SINC_TAPS,
    highpass_hz: float = HIGHPASS_HZ,
) -> np.ndarray:
    """The RIR from ``room.source`` to ``room.mic``, (ceil(length_s * sr),) float32.

    ``length_s`` defaults to ``room.t60`` (the time of a 60 dB decay). The wall ``absorption``
    defaults to the closed form of ``formula`` for ``room.t60``. A pure image-method RIR decays
    slower than ``room.t60`` (module docstring); :func:`hybrid_rir` does not.
    """
    beta = _beta(room, absorption, formula, c)
    images = _ImageSet(room, sr, _rir_length(room, sr, length_s), c)
    return images.render(beta, sinc_ms, sinc_taps, highpass_hz)


def hybrid_rir(
    room: Room,
    sr: int,
    rng: np.random.Generator,
    length_s: float | None = None,
    *,
    absorption: float | None = None,
    formula: str = "eyring",
    c: float = 343.0,
    diffuse_db: float = 15.0,
    diffuse_max_s: float = 0.08,
    match_ms: float = 10.0,
    highpass_hz: float = HIGHPASS_HZ,
) -> np.ndarray:
    """Image-source early part + diffuse tail that decays at exactly ``room.t60``, (n,) float32.

    The image method runs until ``min(diffuse_max_s, t60 * diffuse_db / 60)`` after the direct
    path (15 dB of nominal decay, at most 80 ms); from there on the RIR is Gaussian noise with
    the envelope ``10 ** (-3 t / t60)`` (60 dB per T60), its level matched to the image-method
    energy over the next ``match_ms``. See the module docstring for why.
    """
    n = _rir_length(room, sr, length_s)
    beta = _beta(room, absorption, formula, c)
    start = int(room.distance * sr / c + min(diffuse_max_s, room.t60 * diffuse_db / 60.0) * sr)
    n_ism = min(n, start + max(1, int(match_ms * 1e-3 * sr)))
    early = _ImageSet(room, sr, n_ism, c).render(beta, SINC_MS, SINC_TAPS, highpass_hz)
    if start >= n:
        return early
    early = early.astype(np.float64)
    envelope = 10.0 ** (-3.0 * np.arange(n - start) / (sr * room.t60))
    level = math.sqrt(np.mean(early[start:] ** 2) / np.mean(envelope[: n_ism - start] ** 2))
    tail = level * envelope * rng.standard_normal(n - start)
    return np.concatenate([early[:start], tail]).astype(np.float32)


def _highpass(h: np.ndarray, sr: int, cutoff_hz: float) -> np.ndarray:
    """2nd-order Butterworth high-pass (causal) as Allen & Berkley advise: every image adds a
    positive impulse, so the dense tail of a raw image-method RIR carries a large DC component
    (its mean exceeds its standard deviation) that lengthens the measured T20 by 28-38%.
    ``cutoff_hz`` <= 0 disables it."""
    if cutoff_hz <= 0:
        return np.asarray(h, np.float32)
    from scipy.signal import butter, sosfilt

    sos = butter(2, cutoff_hz, "highpass", fs=sr, output="sos")
    return sosfilt(sos, np.asarray(h, np.float64)).astype(np.float32)


def _accumulate(
    h: np.ndarray, delay: np.ndarray, amp: np.ndarray, n: int, sinc_until: float, sinc_taps: int
) -> None:
    """Add impulses (delay in samples, amplitude) to ``h`` (n + sinc_taps + 2,) in place:
    windowed sinc for delays before ``sinc_until``, linear interpolation after."""
    early = delay < sinc_until
    d_e, a_e = delay[early], amp[early]
    base = np.floor(d_e).astype(np.int64)
    offsets, kern = _windowed_sinc(d_e - base, sinc_taps)
    idx = base[:, None] + offsets[None, :]
    ok = (idx >= 0) & (idx < n)
    h[: n + 1] += np.bincount(idx[ok], (kern * a_e[:, None])[ok], minlength=n + 1)[: n + 1]
    d_l, a_l = delay[~early], amp[~early]
    i0 = np.floor(d_l).astype(np.int64)
    f = d_l - i0
    ok = i0 < n
    h[: n + 2] += np.bincount(i0[ok], a_l[ok] * (1.0 - f[ok]), minlength=n + 2)[: n + 2]
    h[1 : n + 3] += np.bincount(i0[ok], a_l[ok] * f[ok], minlength=n + 2)[: n + 2]


def image_source_rir_reference(
    room: Room, sr: int, length_s: float | None = None, *, c: float = 343.0
) -> np.ndarray:
    """Slow, obviously-correct :func:`image_source_rir` (default options: Eyring absorption,
    ``SINC_MS``, ``SINC_TAPS``, ``HIGHPASS_HZ``): one Python loop per image and tap."""
    sinc_ms, sinc_taps = SINC_MS, SINC_TAPS
    n, beta, scale = (
        _rir_length(room, sr, length_s),
        _beta(room, None, "eyring", c),
        4.0 * math.pi * room.distance,
    )
    d_max = c * n / sr
    direct = room.distance * sr / c
    h = np.zeros(n)
    ranges = [int(math.ceil(d_max / (2 * size))) + 1 for size in room.size]
    for nx in range(-ranges[0], ranges[0] + 1):
        for qx in (0, 1):
            for ny in range(-ranges[1], ranges[1] + 1):
                for qy in (0, 1):
                    for nz in range(-ranges[2], ranges[2] + 1):
                        for qz in (0, 1):
                            image, k = [], 0
                            for ax, (nn, qq) in enumerate(((nx, qx), (ny, qy), (nz, qz))):
                                image.append(
                                    (1 - 2 * qq) * room.source[ax] + 2 * nn * room.size[ax]
                                )
                                k += abs(nn - qq) + abs(nn)
                            dist = math.dist(image, room.mic)
                            if dist > d_max:
                                continue
                            amp = beta**k * scale / (4.0 * math.pi * dist)
                            t = dist * sr / c
                            if t < direct + sinc_ms * 1e-3 * sr:
                                for j in range(
                                    math.floor(t) - sinc_taps // 2 + 1,
                                    math.floor(t) + sinc_taps // 2 + 1,
                                ):
                                    x = j - t
                                    w = 0.5 * (1.0 + math.cos(2.0 * math.pi * x / sinc_taps))
                                    if 0 <= j < n:
                                        h[j] += amp * np.sinc(x) * w
                            else:
                                j, f = math.floor(t), t - math.floor(t)
                                if j < n:
                                    h[j] += amp * (1.0 - f)
                                if j + 1 < n:
                                    h[j + 1] += amp * f
    return _highpass(h, sr, HIGHPASS_HZ)


def direct_path_delay(room: Room, sr: int, c: float = 343.0) -> int:
    """Sample index of the direct-path peak of :func:`image_source_rir` (rounded delay)."""
    return int(round(room.distance * sr / c))


def schroeder_t60(rir: np.ndarray, sr: int, decay_db: tuple[float, float] = (-5.0, -25.0)) -> float:
    """Reverberation time measured by Schroeder backward integration.

    The energy decay curve ``EDC(t) = sum_{u >= t} h(u)^2`` (in dB, 0 at t = 0) is fitted by a
    least-squares line between ``decay_db[0]`` and ``decay_db[1]`` dB (T20 by default; (-5, -35)
    gives T30), and the slope is extrapolated to 60 dB. Returns seconds.
    """
    h = np.asarray(rir, dtype=np.float64)
    edc = np.cumsum((h**2)[::-1])[::-1]
    if edc[0] <= 0:
        raise DataError("cannot measure the T60 of an all-zero impulse response")
    edc_db = 10.0 * np.log10(np.maximum(edc / edc[0], 1e-300))
    hi, lo = decay_db
    sel = np.nonzero((edc_db <= hi) & (edc_db >= lo))[0]
    if len(sel) < 2 or edc_db[-1] > lo:
        raise DataError(f"impulse response does not decay by {-lo:.0f} dB; make it longer")
    slope, _ = np.polyfit(sel / sr, edc_db[sel], 1)
    return float(-60.0 / slope)
