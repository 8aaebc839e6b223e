"""Slow, obviously-correct numpy versions of every feature kernel, written from Kaldi's sources.

They exist to test the fast paths (kaldi-native-fbank and the vectorised numpy in
:mod:`pykaldi2.features.cmvn` / :mod:`pykaldi2.features.transforms`): loops over frames and
dimensions, float64, one line per step of the Kaldi code they mirror. Never use them in a pipeline.

Shapes: samples (S,), features (T, F).
"""

from __future__ import annotations

import math

import numpy as np

from pykaldi2.features.extractors import FbankConfig, FrameConfig, MfccConfig

_FLT_EPS = float(np.finfo(np.float32).eps)


def _window_function(kind: str, n: int, blackman_coeff: float) -> np.ndarray:
    """feature-window.cc FeatureWindowFunction: the (n,) analysis window."""
    a = 2 * math.pi / (n - 1)
    w = np.empty(n)
    for i in range(n):
        if kind == "hanning":
            w[i] = 0.5 - 0.5 * math.cos(a * i)
        elif kind == "sine":
            w[i] = math.sin(0.5 * a * i)
        elif kind == "hamming":
            w[i] = 0.54 - 0.46 * math.cos(a * i)
        elif kind == "povey":
            w[i] = (0.5 - 0.5 * math.cos(a * i)) ** 0.85
        elif kind == "rectangular":
            w[i] = 1.0
        elif kind == "blackman":
            w[i] = (
                blackman_coeff
                - 0.5 * math.cos(a * i)
                + (0.5 - blackman_coeff) * math.cos(2 * a * i)
            )
        else:
            raise ValueError(kind)
    return w


def _mel(f: float) -> float:
    return 1127.0 * math.log(1.0 + f / 700.0)


def _mel_banks(cfg: FrameConfig, padded: int) -> np.ndarray:
    """mel-computations.cc MelBanks: (num_mel_bins, padded // 2) triangular weights."""
    sr = cfg.sample_frequency
    nyquist = 0.5 * sr
    high = cfg.high_freq if cfg.high_freq > 0 else nyquist + cfg.high_freq
    num_fft_bins = padded // 2
    bin_width = sr / padded
    mel_low, mel_high = _mel(cfg.low_freq), _mel(high)
    delta = (mel_high - mel_low) / (cfg.num_mel_bins + 1)
    banks = np.zeros((cfg.num_mel_bins, num_fft_bins))
    for b in range(cfg.num_mel_bins):
        left, center, right = (mel_low + (b + k) * delta for k in range(3))
        for i in range(num_fft_bins):
            m = _mel(bin_width * i)
            if left < m < right:
                if m <= center:
                    banks[b, i] = (m - left) / (center - left)
                else:
                    banks[b, i] = (right - m) / (right - center)
    return banks


def _frames(samples: np.ndarray, cfg: FrameConfig) -> np.ndarray:
    """feature-window.cc ExtractWindow (without dither): (T, frame_length) raw frames."""
    shift = int(cfg.sample_frequency * cfg.frame_shift_ms / 1000)
    size = int(cfg.sample_frequency * cfg.frame_length_ms / 1000)
    num = cfg.num_frames(len(samples))
    out = np.zeros((num, size))
    for t in range(num):
        start = t * shift if cfg.snip_edges else t * shift + shift // 2 - size // 2
        for s in range(size):
            j = start + s
            while j < 0 or j >= len(samples):  # reflect at the edges (snip_edges=false)
                j = -j - 1 if j < 0 else 2 * len(samples) - 1 - j
            out[t, s] = samples[j]
    return out


def _spectrum_frames(samples: np.ndarray, cfg: FrameConfig):
    """Per frame: (log_energy, power or magnitude spectrum (padded//2+1,)) and the padded size."""
    if cfg.dither != 0.0:
        raise ValueError("the reference is deterministic: use dither=0")
    if cfg.htk_compat:
        raise ValueError("the reference does not implement htk_compat")
    size = int(cfg.sample_frequency * cfg.frame_length_ms / 1000)
    padded = 1 << (size - 1).bit_length() if cfg.round_to_power_of_two else size
    window = _window_function(cfg.window_type, size, cfg.blackman_coeff)
    rows = []
    for frame in _frames(np.asarray(samples, dtype=np.float64), cfg):
        w = frame.copy()
        if cfg.remove_dc_offset:
            w -= w.sum() / size
        log_energy = math.log(max(float(w @ w), _FLT_EPS))  # raw energy
        c = cfg.preemphasis_coefficient
        for i in range(size - 1, 0, -1):
            w[i] -= c * w[i - 1]
        w[0] -= c * w[0]
        w *= window
        if not cfg.raw_energy:
            log_energy = math.log(max(float(w @ w), _FLT_EPS))
        if cfg.energy_floor > 0.0:
            log_energy = max(log_energy, math.log(cfg.energy_floor))
        spec = np.abs(np.fft.rfft(w, n=padded)) ** 2
        rows.append((log_energy, spec))
    return rows, padded


