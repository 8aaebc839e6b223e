"""Bidirectional LSTM acoustic model (PyKaldi2's BLSTM 3x512).

Padding never reaches the backward direction: the output at frame t of an utterance of length L
depends only on frames 0..L-1. The stack runs on padded tensors one layer and direction at a
time (:func:`pykaldi2.nnet.lstm.bidirectional_padded`), the packed sequence being its reference
(and the path for LSTMP, ``proj`` > 0): packed sequences make CPU training quadratic in the
utterance length, which whole-utterance sequence training (train-se) cannot afford.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pykaldi2.nnet.lstm import bidirectional_packed, bidirectional_padded
from pykaldi2.utils.config import ConfigMixin, option


@dataclass
class BlstmConfig(ConfigMixin):
    """BLSTM sizes. ``hidden`` is per direction; ``proj`` > 0 adds an LSTM projection (LSTMP)."""

    input_dim: int = option(80, ge=0)
    num_classes: int = 0  # number of pdf_ids; must be set
    num_layers: int = option(3, ge=1)
    hidden: int = option(512, ge=1)
    proj: int = option(0, ge=0)
    dropout: float = option(0.1, ge=0, lt=1)

    def __post_init__(self) -> None:
        if self.num_classes <= 0:
            raise ValueError("BlstmConfig.num_classes (number of pdf_ids) must be > 0")
        if self.proj and self.proj >= self.hidden:
            raise ValueError("BlstmConfig.proj must be smaller than hidden")


class Blstm(nn.Module):
    """feats (N, T, F), lengths (N,) -> logits (N, T, C) (padding frames are zero)."""

    def __init__(self, cfg: BlstmConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(
            cfg.input_dim,
            cfg.hidden,
            num_layers=cfg.num_layers,
            bidirectional=True,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            proj_size=cfg.proj,
        )
        out_dim = 2 * (cfg.proj or cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(out_dim, cfg.num_classes)
        # how the stack runs: bidirectional_packed is the reference (and handles LSTMP)
        self.bidirectional_run = bidirectional_packed if cfg.proj else bidirectional_padded

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """feats: (N, T, F) float; lengths: (N,) int64 on any device. Returns (N, T, C)."""
        out = self.bidirectional_run(self.lstm, feats, lengths)
        return self.output(self.dropout(out))
