"""The first pykaldi2 TDNN-F (model dirs written before #21 load it as ``tdnnf_v0``).

Kept unchanged so that those dirs still give the same outputs; new models are
:class:`pykaldi2.nnet.tdnn.Tdnnf` (Kaldi's structure, unpadded, context from the layers).

Each TDNN-F layer: a semi-orthogonal bottleneck (linear, kernel ``context`` frames) →
affine (kernel ``context``) → ReLU → BatchNorm → dropout, plus a bypass (residual) scaled by
``bypass_scale``. The first layers see every frame; the layer named by ``subsample_at`` has
stride ``subsampling`` (3 for chain models), so the output frame rate is 1/subsampling.

Sequences are processed with 1-D convolutions over padded input; frames beyond a sequence's
length in the output are garbage and must be masked by the loss (use :meth:`output_lengths`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pykaldi2.utils.config import ConfigMixin, option


@dataclass
class TdnnfV0Config(ConfigMixin):
    input_dim: int = option(40, ge=0)
    num_classes: int = 0
    hidden: int = option(768, ge=1)
    bottleneck: int = option(160, ge=1)
    num_layers: int = 8
    context: int = option(3, ge=0)  # kernel size of each factorized layer (frames)
    subsampling: int = option(1, ge=1)  # 3 for chain (LF-MMI) models
    subsample_at: int = 2  # index of the layer that subsamples
    dropout: float = option(0.1, ge=0, lt=1)
    bypass_scale: float = 0.66

    def __post_init__(self) -> None:
        if self.num_classes <= 0:
            raise ValueError("TdnnfV0Config.num_classes (number of pdf_ids) must be > 0")
        if not 0 <= self.subsample_at < self.num_layers:
            raise ValueError("TdnnfV0Config.subsample_at must index one of the layers")


class TdnnfV0Layer(nn.Module):
    """(N, H, T) -> (N, H, T') with T' = ceil(T / stride)."""

    def __init__(
        self,
        dim: int,
        bottleneck: int,
        context: int,
        stride: int,
        dropout: float,
        bypass_scale: float,
    ):
        super().__init__()
        pad = context // 2
        self.linear = nn.Conv1d(dim, bottleneck, context, stride=stride, padding=pad, bias=False)
        self.affine = nn.Conv1d(bottleneck, dim, 1)
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.dropout = nn.Dropout(dropout)
        self.stride = stride
        self.bypass_scale = bypass_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.norm(torch.relu(self.affine(self.linear(x)))))
        bypass = x[:, :, :: self.stride][:, :, : y.shape[2]]
        return y + self.bypass_scale * bypass

    @torch.no_grad()
    def constrain_orthonormal(self, scale: float = 1.0) -> None:
        """One step of Kaldi's semi-orthogonal constraint on the bottleneck (M M^T -> I)."""
        w = self.linear.weight  # (bottleneck, dim, context)
        m = w.reshape(w.shape[0], -1)
        p = m @ m.T
        alpha = (p.trace() / p.shape[0]).clamp_min(1e-8)
        ratio = p / alpha - torch.eye(p.shape[0], device=p.device, dtype=p.dtype)
        # Kaldi's update: M <- M - 1/(2 alpha) * (P - alpha I) M, with a learning rate of 1/8
        m -= 0.125 * 2.0 * (ratio @ m) * scale
        w.copy_(m.reshape_as(w))


class TdnnfV0(nn.Module):
    """feats (N, T, F), lengths (N,) -> logits (N, T', C) with T' = ceil(T / subsampling)."""

    def __init__(self, cfg: TdnnfV0Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.input = nn.Sequential(
            nn.Conv1d(cfg.input_dim, cfg.hidden, cfg.context, padding=cfg.context // 2),
            nn.ReLU(),
            nn.BatchNorm1d(cfg.hidden, affine=False),
        )
        self.layers = nn.ModuleList(
            TdnnfV0Layer(
                cfg.hidden,
                cfg.bottleneck,
                cfg.context,
                cfg.subsampling if i == cfg.subsample_at else 1,
                cfg.dropout,
                cfg.bypass_scale,
            )
            for i in range(cfg.num_layers)
        )
        self.prefinal = nn.Sequential(nn.Linear(cfg.hidden, cfg.bottleneck), nn.ReLU())
        self.output = nn.Linear(cfg.bottleneck, cfg.num_classes)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(N,) input frame counts -> (N,) output frame counts."""
        s = self.cfg.subsampling
        return (lengths + s - 1) // s

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.input(feats.transpose(1, 2))
        for layer in self.layers:
            x = layer(x)
        return self.output(self.prefinal(x.transpose(1, 2)))

    def constrain_orthonormal(self) -> None:
        """Apply the semi-orthogonal constraint to every layer (call every few steps)."""
        for layer in self.layers:
            layer.constrain_orthonormal()
