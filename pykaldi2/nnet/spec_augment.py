"""Kaldi's ``spec-augment-layer`` (xconfig basic_layers.py XconfigSpecAugmentLayer): SpecAugment
as a network layer, on in training and off in test mode, as run_tdnn_1i/1j.sh use it.

The layer is two nnet3 components (src/nnet3/nnet-general-component.cc):

- frequency (GeneralDropoutComponent with ``specaugment-max-proportion`` p): for every
  sequence one band of ``RandInt(0, round(F * p))`` bins starting at ``RandInt(0, F - 1)`` is
  zeroed on all of its frames; the band wraps around from the top bin to the bottom one (as
  Kaldi's does, unlike the paper).
- time (SpecAugmentTimeMaskComponent with ``zeroed-proportion`` z and ``time-mask-max-frames``
  M): every sequence is filled from its first frame with alternating segments, kept ones of
  ``RandInt(1, int(M (1 - z) / z))`` frames and zeroed ones of ``RandInt(1, M)`` frames; the
  first kept segment is there only with probability z (so 80% of the sequences start zeroed
  at z = 0.2). About ``E[zeroed] / (E[zeroed] + E[kept])`` of the frames are zeroed
  (10.5 / 51 = 21% at z = 0.2, M = 20).

Kaldi's RandInt(a, b) includes b. The draws come from a numpy generator seeded by one draw of
torch's RNG per batch, so a run that reseeds torch (the trainer does, per step) gets the same
masks on resume. :func:`freq_mask` and :func:`time_mask` are vectorised;
:func:`masks_reference` is Kaldi's loops over the same draws.

Dimension legend: N sequences, T frames, F feature dim.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["SpecAugmentLayer", "freq_mask", "masks_reference", "time_mask"]


def _max_zeroed(num_bins: int, max_proportion: float) -> int:
    return int(num_bins * max_proportion + 0.5)


def _non_zeroed_max(zeroed_proportion: float, max_frames: int) -> int:
    return int(max_frames * (1 - zeroed_proportion) / zeroed_proportion)


def freq_mask(rng: np.random.Generator, n: int, num_bins: int, max_proportion: float) -> np.ndarray:
    """(N, F) float32 0/1: one wrapped band per sequence (GeneralDropoutComponent::GetMemo)."""
    width = rng.integers(0, _max_zeroed(num_bins, max_proportion) + 1, size=n)
    start = rng.integers(0, num_bins, size=n)
    offset = (np.arange(num_bins)[None, :] - start[:, None]) % num_bins
    return (offset >= width[:, None]).astype(np.float32)


def time_mask(
    rng: np.random.Generator,
    lengths: np.ndarray,
    num_frames: int,
    zeroed_proportion: float,
    max_frames: int,
) -> np.ndarray:
    """(N, T) float32 0/1 over each sequence's first ``lengths[n]`` frames (1 past them)
    (SpecAugmentTimeMaskComponent::GetMemo)."""
    z, non_max = zeroed_proportion, _non_zeroed_max(zeroed_proportion, max_frames)
    out = np.ones((len(lengths), num_frames), dtype=np.float32)
    for s, length in enumerate(np.asarray(lengths).tolist()):
        t = 0
        while t < length:
            if t > 0 or rng.random() < z:
                t += int(rng.integers(1, non_max + 1))
            w = int(rng.integers(1, max_frames + 1))
            out[s, min(t, length) : min(t + w, length)] = 0.0
            t += w
    return out


def masks_reference(
    rng: np.random.Generator,
    lengths: np.ndarray,
    num_frames: int,
    num_bins: int,
    max_proportion: float,
    zeroed_proportion: float,
    max_frames: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Kaldi's GetMemo loops, bin by bin and frame by frame, drawing in the order of
    :meth:`SpecAugmentLayer.masks` (all frequency draws, then the time ones): ((N, F), (N, T))."""
    n = len(lengths)
    widths = rng.integers(0, _max_zeroed(num_bins, max_proportion) + 1, size=n)
    starts = rng.integers(0, num_bins, size=n)
    fmask = np.ones((n, num_bins), dtype=np.float32)
    for s in range(n):
        if widths[s] != 0:
            for i in range(starts[s], starts[s] + widths[s]):
                fmask[s, i % num_bins] = 0.0
    z, non_max = zeroed_proportion, _non_zeroed_max(zeroed_proportion, max_frames)
    tmask = np.ones((n, num_frames), dtype=np.float32)
    for s in range(n):
        seq_length, t = int(lengths[s]), 0
        while t < seq_length:
            if t > 0 or rng.random() < z:
                nonzeroed_length = int(rng.integers(1, non_max + 1))
                while t < seq_length and nonzeroed_length > 0:
                    tmask[s, t] = 1.0
                    t, nonzeroed_length = t + 1, nonzeroed_length - 1
            zeroed_length = int(rng.integers(1, max_frames + 1))
            while t < seq_length and zeroed_length > 0:
                tmask[s, t] = 0.0
                t, zeroed_length = t + 1, zeroed_length - 1
    return fmask, tmask


class SpecAugmentLayer(nn.Module):
    """(N, T, F) -> (N, T, F): the frequency then the time mask in training; identity in eval.

    Args:
        freq_max_proportion: ``freq-max-proportion`` (1j: 0.5).
        time_zeroed_proportion: ``time-zeroed-proportion`` (1j: 0.2).
        time_mask_max_frames: ``time-mask-max-frames`` (1j: 20).
    """

    def __init__(
        self, freq_max_proportion: float, time_zeroed_proportion: float, time_mask_max_frames: int
    ) -> None:
        super().__init__()
        if not (0 < freq_max_proportion < 1 and 0 < time_zeroed_proportion < 1):
            raise ValueError("spec-augment proportions must be in (0, 1)")
        if (
            time_mask_max_frames < 2
            or _non_zeroed_max(time_zeroed_proportion, time_mask_max_frames) < 1
        ):
            raise ValueError("spec-augment time_mask_max_frames must be >= 2 (Kaldi's check)")
        self.p, self.z, self.m = freq_max_proportion, time_zeroed_proportion, time_mask_max_frames

    def masks(self, lengths: np.ndarray, num_frames: int, num_bins: int, seed: int):
        """((N, F), (N, T)) float32 masks for a batch, from ``seed``."""
        rng = np.random.default_rng(seed)
        f = freq_mask(rng, len(lengths), num_bins, self.p)
        return f, time_mask(rng, lengths, num_frames, self.z, self.m)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        seed = int(torch.randint(0, 2**62, ()))
        f, t = self.masks(lengths.cpu().numpy(), x.shape[1], x.shape[2], seed)
        f_t = torch.from_numpy(f).to(x.device, x.dtype)
        t_t = torch.from_numpy(t).to(x.device, x.dtype)
        return x * f_t[:, None, :] * t_t[:, :, None]

    def extra_repr(self) -> str:
        return (
            f"freq_max_proportion={self.p}, time_zeroed_proportion={self.z}, "
            f"time_mask_max_frames={self.m}"
        )
