"""The joint network: ``out(act(enc_proj(enc) + pred_proj(pred)))``."""

from __future__ import annotations

import torch
from torch import nn

from pykaldi2.nnet.transducer.config import TransducerConfig


class TransducerJoiner(nn.Module):
    """enc (B, T', He), pred (B, U+1, Hp) -> logits (B, T', U+1, V).

    For decoding, project once with :meth:`project_enc` / :meth:`project_pred` and call
    :meth:`joint` on the projections (any broadcastable shapes ending in ``joint_n_hid``).
    """

    def __init__(self, cfg: TransducerConfig, enc_dim: int, pred_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc_proj = nn.Linear(enc_dim, cfg.joint_n_hid)
        self.pred_proj = nn.Linear(pred_dim, cfg.joint_n_hid)
        self.activation = nn.ReLU() if cfg.joint_activation == "relu" else nn.Tanh()
        self.dropout = nn.Dropout(cfg.joint_dropout)
        self.out = nn.Linear(cfg.joint_n_hid, cfg.vocab_size)

    def project_enc(self, enc: torch.Tensor) -> torch.Tensor:
        """(..., He) -> (..., joint_n_hid)"""
        return self.enc_proj(enc)

    def project_pred(self, pred: torch.Tensor) -> torch.Tensor:
        """(..., Hp) -> (..., joint_n_hid)"""
        return self.pred_proj(pred)

    def joint(self, enc_p: torch.Tensor, pred_p: torch.Tensor) -> torch.Tensor:
        """Projected enc and pred, broadcast together (..., joint_n_hid) -> logits (..., V)."""
        return self.out(self.dropout(self.activation(enc_p + pred_p)))

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """enc (B, T', He), pred (B, U+1, Hp) -> logits (B, T', U+1, V)."""
        return self.joint(self.project_enc(enc)[:, :, None, :], self.project_pred(pred)[:, None])
