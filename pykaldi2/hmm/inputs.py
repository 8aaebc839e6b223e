"""In-memory views of a data dir for small jobs and tests: features as a model wants them and
transcripts as word ids. Training and alignment stream instead (:mod:`pykaldi2.hmm.streams`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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
    norm_vars: bool = False,
) -> dict[str, np.ndarray]:
    """Features of a data dir: feats.scp -> apply-cmvn (per speaker; means, and variances with
    ``norm_vars``) -> add-deltas.

    ``utts`` restricts loading to those utterances; ``max_utts`` to the first N."""
    pipe = FeaturePipeline(feat_type="delta" if deltas else "raw", cmvn=cmvn, norm_vars=norm_vars)
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


def load_texts(
    data_dir: str | os.PathLike, lang, utts: Sequence[str] | None = None
) -> dict[str, list[int]]:
    """utt -> word ids of the data dir's ``text`` (of its ``utts`` only, when given); OOV words
    map to the lang's OOV word, named in a warning (:func:`pykaldi2.lang.transcripts.
    words_to_ids`). Only ``text`` is read (a features-only data dir aligns too)."""
    from pykaldi2.data.tables import read_table
    from pykaldi2.lang.transcripts import words_to_ids

    path = Path(data_dir) / "text"
    if not path.is_file():
        raise DataError("no text (transcripts)", file=str(path), fix="alignment needs `text`")
    table = read_table(path)
    if utts is not None:
        table = {u: table[u] for u in utts if u in table}
    texts, _ = words_to_ids(table, lang.words, oov_word=lang.oov_word, source=str(path))
    return texts


def model_feats(model, x: np.ndarray) -> np.ndarray:
    """(T, D) features for ``model`` (a GmmModel) from CMVN'd base features ``x``."""
    return apply_feat_transform(
        x, model.feat_type, model.transform, model.splice_context, model.delta_config
    )


def feats_for_model(
    model,
    data_dir: str | os.PathLike,
    utts: Sequence[str] | None = None,
    fmllr: str | os.PathLike | None = None,
    transforms: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Features of ``data_dir`` (or of its ``utts``) as ``model`` (a GmmModel, ours or Kaldi's)
    was trained on: apply-cmvn with the model's ``cmvn_opts``, then its deltas or splicing +
    transform, then (SAT systems) per-speaker fMLLR: ``fmllr``, a Kaldi ark keyed by speaker,
    or ``transforms`` (speaker -> (D, D+1), e.g. :func:`pykaldi2.hmm.exp_dir.
    read_transforms_dir` of a Kaldi dir's ``trans.*``; ``transform-feats --utt2spk``)."""
    out = dict(iter_feats(data_dir, FeaturePipeline.for_model(model, fmllr), utts))
    if transforms:
        from pykaldi2.data.datadir import read_data_dir
        from pykaldi2.hmm.exp_dir import apply_transforms

        out = apply_transforms(out, transforms, read_data_dir(data_dir).utt2spk)
    return out
