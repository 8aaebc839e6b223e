"""Frame-level transforms: add-deltas and splice-feats (Kaldi's arithmetic, via kaldi-native-fbank).

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
    import kaldi_native_fbank as knf

    DeltaConfig(order, window)
    feats = _as_feats(feats, "add_deltas")
    if order == 0:
        return feats.copy()
    if len(feats) == 0:
        return np.zeros((0, feats.shape[1] * (order + 1)), dtype=np.float32)
    return knf.compute_deltas(knf.DeltaOptions(order=order, window=window), feats)


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
