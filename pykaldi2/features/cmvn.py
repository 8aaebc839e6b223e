"""Cepstral mean and variance normalisation: compute-cmvn-stats, apply-cmvn, apply-cmvn-sliding.

Stats use Kaldi's layout exactly, so a cmvn.ark written with kaldiio is read by Kaldi and back:
a (2, F + 1) float64 matrix ``[[sum_t x_t(0..F-1), count], [sum_t x_t(d)^2, 0]]``. Stats add up:
per-speaker stats are the sum of the speaker's per-utterance stats, global stats the sum of all.

    >>> stats = compute_cmvn_stats(feats)              # (2, F + 1)
    >>> normed = apply_cmvn(feats, stats, norm_vars=False)
    >>> online = apply_cmvn_sliding(feats, SlidingCmnConfig(cmn_window=300))

Slow references: :mod:`pykaldi2.features.reference` (cmvn_stats/apply_cmvn/sliding_cmn).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from pykaldi2.data.tables import c_sorted
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import Pykaldi2Error
from pykaldi2.utils.log import progress


def _check_feats(feats: np.ndarray, what: str) -> np.ndarray:
    feats = np.asarray(feats)
    if feats.ndim != 2:
        raise Pykaldi2Error(f"{what}: expected features of shape (T, F), got {feats.shape}")
    return feats


def compute_cmvn_stats(feats: np.ndarray) -> np.ndarray:
    """compute-cmvn-stats of one matrix: (T, F) -> (2, F + 1) float64 (Kaldi layout)."""
    feats = _check_feats(feats, "compute_cmvn_stats").astype(np.float64)
    stats = np.zeros((2, feats.shape[1] + 1))
    stats[0, :-1] = feats.sum(axis=0)
    stats[1, :-1] = np.einsum("td,td->d", feats, feats)
    stats[0, -1] = len(feats)
    return stats


def acc_cmvn_stats(feats_iter: Iterable[np.ndarray]) -> np.ndarray:
    """Sum the stats of several (T, F) matrices (one speaker, or a whole set for global CMVN)."""
    total = None
    for feats in feats_iter:
        stats = compute_cmvn_stats(feats)
        if total is None:
            total = stats
        elif total.shape != stats.shape:
            raise Pykaldi2Error(
                f"acc_cmvn_stats: feature dims differ ({total.shape[1] - 1} vs {stats.shape[1] - 1})"
            )
        else:
            total += stats
    if total is None:
        raise Pykaldi2Error("acc_cmvn_stats: no features to accumulate")
    return total


def _check_stats(stats: np.ndarray, dim: int, norm_vars: bool) -> tuple[np.ndarray, float]:
    stats = np.asarray(stats, dtype=np.float64)
    rows = 2 if norm_vars else 1
    if stats.ndim != 2 or stats.shape[0] < rows or stats.shape[1] != dim + 1:
        raise Pykaldi2Error(
            f"CMVN stats of shape {stats.shape} do not fit {dim}-dim features (need ({rows}, "
            f"{dim + 1})). Fix: recompute the stats (pykaldi2 compute-cmvn) for these features"
        )
    count = float(stats[0, dim])
    if count < 1.0:
        raise Pykaldi2Error(f"CMVN stats have a frame count of {count}; they are empty")
    return stats, count


def apply_cmvn(
    feats: np.ndarray, stats: np.ndarray, norm_vars: bool = False, reverse: bool = False
) -> np.ndarray:
    """apply-cmvn: (T, F) float32 normalised with ``stats`` (2, F + 1).

    x_d <- x_d - mean_d; with ``norm_vars`` x_d <- (x_d - mean_d) / stddev_d (variance floored at
    1e-20). ``reverse`` undoes it (apply-cmvn --reverse).
    """
    feats = _check_feats(feats, "apply_cmvn")
    dim = feats.shape[1]
    stats, count = _check_stats(stats, dim, norm_vars)
    mean = stats[0, :dim] / count
    if norm_vars:
        var = np.maximum(stats[1, :dim] / count - mean * mean, 1.0e-20)
        scale = 1.0 / np.sqrt(var)
    else:
        scale = np.ones(dim)
    offset = -mean * scale
    if reverse:
        x = feats.astype(np.float64)
        return ((x - offset) / scale).astype(np.float32)
    out = np.array(feats, dtype=np.float32)
    if not norm_vars:
        # as Kaldi's ApplyCmvn: offset.AddVec(-1.0 / count, mean_stats), i.e. the float
        # -1/count times the double sums, rounded to float; added in float arithmetic
        out += (np.float64(np.float32(-1.0 / count)) * stats[0, :dim]).astype(np.float32)
        return out
    # scale and offset computed in double, rounded to float, applied in float arithmetic
    out *= scale.astype(np.float32)
    out += offset.astype(np.float32)
    return out


@dataclass
class SlidingCmnConfig(ConfigMixin):
    """apply-cmvn-sliding options (Kaldi defaults): window in frames, min window at the start."""

    cmn_window: int = 600
    min_window: int = 100
    center: bool = False
    norm_vars: bool = False

    def __post_init__(self) -> None:
        if self.cmn_window < 1 or self.min_window < 1:
            raise Pykaldi2Error(f"SlidingCmnConfig: windows must be >= 1, got {self}")


def _sliding_windows(num: int, cfg: SlidingCmnConfig) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of each frame's normalisation window, (T,) each (SlidingWindowCmnInternal)."""
    t = np.arange(num)
    if cfg.center:
        start = t - cfg.cmn_window // 2
        end = start + cfg.cmn_window
    else:
        start = t - cfg.cmn_window
        end = t + 1
    shift = np.minimum(start, 0)  # a window starting before 0 is moved right
    end, start = end - shift, start - shift
    if not cfg.center:
        end = np.where(end > t, np.maximum(t + 1, cfg.min_window), end)
    over = np.maximum(end - num, 0)  # a window past the end is moved left
    start = np.maximum(start - over, 0)
    end = end - over
    return start, end


