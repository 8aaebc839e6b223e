"""Learning-rate schedules: warmup-hold-decay (Myrtle/ESPnet style) and Kaldi-style halving.

Both are plain objects with ``state_dict``/``load_state_dict`` so a resumed run continues the
schedule exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pykaldi2.utils.config import ConfigMixin, option
from pykaldi2.utils.errors import DataError


@dataclass
class ScheduleConfig(ConfigMixin):
    """lr(step) = base_lr * factor(step):

    * warmup: linear 0 -> 1 over ``warmup_steps``;
    * hold: 1 for ``hold_steps`` more;
    * decay: ``exp``: ``decay_rate ** ((step - warmup - hold) / decay_steps)``, floored at
      ``min_factor``; ``none``: stays 1. ``decay_steps: 0`` means over the whole run (Kaldi's
      initial -> final learning rate); train-chain fills it in from its epochs and steps, the
      other trainers refuse it.

    Independently, :meth:`LrSchedule.on_validation` halves the LR (Kaldi's newbob) when the
    validation loss improved by less than ``halving_threshold`` (relative), if ``halving``.
    """

    warmup_steps: int = option(0, ge=0)
    hold_steps: int = option(0, ge=0)
    decay: str = "none"  # "none" | "exp"
    decay_rate: float = option(0.5, gt=0, le=1)
    decay_steps: int = option(10000, ge=0)
    min_factor: float = option(0.01, ge=0, le=1)
    halving: bool = False
    halving_threshold: float = option(0.001, ge=0)
    halving_factor: float = option(0.5, gt=0, le=1)

    def __post_init__(self) -> None:
        if self.decay not in ("none", "exp"):
            raise ValueError(f"ScheduleConfig.decay must be 'none' or 'exp', not {self.decay!r}")


class LrSchedule:
    def __init__(self, cfg: ScheduleConfig) -> None:
        if cfg.decay == "exp" and cfg.decay_steps == 0:
            raise DataError(
                "schedule.decay_steps: 0 (decay over the whole run) is known only to train-chain",
                fix="give trainer.schedule.decay_steps the number of steps to decay over",
            )
        self.cfg = cfg
        self.halving_scale = 1.0
        self.best_valid: float | None = None

    def factor(self, step: int) -> float:
        c = self.cfg
        if c.warmup_steps > 0 and step < c.warmup_steps:
            f = (step + 1) / c.warmup_steps
        elif c.decay == "exp" and step >= c.warmup_steps + c.hold_steps:
            k = (step - c.warmup_steps - c.hold_steps) / max(1, c.decay_steps)
            f = max(c.min_factor, math.pow(c.decay_rate, k))
        else:
            f = 1.0
        return f * self.halving_scale

    def on_validation(self, loss: float) -> bool:
        """Record a validation loss (lower is better); returns True when the LR was halved."""
        if not self.cfg.halving:
            return False
        halved = False
        if self.best_valid is not None:
            rel = (self.best_valid - loss) / max(abs(self.best_valid), 1e-12)
            if rel < self.cfg.halving_threshold:
                self.halving_scale *= self.cfg.halving_factor
                halved = True
        if self.best_valid is None or loss < self.best_valid:
            self.best_valid = loss
        return halved

    def state_dict(self) -> dict:
        return {"halving_scale": self.halving_scale, "best_valid": self.best_valid}

    def load_state_dict(self, state: dict) -> None:
        self.halving_scale = state["halving_scale"]
        self.best_valid = state["best_valid"]
