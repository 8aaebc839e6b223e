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
* the absorption comes from the target T60 by Eyring, ``a = 1 - exp(-24 ln10 V / (c S T60))``,
  or Sabine, ``a = 24 ln10 V / (c S T60)``. Eyring is the default: a shoebox with uniform
  absorption decays at Eyring's rate, and it never asks for a > 1 (measured in the tests: the
  Schroeder T60 of our RIRs lands within 20% of the target).

Fractional delays: images arriving within ``sinc_ms`` of the direct path get a Hann-windowed
sinc of ``sinc_taps`` taps (exact early reflections); later images, which are millions in a
reverberant room and only shape the diffuse tail, are spread over their two neighbouring
samples by linear interpolation (a ``bincount``), which costs O(1) per image. Every RIR is
scaled so that the direct path has gain 1 (``4 pi d0`` times the physical one): reverberation
keeps the dry speech level.

Shapes: positions are (3,) metres; an RIR is (num_samples,) float32.
"""

from __future__ import annotations

import math
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


@dataclass
class _Images:
    """Every image within ``c * n / sr`` metres: delay (M,) samples, reflections (M,), dist (M,)."""

    delay: np.ndarray
    reflections: np.ndarray
    dist: np.ndarray
    n: int
    direct: float
    scale: float

    def render(self, beta: float, sr: int, sinc_ms: float, sinc_taps: int) -> np.ndarray:
        k = self.reflections
        table = beta ** np.arange(int(k.max()) + 1 if len(k) else 1)
        amp = table[k] * self.scale / (4.0 * np.pi * self.dist)
        return _render(self.delay, amp, self.n, sr, self.direct, sinc_ms, sinc_taps)


def _images(room: Room, sr: int, n: int, c: float) -> _Images:
    """Vectorised image enumeration: the (y, z) image pairs are sorted by distance once, so every
    x image takes a prefix of them and no candidate outside the sphere is ever formed."""
    d_max = c * n / sr
    axes = [
        _axis_images(s, m, size, int(math.ceil(d_max / (2 * size))) + 1)
        for s, m, size in zip(room.source, room.mic, room.size)
    ]
    (dx, kx), (dy, ky), (dz, kz) = axes
    keep = np.abs(dx) <= d_max
    dx, kx = dx[keep], kx[keep]
    d2_yz = (dy[:, None] ** 2 + dz[None, :] ** 2).ravel()
    k_yz = (ky[:, None] + kz[None, :]).ravel()
    order = np.argsort(d2_yz, kind="stable")
    d2_yz, k_yz = d2_yz[order], k_yz[order]
    counts = np.searchsorted(d2_yz, d_max**2 - dx**2, side="right")
    x_idx = np.repeat(np.arange(len(dx)), counts)
    yz_idx = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    dist = np.sqrt(dx[x_idx] ** 2 + d2_yz[yz_idx])
    return _Images(
        delay=dist * (sr / c),
        reflections=kx[x_idx] + k_yz[yz_idx],
        dist=dist,
        n=n,
        direct=room.distance * sr / c,
        scale=4.0 * math.pi * room.distance,
    )


def image_source_rir(
    room: Room,
    sr: int,
    length_s: float | None = None,
    *,
    absorption: float | None = None,
    formula: str = "eyring",
    c: float = 343.0,
    sinc_ms: float = 20.0,
    sinc_taps: int = 32,
) -> np.ndarray:
    """The RIR from ``room.source`` to ``room.mic``, (ceil(length_s * sr),) float32.

    ``length_s`` defaults to ``room.t60`` (the time of a 60 dB decay). The wall ``absorption``
    defaults to the closed form of ``formula`` for ``room.t60``; pass the result of
    :func:`calibrate_absorption` to get the requested T60 as measured.
    """
    beta = _beta(room, absorption, formula, c)
    return _images(room, sr, _rir_length(room, sr, length_s), c).render(beta, sr, sinc_ms, sinc_taps)


def calibrate_absorption(
    room: Room,
    sr: int,
    *,
    c: float = 343.0,
    tol: float = 0.02,
    max_iter: int = 8,
) -> float:
    """Wall absorption for which the RIR's Schroeder T20 equals ``room.t60`` (within ``tol``).

    In an image-source shoebox the late energy comes from the directions with the fewest wall
    hits, so the decay is slower than Eyring's formula says (by up to 50-75% at T60 0.3-0.9 s;
    Lehmann & Johansson 2008). Starting from Eyring's exponent ``x = -ln(1 - a)``, which is
    inversely proportional to T60, each step rescales ``x`` by measured / target T60; the image
    geometry is enumerated once. Converges in 1-4 steps; returns the best absorption seen.
    """
    images = _images(room, sr, _rir_length(room, sr, None), c)
    x = -math.log1p(-absorption_from_t60(room.size, room.t60, "eyring", c))
    best = (math.inf, x)
    for _ in range(max_iter):
        t = schroeder_t60(images.render(math.exp(-x / 2.0), sr, 0.0, 2), sr)
        err = abs(t / room.t60 - 1.0)
        best = min(best, (err, x))
        if err <= tol:
            break
        x *= t / room.t60
    return float(-math.expm1(-best[1]))


def _render(
    delay: np.ndarray,
    amp: np.ndarray,
    n: int,
    sr: int,
    direct: float,
    sinc_ms: float,
    sinc_taps: int,
) -> np.ndarray:
    """Sum impulses (delay in samples, amplitude) into an (n,) RIR (fast path)."""
    early = delay < direct + sinc_ms * 1e-3 * sr
    h = np.zeros(n + sinc_taps + 2)
    # Early images: windowed sinc.
    d_e, a_e = delay[early], amp[early]
    base = np.floor(d_e).astype(np.int64)
    offsets, kern = _windowed_sinc(d_e - base, sinc_taps)
    idx = base[:, None] + offsets[None, :]
    ok = (idx >= 0) & (idx < n)
    h[: n + 1] += np.bincount(idx[ok], (kern * a_e[:, None])[ok], minlength=n + 1)[: n + 1]
    # Late images: linear interpolation between the two neighbouring samples.
    d_l, a_l = delay[~early], amp[~early]
    i0 = np.floor(d_l).astype(np.int64)
    f = d_l - i0
    ok = i0 < n
    h[: n + 2] += np.bincount(i0[ok], a_l[ok] * (1.0 - f[ok]), minlength=n + 2)[: n + 2]
    h[1 : n + 3] += np.bincount(i0[ok], a_l[ok] * f[ok], minlength=n + 2)[: n + 2]
    return h[:n].astype(np.float32)


def image_source_rir_reference(
    room: Room,
    sr: int,
    length_s: float | None = None,
    *,
    absorption: float | None = None,
    formula: str = "eyring",
    c: float = 343.0,
    sinc_ms: float = 20.0,
    sinc_taps: int = 32,
) -> np.ndarray:
    """Slow, obviously-correct :func:`image_source_rir`: one Python loop per image and tap."""
    n, beta, scale = _rir_length(room, sr, length_s), _beta(room, absorption, formula, c), 4.0 * math.pi * room.distance
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
                                image.append((1 - 2 * qq) * room.source[ax] + 2 * nn * room.size[ax])
                                k += abs(nn - qq) + abs(nn)
                            dist = math.dist(image, room.mic)
                            if dist > d_max:
                                continue
                            amp = beta**k * scale / (4.0 * math.pi * dist)
                            t = dist * sr / c
                            if t < direct + sinc_ms * 1e-3 * sr:
                                for j in range(math.floor(t) - sinc_taps // 2 + 1, math.floor(t) + sinc_taps // 2 + 1):
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
    return h.astype(np.float32)


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
