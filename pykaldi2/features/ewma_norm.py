"""Streaming feature normalization by exponentially weighted moving averages (Myrtle's RNN-T).

Each feature dim keeps a running mean ``m`` and variance ``v``, warm-started from the global
statistics of the training data and updated with every frame before it is normalised::

    d_t = x_t - m_{t-1}
    m_t = m_{t-1} + alpha * d_t                       (= (1 - alpha) m_{t-1} + alpha x_t)
    v_t = (1 - alpha) * (v_{t-1} + alpha * d_t ** 2)
    y_t = (x_t - m_t) / sqrt(v_t)

(the incremental weighted mean/variance formulae; ``v`` stays positive when ``v_{-1}`` is).
The output depends only on past frames, so a stream reproduces it chunk by chunk with the two
(F,) vectors as its whole state: :class:`EwmaNormStream`. :func:`apply_ewma_norm` runs the two
recursions as first-order IIR filters (``scipy.signal.lfilter``) over all frames at once;
:func:`apply_ewma_norm_reference` is the per-frame loop above.

    >>> mean, var = ewma_warm_start(feats_of_training_utterances)     # (F,), (F,)
    >>> cfg = EwmaNormConfig(alpha=0.001, mean=list(mean), var=list(var))
    >>> y, state = apply_ewma_norm(x, cfg.alpha, cfg.initial_state())  # x (T, F)

Dimension legend: T frames, F feature dim.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter

from pykaldi2.features.cmvn import acc_cmvn_stats
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError, Pykaldi2Error

EwmaState = tuple[np.ndarray, np.ndarray]  # (mean (F,), var (F,)) float64

VAR_FLOOR = 1.0e-10


@dataclass
class EwmaNormConfig(ConfigMixin):
    """``alpha``: the weight of each new frame (Myrtle: 0.001, a time constant of 1000 frames);
    ``mean``/``var``: the (F,) warm start, the global statistics of the training data (empty
    until :func:`ewma_warm_start` fills them; train-transducer does, from ``stats_file`` when
    given: a global CMVN stats matrix of ``pykaldi2 compute-mel-stats``, Myrtle's mel stats
    dumped from the training data). The same mean/var are the static normalization of the
    front end's ``cmvn: global``.

    ``carry_over``: when a decoder transcribes several files in a row (``load_model(...)
    .transcribe``, ``decode-transducer``), each file's normalization starts from the state the
    previous one ended in, as one long stream would (a live session); false (the default, and
    what training does): every utterance starts from the warm start."""

    alpha: float = 0.001
    mean: list[float] = field(default_factory=list)
    var: list[float] = field(default_factory=list)
    stats_file: str = ""
    carry_over: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha < 1.0:
            raise Pykaldi2Error(f"EwmaNormConfig: alpha must be in [0, 1), got {self.alpha}")
        self.mean = [float(v) for v in self.mean]
        self.var = [float(v) for v in self.var]
        if len(self.mean) != len(self.var):
            raise Pykaldi2Error(
                f"EwmaNormConfig: mean has {len(self.mean)} values, var {len(self.var)}"
            )
        if any(not v > 0 for v in self.var):
            raise Pykaldi2Error("EwmaNormConfig: every var must be > 0")

    @property
    def ready(self) -> bool:
        """True when the warm-start statistics are set."""
        return bool(self.mean)

    def initial_state(self, dim: int | None = None) -> EwmaState:
        """The warm start as float64 arrays; ``dim`` checks the feature dim."""
        if not self.ready:
            raise Pykaldi2Error(
                "EwmaNormConfig: no warm-start statistics (mean/var); fill them with "
                "ewma_warm_start() on the training features"
            )
        if dim is not None and dim != len(self.mean):
            raise DataError(
                f"features of dim {dim}, the EWMA statistics have dim {len(self.mean)}",
                fix="use features computed with the model's feature config",
            )
        return np.array(self.mean, np.float64), np.array(self.var, np.float64)


def ewma_warm_start(feats: Iterable[np.ndarray]) -> EwmaState:
    """Global mean and variance (F,) of all frames of ``feats`` ((T_i, F) arrays), the variance
    floored at 1e-10."""
    return stats_mean_var(acc_cmvn_stats(feats))


def stats_mean_var(stats: np.ndarray, source: str | None = None) -> EwmaState:
    """(mean, var) (F,) of Kaldi CMVN stats (2, F + 1): sums, sums of squares, the frame count
    in the last column; the variance floored at 1e-10."""
    stats = np.asarray(stats, np.float64)
    if stats.ndim != 2 or stats.shape[0] != 2 or stats.shape[1] < 2:
        raise DataError(f"CMVN stats of shape {stats.shape}: expected (2, F + 1)", file=source)
    n = stats[0, -1]
    if n <= 0:
        raise DataError("no feature frames in the CMVN stats", file=source)
    mean = stats[0, :-1] / n
    var = np.maximum(stats[1, :-1] / n - mean**2, VAR_FLOOR)
    return mean, var


def write_global_stats(stats: np.ndarray, path) -> None:
    """Write (2, F + 1) CMVN stats as one Kaldi binary matrix (what ``compute-cmvn-stats
    scp:feats.scp stats`` writes; ``copy-matrix --binary=false`` prints it), atomically."""
    import kaldiio

    from pykaldi2.utils.io import atomic_write

    with atomic_write(path, "wb") as f:
        kaldiio.save_mat(f, np.asarray(stats, np.float64))


def read_global_stats(path) -> np.ndarray:
    """A (2, F + 1) CMVN stats matrix file (binary or text Kaldi matrix)."""
    import kaldiio

    try:
        return np.asarray(kaldiio.load_mat(str(path)), np.float64)
    except Exception as e:  # kaldiio raises ValueError / OSError on a bad file
        raise DataError(f"not a Kaldi CMVN stats matrix: {e}", file=str(path)) from None


def _check(x: np.ndarray, state: EwmaState) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] != len(state[0]):
        raise DataError(
            f"EWMA normalization of features of shape {x.shape}: expected (T, {len(state[0])})",
            fix="use features computed with the model's feature config",
        )
    return x


def apply_ewma_norm(x: np.ndarray, alpha: float, state: EwmaState) -> tuple[np.ndarray, EwmaState]:
    """(T, F) frames -> ((T, F) float32 normalised frames, the state after the last frame).

    Vectorized: the mean recursion ``m_t = (1 - a) m_{t-1} + a x_t`` and the variance recursion
    ``v_t = (1 - a) v_{t-1} + a (1 - a) d_t^2`` (with ``d_t = x_t - m_{t-1}``, known once the
    means are) are each one IIR filter over time with the carried value as initial condition.
    """
    x = _check(x, state)
    m0, v0 = state
    if len(x) == 0:
        return x.astype(np.float32), (m0.copy(), v0.copy())
    a = float(alpha)
    den = [1.0, -(1.0 - a)]
    m = lfilter([a], den, x, axis=0, zi=((1.0 - a) * m0)[None])[0]
    prev_m = np.concatenate([m0[None], m[:-1]])
    d2 = (x - prev_m) ** 2
    v = lfilter([a * (1.0 - a)], den, d2, axis=0, zi=((1.0 - a) * v0)[None])[0]
    y = (x - m) / np.sqrt(np.maximum(v, VAR_FLOOR))
    return y.astype(np.float32), (m[-1].copy(), v[-1].copy())


def apply_ewma_norm_reference(
    x: np.ndarray, alpha: float, state: EwmaState
) -> tuple[np.ndarray, EwmaState]:
    """Slow :func:`apply_ewma_norm`: the recursion of the module doc, one frame at a time."""
    x = _check(x, state)
    m, v = state[0].copy(), state[1].copy()
    out = np.zeros_like(x)
    for t in range(len(x)):
        d = x[t] - m
        m = m + alpha * d
        v = (1.0 - alpha) * (v + alpha * d * d)
        out[t] = (x[t] - m) / np.sqrt(np.maximum(v, VAR_FLOOR))
    return out.astype(np.float32), (m, v)


class EwmaNormStream:
    """:func:`apply_ewma_norm` on frames given in chunks (no delay: every frame is output at
    once). Same ``accept(frames, final)`` interface as the other streaming normalizers."""

    def __init__(self, config: EwmaNormConfig) -> None:
        self.alpha = config.alpha
        self.state = config.initial_state()

    def accept(self, frames: np.ndarray, final: bool = False) -> np.ndarray:
        """Add (N, F) raw frames; returns their (N, F) float32 normalised frames."""
        frames = np.asarray(frames)
        if frames.size == 0:
            return np.zeros((0, len(self.state[0])), np.float32)
        y, self.state = apply_ewma_norm(frames, self.alpha, self.state)
        return y
