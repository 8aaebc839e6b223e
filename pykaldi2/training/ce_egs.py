"""Frame-CE training examples (Kaldi's NnetExample): fixed chunks with pdf targets.

``train-ce``'s data: the processed features and ``ali-to-pdf`` targets of the training (and
validation) data dirs (:mod:`pykaldi2.training.data`; the targets written once into
``EXP_DIR/egs/pdf_targets``, a memory-mapped store, and read per chunk), cut into chunks of
``chunk_size``
frames plus ``left_context`` / ``right_context``
(:class:`~pykaldi2.data.datasets.ChunkDataset`, or
:class:`~pykaldi2.simulation.dataset.SimulatedChunkDataset` with ``simulation``), batched by a
resumable :class:`~pykaldi2.data.samplers.BucketBatchSampler`. ``cfg`` is a
:class:`~pykaldi2.training.ce.TrainCEConfig`.

Dimension legend: N chunks, T = left + chunk_size + right frames, F feature dim.
"""

from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pykaldi2.training.data import (
    DataDirFeatures,
    alignment_store,
    checked_utts,
    egs_path,
    epoch_batches,
    held_out_split,
    simulated_utterances,
)
from pykaldi2.utils.errors import DataError


@dataclass
class CEData:
    """Everything the training loop reads: features, targets and the chunked datasets."""

    feats: DataDirFeatures
    targets: Mapping[str, np.ndarray]  # VectorStore of the training pdf targets
    train: Any  # ChunkDataset
    valid: Any | None  # ChunkDataset or None
    valid_feats: Mapping[str, np.ndarray] | None
    ali_model: Any  # GmmModel of the alignments (transition model + tree)
    num_pdfs: int


def load_ce_data(cfg, egs_dir: str | os.PathLike | None = None, dist=None) -> CEData:
    """Features, pdf targets and chunk datasets of the train (and valid) sets.

    The pdf targets are stores in ``egs_dir`` (``pdf_targets``, ``valid_pdf_targets``; a
    temp dir when None) made by rank 0 of ``dist`` (:func:`~pykaldi2.training.data.
    alignment_store`)."""
    from pykaldi2.data.datasets import ChunkDataset

    egs = egs_path(egs_dir)
    feats = DataDirFeatures(cfg.train_data, cfg.features)
    targets, ali_model = alignment_store(cfg.ali_dir, egs / "pdf_targets", to_pdf=True, dist=dist)
    num_pdfs = int(ali_model.tm.num_pdfs)
    utts = checked_utts(feats, targets, cfg, source=", ".join(cfg.ali_dir))

    def chunks(f, u, t=targets):
        return ChunkDataset(f, t, cfg.chunk_size, cfg.left_context, cfg.right_context, utts=u)

    valid_feats, valid = None, None
    if cfg.valid_data:
        valid_feats = DataDirFeatures(cfg.valid_data, cfg.features)
        vtargets: Mapping[str, np.ndarray] = targets
        if cfg.valid_ali_dir:  # valid_ali_dir's alignment of an utterance first
            vt, _ = alignment_store(
                cfg.valid_ali_dir, egs / "valid_pdf_targets", to_pdf=True, dist=dist
            )
            vtargets = ChainMap(vt, targets)
        vutts = checked_utts(
            valid_feats, vtargets, cfg, source=", ".join(cfg.valid_ali_dir or cfg.ali_dir)
        )
        valid = chunks(valid_feats, vutts, vtargets)
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


def simulated_chunks(cfg, targets, utts: Sequence[str], dim: int):
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


def make_loader(dataset, cfg, *, rank: int, world_size: int, shuffle: bool):
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
