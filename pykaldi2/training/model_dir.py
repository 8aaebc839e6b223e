"""Acoustic-model building and the final model dirs every criterion writes and reads.

- building: :func:`model_config` and :func:`build_model` (``blstm`` / ``tdnnf`` from
  :mod:`pykaldi2.nnet`), :func:`build_chain_model` (:class:`~pykaldi2.nnet.chain.ChainModel`);
- writing (atomically): :func:`save_final_model` and :func:`feature_doc` (what every nnet final
  dir has), :func:`write_final_dir` (``train-ce``), :func:`write_se_dir` (``train-se``: the CE
  format with new weights), :func:`write_chain_dir` (``train-chain``),
  :func:`save_transducer_dir` (``train-transducer``, the export format of
  :mod:`pykaldi2.export.model_dir`);
- reading (clear errors for missing files): :func:`read_model_dir`, :func:`load_final_dir`
  (CE and SE dirs: decode-nnet, align-nnet, adjust-priors, train-se and train-chain's
  ``init_model``), :func:`load_chain_dir` (decode-chain).

A final CE/SE dir::

    exp/blstm_ce/final/{final.pt, model.yaml, features.yaml, priors.npy, final.mdl, tree,
                        config.yaml}

a chain dir::

    exp/chain_tdnnf/final/{final.pt, model.yaml, features.yaml, final.mdl, tree, den.fst,
                           normalization.fst, phone_lm.fst, config.yaml}

Dimension legend: C pdf_ids.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pykaldi2.features.pipeline import FeaturePipelineConfig
from pykaldi2.training.data import DataDirFeatures
from pykaldi2.utils.checksums import verify_checksums, write_checksums
from pykaldi2.utils.config import check_fields, check_keys
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import get_logger

if TYPE_CHECKING:
    import torch

    from pykaldi2.features.transducer_frontend import TransducerFrontendConfig
    from pykaldi2.nnet.chain import ChainModel
    from pykaldi2.training.chain_egs import ChainData

log = get_logger(__name__)

#: Acoustic model types trainable with CE: name -> (config class, module class) import paths.
MODEL_TYPES = ("blstm", "tdnnf")

#: Files of a final CE (and SE) model dir.
FINAL_FILES = ("final.pt", "model.yaml", "features.yaml", "priors.npy", "final.mdl", "config.yaml")

#: Files of a final chain model dir.
CHAIN_FINAL_FILES = (
    "final.pt", "model.yaml", "features.yaml", "final.mdl", "den.fst", "normalization.fst",
    "config.yaml",
)  # fmt: skip

#: Files copied unchanged from the CE model dir into the SE model dir (its final.mdl is saved
#: again, with the tree and side files it comes with).
SE_COPIED_FILES = ("model.yaml", "features.yaml", "priors.npy")


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
def _model_classes(model_type: str):
    if model_type == "blstm":
        from pykaldi2.nnet.blstm import Blstm, BlstmConfig

        return BlstmConfig, Blstm
    if model_type == "tdnnf":
        from pykaldi2.nnet.tdnn import Tdnnf, TdnnfConfig

        return TdnnfConfig, Tdnnf
    if model_type == "tdnnf_v0":
        from pykaldi2.nnet.tdnn_v0 import TdnnfV0, TdnnfV0Config

        return TdnnfV0Config, TdnnfV0
    raise Pykaldi2Error(f"unknown model_type {model_type!r} (one of {', '.join(MODEL_TYPES)})")


def resolve_model_type(model_type: str, config: Mapping[str, Any]) -> str:
    """The model type of a saved model: ``tdnnf`` dirs written before the Kaldi-structured
    TDNN-F (their config has ``subsample_at``) are ``tdnnf_v0``."""
    if model_type == "tdnnf" and "subsample_at" in config:
        return "tdnnf_v0"
    return model_type


def model_config(model_type: str, d: Mapping[str, Any], input_dim: int, num_classes: int):
    """The model's config dataclass from ``d`` with input_dim/num_classes filled in."""
    cfg_cls, _ = _model_classes(model_type)
    d = dict(d)
    for k, v in (("input_dim", input_dim), ("num_classes", num_classes)):
        if d.get(k) not in (None, 0, v):
            raise DataError(
                f"model.{k}={d[k]} but the data give {v}",
                fix=f"remove model.{k} from the config (it is set from the data)",
            )
        d[k] = v
    try:
        cfg = cfg_cls.from_dict(d, where="model")
    except (TypeError, ValueError) as e:
        raise DataError(f"bad {model_type} model config: {e}", file="model") from None
    if getattr(cfg, "subsampling", 1) != 1:
        raise DataError(
            "frame CE needs one output per input frame: model.subsampling must be 1",
            fix="use subsampling 3 only for chain (LF-MMI) training",
        )
    return cfg


