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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pykaldi2.features.pipeline import FeaturePipelineConfig
from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.training.ce_egs import chunk_utts, load_ce_data, make_loader
from pykaldi2.training.config import TrainConfigMixin, as_list, options_from_dict, simulation_config
from pykaldi2.training.model_dir import (
    MODEL_TYPES,
    build_model,
    check_model_options,
    chunking,
    model_config,
    write_final_dir,
)
from pykaldi2.training.trainer import TrainerConfig, evaluate
from pykaldi2.utils.config import option
from pykaldi2.utils.errors import Pykaldi2Error
from pykaldi2.utils.log import append_jsonl, get_logger

log = get_logger(__name__)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
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
    prior_floor: float = option(1e-8, gt=0, lt=1)
    label_smoothing: float = option(0.0, ge=0, lt=1)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    simulation: SimulationConfig | str | None = None

    def __post_init__(self) -> None:
        self.train_data = as_list(self.train_data)
        self.ali_dir = as_list(self.ali_dir)
        self.simulation = simulation_config(self.simulation)
        self.valid_data = as_list(self.valid_data)
        self.valid_ali_dir = as_list(self.valid_ali_dir)
        self.build_sections()
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
        check_model_options(self.model_type, self.model)

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = self.features.to_dict()
        d["trainer"] = self.trainer.to_dict()
        d["simulation"] = self.simulation.to_dict() if self.simulation is not None else None
        return d

    # unknown keys and bad values: a DataError naming the config file
    from_dict = classmethod(options_from_dict)


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
        data = load_ce_data(cfg, exp_dir / "egs", dist)
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
            model_config={"model_type": cfg.model_type, **mcfg.to_dict(), **chunking(cfg)},
            model_config_defaults=type(mcfg).field_defaults(),
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
