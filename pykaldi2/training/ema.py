"""An exponential moving average of a model's weights (kept in checkpoints by the trainer that
uses it, e.g. ``train-transducer``'s; the final model takes the averaged weights)."""

from __future__ import annotations

from collections.abc import Mapping

import torch


class Ema:
    """Exponential moving average of a model's floating-point parameters and buffers.

    Update n (1, 2, ...) uses the decay ``min(decay, (1 + n) / (10 + n))``: early on the average
    follows the model closely, so a run of a few thousand steps does not keep a share
    ``decay ** steps`` of its random initialization (0.999 ** 1800 = 17%).
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {
            k: v.detach().clone().float()
            for k, v in model.state_dict().items()
            if v.is_floating_point()
        }

    def decay_at(self, step: int) -> float:
        """The decay of update number ``step`` (>= 1)."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Average in the model's current weights; ``step``: the number of this update."""
        d = self.decay_at(step)
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)

    def model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's state_dict with the averaged weights in place (on the CPU)."""
        out = {}
        for k, v in model.state_dict().items():
            src = self.shadow.get(k, v)
            out[k] = src.detach().to(v.dtype).cpu().clone()
        return out
