"""Frame-level transforms: add-deltas (Kaldi's float arithmetic, in numpy) and splice-feats
(via kaldi-native-fbank).

Shapes: input (T, F); ``add_deltas`` -> (T, F * (order + 1)) laid out [x, delta, delta-delta];
``splice_feats`` -> (T, F * (left + 1 + right)) laid out [x_{t-left}, ..., x_{t+right}].
Out-of-range frames are clamped to the first/last frame, as in Kaldi. The slow references are
:func:`pykaldi2.features.reference.add_deltas_reference` / ``splice_feats_reference``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import Pykaldi2Error


def _as_feats(feats: np.ndarray, what: str) -> np.ndarray:
    feats = np.asarray(feats)
    if feats.ndim != 2:
        raise Pykaldi2Error(f"{what}: expected features of shape (T, F), got {feats.shape}")
    return np.ascontiguousarray(feats, dtype=np.float32)


@dataclass
class DeltaConfig(ConfigMixin):
    """add-deltas options: ``order`` (0 = none), regression ``window`` N (Kaldi: 2, 2)."""

    order: int = 2
    window: int = 2

    def __post_init__(self) -> None:
        if self.order < 0 or self.window < 1:
            raise Pykaldi2Error(f"DeltaConfig: need order >= 0 and window >= 1, got {self}")


def add_deltas(feats: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """add-deltas: append ``order`` regression deltas. (T, F) -> (T, F * (order + 1)) float32.

    Delta_t = sum_{j=-N..N} j x_{t+j} / (2 sum_{j=1..N} j^2); higher orders apply it again.
    """
    DeltaConfig(order, window)
    feats = _as_feats(feats, "add_deltas")
    if order == 0:
        return feats.copy()
    num, dim = feats.shape
    out = np.zeros((num, dim * (order + 1)), dtype=np.float32)
    if num == 0:
        return out
    frames = np.arange(num)
    for i, scales in enumerate(delta_scales(order, window)):
        half = (len(scales) - 1) // 2
        block = out[:, i * dim : (i + 1) * dim]
        for j in range(-half, half + 1):  # DeltaFeatures::Process: output.AddVec(scale, row)
            s = scales[j + half]
            if s != 0.0:
                block += s * feats[np.clip(frames + j, 0, num - 1)]
    return out


def delta_scales(order: int, window: int) -> list[np.ndarray]:
    """Kaldi's DeltaFeatures window of each order (float32, in its float arithmetic):
    scales[0] = [1]; scales[i] = scales[i-1] convolved with j (j = -N..N), scaled by
    1 / sum j^2.

    add-deltas applies them in float, frame t's order-i block accumulating
    ``scale_j * x_{t+j}`` for j = -half..half one float operation at a time; kaldi-native-fbank's
    compute_deltas rounds differently in the delta-deltas (AN4: 26% of the values one float
    step off), which is enough to make monophone training part from Kaldi's (#15). With this
    arithmetic gmm-init-mono's global mean and variance over Kaldi's AN4 features are those of
    Kaldi's 0.mdl bit for bit (39 of 39 dimensions; 28 with kaldi-native-fbank's)."""
    scales = [np.ones(1, dtype=np.float32)]
    for _ in range(order):
        prev = scales[-1]
        prev_half = (len(prev) - 1) // 2
        cur_half = prev_half + window
        cur = np.zeros(len(prev) + 2 * window, dtype=np.float32)
        normalizer = np.float32(0.0)
        for j in range(-window, window + 1):
            normalizer += np.float32(j * j)
            for k in range(-prev_half, prev_half + 1):
                cur[j + k + cur_half] += np.float32(j) * prev[k + prev_half]
        cur *= np.float32(1.0 / float(normalizer))  # Scale(1.0 / normalizer): a float alpha
        scales.append(cur)
    return scales


def splice_feats(feats: np.ndarray, left_context: int = 4, right_context: int = 4) -> np.ndarray:
    """splice-feats: stack each frame with its neighbours. (T, F) -> (T, F * (L + 1 + R))."""
    import kaldi_native_fbank as knf

    if left_context < 0 or right_context < 0:
        raise Pykaldi2Error(
            f"splice_feats: contexts must be >= 0, got left {left_context} right {right_context}"
        )
    feats = _as_feats(feats, "splice_feats")
    if len(feats) == 0:
        return np.zeros((0, feats.shape[1] * (left_context + 1 + right_context)), np.float32)
    opts = knf.SpliceOptions(left_context=left_context, right_context=right_context)
    return knf.splice_frames(feats, opts)