def check_model_options(model_type: str, d: Mapping[str, Any]) -> None:
    """The ``model:`` section of a training config checked against the ``model_type``'s config
    class when the config is read (unknown keys, types, ranges), before any data is: errors
    name ``model.<key>``."""
    cfg_cls, _ = _model_classes(model_type)
    check_keys(d, cfg_cls.field_names(), where="model")
    check_fields(cfg_cls, d, where="model")


def build_model(model_type: str, cfg):
    """An ``nn.Module``: feats (N, T, F), lengths (N,) -> logits (N, T, C)."""
    _, cls = _model_classes(model_type)
    return cls(cfg)


def build_chain_model(model_type: str, mcfg, subsample: int, xent: bool) -> ChainModel:
    """A :class:`~pykaldi2.nnet.chain.ChainModel` on a ``model_type`` body of config ``mcfg``."""
    from pykaldi2.nnet.chain import ChainModel

    return ChainModel(build_model(model_type, mcfg), mcfg.num_classes, subsample, xent)


# ---------------------------------------------------------------------------------------------
# Writing final model dirs
# ---------------------------------------------------------------------------------------------
def chunking(cfg) -> dict[str, int]:
    """The CE chunking options of ``cfg`` (a TrainCEConfig), as features.yaml records them."""
    return {
        "chunk_size": cfg.chunk_size,
        "left_context": cfg.left_context,
        "right_context": cfg.right_context,
    }


def save_final_model(tmp: Path, model, meta: Mapping[str, Any], cfg, summary) -> None:
    """What every final model dir (train-ce, train-se, train-chain) has, written into the dir
    ``tmp`` being built: ``final.pt`` (the weights on the CPU + ``meta``) and ``config.yaml``
    (the resolved ``cfg`` with provenance, plus ``final_train_stats`` from ``summary``)."""
    import torch

    from pykaldi2.utils.provenance import save_config

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": state, **meta}, tmp / "final.pt")
    stats = {k: float(v) for k, v in summary.items()}
    save_config(tmp / "config.yaml", {**cfg.to_dict(), "final_train_stats": stats})


def feature_doc(pipeline: FeaturePipelineConfig, feats: DataDirFeatures, **extra) -> dict:
    """features.yaml of a final model dir: the pipeline, the raw and processed dims, the raw
    feature config recorded with the training features, and ``extra`` (chunking)."""
    raw = feats.parts[0].raw
    return {
        "pipeline": pipeline.to_dict(),
        "raw_dim": int(raw.dim),
        "dim": int(feats.dim),
        "raw_feature_config": raw.metadata().get("feature_config", {}),
        **extra,
    }


def write_final_dir(
    final: Path,
    cfg,
    model,
    mcfg,
    priors: np.ndarray,
    ali_model,
    feats: DataDirFeatures,
    summary: Mapping[str, float],
) -> None:
    """The self-contained model dir: everything decode-nnet needs, written atomically."""
    import yaml

    from pykaldi2.utils.io import atomic_dir

    with atomic_dir(final) as tmp:
        meta = {"model_type": cfg.model_type, "model_config": mcfg.to_dict()}
        save_final_model(tmp, model, meta, cfg, summary)
        (tmp / "model.yaml").write_text(
            yaml.safe_dump({"model_type": cfg.model_type, "config": mcfg.to_dict()}),
            encoding="utf-8",
        )
        feat_doc = feature_doc(cfg.features, feats, **chunking(cfg))
        (tmp / "features.yaml").write_text(yaml.safe_dump(feat_doc), encoding="utf-8")
        np.save(tmp / "priors.npy", priors.astype(np.float64))
        ali_model.save(tmp / "final.mdl")
        write_checksums(tmp)
    log.info("wrote %s", final)


