"""In-memory views of a data dir for small jobs and tests: features as a model wants them and
transcripts as word ids. Training and alignment stream instead (:mod:`pykaldi2.hmm.streams`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from pykaldi2.hmm.streams import (  # noqa: F401  (apply_feat_transform: re-exported)
    FeaturePipeline,
    apply_feat_transform,
    iter_feats,
    iter_texts,
)
from pykaldi2.utils.errors import DataError


def load_feats(
    data_dir: str | os.PathLike,
    *,
    cmvn: bool = True,
    deltas: bool = True,
    max_utts: int = 0,
    utts: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Features of a data dir: feats.scp -> apply-cmvn (per speaker) -> add-deltas.

    ``utts`` restricts loading to those utterances; ``max_utts`` to the first N."""
    pipe = FeaturePipeline(feat_type="delta" if deltas else "raw", cmvn=cmvn)
    out: dict[str, np.ndarray] = {}
    for utt, x in iter_feats(data_dir, pipe, utts):
        out[utt] = x
        if max_utts and len(out) >= max_utts:
            break
    if not out:
        raise DataError(
            "no utterance has features",
            file=str(data_dir),
            fix="run `pykaldi2 compute-feats` on this data dir",
        )
    return out


def load_texts(data_dir: str | os.PathLike, lang) -> dict[str, list[int]]:
    """utt -> word ids of the data dir's ``text``; OOV words map to the lang's OOV word.
    Only ``text`` is read (a features-only data dir aligns too)."""
    return dict(iter_texts(data_dir, lang))


def feats_for_model(
    model,
    data_dir: str | os.PathLike,
    utts: Sequence[str] | None = None,
    fmllr: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Features of ``data_dir`` (or of its ``utts``) as ``model`` (a GmmModel) was trained on,
    with per-speaker fMLLR transforms (a Kaldi ark keyed by speaker) when given."""
    return dict(iter_feats(data_dir, FeaturePipeline.for_model(model, fmllr), utts))
