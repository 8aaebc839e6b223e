"""The Python API: load a model directory, transcribe audio files.

    >>> import pykaldi2
    >>> model = pykaldi2.load_model("exp/mono/export")     # a directory from save_gmm_model etc.
    >>> model.transcribe(["a.wav", "b.flac"])
    ['YES NO YES', 'NO NO']

:func:`load_model` reads ``model.yaml`` (:mod:`pykaldi2.export.model_dir`) and builds the
transcriber registered for its ``kind``: ``gmm`` (features -> per-file CMVN -> the model's
deltas/LDA -> ``gmm-decode-faster`` through HCLG), ``hybrid`` (a train-ce network's pseudo
log-likelihoods through HCLG), ``chain`` (a train-chain network's outputs at the subsampled
frame rate through its HCLG) and ``transducer`` (streaming front end -> RNN-T greedy search,
:mod:`pykaldi2.decoding.streaming`). New kinds plug in with :func:`register_kind`. A loaded
model is callable: ``model(files) == model.transcribe(files)`` (and ``model("a.wav")`` is one
transcript).

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
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)

__all__ = [
    "load_model",
    "register_kind",
    "save_gmm_model",
    "save_hybrid_model",
    "save_chain_model",
    "ChainTranscriber",
    "GmmTranscriber",
    "HybridTranscriber",
    "Transcriber",
]


class Transcriber(Protocol):
    """What :func:`load_model` returns."""

    model_dir: ModelDir

    def transcribe(self, paths: Sequence[str | os.PathLike]) -> list[str]:
        """One transcript (upper-case words separated by spaces) per audio file. Every file is
        checked first (a missing path, a folder, a file that is not audio or holds less than
        one frame is a DataError naming it, before any file is decoded)."""
        ...

    def __call__(self, paths: Any) -> Any:
        """``transcribe(paths)``; a single path gives its transcript (a str)."""
        ...


_KINDS: dict[str, Callable[[ModelDir], Transcriber]] = {}


def register_kind(kind: str, factory: Callable[[ModelDir], Transcriber]) -> None:
    """Make :func:`load_model` build ``factory(model_dir)`` for models of ``kind``."""
    _KINDS[kind] = factory


def load_model(path: str | os.PathLike) -> Transcriber:
    """The transcriber of the model directory at ``path`` (see the module docstring)."""
    _refuse_final_dir(Path(path))
    md = load_model_dir(path)
    if md.kind not in _KINDS:
        raise NotImplementedError(
            f"{md.path}: transcribing '{md.kind}' models is not implemented yet in pykaldi2 "
            f"(implemented: {', '.join(sorted(_KINDS))})"
        )
    return _KINDS[md.kind](md)


def _refuse_final_dir(path: Path) -> None:
    """A train-ce / train-se / train-chain final dir is not a model dir (it has no graph): say
    which command packs it, instead of a format error from its own model.yaml."""
    from pykaldi2.utils.errors import DataError

    if not (path / "final.pt").is_file():
        return
    chain = (path / "den.fst").is_file()
    cmd = "export-chain-model" if chain else "export-hybrid-model"
    raise DataError(
        f"a train-{'chain' if chain else 'ce'} final dir, not a model dir: it has no decoding "
        "graph",
        file=str(path),
        fix=f"pack it with its graph: pykaldi2 {cmd} {path} GRAPH_DIR OUT_DIR, then load OUT_DIR",
    )


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

    def raw(self, path: str | os.PathLike) -> np.ndarray:
        """(T, F) features of one file before CMVN (resampled to the config's rate)."""
        from pykaldi2.data.audio import read_audio

        sr = int(self.config.sample_frequency)
        x, sr = read_audio(str(path), target_sr=sr)
        return self.extractor.compute(x, sr)

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        from pykaldi2.features.cmvn import apply_cmvn, compute_cmvn_stats

        feats = self.raw(path)
        if len(feats) == 0:
            return feats
        return apply_cmvn(feats, compute_cmvn_stats(feats), self.norm_vars)


def call_transcribe(model: Any, paths: Any) -> Any:
    """``model(paths)``: ``model.transcribe(paths)`` for a list of files, one transcript (a str)
    for a single path. Every transcriber's ``__call__`` (DeepSpeech-Keras' ``model(files)``)."""
    if isinstance(paths, str | os.PathLike):
        return model.transcribe([paths])[0]
    return model.transcribe(list(paths))


class _HclgTranscriber:
    """The loop shared by the HCLG transcribers: ``_decode(path)`` gives the best path of one
    file (None for a file shorter than one frame), its words are the transcript. Callable:
    ``model(files) == model.transcribe(files)``."""

    words: Any

    def _decode(self, path: str | os.PathLike) -> Any:
        raise NotImplementedError

    def transcribe(self, paths: Sequence[str | os.PathLike]) -> list[str]:
        paths = list(paths)
        self.frontend.config.check_audio_files(paths)  # every file, before decoding any
        out = []
        for path in progress(paths, desc="transcribe", unit="file"):
            res = self._decode(path)
            if res is None:  # the header promised more audio than the file holds
                log.warning("%s: no feature frames, so no transcript", path)
            out.append("" if res is None else " ".join(self.words.sym(w) for w in res.words))
        return out

    __call__ = call_transcribe

    def _load_graph(
        self, md: ModelDir, default_decoder: dict[str, Any], tm, model: str | os.PathLike
    ) -> None:
        """HCLG (checked against ``tm``, the transition model of ``model``), words, the decoder
        config and one decoder for every file of a model dir (``HCLG``, ``words``, configs
        ``decoder``, ``graph``)."""
        from pykaldi2.decoding.wfst import DecoderConfig, make_decoder
        from pykaldi2.hmm.decoder import load_graph
        from pykaldi2.lang.symbols import SymbolTable

        self.hclg = load_graph(md.file("HCLG"))
        _check_model_dir_graph(md, self.hclg, tm, model)
        self.words = SymbolTable.read(md.file("words"))
        self.decoder = DecoderConfig.from_dict(md.config("decoder", default_decoder))
        self._search = make_decoder(self.hclg, self.decoder)  # one decoder for every file

    def _nnet_frontend(self, md: ModelDir, pipe) -> None:
        """The raw features of a model dir (``features`` config) and a network's processing
        ``pipe`` (its features.yaml pipeline) per file: speaker or global CMVN becomes the
        file's own CMVN (every file is its own speaker)."""
        from dataclasses import replace

        from pykaldi2.features.pipeline import ProcessedFeatures

        self.frontend = FeatureFrontEnd(md)
        if pipe.cmvn in ("speaker", "global"):
            pipe = replace(pipe, cmvn="utterance")
        self.pipeline = ProcessedFeatures(md.path, pipe, open_raw=False)

    def features(self, path: str | os.PathLike) -> np.ndarray:
        """(T, F) features of one file as the network was trained on them."""
        feats = self.frontend.raw(path)
        return self.pipeline.apply(str(path), feats) if len(feats) else feats


class GmmTranscriber(_HclgTranscriber):
    """A GMM-HMM model decoded through HCLG (Kaldi's ``gmm-decode-faster``).

    Files of the model dir: ``gmm/`` (the model as a Kaldi dir: final.mdl, tree, final.mat ...;
    dirs exported before that have ``model``, a pickled :class:`~pykaldi2.hmm.model.GmmModel`),
    ``HCLG`` (HCLG.fst), ``words`` (words.txt); configs ``features``, ``cmvn``, ``decoder``.
    """

    def __init__(self, md: ModelDir) -> None:
        from pykaldi2.decoding.wfst import GmmScorer
        from pykaldi2.hmm.decoder import TransitionTables
        from pykaldi2.hmm.model import GmmModel

        self.model_dir = md
        self.frontend = FeatureFrontEnd(md)
        gmm = md.file("gmm") / "final.mdl" if "gmm" in md.files else md.file("model")
        self.model = GmmModel.load(gmm)
        self._load_graph(md, {}, self.model.tm, gmm)
        self.scorer = GmmScorer(self.model.am)
        self.tables = TransitionTables.from_trans_model(self.model.tm)

    def features(self, path: str | os.PathLike) -> np.ndarray:
        """(T, D) features of one file in the model's feature space."""
        from pykaldi2.hmm.inputs import model_feats

        return model_feats(self.model, self.frontend(path))

    def _decode(self, path: str | os.PathLike) -> Any:
        from pykaldi2.decoding.wfst import decode_faster

        feats = self.features(path)
        if len(feats) == 0:
            return None
        if feats.shape[1] != self.scorer.dim:
            raise DataError(
                f"features of dim {feats.shape[1]}, the GMMs expect {self.scorer.dim}",
                file=str(path),
            )
        ll = self.scorer(feats)
        return decode_faster(None, ll, self.tables, self.decoder, str(path), self._search)


register_kind("gmm", GmmTranscriber)


class HybridTranscriber(_HclgTranscriber):
    """A hybrid network from ``pykaldi2 train-ce`` decoded through HCLG (Kaldi's
    ``nnet3-compute`` + ``decode-faster-mapped``), as ``decode-nnet`` does for a data dir.

    Files of the model dir: ``nnet`` (the train-ce final dir, copied whole: final.pt, priors.npy,
    final.mdl, features.yaml, ...), ``HCLG`` (HCLG.fst), ``words`` (words.txt); configs
    ``features`` (the raw feature config the training features were computed with),
    ``decoder`` (:class:`~pykaldi2.decoding.wfst.DecoderConfig`) and ``nnet_compute``
    (:class:`~pykaldi2.decoding.nnet.NnetComputeConfig`: inference mode, prior_scale).

    The net's feature pipeline (CMVN, deltas, splicing from its features.yaml) runs on each
    file; speaker or global CMVN becomes the file's own CMVN (every file is its own speaker).
    """

    def __init__(self, md: ModelDir) -> None:
        from pykaldi2.decoding.nnet import NnetComputeConfig
        from pykaldi2.training.model_dir import load_final_dir
        from pykaldi2.utils.config import check_keys

        self.model_dir = md
        self.nnet = load_final_dir(md.file("nnet"))
        self._nnet_frontend(md, self.nnet.features)
        self._load_graph(md, {}, self.nnet.ali_model.tm, md.file("nnet") / "final.mdl")
        compute = md.config("nnet_compute", {})
        check_keys(compute, _compute_fields(), where="nnet_compute", source=str(md.path))
        self.compute = NnetComputeConfig(**compute)
        self.tid2pdf = np.asarray(self.nnet.ali_model.tid2pdf, dtype=np.int64)

    def loglikes(self, path: str | os.PathLike) -> np.ndarray:
        """(T, num_pdfs) pseudo log-likelihoods of one file (``nnet_compute``)."""
        from pykaldi2.decoding.nnet import nnet_compute

        feats = self.features(path)
        if len(feats) == 0:
            return np.zeros((0, self.nnet.num_pdfs), np.float32)
        ((_, ll),) = nnet_compute(self.nnet, {str(path): feats}, [str(path)], self.compute)
        return ll

    def _decode(self, path: str | os.PathLike) -> Any:
        from pykaldi2.decoding.wfst import decode_faster

        ll = self.loglikes(path)
        if len(ll) == 0:
            return None
        return decode_faster(None, ll, self.tid2pdf, self.decoder, str(path), self._search)


def _compute_fields() -> list[str]:
    from dataclasses import fields

    from pykaldi2.decoding.nnet import NnetComputeConfig

    return [f.name for f in fields(NnetComputeConfig)]


register_kind("hybrid", HybridTranscriber)


class ChainTranscriber(_HclgTranscriber):
    """An LF-MMI model from ``pykaldi2 train-chain`` decoded through its HCLG (mkgraph with the
    chain final.mdl, self-loop scale 1.0), as ``decode-chain`` does for a data dir: the
    network's raw outputs at 1/frame_subsampling_factor of the frame rate are the
    log-likelihoods (no priors), acoustic scale 1.0 unless the ``decoder`` config says otherwise.

    Files: ``nnet`` (the train-chain final dir, copied whole), ``HCLG``, ``words``; configs
    ``features`` (raw feature config), ``decoder`` and ``nnet_compute`` (``mode``: utterance
    or chunk, see :func:`~pykaldi2.decoding.nnet.chain_compute`).
    """

    def __init__(self, md: ModelDir) -> None:
        from pykaldi2.decoding.nnet import check_inference_mode
        from pykaldi2.training.model_dir import load_chain_dir
        from pykaldi2.utils.config import check_keys

        self.model_dir = md
        self.nnet = load_chain_dir(md.file("nnet"))
        self._nnet_frontend(md, self.nnet.features)
        chain_mdl = md.file("nnet") / "final.mdl"
        self._load_graph(md, {"acoustic_scale": 1.0}, self.nnet.chain_model.tm, chain_mdl)
        compute = md.config("nnet_compute", {"mode": "utterance"})
        check_keys(compute, ["mode"], where="nnet_compute", source=str(md.path))
        self.mode = str(compute.get("mode", "utterance"))
        check_inference_mode(self.mode)
        self.tid2pdf = np.asarray(self.nnet.chain_model.tid2pdf, dtype=np.int64)

    def loglikes(self, path: str | os.PathLike) -> np.ndarray:
        """(ceil(T / frame_subsampling_factor), num_pdfs) log-likelihoods of one file."""
        from pykaldi2.decoding.nnet import chain_compute

        feats = self.features(path)
        if len(feats) == 0:
            return np.zeros((0, self.nnet.num_pdfs), np.float32)
        ((_, ll),) = chain_compute(self.nnet, {str(path): feats}, [str(path)], mode=self.mode)
        return ll

    def _decode(self, path: str | os.PathLike) -> Any:
        from pykaldi2.decoding.wfst import decode_faster

        ll = self.loglikes(path)
        if len(ll) == 0:
            return None
        return decode_faster(None, ll, self.tid2pdf, self.decoder, str(path), self._search)


register_kind("chain", ChainTranscriber)


def _transducer(md: ModelDir) -> Transcriber:
    """RNN-T models: streaming greedy search (:mod:`pykaldi2.decoding.streaming`)."""
    from pykaldi2.decoding.streaming import TransducerTranscriber

    return TransducerTranscriber(md)


register_kind("transducer", _transducer)


def _graph_files(graph_dir: Path) -> dict[str, Path]:
    """The files of a graph dir (``pykaldi2 mkgraph``) that a model dir carries."""
    return {"HCLG": graph_dir / "HCLG.fst", "words": graph_dir / "words.txt"}


def _graph_record(graph_dir: Path, tm, model: str | os.PathLike) -> dict[str, Any]:
    """Check that ``graph_dir`` was built for ``tm`` (the transition model of ``model``) and
    return the ``graph`` config a model dir keeps of it: the graph's ``model_id`` (None for a
    graph dir without one, e.g. Kaldi's: then only the pdf count was checked) and
    ``num_pdfs``. The transcriber compares ``model_id`` with its model when it loads."""
    from pykaldi2.hmm.graph_model import check_graph_model, read_graph_model_id

    check_graph_model(graph_dir, tm, model)
    return {"model_id": read_graph_model_id(graph_dir), "num_pdfs": int(tm.num_pdfs)}


def _check_model_dir_graph(md: ModelDir, graph, tm, model: str | os.PathLike) -> None:
    """At load: the model dir's HCLG must be its model's, by the ``graph`` config's model_id
    (written by export-gmm-model / export-hybrid-model), and in any case by its transition-id
    range. Model dirs exported before the record (or from a Kaldi graph) get the range check
    only, with a note in the log."""
    from pykaldi2.hmm.graph_model import check_graph_labels, check_model_id

    hclg = str(md.file("HCLG"))
    recorded = md.config("graph", {}).get("model_id")
    fix = "re-export the model dir with the graph built for its model (pykaldi2 mkgraph)"
    if recorded:
        check_model_id(
            str(recorded), tm, graph=f"the model dir's HCLG {hclg}", model=model, fix=fix,
            file=str(md.path / "model.yaml"),
        )  # fmt: skip
    else:
        log.info(
            "%s records no model_id of its graph (exported before it, or from a Kaldi graph "
            "dir): only the graph's transition-id range is checked against %s", md.path, model,
        )  # fmt: skip
    check_graph_labels(graph, int(tm.num_transition_ids), graph_file=hclg, model=str(model))


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
    feature config dict the model was trained on (``load_feature_config(data).to_dict()``).
    The model is copied as ``gmm/``, a Kaldi model dir (final.mdl, tree, its transform)."""
    import tempfile

    from pykaldi2.hmm.model import GmmModel

    graph_dir = Path(graph_dir)
    gmm = GmmModel.load(model)
    configs: dict[str, dict] = {"features": features, "cmvn": {"norm_vars": norm_vars}}
    configs["graph"] = _graph_record(graph_dir, gmm.tm, model)
    if decoder is not None:
        configs["decoder"] = decoder
    with tempfile.TemporaryDirectory(prefix="gmm-export-") as staging:
        gmm.save(Path(staging) / "final.mdl")
        return save_model_dir(
            path,
            "gmm",
            files={"gmm": staging, **_graph_files(graph_dir)},
            configs=configs,
            overwrite=overwrite,
        )


def save_hybrid_model(
    path: str | os.PathLike,
    nnet_dir: str | os.PathLike,
    graph_dir: str | os.PathLike,
    *,
    decoder: dict[str, Any] | None = None,
    nnet_compute: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> ModelDir:
    """Write a self-contained ``hybrid`` model dir from a ``train-ce`` final dir (copied whole as
    ``nnet/``) and a graph dir built from its final.mdl (HCLG.fst, words.txt, num_pdfs).

    ``decoder``: a :class:`~pykaldi2.decoding.wfst.DecoderConfig` dict (e.g. the acoustic scale
    ``1 / best LMWT`` of a scored decode); ``nnet_compute``: a
    :class:`~pykaldi2.decoding.nnet.NnetComputeConfig` dict (``mode``, ``prior_scale``, ...).
    The raw feature config is the one recorded with the training features (HDF5 archives,
    in features.yaml) or else the first training data dir's ``conf/feats.json``.
    """
    from dataclasses import asdict

    from pykaldi2.decoding.nnet import NnetComputeConfig
    from pykaldi2.decoding.wfst import DecoderConfig
    from pykaldi2.training.model_dir import load_final_dir

    nnet_dir, graph_dir = Path(nnet_dir), Path(graph_dir)
    nnet = load_final_dir(nnet_dir)
    graph = _graph_record(graph_dir, nnet.ali_model.tm, nnet_dir / "final.mdl")
    configs: dict[str, dict] = {
        "graph": graph,
        "features": _raw_feature_config(nnet_dir),
        "cmvn": {"norm_vars": bool(nnet.features.norm_vars)},
        "decoder": DecoderConfig.from_dict(decoder or {}).to_dict(),
        "nnet_compute": asdict(NnetComputeConfig(**(nnet_compute or {}))),
    }
    return save_model_dir(
        path,
        "hybrid",
        files={"nnet": nnet_dir, **_graph_files(graph_dir)},
        configs=configs,
        overwrite=overwrite,
    )


def save_chain_model(
    path: str | os.PathLike,
    chain_dir: str | os.PathLike,
    graph_dir: str | os.PathLike,
    *,
    decoder: dict[str, Any] | None = None,
    mode: str = "utterance",
    overwrite: bool = False,
) -> ModelDir:
    """Write a self-contained ``chain`` model dir from a ``train-chain`` final dir (copied whole
    as ``nnet/``) and a graph dir built from its final.mdl with self-loop scale 1.0.

    ``decoder``: a :class:`~pykaldi2.decoding.wfst.DecoderConfig` dict (default acoustic scale
    1.0, Kaldi's ``--acwt 1.0`` for chain models; ``1 / best LM weight`` of decode-chain's
    scoring gives the scored setting); ``mode``: inference on whole utterances or on the
    training chunks.
    """
    from pykaldi2.decoding.nnet import check_inference_mode
    from pykaldi2.decoding.wfst import DecoderConfig
    from pykaldi2.training.model_dir import load_chain_dir

    chain_dir, graph_dir = Path(chain_dir), Path(graph_dir)
    check_inference_mode(mode)
    nnet = load_chain_dir(chain_dir)
    configs: dict[str, dict] = {
        "graph": _graph_record(graph_dir, nnet.chain_model.tm, chain_dir / "final.mdl"),
        "features": _raw_feature_config(chain_dir),
        "cmvn": {"norm_vars": bool(nnet.features.norm_vars)},
        "decoder": DecoderConfig.from_dict({"acoustic_scale": 1.0, **(decoder or {})}).to_dict(),
        "nnet_compute": {"mode": mode},
    }
    return save_model_dir(
        path,
        "chain",
        files={"nnet": chain_dir, **_graph_files(graph_dir)},
        configs=configs,
        overwrite=overwrite,
    )


def _raw_feature_config(nnet_dir: Path) -> dict[str, Any]:
    """The feature config the training features of a train-ce / train-chain final dir were
    computed with."""
    import yaml

    from pykaldi2.features.compute import load_feature_config

    raw = yaml.safe_load((nnet_dir / "features.yaml").read_text(encoding="utf-8"))
    if raw.get("raw_feature_config"):
        return dict(raw["raw_feature_config"])
    saved = yaml.safe_load((nnet_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    train_data = saved.get("config", saved).get("train_data") or []
    if not train_data or not (Path(train_data[0]) / "conf" / "feats.json").is_file():
        raise DataError(
            "no record of the feature config of the training features (neither in "
            f"features.yaml nor in the training data dir {train_data[:1]}), so audio files "
            "cannot be turned into the same features",
            file=str(nnet_dir / "features.yaml"),
            fix="train on features written by `pykaldi2 compute-feats`",
        )
    return load_feature_config(train_data[0]).to_dict()
