"""Hybrid cross-entropy training end to end (PyKaldi2's ``train_ce.py``; Kaldi's nnet3 xent).

From data dir(s) with features and an alignment dir to a self-contained model dir::

    >>> cfg = TrainCEConfig.load("conf/ce_blstm.yaml", overrides=["trainer.max_epochs=2"])
    >>> train_ce(cfg, "exp/blstm_ce")            # resumes from exp/blstm_ce/checkpoints
    exp/blstm_ce/final/{final.pt, model.yaml, features.yaml, priors.npy, final.mdl, tree,
                        config.yaml}

Steps: features = :class:`~pykaldi2.features.ProcessedFeatures` (CMVN, deltas, splicing) of
each training data dir; targets = ``ali-to-pdf`` of the alignment dir (``final.mdl`` + ``ali.scp``
/ ``ali.ark`` / ``ali.*.gz``); utterances without targets or with a length mismatch beyond
``length_tolerance`` are dropped (an error past ``max_missing_fraction``); fixed chunks of
``chunk_size`` frames (+ left/right context) from :class:`~pykaldi2.data.datasets.ChunkDataset`
batched by :class:`~pykaldi2.data.samplers.BucketBatchSampler`; one :class:`Trainer` loop with
:class:`~pykaldi2.losses.ce.FrameCETask` under torchrun / horovodrun / a single process;
validation loss and frame accuracy each epoch (Kaldi-style LR halving when
``trainer.schedule.halving``); pdf priors from the alignment counts, saved with the model.
With ``simulation: conf/sim.yaml`` the training chunks are simulated on the fly from the audio
(:class:`~pykaldi2.simulation.dataset.SimulatedChunkDataset`: noise, reverberation, speed,
SpecAugment, seeded per (seed, epoch, utterance) so runs and resumes are reproducible); the
validation chunks stay clean.

Dimension legend: N chunks, T = left + chunk_size + right frames, F feature dim, C pdf_ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.features.pipeline import FeaturePipelineConfig, ProcessedFeatures
from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.training.config import TrainConfigMixin
from pykaldi2.training.trainer import TrainerConfig
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import append_jsonl, get_logger

log = get_logger(__name__)

#: Acoustic model types trainable with CE: name -> (config class, module class) import paths.
MODEL_TYPES = ("blstm", "tdnnf")

#: Files of a final model dir.
FINAL_FILES = ("final.pt", "model.yaml", "features.yaml", "priors.npy", "final.mdl", "config.yaml")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
def _as_list(v: str | Sequence[str] | None) -> list[str]:
    if v is None or v == "":
        return []
    return [str(v)] if isinstance(v, (str, os.PathLike)) else [str(x) for x in v]


def simulation_config(value: Any) -> SimulationConfig | None:
    """The ``simulation:`` option of a training config -> a validated SimulationConfig or None.

    ``value``: None / "" (no simulation), the path of a sim.yaml, a mapping (the resolved config
    that EXP_DIR/config.yaml holds) or a SimulationConfig. Errors name the file.
    """
    if value is None or value == "":
        return None
    if isinstance(value, SimulationConfig):
        return value
    if isinstance(value, Mapping):
        return SimulationConfig.from_dict(dict(value), where="simulation")
    if not isinstance(value, (str, os.PathLike)):
        raise DataError(f"simulation: expected the path of a sim.yaml or null, got {value!r}")
    if not Path(value).is_file():
        raise DataError(
            "simulation: no such simulation config file",
            file=str(value),
            fix="give the path of a sim.yaml (see `pykaldi2 simulate --help`) or null",
        )
    return SimulationConfig.from_yaml(value)


@dataclass
class TrainCEConfig(TrainConfigMixin):
    """Everything ``train-ce`` needs; saved (resolved, with provenance) as EXP_DIR/config.yaml.

    Attributes:
        train_data: training data dir(s) with feats.scp (and cmvn.scp for speaker CMVN).
        ali_dir: alignment dir(s) (``final.mdl`` + ``ali.scp|ali.ark|ali.*.gz``) covering the
            training utterances; all from the same model (same transition_ids/pdf_ids).
        valid_data: validation data dir(s); empty: hold out ``valid_fraction`` of train_data.
        valid_ali_dir: alignments of valid_data (default: ``ali_dir``).
        valid_fraction: fraction of training utterances held out when valid_data is empty
            (0: no validation).
        features: the feature pipeline (CMVN / deltas / splicing) applied to the stored feats.
        model_type: ``blstm`` or ``tdnnf``.
        model: the model's config fields (``BlstmConfig`` / ``TdnnfConfig``); ``input_dim`` and
            ``num_classes`` are filled in from the features and the alignment model.
        chunk_size: target frames per chunk (80: PyKaldi2's BLSTM recipe).
        left_context, right_context: extra input frames on each side of a chunk (no targets).
        batch_size: chunks per batch (per rank); max_frames: optional cap on N * T.
        num_workers, prefetch_factor: DataLoader worker processes (persistent) and prefetch.
        length_tolerance: allowed |feature frames - alignment frames| per utterance.
        max_missing_fraction: more utterances than this without usable targets is an error.
        prior_floor: floor of the pdf priors (unseen pdfs).
        label_smoothing: CE label smoothing.
        trainer: the :class:`TrainerConfig` (optimizer, epochs, schedule, checkpoints).
        seed: model initialisation, sampler shuffling and the validation split.
        simulation: null (default: train on the stored features) or a sim.yaml
            (:class:`~pykaldi2.simulation.config.SimulationConfig`; saved resolved): training
            chunks are simulated on the fly from the audio of ``train_data`` (one data dir, with
            wav.scp and conf/feats.json); validation stays clean.
    """

    train_data: list[str] = field(default_factory=list)
    ali_dir: list[str] = field(default_factory=list)
    valid_data: list[str] = field(default_factory=list)
    valid_ali_dir: list[str] = field(default_factory=list)
    valid_fraction: float = 0.05
    features: FeaturePipelineConfig = field(default_factory=FeaturePipelineConfig)
    model_type: str = "blstm"
    model: dict[str, Any] = field(default_factory=dict)
    chunk_size: int = 80
    left_context: int = 0
    right_context: int = 0
    batch_size: int = 64
    max_frames: int = 0
    num_workers: int = 2
    prefetch_factor: int = 4
    length_tolerance: int = 1
    max_missing_fraction: float = 0.2
    prior_floor: float = 1e-8
    label_smoothing: float = 0.0
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    simulation: SimulationConfig | None = None

    def __post_init__(self) -> None:
        self.train_data = _as_list(self.train_data)
        self.ali_dir = _as_list(self.ali_dir)
        self.simulation = simulation_config(self.simulation)
        self.valid_data = _as_list(self.valid_data)
        self.valid_ali_dir = _as_list(self.valid_ali_dir)
        if isinstance(self.features, dict):
            self.features = FeaturePipelineConfig.from_dict(self.features)
        if isinstance(self.trainer, dict):
            self.trainer = TrainerConfig.from_dict(self.trainer)
        self.model = dict(self.model or {})
        problems = []
        if not self.train_data:
            problems.append("train_data: at least one data dir is required")
        if not self.ali_dir:
            problems.append("ali_dir: at least one alignment dir is required")
        if self.model_type not in MODEL_TYPES:
            problems.append(f"model_type: {self.model_type!r} not in {', '.join(MODEL_TYPES)}")
        if self.chunk_size <= 0:
            problems.append("chunk_size must be > 0")
        if self.left_context < 0 or self.right_context < 0:
            problems.append("left_context/right_context must be >= 0")
        if self.batch_size <= 0 and self.max_frames <= 0:
            problems.append("batch_size or max_frames must be > 0")
        if self.num_workers < 0 or self.prefetch_factor < 1:
            problems.append("num_workers must be >= 0 and prefetch_factor >= 1")
        if not 0.0 <= self.valid_fraction < 1.0:
            problems.append("valid_fraction must be in [0, 1)")
        if self.length_tolerance < 0 or not 0.0 <= self.max_missing_fraction <= 1.0:
            problems.append("length_tolerance >= 0 and max_missing_fraction in [0, 1] required")
        if problems:
            raise Pykaldi2Error("TrainCEConfig: " + "; ".join(problems))

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = self.features.to_dict()
        d["trainer"] = self.trainer.to_dict()
        d["simulation"] = self.simulation.to_dict() if self.simulation is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> TrainCEConfig:
        """Build and validate; unknown keys and bad values raise a DataError naming ``source``."""
        if not isinstance(d, Mapping):
            raise DataError("expected a mapping of train-ce options", file=source)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(
                f"unknown option(s) {', '.join(unknown)}",
                file=source,
                fix=f"valid options: {', '.join(sorted(known))}",
            )
        try:
            return cls(**d)
        except Pykaldi2Error as e:
            raise DataError(str(e), file=source) from None
        except (TypeError, ValueError) as e:
            raise DataError(f"bad option value: {e}", file=source) from None


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
    raise Pykaldi2Error(f"unknown model_type {model_type!r} (one of {', '.join(MODEL_TYPES)})")


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
        cfg = cfg_cls.from_dict(d)
    except (TypeError, ValueError) as e:
        raise DataError(f"bad {model_type} model config: {e}", file="model") from None
    if getattr(cfg, "subsampling", 1) != 1:
        raise DataError(
            "frame CE needs one output per input frame: model.subsampling must be 1",
            fix="use subsampling 3 only for chain (LF-MMI) training",
        )
    return cfg


def build_model(model_type: str, cfg):
    """An ``nn.Module``: feats (N, T, F), lengths (N,) -> logits (N, T, C)."""
    _, cls = _model_classes(model_type)
    return cls(cfg)


# ---------------------------------------------------------------------------------------------
# Data: features, targets, validation split
# ---------------------------------------------------------------------------------------------
class DataDirFeatures(Mapping[str, np.ndarray]):
    """The processed features of one or more data dirs as one ``utt -> (T, F)`` mapping.

    ``shape(utt)`` reads only the archive header, so chunking a corpus does not compute
    features. Picklable (DataLoader workers reopen the archives).
    """

    def __init__(self, data_dirs: Sequence[str | os.PathLike], config: FeaturePipelineConfig):
        self.parts = [ProcessedFeatures(d, config) for d in data_dirs]
        self._where: dict[str, int] = {}
        for i, p in enumerate(self.parts):
            for utt in p:
                if utt in self._where:
                    raise DataError(
                        f"utterance in two training data dirs ({data_dirs[self._where[utt]]})",
                        file=str(data_dirs[i]),
                        utt=utt,
                        fix="combine the data dirs with `pykaldi2 combine-data` or list each once",
                    )
                self._where[utt] = i
        dims = {p.dim for p in self.parts}
        if len(dims) > 1:
            raise DataError(
                f"data dirs have different feature dims {sorted(dims)}",
                file=", ".join(str(d) for d in data_dirs),
                fix="compute the same features for every data dir",
            )

    def __getitem__(self, utt: str) -> np.ndarray:
        return self.parts[self._where[utt]][utt]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, utt: object) -> bool:
        return utt in self._where

    def shape(self, utt: str) -> tuple[int, int]:
        return self.parts[self._where[utt]].num_frames(utt), self.dim

    @property
    def dim(self) -> int:
        return self.parts[0].dim


def load_pdf_targets(ali_dirs: Sequence[str | os.PathLike]) -> tuple[dict[str, np.ndarray], Any]:
    """``ali-to-pdf`` of every alignment in ``ali_dirs``: ({utt: (T,) int32 pdf_ids}, model).

    Each dir is ours or Kaldi's (:mod:`pykaldi2.hmm.exp_dir`): ``final.mdl`` + ``tree`` and
    ``ali.scp``, ``ali.ark`` or Kaldi's ``ali.1.gz .. ali.N.gz``. All dirs must come from the
    same transition model; transition_ids out of its range are an error naming the utterance.
    """
    from pykaldi2.hmm.ali import ali_to_pdf
    from pykaldi2.hmm.exp_dir import read_ali_dirs

    alis, model = read_ali_dirs(ali_dirs)
    return {u: ali_to_pdf(model, a).astype(np.int32) for u, a in alis.items()}, model


def held_out_split(utts: Sequence[str], fraction: float, seed: int) -> tuple[list, list]:
    """(train, valid) utterance lists: a seeded random ``fraction`` of ``utts`` held out."""
    utts = sorted(utts)
    k = int(round(fraction * len(utts)))
    if fraction > 0 and len(utts) > 1:
        k = min(max(k, 1), len(utts) - 1)
    perm = np.random.default_rng([seed, 1]).permutation(len(utts))
    valid = {utts[i] for i in perm[:k]}
    return [u for u in utts if u not in valid], sorted(valid)


@dataclass
class CEData:
    """Everything the training loop reads: features, targets and the chunked datasets."""

    feats: DataDirFeatures
    targets: dict[str, np.ndarray]
    train: Any  # ChunkDataset
    valid: Any | None  # ChunkDataset or None
    valid_feats: Mapping[str, np.ndarray] | None
    ali_model: Any  # GmmModel of the alignments (transition model + tree)
    num_pdfs: int


def _checked_utts(feats, targets, cfg: TrainCEConfig, source: str) -> list[str]:
    from pykaldi2.data.datasets import match_targets

    lengths = {u: feats.shape(u)[0] for u in feats}
    return match_targets(
        feats,
        targets,
        frame_lengths=lengths,
        tolerance=cfg.length_tolerance,
        max_missing_fraction=cfg.max_missing_fraction,
        source=source,
    ).utts


def load_ce_data(cfg: TrainCEConfig) -> CEData:
    """Features, pdf targets and chunk datasets of the train (and valid) sets."""
    from pykaldi2.data.datasets import ChunkDataset

    feats = DataDirFeatures(cfg.train_data, cfg.features)
    targets, ali_model = load_pdf_targets(cfg.ali_dir)
    num_pdfs = int(ali_model.tm.num_pdfs)
    utts = _checked_utts(feats, targets, cfg, source=", ".join(cfg.ali_dir))

    def chunks(f, u):
        return ChunkDataset(f, targets, cfg.chunk_size, cfg.left_context, cfg.right_context, utts=u)

    valid_feats, valid = None, None
    if cfg.valid_data:
        valid_feats = DataDirFeatures(cfg.valid_data, cfg.features)
        if cfg.valid_ali_dir:
            vt, _ = load_pdf_targets(cfg.valid_ali_dir)
            targets.update(vt)
        vutts = _checked_utts(
            valid_feats, targets, cfg, source=", ".join(cfg.valid_ali_dir or cfg.ali_dir)
        )
        valid = chunks(valid_feats, vutts)
    elif cfg.valid_fraction > 0:
        utts, vutts = held_out_split(utts, cfg.valid_fraction, cfg.seed)
        valid_feats = feats
        valid = chunks(feats, vutts)
    if cfg.simulation is not None:
        train = simulated_chunks(cfg, targets, utts, feats.dim)
    else:
        train = chunks(feats, utts)
    if len(train) == 0:
        raise DataError("no training chunks", file=", ".join(cfg.train_data))
    return CEData(feats, targets, train, valid, valid_feats, ali_model, num_pdfs)


def simulated_utterances(
    train_data: Sequence[str], sim: SimulationConfig, targets, pipeline, dim: int, **kw
):
    """A :class:`~pykaldi2.simulation.dataset.SimulatedUtteranceDataset` over the one training
    data dir (its audio and conf/feats.json), checked to give features of dimension ``dim``
    (the stored features'); ``kw`` goes to the dataset."""
    from pykaldi2.simulation.dataset import SimulatedUtteranceDataset

    if len(train_data) != 1:
        raise DataError(
            "simulation: exactly one training data dir is supported",
            file=", ".join(train_data),
            fix="combine the data dirs with `pykaldi2 combine-data` first",
        )
    ds = SimulatedUtteranceDataset(train_data[0], None, sim, targets, pipeline, **kw)
    if ds.dim != dim:
        raise DataError(
            f"simulated features have dim {ds.dim}, the stored features {dim}",
            file=str(ds.datadir / "conf" / "feats.json"),
            fix="compute the data dir's features with the config in conf/feats.json",
        )
    return ds


def simulated_chunks(cfg: TrainCEConfig, targets, utts: Sequence[str], dim: int):
    """The training chunks simulated on the fly (``cfg.simulation``) from the audio of
    ``cfg.train_data``: a :class:`~pykaldi2.simulation.dataset.SimulatedChunkDataset`."""
    from pykaldi2.simulation.dataset import SimulatedChunkDataset

    utt_ds = simulated_utterances(
        cfg.train_data,
        cfg.simulation,
        targets,
        cfg.features,
        dim,
        utts=utts,
        tolerance=cfg.length_tolerance,
    )
    return SimulatedChunkDataset(utt_ds, cfg.chunk_size, cfg.left_context, cfg.right_context)


def chunk_utts(dataset) -> set[str]:
    """The utterance ids of a (clean or simulated) chunk dataset."""
    if hasattr(dataset, "utterances"):  # SimulatedChunkDataset: chunks hold utterance indices
        return {dataset.utterances.utts[c[0]] for c in dataset.chunks}
    return {c[0] for c in dataset.chunks}


def epoch_batches(sampler, dataset):
    """``sampler`` wrapped in an :class:`~pykaldi2.simulation.dataset.EpochBatchSampler` when
    ``dataset`` simulates on the fly (its items then carry the epoch to the workers)."""
    from pykaldi2.simulation.dataset import (
        EpochBatchSampler,
        SimulatedChunkDataset,
        SimulatedUtteranceDataset,
    )

    if isinstance(dataset, SimulatedChunkDataset | SimulatedUtteranceDataset):
        return EpochBatchSampler(sampler)
    return sampler


def make_loader(dataset, cfg: TrainCEConfig, *, rank: int, world_size: int, shuffle: bool):
    """A DataLoader over ``dataset`` chunks with a resumable BucketBatchSampler."""
    import torch

    from pykaldi2.data.datasets import collate_frames
    from pykaldi2.data.samplers import BucketBatchSampler

    t = cfg.left_context + cfg.chunk_size + cfg.right_context
    sampler = BucketBatchSampler(
        [t] * len(dataset),
        batch_size=cfg.batch_size,
        max_frames=cfg.max_frames,
        shuffle=shuffle,
        num_buckets=1,
        rank=rank,
        world_size=world_size,
        seed=cfg.seed,
    )
    kw: dict[str, Any] = {}
    if cfg.num_workers > 0:
        kw = {"persistent_workers": True, "prefetch_factor": cfg.prefetch_factor}
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=epoch_batches(sampler, dataset),
        collate_fn=collate_frames,
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(),
        **kw,
    )


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
class ChunkCETask:
    """Frame CE on the ``chunk_size`` centre frames of (N, left + chunk + right, F) chunks."""

    def __init__(self, left: int, right: int, device, label_smoothing: float = 0.0) -> None:
        from pykaldi2.losses.ce import FrameCETask

        self.left, self.right = left, right
        self.inner = FrameCETask(device, label_smoothing)

    def compute_loss(self, model, batch):
        left, right = self.left, self.right

        def centre(feats, lengths):  # (N, T, C) -> (N, T - left - right, C)
            return model(feats, lengths)[:, left : feats.shape[1] - right]

        return self.inner.compute_loss(centre, batch)


def evaluate(model, loader, task, dist) -> dict[str, float]:
    """Frame CE loss and accuracy over ``loader`` (summed over ranks): {"loss", "acc", "frames"}."""
    import torch

    model.eval()
    loss = correct = count = 0.0
    with torch.no_grad():
        for batch in loader:
            out = task.compute_loss(model, batch)
            loss += float(out.loss)
            correct += out.stats.get("correct", 0.0)
            count += out.count
    loss, correct, count = dist.allreduce_scalars([loss, correct, count])
    count = max(count, 1e-12)
    return {"loss": loss / count, "acc": correct / count, "frames": count}


def train_ce(cfg: TrainCEConfig, exp_dir: str | os.PathLike) -> Path:
    """Train (or resume) a CE acoustic model in ``exp_dir``; returns ``exp_dir/final``.

    Resumes automatically from ``exp_dir/checkpoints/latest``; a checkpoint of a different model
    config is an error. Works unchanged under ``torchrun`` and ``horovodrun`` (one process per
    rank; rank 0 writes config.yaml, logs and the final dir).
    """
    import torch

    from pykaldi2.nnet.priors import pdf_priors
    from pykaldi2.training.distributed import Dist
    from pykaldi2.training.trainer import Trainer

    exp_dir = Path(exp_dir)
    dist = Dist.from_env()
    try:
        data = load_ce_data(cfg)
        mcfg = model_config(cfg.model_type, cfg.model, data.feats.dim, data.num_pdfs)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model_type, mcfg)
        dist.broadcast_parameters(model)
        if dist.is_main:
            exp_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(exp_dir / "config.yaml")
        task = ChunkCETask(cfg.left_context, cfg.right_context, dist.device, cfg.label_smoothing)
        train_loader = make_loader(
            data.train, cfg, rank=dist.rank, world_size=dist.world_size, shuffle=True
        )
        valid_fn = None
        if data.valid is not None and len(data.valid):
            valid_loader = make_loader(
                data.valid, cfg, rank=dist.rank, world_size=dist.world_size, shuffle=False
            )

            def valid_fn(m) -> float:
                res = evaluate(m, valid_loader, task, dist)
                if dist.is_main:
                    log.info("validation: loss %.4f, frame accuracy %.4f", res["loss"], res["acc"])
                    append_jsonl(exp_dir / "log" / "valid.jsonl", {"step": trainer.step, **res})
                return res["loss"]

        trainer = Trainer(
            model,
            task,
            cfg.trainer,
            exp_dir,
            dist=dist,
            model_config={"model_type": cfg.model_type, **mcfg.to_dict(), **_chunking(cfg)},
            valid_fn=valid_fn,
        )
        trainer.resume()
        log.info(
            "train-ce: %d chunks of %d frames%s, %d pdfs, %s model with %.2fM parameters",
            len(data.train),
            cfg.chunk_size,
            " (simulated on the fly)" if cfg.simulation is not None else "",
            data.num_pdfs,
            cfg.model_type,
            sum(p.numel() for p in model.parameters()) / 1e6,
        )
        summary = trainer.fit(train_loader)
        final = exp_dir / "final"
        if dist.is_main:
            train_utts = chunk_utts(data.train)
            priors = pdf_priors(
                (data.targets[u] for u in sorted(train_utts)), data.num_pdfs, cfg.prior_floor
            )
            write_final_dir(final, cfg, model, mcfg, priors, data.ali_model, data.feats, summary)
        dist.barrier()
        return final
    finally:
        dist.shutdown()


