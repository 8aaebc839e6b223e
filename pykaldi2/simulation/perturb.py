"""Speed and volume perturbation, and rescaling frame-level targets to a new length.

Speed perturbation is what ``sox speed <factor>`` does (and Kaldi's perturb_data_dir_speed.sh):
the samples are reinterpreted as recorded at ``sr * factor`` and resampled back to ``sr``, so
duration is divided by ``factor`` and pitch multiplied by it. Resampling is polyphase
(scipy ``resample_poly``, Kaiser-windowed low-pass), with the ratio as an exact fraction.

Frame targets computed on the original audio (an ``ali`` of pdf_ids, (T,)) are mapped onto the
perturbed audio's T' frames by nearest-neighbour index mapping:
``ali'[j] = ali[min(T - 1, floor((j + 0.5) * T / T'))]`` (frame centres matched in relative
time). Compute T' from the perturbed samples with the feature config
(``FrameConfig.num_frames``) so the targets match the features exactly.

    >>> y = speed_perturb(x, 1.1)                 # len(y) == ceil(len(x) / 1.1)
    >>> ali2 = rescale_ali(ali, fbank_cfg.num_frames(len(y)))
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from pykaldi2.utils.errors import DataError


def speed_ratio(factor: float) -> tuple[int, int]:
    """``(up, down)`` of the resampling that speeds audio up by ``factor`` (0.9 -> (10, 9))."""
    if not 0.1 <= factor <= 10.0:
        raise DataError(f"speed factor {factor} out of range [0.1, 10]")
    f = Fraction(factor).limit_denominator(1000)
    return f.denominator, f.numerator


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """(n,) -> (ceil(n * up / down),) float32: ``x`` played ``factor`` times faster."""
    up, down = speed_ratio(factor)
    x = np.asarray(x, np.float32)
    if up == down:
        return x.copy()
    return resample_poly(x, up, down).astype(np.float32)


def volume_perturb(x: np.ndarray, gain_db: float) -> np.ndarray:
    """``x`` times ``10 ** (gain_db / 20)``, float32."""
    return (np.asarray(x, np.float32) * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)


def rescale_ali(ali: np.ndarray, num_frames: int) -> np.ndarray:
    """Map frame targets (T, ...) onto ``num_frames`` frames by nearest-neighbour index mapping.

    Works on any array whose first axis is time (pdf_id alignments (T,), soft targets (T, C)).
    """
    ali = np.asarray(ali)
    t = ali.shape[0]
    if num_frames < 0:
        raise DataError(f"num_frames must be >= 0, got {num_frames}")
    if num_frames == 0:
        return ali[:0].copy()
    if t == 0:
        if num_frames:
            raise DataError("cannot stretch an empty alignment to a non-empty length")
        return ali.copy()
    src = np.minimum(((np.arange(num_frames) + 0.5) * t / num_frames).astype(np.int64), t - 1)
    return ali[src]
