"""The LSTM stack shared by the encoder and the predictor (their bidirectional runs on padded
batches: :mod:`pykaldi2.nnet.lstm`).

Dimension legend: B batch, T frames, D input size, H hidden units per direction.
"""

from __future__ import annotations

from torch import nn


def lstm_stack(
    input_size: int,
    hidden: int,
    num_layers: int,
    dropout: float,
    forget_gate_bias: float,
    bidirectional: bool = False,
) -> nn.LSTM:
    """A batch-first ``nn.LSTM`` (uni-directional unless ``bidirectional``) with its forget-gate
    bias set (in both directions).

    PyTorch orders the gates (input, forget, cell, output) in ``bias_ih``/``bias_hh``; the forget
    gate's ``bias_ih`` is set to ``forget_gate_bias`` and its ``bias_hh`` to 0 (Myrtle/MLPerf RNN-T
    initialisation), which keeps the cell memory open early in training.
    """
    lstm = nn.LSTM(
        input_size,
        hidden,
        num_layers=num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
    )
    for name, p in lstm.named_parameters():
        if name.startswith("bias_ih"):
            nn.init.constant_(p.data[hidden : 2 * hidden], forget_gate_bias)
        elif name.startswith("bias_hh"):
            nn.init.zeros_(p.data[hidden : 2 * hidden])
    return lstm
