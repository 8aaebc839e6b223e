"""pdf_id priors from alignment counts, for hybrid decoding: loglik = log p(pdf|x) - log p(pdf)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch


def pdf_priors(pdf_alis: Iterable[np.ndarray], num_pdfs: int, floor: float = 1e-8) -> np.ndarray:
    """(num_pdfs,) prior probabilities from frame counts of pdf_id alignments.

    Unseen pdfs get ``floor`` (then the vector is renormalised), so their log-prior is finite.
    """
    counts = np.zeros(num_pdfs, dtype=np.float64)
    for ali in pdf_alis:
        counts += np.bincount(np.asarray(ali, dtype=np.int64), minlength=num_pdfs)[:num_pdfs]
    if counts.sum() == 0:
        raise ValueError("pdf_priors: no frames in the alignments")
    p = np.maximum(counts / counts.sum(), floor)
    return p / p.sum()


def log_likelihoods(
    logits: torch.Tensor, log_priors: torch.Tensor, prior_scale: float = 1.0
) -> torch.Tensor:
    """(…, C) logits -> (…, C) scaled log-likelihoods ``log_softmax(logits) - prior_scale * log_priors``."""
    return torch.log_softmax(logits.float(), dim=-1) - prior_scale * log_priors.to(logits.device)
