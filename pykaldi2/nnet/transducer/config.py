"""``TransducerConfig``: the sizes of an LSTM RNN-Transducer, with named presets.

The encoder follows Myrtle.ai's RNN-T (and the MLPerf RNN-T reference): ``enc_pre_rnn_layers``
LSTM layers, time reduction by stacking ``enc_stack_time_factor`` consecutive frames, then
``enc_post_rnn_layers`` LSTM layers, all with ``enc_n_hid`` units and uni-directional (so the
model can stream; ``enc_bidirectional`` makes them bidirectional, for offline use only). The predictor is an embedding and ``pred_rnn_layers`` LSTM layers of
``pred_n_hid`` units; the joiner projects both to ``joint_n_hid``, applies an activation and a
linear layer to ``vocab_size`` outputs (blank included).

Presets (:meth:`TransducerConfig.preset`); parameter counts as printed by
``python -m pykaldi2.nnet.transducer``:

- ``"tiny"``: 1,940 parameters, for unit tests;
- ``"testing"``: 46.2M, shaped like Myrtle's ``testing-1023sp`` (1024-unit encoder with 2 LSTM
  layers, stacking by 2, 3 LSTM layers; 320-unit 2-layer predictor; 512-unit joiner; 1023
  sentencepieces + blank). Myrtle reports 49M for theirs;
- ``"base"``: 69.9M, the same encoder with a 768-unit predictor, a 1024-unit joiner and 8703
  sentencepieces + blank, in the spirit of Myrtle's ``base-8703sp`` (85M there; their exact
  sizes were not available to us).

The encoder input ``in_feats`` defaults to 240: 80 log-mel bins with 3 frames stacked and
subsampled by 3 in the front end, as in Myrtle's recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import Pykaldi2Error

_ACTIVATIONS = ("tanh", "relu")


@dataclass
class TransducerConfig(ConfigMixin):
    """Sizes of encoder, predictor and joiner; validated on construction."""

    in_feats: int = 240
    vocab_size: int = 1024  # output symbols, blank included
    blank: int = 0
    enc_n_hid: int = 1024
    enc_pre_rnn_layers: int = 2
    enc_stack_time_factor: int = 2
    enc_post_rnn_layers: int = 3
    enc_layer_norm: bool = False  # LayerNorm after each encoder LSTM stack
    # bidirectional encoder LSTMs (enc_n_hid units per direction): better offline, but the
    # model can no longer stream (stream / ONNX export refuse it; decoding is whole-utterance)
    enc_bidirectional: bool = False
    enc_dropout: float = 0.1
    pred_n_hid: int = 320
    pred_rnn_layers: int = 2
    pred_dropout: float = 0.1
    joint_n_hid: int = 512
    joint_activation: str = "relu"
    joint_dropout: float = 0.1
    forget_gate_bias: float = 1.0  # initial LSTM forget-gate bias (Myrtle uses 1.0)
    # pruned RNN-T: linear enc -> V and pred -> V layers for the "simple" (additive) joiner
    simple_proj: bool = False
    # a linear enc -> V layer for an auxiliary CTC loss on the encoder (train-transducer's
    # ctc_weight); not used in decoding
    ctc_head: bool = False
    # a linear enc -> ali_classes layer for train-transducer's auxiliary frame cross-entropy on
    # HMM-GMM alignments (ali_weight; 0: none); not used in decoding
    ali_classes: int = 0

    def __post_init__(self) -> None:
        positive = (
            "in_feats",
            "vocab_size",
            "enc_n_hid",
            "enc_pre_rnn_layers",
            "enc_stack_time_factor",
            "pred_n_hid",
            "pred_rnn_layers",
            "joint_n_hid",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise Pykaldi2Error(
                    f"TransducerConfig.{name} must be >= 1, got {getattr(self, name)}"
                )
        if self.enc_post_rnn_layers < 0:
            raise Pykaldi2Error("TransducerConfig.enc_post_rnn_layers must be >= 0")
        if self.ali_classes < 0:
            raise Pykaldi2Error("TransducerConfig.ali_classes must be >= 0 (0: no head)")
        if self.vocab_size < 2:
            raise Pykaldi2Error("TransducerConfig.vocab_size must count blank and >= 1 symbol")
        if not 0 <= self.blank < self.vocab_size:
            raise Pykaldi2Error(
                f"TransducerConfig.blank={self.blank} must be in [0, vocab_size={self.vocab_size})"
            )
        if self.joint_activation not in _ACTIVATIONS:
            raise Pykaldi2Error(
                f"TransducerConfig.joint_activation must be one of {_ACTIVATIONS}, "
                f"got {self.joint_activation!r}"
            )
        for name in ("enc_dropout", "pred_dropout", "joint_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise Pykaldi2Error(f"TransducerConfig.{name} must be in [0, 1)")

    @classmethod
    def preset(cls, name: str, **overrides) -> TransducerConfig:
        """A named size ("tiny", "testing", "base") with optional field overrides."""
        if name not in PRESETS:
            raise Pykaldi2Error(f"unknown transducer size {name!r}; choose from {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)


PRESETS: dict[str, TransducerConfig] = {
    "tiny": TransducerConfig(
        in_feats=8,
        vocab_size=6,
        enc_n_hid=8,
        enc_pre_rnn_layers=1,
        enc_stack_time_factor=2,
        enc_post_rnn_layers=1,
        pred_n_hid=6,
        pred_rnn_layers=1,
        joint_n_hid=7,
        enc_dropout=0.0,
        pred_dropout=0.0,
        joint_dropout=0.0,
    ),
    "testing": TransducerConfig(),
    "base": TransducerConfig(vocab_size=8704, pred_n_hid=768, joint_n_hid=1024),
}
