"""Pdf priors from the network's own average posteriors (Kaldi nnet3's ``adjust-priors``:
``nnet3-compute`` posteriors averaged over a subset of the training data, then
``nnet3-am-adjust-priors``, which train_dnn.py and train_discriminative.sh do after training).

A hybrid model divides its posteriors by pdf priors; ``train-ce`` takes them from the alignment
counts. After sequence training (or for any model whose output distribution differs from the
alignments') the average posterior is the prior that makes the mean scaled log-likelihood of
each pdf zero on the training data. :func:`adjust_priors` writes a copy of a model dir with
those priors::

    >>> adjust_priors("exp/blstm_smbr/final", "data/train_fbank", "exp/blstm_smbr/final_adj")

Pdfs marked unseen in the old priors (:data:`~pykaldi2.nnet.priors.UNSEEN_PRIOR`: no training
frame) stay unseen; the others share probability mass 1 in proportion to their average
posterior, floored at ``floor``.

Dimension legend: T frames, C pdf_ids.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from pykaldi2.decoding.nnet import NnetComputeConfig, nnet_compute
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)


def average_posteriors(
    md, feats: Mapping[str, np.ndarray], utts: Sequence[str], compute: NnetComputeConfig
) -> tuple[np.ndarray, int]:
    """((C,) float64 sum of the network's posteriors over every frame of ``utts``, frames)."""
    posts = replace(compute, prior_scale=0.0)  # log-posteriors
    total = np.zeros(md.num_pdfs, dtype=np.float64)
    frames = 0
    it = nnet_compute(md, feats, utts, posts)
    for _, logp in progress(it, desc="average posteriors", total=len(utts), unit="utt"):
        total += np.exp(logp.astype(np.float64)).sum(0)
        frames += len(logp)
    return total, frames


def priors_from_posteriors(
    post_sum: np.ndarray, old_priors: np.ndarray, floor: float = 1e-8
) -> np.ndarray:
    """(C,) priors: ``post_sum`` normalized over the pdfs ``old_priors`` does not mark unseen
    (those keep :data:`~pykaldi2.nnet.priors.UNSEEN_PRIOR`), floored at ``floor``."""
    from pykaldi2.nnet.priors import UNSEEN_PRIOR

    seen = old_priors < 1.0
    if not seen.any() or post_sum[seen].sum() <= 0:
        raise DataError("no posterior mass on any seen pdf: cannot estimate priors")
    p = np.maximum(post_sum / post_sum[seen].sum(), floor)
    p[seen] /= p[seen].sum()
    p[~seen] = UNSEEN_PRIOR
    return p


def adjust_priors(
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_utts: int = 2000,
    seed: int = 0,
    compute: NnetComputeConfig | None = None,
    overwrite: bool = False,
) -> dict[str, float]:
    """Write ``out_dir``: a copy of the CE/SE model dir ``model_dir`` whose ``priors.npy`` is
    the average posterior over ``max_utts`` utterances of ``data_dir`` (a seeded random subset;
    0: all), the old priors kept as ``priors_prev.npy``. Returns statistics (utterances, frames,
    mean and max |log(new / old)| over the seen pdfs)."""
    from pykaldi2.features.pipeline import ProcessedFeatures
    from pykaldi2.training.model_dir import load_final_dir
    from pykaldi2.utils.checksums import write_checksums
    from pykaldi2.utils.io import atomic_dir

    compute = compute or NnetComputeConfig()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise DataError("the output dir is the model dir", file=str(out_dir),
                        fix="write the adjusted model to a new dir")  # fmt: skip
    if out_dir.exists() and not overwrite:
        raise DataError("output dir exists", file=str(out_dir), fix="remove it or pass overwrite")
    md = load_final_dir(model_dir, device=compute.device)
    feats = ProcessedFeatures(data_dir, md.features)
    utts = sorted(feats)
    if not utts:
        raise DataError("no utterances with features", file=str(data_dir))
    if 0 < max_utts < len(utts):
        pick = np.random.default_rng(seed).choice(len(utts), size=max_utts, replace=False)
        utts = [utts[i] for i in sorted(pick)]
    post_sum, frames = average_posteriors(md, feats, utts, compute)
    old = np.load(model_dir / "priors.npy")
    new = priors_from_posteriors(post_sum, old)
    seen = old < 1.0
    ratio = np.abs(np.log(new[seen] / old[seen]))
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        np.save(tmp / "priors_prev.npy", old)
        np.save(tmp / "priors.npy", new)
        write_checksums(tmp)
    stats = {
        "utts": len(utts), "frames": frames,
        "mean_abs_log_ratio": float(ratio.mean()), "max_abs_log_ratio": float(ratio.max()),
    }  # fmt: skip
    log.info("adjust-priors: %s", stats)
    return stats
