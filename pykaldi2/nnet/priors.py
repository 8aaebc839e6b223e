"""pdf_id priors from alignment counts, for hybrid decoding: loglik = log p(pdf|x) - log p(pdf)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

#: The prior given to pdfs below the floor (Kaldi nnet1's PdfPrior: "a huge value").
UNSEEN_PRIOR = 1e10


def pdf_priors(pdf_alis: Iterable[np.ndarray], num_pdfs: int, floor: float = 1e-8) -> np.ndarray:
    """(num_pdfs,) prior probabilities from frame counts of pdf_id alignments.

    Pdfs whose relative frequency is below ``floor`` (e.g. never in the alignments: a tree leaf
    no training frame reached) get the prior :data:`UNSEEN_PRIOR`, as Kaldi's nnet1 PdfPrior
    does: their scaled log-likelihood ``log p(pdf|x) - log p(pdf)`` is then about -23 below the
    network's log-posterior, so they never win a frame. (A tiny prior would do the opposite:
    dividing the small posterior of a pdf the network never learned by a tiny prior makes it
    the best-scoring pdf everywhere, and the decoder then outputs nothing but that state.)
    The other entries are the relative frame counts.
    """
    counts = np.zeros(num_pdfs, dtype=np.float64)
    for ali in pdf_alis:
        counts += np.bincount(np.asarray(ali, dtype=np.int64), minlength=num_pdfs)[:num_pdfs]
    if counts.sum() == 0:
        raise ValueError("pdf_priors: no frames in the alignments")
    p = counts / counts.sum()
    p[p < floor] = UNSEEN_PRIOR
    return p


def log_likelihoods(
    logits: torch.Tensor, log_priors: torch.Tensor, prior_scale: float = 1.0
) -> torch.Tensor:
    """(…, C) logits -> (…, C) scaled log-likelihoods ``log_softmax(logits) - prior_scale * log_priors``."""
    return torch.log_softmax(logits.float(), dim=-1) - prior_scale * log_priors.to(logits.device)
