"""The prediction network: embedding + LSTM over the previous symbols, blank as SOS.

The embedding row of blank is zero and stays zero (``padding_idx=blank``): the start of sentence
is "no previous symbol", and a blank fed to :meth:`TransducerPredictor.step` means the same.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from pykaldi2.nnet.transducer.config import TransducerConfig
from pykaldi2.nnet.transducer.lstm import lstm_stack


class PredictorState(NamedTuple):
    """(pred_rnn_layers, B, pred_n_hid) LSTM hidden and cell state."""

    h: torch.Tensor
    c: torch.Tensor


class TransducerPredictor(nn.Module):
    """targets (B, U) -> pred (B, U+1, pred_n_hid); row u has seen SOS + targets[:, :u]."""

    def __init__(self, cfg: TransducerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.pred_n_hid, padding_idx=cfg.blank)
        self.rnn = lstm_stack(
            cfg.pred_n_hid,
            cfg.pred_n_hid,
            cfg.pred_rnn_layers,
            cfg.pred_dropout,
            cfg.forget_gate_bias,
        )
        self.dropout = nn.Dropout(cfg.pred_dropout)

    @property
    def output_dim(self) -> int:
        return self.cfg.pred_n_hid

    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> PredictorState:
        shape = (self.cfg.pred_rnn_layers, batch, self.cfg.pred_n_hid)
        return PredictorState(
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(shape, device=device, dtype=dtype),
        )

    def forward(
        self, targets: torch.Tensor, state: PredictorState | None = None
    ) -> tuple[torch.Tensor, PredictorState]:
        """targets: (B, U) int (padding may be any value, negative included).

        Returns pred (B, U+1, H) (SOS prepended) and the state after the last column.
        """
        B = targets.shape[0]
        y = targets.long().masked_fill(targets < 0, self.cfg.blank)
        sos = y.new_full((B, 1), self.cfg.blank)
        emb = self.embed(torch.cat([sos, y], dim=1))
        if state is None:
            state = self.initial_state(B, emb.device, emb.dtype)
        out, (h, c) = self.rnn(emb, tuple(state))
        return self.dropout(out), PredictorState(h, c)

    def step(
        self, tokens: torch.Tensor, state: PredictorState | None = None
    ) -> tuple[torch.Tensor, PredictorState]:
        """One step for decoding: tokens (B,) (blank = SOS) -> pred (B, H), new state."""
        emb = self.embed(tokens.long())[:, None, :]
        if state is None:
            state = self.initial_state(tokens.shape[0], emb.device, emb.dtype)
        out, (h, c) = self.rnn(emb, tuple(state))
        return self.dropout(out[:, 0]), PredictorState(h, c)
