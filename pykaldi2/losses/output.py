"""What every criterion returns to the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    """``loss``: scalar tensor, the objective summed over ``count`` units (to minimise);
    ``stats``: extra sums for logging (e.g. ``{"correct": 812.0}``), divided by count when logged.
    """

    loss: torch.Tensor
    count: float
    stats: dict[str, float] = field(default_factory=dict)
