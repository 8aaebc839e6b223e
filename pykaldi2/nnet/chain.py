"""The chain (LF-MMI) acoustic model: a TDNN-F / BLSTM body with the chain output and an xent
head (Kaldi's ``output`` and ``output-xent``).

Dimension legend: N batch, T input frames, T' output frames, F feature dim, P pdf_ids.
"""

from __future__ import annotations

from torch import nn


class ChainModel(nn.Module):
    """A chain acoustic model: a TDNN-F / BLSTM body with the chain output and an xent head.

    ``forward(feats (N, T, F), lengths (N,)) -> (N, T', P)`` raw chain outputs (log-likelihoods
    for decoding; no log-softmax). :meth:`forward_train` also returns the xent head's output
    (N, T', P) (a linear layer on the input of the body's output layer, Kaldi's
    ``output-xent``), or None when ``xent`` is False. ``subsample`` > 1 keeps every
    ``subsample``-th output frame (for bodies that do not subsample themselves).
    """

    def __init__(self, body, num_pdfs: int, subsample: int = 1, xent: bool = True) -> None:
        super().__init__()
        self.body, self.subsample = body, int(subsample)
        self.xent = nn.Linear(body.output.in_features, num_pdfs) if xent else None

    def forward_train(self, feats, lengths):
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

    def forward(self, feats, lengths):
        return self.forward_train(feats, lengths)[0]
