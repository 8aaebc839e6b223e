"""SpecAugment (Park et al. 2019) on (T, F) features, numpy arrays or torch tensors.

Order as in the paper: time warp, then frequency masks, then time masks. Parameters follow
icefall/lhotse (``SpecAugConfig`` defaults: 2 frequency masks up to 27 bins, 10 time masks up
to 100 frames and at most 15% of the utterance each, time warp 80 frames).

Time warp: a centre frame ``c`` drawn in ``[W, T - W)`` moves to ``c'`` drawn in
``[c - W, c + W]``; the left part ``[0, c)`` is stretched linearly onto ``[0, c')`` and the right
part onto ``[c', T)`` (linear interpolation between neighbouring frames; lhotse uses bicubic
image resizing, the effect is the same). Utterances shorter than ``2 W + 2`` frames are not
warped. :func:`time_warp_reference` is the frame-by-frame version of :func:`time_warp`.

    >>> aug, info = spec_augment(feats, SpecAugConfig(enable=True), rng)
    >>> info["time_masks"]             # [(start, width), ...] in frames
"""

from __future__ import annotations

import math

import numpy as np

from pykaldi2.simulation.config import SpecAugConfig
from pykaldi2.utils.errors import DataError


def _is_torch(x) -> bool:
    return hasattr(x, "detach") and hasattr(x, "clone")


def _warp_positions(t: int, center: int, warped: int) -> np.ndarray:
    """(T,) source position (fractional frame) of every output frame."""
    j = np.arange(t, dtype=np.float64)
    left = j * center / warped if warped > 0 else np.zeros(t)
    right = center + (j - warped) * (t - center) / (t - warped)
    return np.where(j < warped, left, right)


def time_warp(feats, center: int, warped: int):
    """(T, F) -> (T, F): frame ``center`` moved to ``warped`` (numpy or torch, same type)."""
    t = feats.shape[0]
    if not (0 < center < t and 0 < warped < t):
        raise DataError(f"time warp centre {center} -> {warped} outside (0, {t})")
    pos = _warp_positions(t, center, warped)
    i0 = np.minimum(np.floor(pos).astype(np.int64), t - 1)
    i1 = np.minimum(i0 + 1, t - 1)
    frac = (pos - i0)[:, None]
    if _is_torch(feats):
        import torch

        i0_t, i1_t = torch.from_numpy(i0).to(feats.device), torch.from_numpy(i1).to(feats.device)
        frac_t = torch.from_numpy(frac).to(feats.device, feats.dtype)
        return feats[i0_t] * (1 - frac_t) + feats[i1_t] * frac_t
    return (feats[i0] * (1 - frac) + feats[i1] * frac).astype(feats.dtype)


def time_warp_reference(feats: np.ndarray, center: int, warped: int) -> np.ndarray:
    """Slow :func:`time_warp` for numpy input: one Python loop iteration per output frame."""
    t = feats.shape[0]
    out = np.empty_like(feats)
    for j in range(t):
        if j < warped:
            p = j * center / warped
        else:
            p = center + (j - warped) * (t - center) / (t - warped)
        a = min(math.floor(p), t - 1)
        b = min(a + 1, t - 1)
        out[j] = feats[a] * (1 - (p - a)) + feats[b] * (p - a)
    return out


def _masks(
    n_masks: int, max_width: int, size: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    out = []
    max_width = min(max_width, size)
    for _ in range(n_masks):
        w = int(rng.integers(max_width + 1))
        out.append((int(rng.integers(size - w + 1)), w))
    return out


def spec_augment(feats, config: SpecAugConfig, rng: np.random.Generator):
    """SpecAugment one utterance's (T, F) features; returns ``(augmented copy, info)``.

    ``info`` has ``warp`` (``(centre, new centre)`` or None), ``freq_masks`` and ``time_masks``
    (lists of ``(start, width)``). The input is not modified. With ``config.enable`` false, or
    when the ``config.prob`` draw fails, the features come back unchanged (a copy).
    """
    if feats.ndim != 2:
        raise DataError(f"SpecAugment expects (T, F) features, got shape {tuple(feats.shape)}")
    out = feats.clone() if _is_torch(feats) else np.array(feats, copy=True)
    info = {"warp": None, "freq_masks": [], "time_masks": []}
    if not config.enable or rng.random() >= config.prob:
        return out, info
    t, f = out.shape
    w = config.time_warp
    if w > 0 and t >= 2 * w + 2 and rng.random() < config.time_warp_prob:
        center = int(rng.integers(w, t - w))
        warped = int(rng.integers(center - w, center + w + 1))
        warped = min(max(warped, 1), t - 1)
        out = time_warp(out, center, warped)
        info["warp"] = (center, warped)
    value = out.mean() if config.mask_value == "mean" else 0.0
    info["freq_masks"] = _masks(config.num_freq_masks, config.max_freq_width, f, rng)
    max_t = min(config.max_time_width, int(config.max_time_fraction * t))
    info["time_masks"] = _masks(config.num_time_masks, max_t, t, rng)
    for start, width in info["freq_masks"]:
        out[:, start : start + width] = value
    for start, width in info["time_masks"]:
        out[start : start + width, :] = value
    return out, info
