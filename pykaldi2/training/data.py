"""The data layer every criterion shares: features, alignment targets, the validation split.

- :class:`DataDirFeatures`: the processed features of one or more data dirs as one
  ``utt -> (T, F)`` mapping (CMVN / deltas / splicing of
  :class:`~pykaldi2.features.pipeline.ProcessedFeatures`);
- alignment dirs (``final.mdl`` + ``ali.scp`` / ``ali.ark`` / ``ali.*.gz``, ours or Kaldi's):
  :func:`load_alignments` (transition_ids), :func:`load_pdf_targets` (``ali-to-pdf``);
- :func:`checked_utts` (the utterances whose targets fit their features), :func:`held_out_split`;
- on-the-fly simulation: :func:`simulated_utterances`, :func:`epoch_batches`.

Each criterion's training examples are built on these in its own ``*_egs`` module (as Kaldi's
NnetExample / NnetChainExample / NnetDiscriminativeExample): :mod:`.ce_egs` (frame-target
chunks), :mod:`.chain_egs` (numerator supervision), :mod:`.se_egs` (whole utterances with
numerator alignments), :mod:`.transducer_egs` (token sequences).

Dimension legend: T frames, F feature dim.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from pykaldi2.features.pipeline import FeaturePipelineConfig, ProcessedFeatures
from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.utils.errors import DataError

# ---------------------------------------------------------------------------------------------
# Features
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


# ---------------------------------------------------------------------------------------------
# Targets: alignment dirs
# ---------------------------------------------------------------------------------------------
def load_pdf_targets(ali_dirs: Sequence[str | os.PathLike]) -> tuple[dict[str, np.ndarray], Any]:
    """``ali-to-pdf`` of every alignment in ``ali_dirs``: ({utt: (T,) int32 pdf_ids}, model).

    Each dir is ours or Kaldi's (:mod:`pykaldi2.hmm.exp_dir`): ``final.mdl`` + ``tree`` and
    ``ali.scp``, ``ali.ark`` or Kaldi's ``ali.1.gz .. ali.N.gz``. All dirs must come from the
    same transition model; transition_ids out of its range are an error naming the utterance.
    """
    from pykaldi2.hmm.ali import ali_to_pdf

    alis, model = load_alignments(ali_dirs)
    return {u: ali_to_pdf(model, a).astype(np.int32) for u, a in alis.items()}, model


def load_alignments(ali_dirs: Sequence[str | os.PathLike]) -> tuple[dict[str, np.ndarray], Any]:
    """Transition-id alignments of every dir (ours or Kaldi's): ({utt: (T,) int32}, the
    GmmModel that made them).

    All dirs must share the model; empty or out-of-range alignments are an error naming the
    utterance (:func:`pykaldi2.hmm.exp_dir.read_ali_dirs`).
    """
    from pykaldi2.hmm.exp_dir import read_ali_dirs

    return read_ali_dirs(ali_dirs)


# ---------------------------------------------------------------------------------------------
# Utterance selection and the validation split
# ---------------------------------------------------------------------------------------------
def checked_utts(feats, targets, cfg, source: str) -> list[str]:
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


def held_out_split(utts: Sequence[str], fraction: float, seed: int) -> tuple[list, list]:
    """(train, valid) utterance lists: a seeded random ``fraction`` of ``utts`` held out."""
    utts = sorted(utts)
    k = int(round(fraction * len(utts)))
    if fraction > 0 and len(utts) > 1:
        k = min(max(k, 1), len(utts) - 1)
    perm = np.random.default_rng([seed, 1]).permutation(len(utts))
    valid = {utts[i] for i in perm[:k]}
    return [u for u in utts if u not in valid], sorted(valid)


# ---------------------------------------------------------------------------------------------
# On-the-fly simulation
# ---------------------------------------------------------------------------------------------
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