def _chunking(cfg: TrainCEConfig) -> dict[str, int]:
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
    cfg: TrainCEConfig,
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
        feat_doc = feature_doc(cfg.features, feats, **_chunking(cfg))
        (tmp / "features.yaml").write_text(yaml.safe_dump(feat_doc), encoding="utf-8")
        np.save(tmp / "priors.npy", priors.astype(np.float64))
        ali_model.save(tmp / "final.mdl")
    log.info("wrote %s", final)


# ---------------------------------------------------------------------------------------------
# Loading a final model dir (used by decode-nnet)
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
    ``files`` exist (a clear error naming ``kind`` and ``command`` otherwise), then return
    ``(path, final.pt's state, the body's model config, features.yaml)``."""
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
    state = torch.load(path / "final.pt", map_location=device, weights_only=False)
    cfg_cls, _ = _model_classes(state["model_type"])
    mcfg = cfg_cls.from_dict(state["model_config"])
    feat = yaml.safe_load((path / "features.yaml").read_text(encoding="utf-8"))
    return path, state, mcfg, feat


def load_final_dir(path: str | os.PathLike, device: str = "cpu") -> CEModelDir:
    """Load a model dir written by :func:`train_ce`, with clear errors for missing files."""
    from pykaldi2.hmm.model import GmmModel

    path, state, mcfg, feat = read_model_dir(path, FINAL_FILES, "CE", "train-ce", device)
    mtype = state["model_type"]
    model = build_model(mtype, mcfg)
    model.load_state_dict(state["model"])
    model.to(device).eval()
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