def apply_cmvn_sliding(feats: np.ndarray, config: SlidingCmnConfig | None = None) -> np.ndarray:
    """apply-cmvn-sliding: per-frame CMN over a sliding window (streaming-friendly when causal).

    (T, F) -> (T, F) float32. Each frame is normalised by the mean (and with ``norm_vars`` the
    stddev, variance floored at 1e-10) of the frames in its window, computed in float64 from
    cumulative sums.
    """
    cfg = config or SlidingCmnConfig()
    feats = _check_feats(feats, "apply_cmvn_sliding")
    x = feats.astype(np.float64)
    num = len(x)
    if num == 0:
        return feats.astype(np.float32)
    start, end = _sliding_windows(num, cfg)
    n = (end - start)[:, None].astype(np.float64)
    csum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    win_sum = csum[end] - csum[start]
    out = x - win_sum / n
    if cfg.norm_vars:
        csq = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x * x, axis=0)])
        var = (csq[end] - csq[start]) / n - (win_sum / n) ** 2
        out = out / np.sqrt(np.maximum(var, 1.0e-10))
        out[(n == 1)[:, 0]] = 0.0
    return out.astype(np.float32)


def cmvn_stats_per_speaker(
    reader: Mapping[str, np.ndarray], utt2spk: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """compute-cmvn-stats --spk2utt: speaker -> (2, F + 1) stats, C-sorted by speaker.

    The features are read once, in the reader's order, one matrix at a time; each speaker's
    stats are summed in that order (for a sorted feats.scp, spk2utt's order, as Kaldi sums).
    Utterances without features are skipped (as Kaldi does), and so are features of
    utterances not in ``utt2spk``; a speaker with no features at all is an error naming it.
    """
    out: dict[str, np.ndarray] = {}
    for utt in progress(reader, total=len(reader), desc="cmvn stats", unit="utt"):
        spk = utt2spk.get(utt)
        if spk is None:
            continue
        stats = compute_cmvn_stats(reader[utt])
        if spk not in out:
            out[spk] = stats
        elif out[spk].shape != stats.shape:
            raise Pykaldi2Error(
                f"cmvn stats: feature dims differ within speaker {spk} ({out[spk].shape[1] - 1}"
                f" vs {stats.shape[1] - 1} for {utt})"
            )
        else:
            out[spk] += stats
    missing = c_sorted(set(utt2spk.values()) - set(out))
    if missing:
        raise Pykaldi2Error(
            f"speaker {missing[0]} has no utterance with features"
            + (f" (nor {len(missing) - 1} other speaker(s))" if len(missing) > 1 else "")
            + ". Fix: run compute-feats first, or fix the data dir (fix-data-dir) so utt2spk "
            "matches feats.scp"
        )
    return {spk: out[spk] for spk in c_sorted(out)}
