"""The Python API: load a model directory, transcribe audio files.

    >>> import pykaldi2
    >>> model = pykaldi2.load_model("exp/mono/export")     # a directory from save_gmm_model etc.
    >>> model.transcribe(["a.wav", "b.flac"])
    ['YES NO YES', 'NO NO']

:func:`load_model` reads ``model.yaml`` (:mod:`pykaldi2.export.model_dir`) and builds the
transcriber registered for its ``kind``. Implemented: ``gmm`` (features -> per-file CMVN -> the
model's deltas/LDA -> ``gmm-decode-faster`` through HCLG) and ``transducer`` (streaming
front end -> RNN-T greedy search, :mod:`pykaldi2.decoding.streaming`). ``hybrid`` (a neural
net's pseudo log-likelihoods through HCLG) is not registered yet: loading one is a clear
:class:`NotImplementedError` naming the kind. New kinds plug in with :func:`register_kind`.

Every file is its own speaker: CMVN statistics are those of the file (a model trained with
per-speaker CMVN sees slightly different statistics on single files).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pykaldi2.export.model_dir import ModelDir, load_model_dir, save_model_dir
from pykaldi2.utils.log import progress

__all__ = ["load_model", "register_kind", "save_gmm_model", "GmmTranscriber", "Transcriber"]


class Transcriber(Protocol):
    """What :func:`load_model` returns."""

    model_dir: ModelDir

    def transcribe(self, paths: Sequence[str | os.PathLike]) -> list[str]:
        """One transcript (upper-case words separated by spaces) per audio file."""
        ...


_KINDS: dict[str, Callable[[ModelDir], Transcriber]] = {}


def register_kind(kind: str, factory: Callable[[ModelDir], Transcriber]) -> None:
    """Make :func:`load_model` build ``factory(model_dir)`` for models of ``kind``."""
    _KINDS[kind] = factory


def load_model(path: str | os.PathLike) -> Transcriber:
    """The transcriber of the model directory at ``path`` (see the module docstring)."""
    md = load_model_dir(path)
    if md.kind not in _KINDS:
        raise NotImplementedError(
            f"{md.path}: transcribing '{md.kind}' models is not implemented yet in pykaldi2 "
            f"(implemented: {', '.join(sorted(_KINDS))})"
        )
    return _KINDS[md.kind](md)


class FeatureFrontEnd:
    """Audio file -> (T, F) CMVN'd features, as configured in a model dir.

    ``configs["features"]``: a feature config dict (``FrameConfig.to_dict()``);
    ``configs["cmvn"]``: ``{"norm_vars": bool}`` (per-file CMVN), optional.
    """

    def __init__(self, md: ModelDir) -> None:
        from pykaldi2.features.extractors import config_from_dict, make_extractor

        self.config = config_from_dict(md.config("features"))
        self.extractor = make_extractor(self.config)
        self.norm_vars = bool(md.config("cmvn", {"norm_vars": False}).get("norm_vars", False))

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        from pykaldi2.data.audio import read_audio
        from pykaldi2.features.cmvn import apply_cmvn, compute_cmvn_stats

        sr = int(self.config.sample_frequency)
        x, sr = read_audio(str(path), target_sr=sr)
        feats = self.extractor.compute(x, sr)
        if len(feats) == 0:
            return feats
        return apply_cmvn(feats, compute_cmvn_stats(feats), self.norm_vars)


class GmmTranscriber:
    """A GMM-HMM model decoded through HCLG (Kaldi's ``gmm-decode-faster``).

    Files of the model dir: ``model`` (a pickled :class:`~pykaldi2.hmm.model.GmmModel`),
    ``HCLG`` (HCLG.fst), ``words`` (words.txt); configs ``features``, ``cmvn``, ``decoder``.
    """

    def __init__(self, md: ModelDir) -> None:
        from pykaldi2.decoding.wfst import DecoderConfig
        from pykaldi2.hmm.model import GmmModel
        from pykaldi2.kaldi import kaldifst
        from pykaldi2.lang.symbols import SymbolTable

        self.model_dir = md
        self.frontend = FeatureFrontEnd(md)
        self.model = GmmModel.load(md.file("model"))
        self.hclg = kaldifst.StdVectorFst.read(str(md.file("HCLG")))
        self.words = SymbolTable.read(md.file("words"))
        self.decoder = DecoderConfig.from_dict(md.config("decoder", DecoderConfig().to_dict()))

    def features(self, path: str | os.PathLike) -> np.ndarray:
        """(T, D) features of one file in the model's feature space."""
        from pykaldi2.hmm.inputs import apply_feat_transform

        m = self.model
        return apply_feat_transform(self.frontend(path), m.feat_type, m.transform, m.splice)

    def transcribe(self, paths: Sequence[str | os.PathLike]) -> list[str]:
        from pykaldi2.decoding.wfst import gmm_decode_faster

        out = []
        for path in progress(list(paths), desc="transcribe", unit="file"):
            feats = self.features(path)
            if len(feats) == 0:  # shorter than one frame
                out.append("")
                continue
            res = gmm_decode_faster(
                self.hclg, self.model.am, self.model.tm, feats, self.decoder, utt=str(path)
            )
            out.append(" ".join(self.words.sym(w) for w in res.words))
        return out


register_kind("gmm", GmmTranscriber)


def _transducer(md: ModelDir) -> Transcriber:
    """RNN-T models: streaming greedy search (:mod:`pykaldi2.decoding.streaming`)."""
    from pykaldi2.decoding.streaming import TransducerTranscriber

    return TransducerTranscriber(md)


register_kind("transducer", _transducer)


def save_gmm_model(
    path: str | os.PathLike,
    model: str | os.PathLike,
    graph_dir: str | os.PathLike,
    features: dict[str, Any],
    *,
    norm_vars: bool = False,
    decoder: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> ModelDir:
    """Write a ``gmm`` model dir from ``final.mdl``, a graph dir (HCLG.fst, words.txt) and the
    feature config dict the model was trained on (``load_feature_config(data).to_dict()``)."""
    graph_dir = Path(graph_dir)
    configs: dict[str, dict] = {"features": features, "cmvn": {"norm_vars": norm_vars}}
    if decoder is not None:
        configs["decoder"] = decoder
    return save_model_dir(
        path,
        "gmm",
        files={
            "model": model,
            "HCLG": graph_dir / "HCLG.fst",
            "words": graph_dir / "words.txt",
        },
        configs=configs,
        overwrite=overwrite,
    )
