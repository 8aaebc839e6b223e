"""Frame cross-entropy on pdf_id targets (the hybrid models' first criterion)."""

from __future__ import annotations

import torch

from pykaldi2.data.datasets import IGNORE
from pykaldi2.losses.output import LossOutput


def frame_ce(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> LossOutput:
    """Summed CE over non-padding frames.

    Args:
        logits: (N, T, C) unnormalised scores.
        targets: (N, T) pdf_ids, IGNORE (-100) on padding frames.
    Returns:
        LossOutput with ``loss`` = sum of -log p(target) over counted frames (fp32),
        ``count`` = number of frames, ``stats["correct"]`` = frames whose argmax is the target.
    """
    logits = logits.float()
    flat, tgt = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    loss = torch.nn.functional.cross_entropy(
        flat, tgt, ignore_index=IGNORE, reduction="sum", label_smoothing=label_smoothing
    )
    mask = tgt != IGNORE
    count = float(mask.sum())
    correct = float((flat.argmax(-1)[mask] == tgt[mask]).sum()) if count else 0.0
    return LossOutput(loss, count, {"correct": correct})


class FrameCETask:
    """Trainer task: ``model(feats, lengths) -> (N, T, C)`` against batch["targets"]."""

    def __init__(self, device: torch.device | str = "cpu", label_smoothing: float = 0.0) -> None:
        self.device = torch.device(device)
        self.label_smoothing = label_smoothing

    def compute_loss(self, model: torch.nn.Module, batch: dict) -> LossOutput:
        feats = batch["feats"].to(self.device, non_blocking=True)
        targets = batch["targets"].to(self.device, non_blocking=True)
        logits = model(feats, batch["lengths"])
        # A model with context or subsampling returns fewer frames than it was given.
        if logits.shape[1] != targets.shape[1]:
            targets = (
                targets[:, -logits.shape[1] :] if logits.shape[1] < targets.shape[1] else targets
            )
        return frame_ce(logits, targets, self.label_smoothing)