def fbank_reference(samples: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """Kaldi's Fbank::Compute frame by frame. Returns (T, cfg.dim) float64."""
    rows, padded = _spectrum_frames(samples, cfg)
    banks = _mel_banks(cfg, padded)
    out = np.zeros((len(rows), cfg.dim))
    for t, (log_energy, spec) in enumerate(rows):
        if not cfg.use_power:
            spec = np.sqrt(spec)
        mel = banks @ spec[: padded // 2]
        if cfg.use_log_fbank:
            mel = np.log(np.maximum(mel, _FLT_EPS))
        if cfg.use_energy:
            out[t, 0] = log_energy
            out[t, 1:] = mel
        else:
            out[t] = mel
    return out


def mfcc_reference(samples: np.ndarray, cfg: MfccConfig) -> np.ndarray:
    """Kaldi's Mfcc::Compute frame by frame (DCT-II rows, lifter, c0 <- log energy)."""
    rows, padded = _spectrum_frames(samples, cfg)
    banks = _mel_banks(cfg, padded)
    n, k = cfg.num_mel_bins, cfg.num_ceps
    dct = np.zeros((k, n))
    for i in range(k):
        for j in range(n):
            scale = math.sqrt(1.0 / n) if i == 0 else math.sqrt(2.0 / n)
            dct[i, j] = scale * math.cos(math.pi / n * (j + 0.5) * i)
    q = cfg.cepstral_lifter
    lifter = np.array([1.0 + 0.5 * q * math.sin(math.pi * i / q) if q else 1.0 for i in range(k)])
    out = np.zeros((len(rows), k))
    for t, (log_energy, spec) in enumerate(rows):
        mel = np.log(np.maximum(banks @ spec[: padded // 2], _FLT_EPS))
        out[t] = (dct @ mel) * lifter
        if cfg.use_energy:
            out[t, 0] = log_energy
    return out


def add_deltas_reference(feats: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Kaldi's DeltaFeatures: (T, F) -> (T, F * (order + 1)), edges clamped.

    scales[0] = [1]; scales[i] = scales[i-1] convolved with j / sum_{k=-N..N} k^2 (j = -N..N).
    """
    feats = np.asarray(feats, dtype=np.float64)
    num, dim = feats.shape
    first = [j / sum(k * k for k in range(-window, window + 1)) for j in range(-window, window + 1)]
    scales = [[1.0]]
    for _ in range(order):
        prev = scales[-1]
        cur = [0.0] * (len(prev) + 2 * window)
        for a, pa in enumerate(prev):
            for b, fb in enumerate(first):
                cur[a + b] += pa * fb
        scales.append(cur)
    out = np.zeros((num, dim * (order + 1)))
    for i, sc in enumerate(scales):
        half = (len(sc) - 1) // 2
        for t in range(num):
            for j, s in enumerate(sc):
                src = min(max(t + j - half, 0), num - 1)
                out[t, i * dim : (i + 1) * dim] += s * feats[src]
    return out


def splice_feats_reference(feats: np.ndarray, left: int, right: int) -> np.ndarray:
    """Kaldi's SpliceFrames: row t = [x_{t-left}, ..., x_{t+right}], indices clamped."""
    feats = np.asarray(feats)
    num = len(feats)
    rows = []
    for t in range(num):
        rows.append(
            np.concatenate([feats[min(max(t + j, 0), num - 1)] for j in range(-left, right + 1)])
        )
    return np.array(rows).reshape(num, -1)


def cmvn_stats_reference(feats: np.ndarray) -> np.ndarray:
    """Kaldi's AccCmvnStats over all frames: (2, F + 1) [[sum x, count], [sum x^2, 0]]."""
    feats = np.asarray(feats, dtype=np.float64)
    dim = feats.shape[1]
    stats = np.zeros((2, dim + 1))
    for x in feats:
        for d in range(dim):
            stats[0, d] += x[d]
            stats[1, d] += x[d] * x[d]
        stats[0, dim] += 1.0
    return stats


def apply_cmvn_reference(feats: np.ndarray, stats: np.ndarray, norm_vars: bool) -> np.ndarray:
    """Kaldi's ApplyCmvn: x_d <- (x_d - mean_d) [/ stddev_d], variance floored at 1e-20."""
    feats = np.asarray(feats, dtype=np.float64)
    dim = feats.shape[1]
    count = stats[0, dim]
    out = feats.copy()
    for d in range(dim):
        mean = stats[0, d] / count
        if norm_vars:
            var = max(stats[1, d] / count - mean * mean, 1.0e-20)
            scale = 1.0 / math.sqrt(var)
            out[:, d] = feats[:, d] * scale - mean * scale
        else:
            out[:, d] = feats[:, d] - mean
    return out


def sliding_cmn_reference(
    feats: np.ndarray, cmn_window: int, min_window: int, center: bool, norm_vars: bool
) -> np.ndarray:
    """Kaldi's SlidingWindowCmnInternal, recomputing each window's statistics from scratch."""
    feats = np.asarray(feats, dtype=np.float64)
    num = len(feats)
    out = np.zeros_like(feats)
    for t in range(num):
        if center:
            start = t - cmn_window // 2
            end = start + cmn_window
        else:
            start = t - cmn_window
            end = t + 1
        if start < 0:
            end -= start
            start = 0
        if not center and end > t:
            end = max(t + 1, min_window)
        if end > num:
            start = max(start - (end - num), 0)
            end = num
        win = feats[start:end]
        n = end - start
        out[t] = feats[t] - win.sum(axis=0) / n
        if norm_vars:
            if n == 1:
                out[t] = 0.0
            else:
                var = (win**2).sum(axis=0) / n - (win.sum(axis=0) / n) ** 2
                out[t] /= np.sqrt(np.maximum(var, 1.0e-10))
    return out
