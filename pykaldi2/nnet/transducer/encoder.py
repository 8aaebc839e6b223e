"""The streaming LSTM encoder: pre-LSTMs, time reduction by frame stacking, post-LSTMs.

    feats (B, T, F) -> pre LSTM x enc_pre_rnn_layers -> (B, T, H)
        -> stack k = enc_stack_time_factor consecutive frames -> (B, ceil(T / k), k * H)
        -> post LSTM x enc_post_rnn_layers -> (B, T', H)

Uni-directional, so the output at encoder frame t' depends only on input frames up to
``(t' + 1) * k - 1``, and padding after an utterance never changes its valid outputs.
Streaming: :meth:`TransducerEncoder.forward` takes and returns an :class:`EncoderState`; feeding
an utterance chunk by chunk (``final=False`` except for the last chunk) gives the same output as
one call over the whole utterance.

With ``enc_bidirectional`` the LSTMs are bidirectional (``H = 2 * enc_n_hid`` outputs), each
utterance's backward pass starting at its own last frame
(:func:`~pykaldi2.nnet.lstm.bidirectional_padded`: packed sequences' results on
padded tensors); such an encoder only takes whole utterances.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from pykaldi2.nnet.lstm import bidirectional_padded
from pykaldi2.nnet.transducer.config import TransducerConfig
from pykaldi2.nnet.transducer.lstm import lstm_stack


class EncoderState(NamedTuple):
    """What the encoder carries from one chunk to the next.

    - ``pre_h``, ``pre_c``: (enc_pre_rnn_layers, B, H) pre-LSTM state
    - ``post_h``, ``post_c``: (enc_post_rnn_layers, B, H) post-LSTM state (empty with 0 layers)
    - ``pending``: (B, r, H), r < enc_stack_time_factor: pre-LSTM frames waiting to be stacked
    """

    pre_h: torch.Tensor
    pre_c: torch.Tensor
    post_h: torch.Tensor
    post_c: torch.Tensor
    pending: torch.Tensor


class TransducerEncoder(nn.Module):
    """feats (B, T, F), lengths (B,) -> enc (B, T', H), enc_lengths (B,), state."""

    def __init__(self, cfg: TransducerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        H, k = cfg.enc_n_hid, cfg.enc_stack_time_factor
        bi = cfg.enc_bidirectional
        D = self.rnn_dim  # H, or 2H for a bidirectional encoder
        self.pre_rnn = lstm_stack(
            cfg.in_feats, H, cfg.enc_pre_rnn_layers, cfg.enc_dropout, cfg.forget_gate_bias, bi
        )
        self.pre_norm = nn.LayerNorm(D) if cfg.enc_layer_norm else nn.Identity()
        self.post_rnn = None
        self.post_norm = nn.Identity()
        if cfg.enc_post_rnn_layers > 0:
            self.post_rnn = lstm_stack(
                k * D, H, cfg.enc_post_rnn_layers, cfg.enc_dropout, cfg.forget_gate_bias, bi
            )
            self.post_norm = nn.LayerNorm(D) if cfg.enc_layer_norm else nn.Identity()
        self.dropout = nn.Dropout(cfg.enc_dropout)
        self.bidirectional_run = bidirectional_padded  # bidirectional_packed: the reference

    @property
    def rnn_dim(self) -> int:
        """Output units of one encoder LSTM stack: enc_n_hid (x2 when bidirectional)."""
        return self.cfg.enc_n_hid * (2 if self.cfg.enc_bidirectional else 1)

    @property
    def output_dim(self) -> int:
        k = self.cfg.enc_stack_time_factor
        return self.rnn_dim * (1 if self.post_rnn is not None else k)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) input frames -> (B,) encoder frames: ``ceil(T / enc_stack_time_factor)``."""
        k = self.cfg.enc_stack_time_factor
        return torch.div(lengths + k - 1, k, rounding_mode="floor")

    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> EncoderState:
        cfg = self.cfg
        H = cfg.enc_n_hid

        def zeros(*shape):
            return torch.zeros(*shape, device=device, dtype=dtype)

        return EncoderState(
            zeros(cfg.enc_pre_rnn_layers, batch, H),
            zeros(cfg.enc_pre_rnn_layers, batch, H),
            zeros(cfg.enc_post_rnn_layers, batch, H),
            zeros(cfg.enc_post_rnn_layers, batch, H),
            zeros(batch, 0, H),
        )

    def stack_time(self, x: torch.Tensor, final: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, R, H) -> stacked (B, n, k * H) and the (B, R - n * k, H) frames left over.

        With ``final`` the last incomplete group is zero-padded and emitted (n = ceil(R / k)),
        otherwise it is returned as left over (n = floor(R / k)).
        """
        B, R, H = x.shape
        k = self.cfg.enc_stack_time_factor
        n = -(-R // k) if final else R // k
        if n * k > R:
            x = torch.cat([x, x.new_zeros(B, n * k - R, H)], dim=1)
        return x[:, : n * k].reshape(B, n, k * H), x[:, n * k :]

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        state: EncoderState | None = None,
        final: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, EncoderState]:
        """Encode a batch (offline) or the next chunk of a batch of streams.

        Args:
            feats: (B, T, F) features, zero- or garbage-padded after each length
            lengths: (B,) int frames per utterance. For streaming chunks give the chunk length
                for every stream (the state is exact only for streams that fill the chunk).
            state: the previous chunk's state, or None at the start of the utterances
            final: the last chunk: flush the frames waiting to be stacked

        Returns:
            enc (B, T', H), enc_lengths (B,) and the state after this chunk.
        """
        B = feats.shape[0]
        if feats.dim() != 3 or feats.shape[2] != self.cfg.in_feats:
            raise ValueError(
                f"encoder: feats must be (B, T, {self.cfg.in_feats}), got {tuple(feats.shape)}"
            )
        if self.cfg.enc_bidirectional:
            if state is not None or not final:
                raise ValueError(
                    "encoder: a bidirectional encoder (enc_bidirectional) cannot stream; "
                    "decode whole utterances"
                )
            return self._forward_bidirectional(feats, lengths)
        if state is None:
            state = self.initial_state(B, feats.device, feats.dtype)
        if feats.shape[1] == 0:
            raise ValueError("encoder: empty chunk (T = 0)")
        x, (pre_h, pre_c) = self.pre_rnn(feats, (state.pre_h, state.pre_c))
        x = self.dropout(self.pre_norm(x))
        pending_in = state.pending.shape[1]
        x, pending = self.stack_time(torch.cat([state.pending, x], dim=1), final)
        post_h, post_c = state.post_h, state.post_c
        if self.post_rnn is not None:
            if x.shape[1] > 0:  # a short chunk may complete no stacked frame
                x, (post_h, post_c) = self.post_rnn(x, (post_h, post_c))
            else:
                x = x.new_zeros(B, 0, self.cfg.enc_n_hid)
            x = self.dropout(self.post_norm(x))
        k = self.cfg.enc_stack_time_factor
        total = lengths + pending_in
        out_lengths = (
            torch.div(total + k - 1, k, rounding_mode="floor")
            if final
            else torch.div(total, k, rounding_mode="floor")
        )
        return x, out_lengths, EncoderState(pre_h, pre_c, post_h, post_c, pending)

    def _forward_bidirectional(self, feats: torch.Tensor, lengths: torch.Tensor):
        """Whole padded utterances through bidirectional LSTMs, the backward direction of each
        utterance starting at its own last frame, not in the padding (``bidirectional_run``:
        :func:`~pykaldi2.nnet.lstm.bidirectional_padded`, or its packed reference)."""
        run = self.bidirectional_run
        B, T, _ = feats.shape
        lengths = lengths.clamp(min=1, max=T)
        x = self.dropout(self.pre_norm(run(self.pre_rnn, feats, lengths)))
        # frames past each length are zeros, as a single utterance's stacking pads them
        x = x.masked_fill((torch.arange(T, device=x.device) >= lengths[:, None])[..., None], 0.0)
        x, _ = self.stack_time(x, final=True)
        out_lengths = self.output_lengths(lengths)
        if self.post_rnn is not None:
            x = self.dropout(self.post_norm(run(self.post_rnn, x, out_lengths)))
        empty = self.initial_state(B, feats.device, feats.dtype)
        return x, out_lengths, empty
