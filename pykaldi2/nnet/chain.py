"""The chain (LF-MMI) acoustic model: a TDNN-F / BLSTM body with the chain output and an xent
head (Kaldi's ``output`` and ``output-xent``).

Dimension legend: N batch, T input frames, T' output frames, F feature dim, P pdf_ids.
"""

from __future__ import annotations

import torch
from torch import nn


class ChainModel(nn.Module):
    """A chain acoustic model: a TDNN-F / BLSTM body with the chain output and an xent head.

    ``forward(feats (N, T, F), lengths (N,)) -> (N, T', P)`` raw chain outputs (log-likelihoods
    for decoding; no log-softmax). :meth:`forward_train` also returns the xent output
    (N, T', P) or None. A body with its own xent branch (``forward_branches``: the TDNN-F's
    prefinal-xent and output-xent, Kaldi's structure) provides both outputs and its context
    (``left_context`` / ``right_context``; ``context_included``: the input chunks carry it);
    for other bodies (BLSTM, the first TDNN-F) the xent head is a linear layer on the input of
    the body's output layer, and ``subsample`` > 1 keeps every ``subsample``-th output frame.
    """

    def __init__(self, body, num_pdfs: int, subsample: int = 1, xent: bool = True) -> None:
        super().__init__()
        self.body, self.subsample = body, int(subsample)
        self.native = hasattr(body, "forward_branches")
        self.xent = None
        if xent and not self.native:
            self.xent = nn.Linear(body.output.in_features, num_pdfs)

    @property
    def left_context(self) -> int:
        """Input frames the body reads before an output frame (0 for padded bodies)."""
        return int(getattr(self.body, "left_context", 0))

    @property
    def right_context(self) -> int:
        return int(getattr(self.body, "right_context", 0))

    @property
    def has_xent(self) -> bool:
        return self.xent is not None or getattr(self.body, "output_xent", None) is not None

    def output_lengths(self, lengths: torch.Tensor, context_included: bool = False):
        """(N,) input frames -> (N,) output frames of :meth:`forward_train`."""
        if self.native:
            return self.body.output_lengths(lengths, context_included)
        s = self.subsample * int(getattr(getattr(self.body, "cfg", None), "subsampling", 1))
        return (lengths + s - 1) // s

    def forward_train(self, feats, lengths, context_included: bool = False):
        """(chain output (N, T', P), xent output (N, T', P) or None)."""
        if self.native:
            out, xent, _ = self.body.forward_branches(feats, lengths, context_included)
            return out, xent
        hidden = []
        hook = self.body.output.register_forward_hook(lambda m, i, o: hidden.append(i[0]))
        try:
            out = self.body(feats, lengths)
        finally:
            hook.remove()
        xent = self.xent(hidden[0]) if self.xent is not None else None
        if self.subsample > 1:
            out = out[:, :: self.subsample]
            xent = xent[:, :: self.subsample] if xent is not None else None
        return out, xent

    def forward(self, feats, lengths, context_included: bool = False):
        return self.forward_train(feats, lengths, context_included)[0]
