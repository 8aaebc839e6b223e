"""Training inputs from a data dir and a lang dir, as Kaldi's steps/train_*.sh build them.

Features: ``feats.scp`` with per-speaker CMVN (means only, ``cmvn.scp``) and, for the
delta systems, deltas + delta-deltas; transcripts mapped to word ids (OOV -> ``oov.txt``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pykaldi2.data.transcripts import MAX_MISSING_TEXT_FRACTION, check_transcribed
from pykaldi2.utils.errors import DataError


@dataclass
class TrainingInputs:
    """Everything a GMM training stage reads.

    Attributes:
        feats: utt -> (T, D) float32 features, ready for the model.
        texts: utt -> word ids.
        lang: the :class:`pykaldi2.lang.lang_dir.Lang`.
    """

    feats: dict[str, np.ndarray]
    texts: dict[str, list[int]]
    lang: object

    @property
    def num_frames(self) -> int:
        return sum(len(x) for x in self.feats.values())


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

    ``utts`` restricts loading to those utterances (a parallel job's share)."""
    from pykaldi2.data.datadir import read_data_dir
    from pykaldi2.features.cmvn import apply_cmvn
    from pykaldi2.features.compute import load_cmvn
    from pykaldi2.features.storage import open_features
    from pykaldi2.features.transforms import add_deltas

    d = read_data_dir(data_dir)
    reader = open_features(data_dir)
    stats = load_cmvn(data_dir) if cmvn else {}
    out: dict[str, np.ndarray] = {}
    wanted = set(utts) if utts is not None else None
    utts = [u for u in d.utt2spk if u in reader and (wanted is None or u in wanted)]
    if max_utts:
        utts = utts[:max_utts]
    for utt in utts:
        x = np.asarray(reader[utt], dtype=np.float32)
        if cmvn:
            spk = d.utt2spk[utt]
            if spk not in stats:
                raise DataError(
                    f"no CMVN stats for speaker {spk}",
                    utt=utt,
                    file=str(os.path.join(data_dir, "cmvn.scp")),
                    fix="run `pykaldi2 compute-cmvn` on this data dir",
                )
            x = apply_cmvn(x, stats[spk], norm_vars=norm_vars)
        if deltas:
            x = add_deltas(x)
        out[utt] = np.ascontiguousarray(x, dtype=np.float32)
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


def load_training_inputs(
    data_dir: str | os.PathLike,
    lang_dir: str | os.PathLike,
    *,
    deltas: bool = True,
    max_utts: int = 0,
    max_missing_text_fraction: float = MAX_MISSING_TEXT_FRACTION,
) -> TrainingInputs:
    """Features (CMVN + optional deltas), transcripts and lang dir of a training stage.
    Utterances with features but no transcript are listed and left out; more than
    ``max_missing_text_fraction`` of them is an error (:func:`pykaldi2.data.transcripts.
    check_transcribed`)."""
    from pykaldi2.lang.lang_dir import load_lang

    lang = load_lang(lang_dir)
    feats = load_feats(data_dir, deltas=deltas, max_utts=max_utts)
    texts = load_texts(data_dir, lang)
    keep = check_transcribed(
        feats, texts, text_file=str(Path(data_dir) / "text"),
        max_missing_fraction=max_missing_text_fraction,
    )  # fmt: skip
    return TrainingInputs(feats, {u: texts[u] for u in keep}, lang)


def apply_feat_transform(
    x: np.ndarray,
    feat_type: str,
    transform=None,
    splice: int | tuple[int, int] = 3,
    delta: tuple[int, int] = (2, 2),
):
    """Features for a model from CMVN'd base features: ``delta`` adds deltas (add-deltas with
    ``delta = (order, window)``), ``lda`` splices ``splice`` frames (one int for both sides, or
    ``(left, right)``; splice-feats) and applies the (D_out, D_in[+1]) ``transform``
    (transform-feats), ``raw`` keeps them."""
    from pykaldi2.features.transforms import add_deltas, splice_feats

    if feat_type == "delta":
        return np.ascontiguousarray(add_deltas(x, *delta), dtype=np.float32)
    if feat_type == "lda":
        if transform is None:
            raise DataError("an LDA model without its transform matrix", fix="retrain it")
        left, right = (splice, splice) if isinstance(splice, int) else splice
        s = splice_feats(x, left, right).astype(np.float64)
        m = np.asarray(transform, dtype=np.float64)
        if m.shape[1] not in (s.shape[1], s.shape[1] + 1):
            raise DataError(
                f"the transform is {m.shape[0]} x {m.shape[1]}, the spliced features have "
                f"{s.shape[1]} dimensions ({x.shape[1]} x {left + 1 + right} frames)",
                fix="use the features the model was trained on (and its splice_opts)",
            )
        y = s @ m[:, : s.shape[1]].T
        if m.shape[1] == s.shape[1] + 1:
            y += m[:, -1]
        return np.ascontiguousarray(y, dtype=np.float32)
    if feat_type == "raw":
        return np.ascontiguousarray(x, dtype=np.float32)
    raise DataError(f"unknown feat_type {feat_type!r}", fix="one of raw, delta, lda")


def model_feats(model, x: np.ndarray) -> np.ndarray:
    """(T, D) features for ``model`` (a GmmModel) from CMVN'd base features ``x``."""
    return apply_feat_transform(
        x, model.feat_type, model.transform, model.splice_context, model.delta_config
    )


def feats_for_model(
    model,
    data_dir: str | os.PathLike,
    utts: Sequence[str] | None = None,
    transforms: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Features of ``data_dir`` (or of its ``utts``) as ``model`` (a GmmModel) was trained on:
    apply-cmvn with the model's ``cmvn_opts``, then its deltas or splicing + transform, then
    (SAT systems) the per-speaker fMLLR ``transforms`` (speaker -> (D, D+1); Kaldi's
    ``transform-feats --utt2spk``)."""
    norm_means, norm_vars = model.cmvn_config
    base = load_feats(data_dir, cmvn=norm_means, deltas=False, utts=utts, norm_vars=norm_vars)
    out = {u: model_feats(model, x) for u, x in base.items()}
    if transforms:
        from pykaldi2.data.datadir import read_data_dir
        from pykaldi2.hmm.exp_dir import apply_transforms

        out = apply_transforms(out, transforms, read_data_dir(data_dir).utt2spk)
    return out