def write_se_dir(final: Path, cfg, model, md, summary) -> None:
    """The SE model dir: the CE model dir's files with the new weights and config."""
    from pykaldi2.utils.io import atomic_dir

    with atomic_dir(final) as tmp:
        for name in SE_COPIED_FILES:
            if (md.path / name).is_file():
                shutil.copyfile(md.path / name, tmp / name)
        md.ali_model.save(tmp / "final.mdl")
        meta = {"model_type": md.model_type, "model_config": model.cfg.to_dict()}
        save_final_model(tmp, model, meta, cfg, summary)
        write_checksums(tmp)
    log.info("wrote %s", final)


def write_chain_dir(final: Path, cfg, model, mcfg, subsample, data: ChainData, summary) -> None:
    """The self-contained chain model dir (decode-chain / mkgraph read it), written atomically."""
    import yaml

    from pykaldi2.lang.den_fst import write_fst
    from pykaldi2.utils.io import atomic_dir

    with atomic_dir(final) as tmp:
        meta = {
            "model_type": cfg.model_type,
            "model_config": mcfg.to_dict(),
            "subsample": subsample,
            "xent": model.xent is not None,
            "frame_subsampling_factor": cfg.frame_subsampling_factor,
        }
        save_final_model(tmp, model, meta, cfg, summary)
        (tmp / "model.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
        feat_doc = feature_doc(
            cfg.features, data.feats,
            frame_subsampling_factor=cfg.frame_subsampling_factor,
            # inference follows training: decode-chain cuts utterances into these chunks
            chunk_size=cfg.chunk_size,
            chunk_left_context=getattr(data.train, "left", 0),
            chunk_right_context=getattr(data.train, "right", 0),
        )  # fmt: skip
        (tmp / "features.yaml").write_text(yaml.safe_dump(feat_doc), encoding="utf-8")
        data.chain_model.save(tmp / "final.mdl")
        write_fst(data.den_fst, tmp / "den.fst")
        write_fst(data.norm_fst, tmp / "normalization.fst")
        if data.phone_lm is not None:
            write_fst(data.phone_lm, tmp / "phone_lm.fst")
        write_checksums(tmp)
    log.info("wrote %s", final)


def save_transducer_dir(
    path: str | os.PathLike,
    state: Mapping[str, torch.Tensor],
    model_config,
    tokenizer_model: str | os.PathLike,
    frontend: TransducerFrontendConfig,
    features: Mapping[str, Any],
    *,
    max_symbols_per_frame: int = 3,
    training: Mapping[str, Any] | None = None,
):
    """Write the ``transducer`` model dir (weights, TransducerConfig, tokenizer, the raw feature
    config ``features`` (``FrameConfig.to_dict()``, may be empty for features of unknown origin)
    and the front end), atomically, replacing ``path``."""
    from pykaldi2.export.model_dir import save_model_dir

    md = save_model_dir(
        path,
        "transducer",
        files={"tokenizer": tokenizer_model},
        configs={
            "model": model_config.to_dict(),
            "features": dict(features),
            "frontend": frontend.to_dict(),
            "decoder": {"max_symbols_per_frame": int(max_symbols_per_frame)},
            "training": dict(training or {}),
        },
        state=state,
        overwrite=True,
    )
    log.info("wrote %s", path)
    return md


# ---------------------------------------------------------------------------------------------
# Loading final model dirs (decode-nnet, decode-chain, train-se, init_model)
# ---------------------------------------------------------------------------------------------
@dataclass
class CEModelDir:
    """A loaded ``exp/<sys>/final`` dir."""

    path: Path
    model: Any  # nn.Module in eval mode
    model_type: str
    features: FeaturePipelineConfig
    feature_dim: int
    chunk_size: int
    left_context: int
    right_context: int
    log_priors: np.ndarray  # (C,)
    ali_model: Any  # GmmModel: transition model + tree

    @property
    def num_pdfs(self) -> int:
        return int(self.log_priors.shape[0])


def read_model_dir(
    path: str | os.PathLike, files: Sequence[str], kind: str, command: str, device: str = "cpu"
) -> tuple[Path, dict, Any, dict]:
    """The common part of loading a final model dir (``train-ce``, ``train-chain``): check that
    ``files`` exist (a clear error naming ``kind`` and ``command`` otherwise) and match the
    dir's ``checksums.sha256`` (dirs written before checksums: unchecked), then return
    ``(path, final.pt's state, the body's model config, features.yaml)``. A file that cannot be
    read is a :class:`DataError` naming it, never a traceback from torch."""
    import torch
    import yaml

    path = Path(path)
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise DataError(
            f"not a complete {kind} model dir (missing {', '.join(missing)})",
            file=str(path),
            fix=f"pass EXP_DIR/final of a finished `pykaldi2 {command}` run",
        )
    fix = f"copy the model dir again from its source, or re-run `pykaldi2 {command}`"
    verify_checksums(path, fix=fix)
    with _readable(path / "final.pt", fix):
        state = torch.load(path / "final.pt", map_location=device, weights_only=False)
        state["model_type"] = resolve_model_type(state["model_type"], state["model_config"])
        cfg_cls, _ = _model_classes(state["model_type"])
    mcfg = cfg_cls.from_dict(state["model_config"])
    with _readable(path / "features.yaml", fix):
        feat = yaml.safe_load((path / "features.yaml").read_text(encoding="utf-8"))
    return path, state, mcfg, feat


@contextlib.contextmanager
def _readable(path: Path, fix: str):
    """Turn what a damaged file raises while it is read (torch, pickle, numpy, YAML) into a
    :class:`DataError` naming it."""
    import pickle

    import yaml

    try:
        yield
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError,
            pickle.UnpicklingError, yaml.YAMLError) as e:  # fmt: skip
        raise DataError(
            f"cannot read {path.name} ({type(e).__name__}: {e})", file=str(path), fix=fix
        ) from None


