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


class ChunkItems:
    """Shard samples -> CE chunks (:data:`pykaldi2.training.shards.MakeItems`): the raw
    features through ``cfg.features`` (per-utterance or sliding CMN: speaker and global stats
    need a data dir), cut like :class:`~pykaldi2.data.datasets.ChunkDataset`'s chunks with the
    utterance's pdf targets; utterances without targets or whose length differs from theirs by
    more than ``length_tolerance`` give none. Picklable (DataLoader workers)."""

    def __init__(self, cfg, targets: Mapping[str, np.ndarray]) -> None:
        from pykaldi2.features.pipeline import ProcessedFeatures

        self.pipe = ProcessedFeatures(".", cfg.features, open_raw=False)
        self.targets = targets
        self.chunk = (cfg.chunk_size, cfg.left_context, cfg.right_context)
        self.tolerance = cfg.length_tolerance

    def __call__(self, key: str, raw: np.ndarray, text):
        from pykaldi2.data.datasets import ChunkDataset

        y = self.targets.get(key)
        if y is None or not len(raw) or abs(len(raw) - len(y)) > self.tolerance:
            return []
        x = self.pipe.apply(key, raw)
        ds = ChunkDataset({key: x}, {key: y}, *self.chunk, utts=[key])
        return [ds[i] for i in range(len(ds))]


def load_ce_shards(cfg, egs_dir: str | os.PathLike | None = None, dist=None) -> CEData:
    """:class:`CEData` of WebDataset shards (``cfg.shards``): ``train`` is a
    :class:`~pykaldi2.training.shards.ShardLoader` of chunk batches, ``valid`` the collated
    validation batches (``shards.valid``, or the chunks of ``valid_data``'s DataLoader), and
    ``feats`` what the model dir needs of the features
    (:class:`~pykaldi2.training.shards.ShardFeatures`). The pdf targets are stores in
    ``egs_dir`` as in :func:`load_ce_data`; ``dist`` gives the rank and world size."""
    from pykaldi2.data.datasets import collate_frames
    from pykaldi2.training.shards import ShardFeatures, ShardLoader, valid_batches

    if cfg.features.cmvn in ("speaker", "global"):
        raise DataError(
            f"features.cmvn: {cfg.features.cmvn} needs the CMVN stats of a data dir; shards "
            "have none", fix="use cmvn: utterance or sliding with shards",
        )  # fmt: skip
    sh = cfg.shards
    fc = sh.frame_config()
    egs = egs_path(egs_dir)
    rank, world_size = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    targets, ali_model = alignment_store(cfg.ali_dir, egs / "pdf_targets", to_pdf=True, dist=dist)
    items = ChunkItems(cfg, targets)
    train = ShardLoader(
        sh.train, items, collate_frames, batch_size=cfg.batch_size, frame_config=fc,
        shuffle_buffer=sh.shuffle_buffer, seed=cfg.seed, rank=rank, world_size=world_size,
        num_workers=cfg.num_workers,
    )  # fmt: skip
    valid, valid_feats = None, None
    if sh.valid or cfg.valid_data:
        vt: Mapping[str, np.ndarray] = targets
        if cfg.valid_ali_dir:  # valid_ali_dir's alignment of an utterance first
            v, _ = alignment_store(
                cfg.valid_ali_dir, egs / "valid_pdf_targets", to_pdf=True, dist=dist
            )
            vt = ChainMap(v, targets)
        if sh.valid:
            valid = valid_batches(sh.valid, ChunkItems(cfg, vt), collate_frames, cfg.batch_size,
                                  fc)  # fmt: skip
        else:
            from pykaldi2.data.datasets import ChunkDataset

            valid_feats = DataDirFeatures(cfg.valid_data, cfg.features)
            vutts = checked_utts(valid_feats, vt, cfg, source=", ".join(cfg.valid_data))
            valid = ChunkDataset(valid_feats, vt, cfg.chunk_size, cfg.left_context,
                                 cfg.right_context, utts=vutts)  # fmt: skip
    feats = ShardFeatures(fc.dim, cfg.features.output_dim(fc.dim), fc)
    return CEData(feats, targets, train, valid, valid_feats, ali_model, int(ali_model.tm.num_pdfs))


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
    """The utterance ids of a (clean or simulated) chunk dataset; for shards, every utterance
    with targets (the priors then count all the alignments)."""
    if hasattr(dataset, "shards"):  # a ShardLoader: its utterances are known only when read
        return set(dataset.make_items.targets)
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
