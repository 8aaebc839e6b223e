"""Bidirectional LSTM stacks on padded batches, shared by the hybrid BLSTM
(:mod:`pykaldi2.nnet.blstm`) and the transducer encoder: :func:`bidirectional_padded`, with the
packed-sequence reference :func:`bidirectional_packed`.

Why not packed sequences: PyTorch's CPU LSTM runs a packed batch one time step at a time on
``narrow`` slices, and the backward of every slice allocates and adds a zero tensor the size of
the whole packed input, so training cost grows with T x (frames in the batch): quadratic in the
utterance length. Whole-utterance training (sMBR/MMI over lattices) spent minutes per batch
there; the padded path costs the same per frame at any length.

Dimension legend: B batch, T frames, D input size, H hidden units per direction.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["bidirectional_packed", "bidirectional_padded", "reverse_padded"]


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x (B, T, D) with each utterance's first ``lengths[b]`` frames in reverse order; the frames
    past a length stay where they are. Its own inverse."""
    T = x.shape[1]
    t = torch.arange(T, device=x.device)
    idx = lengths.to(x.device)[:, None] - 1 - t
    idx = torch.where(idx >= 0, idx, t)  # (B, T): padding maps to itself
    return x.gather(1, idx[..., None].expand_as(x))


def bidirectional_padded(rnn: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A batch-first bidirectional ``rnn`` on a padded batch x (B, T, D) -> (B, T, 2H), each
    utterance's backward direction starting at its own last frame (``lengths`` (B,) in
    [1, T]); frames past a length are zeros. What :func:`bidirectional_packed` computes, with
    the module's own weights, one layer and direction at a time on padded tensors: the backward
    direction runs forward over :func:`reverse_padded` input, so the padding comes after each
    utterance in both directions and never reaches its outputs. On CPU, packed sequences made
    LSTM training 2.7-3.6x slower (16 x 150 frames, 1 thread). Dropout between layers as
    ``nn.LSTM`` applies it (training mode only)."""
    if not rnn.bidirectional or not rnn.batch_first or rnn.proj_size or not rnn.bias:
        raise ValueError("bidirectional_padded: a batch-first bidirectional nn.LSTM with biases")
    if lengths.numel() and int(lengths.min()) < 1:  # as pack_padded_sequence refuses them
        raise ValueError("bidirectional_padded: every length must be >= 1 (drop empty utterances)")
    B, T, _ = x.shape
    h0 = x.new_zeros(1, B, rnn.hidden_size)
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    for layer in range(rnn.num_layers):
        out = []
        for suffix in ("", "_reverse"):
            weights = [getattr(rnn, f"{n}_l{layer}{suffix}") for n in names]
            inp = reverse_padded(x, lengths) if suffix else x
            y = torch.lstm(inp, (h0, h0), weights, True, 1, 0.0, rnn.training, False, True)[0]
            out.append(reverse_padded(y, lengths) if suffix else y)
        x = torch.cat(out, dim=2)
        if layer < rnn.num_layers - 1 and rnn.dropout > 0:
            x = nn.functional.dropout(x, rnn.dropout, rnn.training)
    past = torch.arange(T, device=x.device) >= lengths.to(x.device)[:, None]
    return x.masked_fill(past[..., None], 0.0)


def bidirectional_packed(rnn: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The reference of :func:`bidirectional_padded`: ``rnn`` on the packed sequence of x
    (B, T, D) -> (B, T, 2H), zeros past each length."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
