"""``Transducer``: encoder + predictor + joiner, returning the logits the RNN-T loss takes.

    >>> cfg = TransducerConfig.preset("tiny")
    >>> model = Transducer(cfg)
    >>> logits, logit_lengths = model(feats, feat_lengths, targets)   # (B, T', U+1, V), (B,)

``python -m pykaldi2.nnet.transducer`` prints the parameter counts of the presets.
"""

from __future__ import annotations

import torch
from torch import nn

from pykaldi2.nnet.transducer.config import TransducerConfig
from pykaldi2.nnet.transducer.encoder import TransducerEncoder
from pykaldi2.nnet.transducer.joiner import TransducerJoiner
from pykaldi2.nnet.transducer.predictor import TransducerPredictor


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Transducer(nn.Module):
    """An LSTM RNN-Transducer (see :mod:`pykaldi2.nnet.transducer.config` for the sizes)."""

    def __init__(self, cfg: TransducerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = TransducerEncoder(cfg)
        self.predictor = TransducerPredictor(cfg)
        self.joiner = TransducerJoiner(cfg, self.encoder.output_dim, self.predictor.output_dim)
        self.simple_am_proj: nn.Linear | None = None
        self.simple_lm_proj: nn.Linear | None = None
        if cfg.simple_proj:  # pruned RNN-T's simple joiner: logits(t, u) = am(t) + lm(u)
            self.simple_am_proj = nn.Linear(self.encoder.output_dim, cfg.vocab_size)
            self.simple_lm_proj = nn.Linear(self.predictor.output_dim, cfg.vocab_size)
        self.ctc_out: nn.Linear | None = None
        if cfg.ctc_head:  # auxiliary CTC on the encoder output (training only)
            self.ctc_out = nn.Linear(self.encoder.output_dim, cfg.vocab_size)
        self.ali_out: nn.Linear | None = None
        if cfg.ali_classes:  # auxiliary frame CE on alignments (training only)
            self.ali_out = nn.Linear(self.encoder.output_dim, cfg.ali_classes)

    @property
    def blank(self) -> int:
        return self.cfg.blank

    def forward(
        self, feats: torch.Tensor, feat_lengths: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward pass.

        Args:
            feats: (B, T, F) features; feat_lengths: (B,) int
            targets: (B, U) int symbols (padding: any value)

        Returns:
            logits (B, T', U+1, V) for :func:`pykaldi2.losses.rnnt.rnnt_loss`, and the encoder
            lengths (B,) (``logit_lengths``).
        """
        enc, enc_lengths, pred = self.encode_and_predict(feats, feat_lengths, targets)
        return self.joiner(enc, pred), enc_lengths

    def encode_and_predict(
        self, feats: torch.Tensor, feat_lengths: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """enc (B, T', He), enc_lengths (B,), pred (B, U+1, Hp): the joiner's two inputs.

        For pruned RNN-T (:mod:`pykaldi2.losses.rnnt_pruned`), which calls the joiner itself.
        """
        enc, enc_lengths, _ = self.encoder(feats, feat_lengths)
        pred, _ = self.predictor(targets)
        return enc, enc_lengths, pred

    def ctc_log_probs(self, enc: torch.Tensor) -> torch.Tensor:
        """enc (B, T', He) -> (B, T', V) log-probs of the CTC head (blank = ``cfg.blank``)."""
        if self.ctc_out is None:
            raise ValueError("this Transducer has no CTC head (TransducerConfig.ctc_head=false)")
        return torch.log_softmax(self.ctc_out(enc).float(), dim=-1)

    def ali_log_probs(self, enc: torch.Tensor) -> torch.Tensor:
        """enc (B, T', He) -> (B, T', ali_classes) log-probs of the alignment head."""
        if self.ali_out is None:
            raise ValueError(
                "this Transducer has no alignment head (TransducerConfig.ali_classes=0)"
            )
        return torch.log_softmax(self.ali_out(enc).float(), dim=-1)

    def num_params(self) -> dict[str, int]:
        """Parameter counts of encoder, predictor, joiner and the total."""
        parts = {
            "encoder": count_params(self.encoder),
            "predictor": count_params(self.predictor),
            "joiner": count_params(self.joiner),
        }
        if self.simple_am_proj is not None:
            parts["simple_proj"] = count_params(self.simple_am_proj) + count_params(
                self.simple_lm_proj
            )
        if self.ctc_out is not None:
            parts["ctc_head"] = count_params(self.ctc_out)
        if self.ali_out is not None:
            parts["ali_head"] = count_params(self.ali_out)
        parts["total"] = sum(parts.values())
        return parts

    def summary(self) -> str:
        """One line: the parameter counts in millions."""
        n = self.num_params()
        return ", ".join(f"{k} {v:,}" for k, v in n.items())
