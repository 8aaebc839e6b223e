"""The RNN-T front end: normalisation + frame stacking (the streaming decoder reproduces it
exactly), shared by ``train-transducer``, the streaming decoder and the ONNX export.

Dimension legend: T frames, F raw feature dim, F' = frame_stack * F.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pykaldi2.features.cmvn import SlidingCmnConfig
from pykaldi2.features.ewma_norm import EwmaNormConfig, apply_ewma_norm
from pykaldi2.features.pipeline import FeaturePipelineConfig
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import Pykaldi2Error

FRONTEND_CMVN = ("none", "sliding", "ewma", "global")


@dataclass
class TransducerFrontendConfig(ConfigMixin):
    """Raw features -> model input: ``cmvn`` (``sliding``: apply-cmvn-sliding, causal apart
    from the first ``min_window`` frames, so streams reproduce it; ``ewma``: Myrtle's
    exponentially weighted mean/variance normalization, warm-started from the training data's
    global statistics (:mod:`pykaldi2.features.ewma_norm`), causal; ``global``: the static
    per-bin normalization by those statistics, ``(x - mean) / sqrt(var)`` (Myrtle's
    caiman-asr since v1.9 and Kaldi's global CMVN; the ``ewma`` section holds the statistics);
    ``none``), then frame stacking: output frame j is frames ``j * frame_subsample .. j *
    frame_subsample + frame_stack - 1`` side by side (zeros past the end)."""

    cmvn: str = "sliding"
    sliding: SlidingCmnConfig = field(default_factory=SlidingCmnConfig)
    ewma: EwmaNormConfig = field(default_factory=EwmaNormConfig)
    frame_stack: int = 3
    frame_subsample: int = 3

    def __post_init__(self) -> None:
        self.build_sections()
        if self.cmvn not in FRONTEND_CMVN:
            raise Pykaldi2Error(f"frontend.cmvn must be one of {FRONTEND_CMVN}, not {self.cmvn!r}")
        if self.sliding.center:
            raise Pykaldi2Error("frontend.sliding.center must be false (it would need lookahead)")
        if self.frame_stack < 1 or self.frame_subsample < 1:
            raise Pykaldi2Error("frontend.frame_stack and frame_subsample must be >= 1")

    def pipeline(self) -> FeaturePipelineConfig:
        """The per-utterance CMN as a :class:`FeaturePipelineConfig` (for ProcessedFeatures);
        ``ewma`` is applied afterwards by :meth:`transform`."""
        cmvn = "none" if self.cmvn in ("ewma", "global") else self.cmvn
        return FeaturePipelineConfig(cmvn=cmvn, sliding=self.sliding)

    @property
    def uses_stats(self) -> bool:
        """The front end needs the training data's global statistics (``ewma``, ``global``)."""
        return self.cmvn in ("ewma", "global")

    def transform(self, feats: np.ndarray) -> np.ndarray:
        """(T, F) features from :meth:`pipeline` -> (ceil(T / frame_subsample), F') model input:
        the EWMA normalization (``cmvn: ewma``, from the warm start) or the global one, and
        frame stacking."""
        return self.transform_from(feats, None)[0]

    def transform_from(self, feats: np.ndarray, state=None):
        """:meth:`transform` with the EWMA starting from ``state`` (None: the warm start):
        returns (model input, the EWMA state after the last frame; None for other cmvn)."""
        if self.cmvn == "ewma":
            start = state if state is not None else self.ewma.initial_state()
            feats, state = apply_ewma_norm(feats, self.ewma.alpha, start)
        elif self.cmvn == "global":
            mean, var = self.ewma.initial_state(np.asarray(feats).shape[1])
            feats = ((feats - mean) / np.sqrt(var)).astype(np.float32)
        return stack_frames(feats, self.frame_stack, self.frame_subsample), state

    def from_raw(self, raw: np.ndarray) -> np.ndarray:
        """(T, F) raw features (no data dir: e.g. computed from audio) -> the model input,
        :meth:`pipeline` then :meth:`transform`, as the training features went."""
        from pykaldi2.features.pipeline import ProcessedFeatures

        cmn = ProcessedFeatures(".", self.pipeline(), open_raw=False).apply("", raw)
        return self.transform(cmn)

    def output_dim(self, raw_dim: int) -> int:
        return raw_dim * self.frame_stack

    def num_frames(self, raw_frames: int) -> int:
        """Frames after stacking/subsampling: ``ceil(T / frame_subsample)``."""
        return -(-raw_frames // self.frame_subsample)


def stack_frames(feats: np.ndarray, stack: int, subsample: int) -> np.ndarray:
    """(T, F) -> (ceil(T / subsample), stack * F): frame j is ``feats[j*subsample + i]`` for
    i < stack, concatenated, with zeros past the end (vectorized)."""
    T, F = feats.shape
    n = -(-T // subsample)
    idx = np.arange(n)[:, None] * subsample + np.arange(stack)[None, :]  # (n, stack)
    padded = np.concatenate([feats, np.zeros((1, F), feats.dtype)])
    return padded[np.minimum(idx, T)].reshape(n, stack * F)


def stack_frames_reference(feats: np.ndarray, stack: int, subsample: int) -> np.ndarray:
    """Slow :func:`stack_frames`: one output frame and one input frame at a time."""
    T, F = feats.shape
    out = []
    for j in range(0, T, subsample):
        row = np.zeros(stack * F, feats.dtype)
        for i in range(stack):
            if j + i < T:
                row[i * F : (i + 1) * F] = feats[j + i]
        out.append(row)
    return np.array(out, dtype=feats.dtype).reshape(len(out), stack * F)