def load_final_dir(path: str | os.PathLike, device: str = "cpu") -> CEModelDir:
    """Load a model dir written by :func:`~pykaldi2.training.ce.train_ce` (or ``train-se``),
    with clear errors for missing files."""
    from pykaldi2.hmm.model import GmmModel

    path, state, mcfg, feat = read_model_dir(path, FINAL_FILES, "CE", "train-ce", device)
    mtype = state["model_type"]
    model = build_model(mtype, mcfg)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    with _readable(path / "priors.npy", "re-run `pykaldi2 train-ce`"):
        priors = np.load(path / "priors.npy")
    if priors.shape != (mcfg.num_classes,):
        raise DataError(
            f"priors.npy has shape {priors.shape}, the model {mcfg.num_classes} outputs",
            file=str(path / "priors.npy"),
        )
    return CEModelDir(
        path=path,
        model=model,
        model_type=mtype,
        features=FeaturePipelineConfig.from_dict(feat["pipeline"]),
        feature_dim=int(feat["dim"]),
        chunk_size=int(feat["chunk_size"]),
        left_context=int(feat["left_context"]),
        right_context=int(feat["right_context"]),
        log_priors=np.log(priors),
        ali_model=GmmModel.load(path / "final.mdl"),
    )


@dataclass
class ChainModelDir:
    """A loaded ``exp/<chain sys>/final`` dir."""

    path: Path
    model: Any  # ChainModel in eval mode
    features: FeaturePipelineConfig
    feature_dim: int
    frame_subsampling_factor: int
    chain_model: Any  # GmmModel: chain transition model + tree
    chunk_size: int = 0  # input frames per inference chunk (0: whole utterances)
    chunk_left_context: int = 0
    chunk_right_context: int = 0

    @property
    def num_pdfs(self) -> int:
        return int(self.chain_model.tm.num_pdfs)


def load_chain_dir(path: str | os.PathLike, device: str = "cpu") -> ChainModelDir:
    """Load a model dir written by :func:`~pykaldi2.training.chain.train_chain`, with clear
    errors for missing files."""
    from pykaldi2.hmm.model import GmmModel

    path, state, mcfg, feat = read_model_dir(
        path, CHAIN_FINAL_FILES, "chain", "train-chain", device
    )
    model = build_chain_model(state["model_type"], mcfg, state["subsample"], state["xent"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return ChainModelDir(
        path=path,
        model=model,
        features=FeaturePipelineConfig.from_dict(feat["pipeline"]),
        feature_dim=int(feat["dim"]),
        frame_subsampling_factor=int(state["frame_subsampling_factor"]),
        chain_model=GmmModel.load(path / "final.mdl"),
        chunk_size=int(feat.get("chunk_size", 0)),
        chunk_left_context=int(feat.get("chunk_left_context", 0)),
        chunk_right_context=int(feat.get("chunk_right_context", 0)),
    )
