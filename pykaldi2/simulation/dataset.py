"""Training datasets that simulate every utterance on the fly: audio -> Simulator -> features.

:class:`SimulatedUtteranceDataset` is the simulated twin of
:class:`pykaldi2.data.datasets.UtteranceDataset` and :class:`SimulatedChunkDataset` of
:class:`pykaldi2.data.datasets.ChunkDataset`: the same items, so
:func:`~pykaldi2.data.datasets.collate_frames`, the samplers and the training tasks work
unchanged. Per item:

1. the utterance's audio (:func:`~pykaldi2.data.audio.load_utterance`, honouring segments);
2. the simulation chain (:class:`~pykaldi2.simulation.simulator.Simulator`: speed, reverb with
   the direct path compensated, noise at an SNR, volume), with the generator
   ``utterance_rng(seed, epoch, 0, index)``;
3. features (:func:`~pykaldi2.features.extractors.make_extractor`; by default the config the
   data dir's clean features were computed with, DATADIR/conf/feats.json);
4. the feature pipeline (:class:`~pykaldi2.features.pipeline.FeaturePipelineConfig`: CMVN,
   deltas, splicing) exactly as :class:`~pykaldi2.features.pipeline.ProcessedFeatures` applies it
   to the clean features;
5. SpecAugment (``sim_config.specaug``), its generator seeded from ``(seed, epoch, 0, index, 1)``;
6. frame targets (pdf_ids, (T,)) mapped onto the simulated frames: with speed perturbation by
   :func:`~pykaldi2.simulation.perturb.rescale_ali`; otherwise padded/cut by at most the length
   tolerance, as the clean datasets do. Reverberation keeps them valid because the simulator cuts
   the direct-path delay. Label targets (token ids for transducers, ``target_type="labels"``)
   pass through unchanged.

**Feature normalisation.** ``pipeline.cmvn`` is applied to the *simulated* features:
``utterance`` (the default here: each simulated utterance's own mean, which also removes the
channel that reverberation adds) and ``sliding`` are computed on the simulated features;
``speaker``/``global`` apply the data dir's clean statistics from cmvn.scp (what a model trained
on clean features with that mode expects; noisy features then keep a small offset); ``none``
does nothing. With the simulation switched off the features equal the clean pipeline's output
for the same feature and pipeline configs.

**Reproducibility and workers.** The randomness of an item depends only on (seed, epoch,
dataset index), never on which worker loads it or how many workers there are (the worker id of
:func:`~pykaldi2.simulation.simulator.utterance_rng` is left at 0: the item index already gives
every worker's items their own streams, and a run resumed mid-epoch or with other
``num_workers`` sees the same data). The epoch reaches the workers in one of two ways:

* wrap the batch sampler in :class:`EpochBatchSampler`: the indices it yields carry the epoch
  (``(epoch, i)``), so persistent workers (``persistent_workers=True``) are fine and the
  trainer's ``batch_sampler.set_epoch(e)`` is all that is needed;
* or call ``dataset.set_epoch(e)`` before iterating (``num_workers=0`` or non-persistent
  workers, which copy the dataset at every ``iter(loader)``).

Both datasets pickle without their extractor, simulator data dirs and caches, which each worker
rebuilds (:func:`torch.utils.data.get_worker_info` names the worker in ``info``).

    >>> ds = SimulatedUtteranceDataset("data/train", sim_config=SimulationConfig.from_yaml(
    ...     "conf/sim.yaml"), targets=pdf_targets)
    >>> chunks = SimulatedChunkDataset(ds, chunk_size=80)
    >>> sampler = EpochBatchSampler(BucketBatchSampler([80] * len(chunks), batch_size=64))
    >>> loader = DataLoader(chunks, batch_sampler=sampler, collate_fn=collate_frames,
    ...                     num_workers=2, persistent_workers=True)

Dimension legend: T frames (after simulation), F feature dim.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pykaldi2.data.datadir import read_data_dir
from pykaldi2.data.datasets import IGNORE, _fit_length, chunk_starts, match_targets
from pykaldi2.features.extractors import FrameConfig, make_extractor
from pykaldi2.features.pipeline import FeaturePipelineConfig, ProcessedFeatures
from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.simulation.perturb import rescale_ali
from pykaldi2.simulation.simulator import Simulator, utterance_rng
from pykaldi2.simulation.specaug import spec_augment
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

TARGET_TYPES = ("frames", "labels")
#: Simulated utterances a chunk dataset keeps per process (chunks of one utterance share it).
CACHE_SIZE = 8


def _split_key(key: Any, default_epoch: int) -> tuple[int, int]:
    """A dataset key: ``i`` (the dataset's epoch) or ``(epoch, i)`` from :class:`EpochBatchSampler`."""
    if isinstance(key, tuple | list):
        epoch, i = key
        return int(epoch), int(i)
    return default_epoch, int(key)


@dataclass
class SimulatedUtterance:
    """One simulated utterance: feats (T, F) float32, targets (T,) int64 / (L,) labels / None,
    and the simulator's ``info`` (speed, shift, reverb, snr_db, ...; plus epoch and worker)."""

    utt: str
    feats: np.ndarray
    targets: np.ndarray | None
    info: dict


class SimulatedUtteranceDataset(torch.utils.data.Dataset):
    """Whole utterances simulated on the fly: item -> (utt, feats (T, F) float32, targets).

    Args:
        datadir: Kaldi data dir (wav.scp, utt2spk, optional segments).
        feature_config: fbank/MFCC config; None reads DATADIR/conf/feats.json (the config of the
            clean features, so simulated and clean features match).
        sim_config: the simulation chain; None or all stages disabled gives clean features.
        targets: ``utt -> (T,) int`` pdf_ids of the clean audio (``target_type="frames"``) or
            ``utt -> (L,) int`` label sequences (``"labels"``); None: items have no targets.
        pipeline: CMVN / deltas / splicing after feature extraction (see the module docstring);
            default per-utterance CMN.
        utts: the utterances (default: those of the data dir with targets, length-checked).
        seed: base seed (default ``sim_config.seed``).
        tolerance: allowed |clean frames - target frames| (frame targets).
        resample: resample audio whose rate differs from the feature config's (else an error).
        target_type: "frames" or "labels".
        feats_transform: applied last to the (T, F) features, after SpecAugment, e.g.
            ``functools.partial(stack_frames, stack=3, subsample=3)`` for a transducer front end
            (must pickle: a module-level function or a partial of one, not a lambda). Frame
            targets are matched to T before it; ``dim`` is the dimension before it.

    ``lengths`` holds the clean frame counts (from utt2num_frames, utt2dur or the targets), for
    length-bucketing samplers; speed perturbation changes them by the speed factor.
    """

    def __init__(
        self,
        datadir: str | os.PathLike,
        feature_config: FrameConfig | None = None,
        sim_config: SimulationConfig | None = None,
        targets: Mapping[str, np.ndarray] | None = None,
        pipeline: FeaturePipelineConfig | None = None,
        *,
        utts: Sequence[str] | None = None,
        seed: int | None = None,
        tolerance: int = 1,
        resample: bool = False,
        target_type: str = "frames",
        feats_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if target_type not in TARGET_TYPES:
            raise DataError(f"target_type must be one of {TARGET_TYPES}, got {target_type!r}")
        self.datadir = Path(datadir)
        self.data = read_data_dir(self.datadir)
        if feature_config is None:
            from pykaldi2.features.compute import load_feature_config

            feature_config = load_feature_config(self.datadir)
        self.feature_config = feature_config
        self.sim_config = sim_config or SimulationConfig()
        self.simulator = Simulator(self.sim_config)
        self.seed = self.sim_config.seed if seed is None else int(seed)
        self.pipeline = ProcessedFeatures(
            self.datadir, pipeline or FeaturePipelineConfig(cmvn="utterance"), open_raw=False
        )
        self.targets, self.target_type = targets, target_type
        self.tolerance, self.resample = tolerance, resample
        self.feats_transform = feats_transform
        self.sr = int(feature_config.sample_frequency)
        self.epoch = 0
        clean = self._clean_lengths()
        self.utts = list(utts) if utts is not None else self._default_utts(clean)
        unknown = [u for u in self.utts if u not in self.data.utt2spk]
        if unknown:
            raise DataError(
                f"{len(unknown)} utterance(s) not in the data dir, e.g. {unknown[0]}",
                file=str(self.datadir / "utt2spk"),
            )
        self.lengths = [int(clean.get(u, 0)) for u in self.utts]
        self._extractor = None

    # -- set-up -------------------------------------------------------------------------------
    def _clean_lengths(self) -> dict[str, int]:
        """Clean frame counts: utt2num_frames, else utt2dur, else frame targets' lengths."""
        if "utt2num_frames" in self.data.utt_tables:
            return {u: int(v) for u, v in self.data.utt_tables["utt2num_frames"].items()}
        if self.data.utt2dur is not None:
            cfg = self.feature_config
            return {u: cfg.num_frames(round(d * self.sr)) for u, d in self.data.utt2dur.items()}
        if self.targets is not None and self.target_type == "frames":
            return {u: len(t) for u, t in self.targets.items()}
        return {}

    def _default_utts(self, clean: dict[str, int]) -> list[str]:
        utts = self.data.utt_ids
        if self.targets is None:
            return utts
        if self.target_type == "frames" and all(u in clean for u in utts):
            lengths = {u: clean[u] for u in utts}
            return match_targets(
                lengths,
                self.targets,
                frame_lengths=lengths,
                tolerance=self.tolerance,
                source=str(self.datadir),
            ).utts
        kept = [u for u in utts if u in self.targets]
        if len(kept) < len(utts):
            log.warning(
                "%s: %d utterances without targets dropped", self.datadir, len(utts) - len(kept)
            )
        if not kept:
            raise DataError("no utterance of the data dir has targets", file=str(self.datadir))
        return kept

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_extractor"] = None  # kaldi-native-fbank options do not pickle; rebuilt per worker
        return state

    @property
    def extractor(self):
        if self._extractor is None:
            self._extractor = make_extractor(self.feature_config)
        return self._extractor

    @property
    def dim(self) -> int:
        """Output feature dimension F."""
        return self.pipeline.config.output_dim(self.feature_config.dim)

    def set_epoch(self, epoch: int) -> None:
        """The epoch used for plain integer keys (see the module docstring)."""
        self.epoch = int(epoch)

    # -- items --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.utts)

    def load_audio(self, utt: str) -> np.ndarray:
        """(n,) float32 int16-scaled samples of ``utt`` at the feature config's rate."""
        from pykaldi2.data.audio import load_utterance

        if self.resample:
            return load_utterance(self.data, utt, target_sr=self.sr)[0]
        return load_utterance(self.data, utt, expected_sr=self.sr)[0]

    def simulate(self, index: int, epoch: int | None = None) -> SimulatedUtterance:
        """Simulate utterance ``index`` for ``epoch`` (default: the dataset's epoch)."""
        epoch = self.epoch if epoch is None else int(epoch)
        utt = self.utts[index]
        res = self.simulator.simulate(
            self.load_audio(utt), self.sr, utterance_rng(self.seed, epoch, 0, index)
        )
        feats = self.extractor.compute(res.samples, self.sr)
        if len(feats) == 0:
            raise DataError(
                f"simulated audio of {len(res.samples)} samples gives no frames "
                f"(speed {res.info['speed']})",
                file=str(self.datadir / "wav.scp"),
                utt=utt,
                fix="remove utterances shorter than a frame from the data dir",
            )
        feats = self.pipeline.apply(utt, feats)
        spec_rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0, index, 1]))
        feats, res.info["specaug"] = spec_augment(feats, self.sim_config.specaug, spec_rng)
        wi = torch.utils.data.get_worker_info()
        res.info.update(epoch=epoch, index=index, worker_id=wi.id if wi is not None else None)
        targets = self._targets_for(utt, len(feats), res.info)
        if self.feats_transform is not None:
            feats = np.asarray(self.feats_transform(feats), dtype=np.float32)
        return SimulatedUtterance(utt, feats, targets, res.info)

    def _targets_for(self, utt: str, num_frames: int, info: dict) -> np.ndarray | None:
        if self.targets is None:
            return None
        y = np.asarray(self.targets[utt], dtype=np.int64)
        if self.target_type == "labels":
            return y
        if len(y) == 0:
            raise DataError("empty frame targets", utt=utt)
        if info["speed"] != 1.0:
            return rescale_ali(y, num_frames)
        if abs(len(y) - num_frames) > self.tolerance:
            raise DataError(
                f"{num_frames} feature frames vs {len(y)} frame targets",
                file=str(self.datadir),
                utt=utt,
                fix="use the feature config the alignments were made with "
                "(feature_config=None reads DATADIR/conf/feats.json)",
            )
        return _fit_length(y, num_frames)

    def __getitem__(self, key):
        epoch, i = _split_key(key, self.epoch)
        s = self.simulate(i, epoch)
        return s.utt, s.feats, s.targets


class SimulatedChunkDataset(torch.utils.data.Dataset):
    """Fixed-size chunks of simulated utterances, items as :class:`~pykaldi2.data.datasets.ChunkDataset`.

    Item -> (utt, feats (left + chunk_size + right, F), targets (chunk_size,)). The chunk list
    is fixed from the clean lengths (``utterances.lengths``: every ``chunk_size`` frames, the last
    one shifted back to the end, as ChunkDataset does), so the sampler sees the same number of
    items each epoch. Under speed perturbation (T' = T / factor frames) chunk starts move in
    relative time, ``start' = min(round(start * T' / T), T' - chunk_size)``: the chunks then
    overlap (faster) or leave small gaps (slower). Short utterances give one chunk padded with
    IGNORE targets; context past the edges repeats the first/last frame.

    All chunks of an utterance in one epoch come from the same simulation (seeded by the
    utterance's index). A batch (``__getitems__``) simulates each of its utterances once, and
    each process keeps the last ``CACHE_SIZE`` simulated utterances; chunks of one utterance
    scattered over many batches are simulated again each time, which costs about
    chunks-per-utterance times the simulation of the utterance (see bench/simulation.py).
    """

    def __init__(
        self,
        utterances: SimulatedUtteranceDataset,
        chunk_size: int = 80,
        left: int = 0,
        right: int = 0,
    ) -> None:
        if chunk_size <= 0 or left < 0 or right < 0:
            raise ValueError("SimulatedChunkDataset: chunk_size > 0 and left/right >= 0 required")
        if utterances.targets is None or utterances.target_type != "frames":
            raise DataError("SimulatedChunkDataset needs frame targets (pdf_ids per frame)")
        if not all(utterances.lengths):
            raise DataError(
                "clean frame counts unknown for some utterances",
                file=str(utterances.datadir),
                fix="compute features (utt2num_frames) or utt2dur for the data dir",
            )
        self.utterances = utterances
        self.chunk_size, self.left, self.right = chunk_size, left, right
        self.chunks: list[tuple[int, int, int]] = []  # (utt index, start, clean num_frames)
        for i, n in enumerate(utterances.lengths):
            self.chunks.extend((i, s, n) for s in chunk_starts(n, chunk_size))
        self._cache: OrderedDict = OrderedDict()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def set_epoch(self, epoch: int) -> None:
        self.utterances.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.utterances.epoch

    @property
    def dim(self) -> int:
        return self.utterances.dim

    def __len__(self) -> int:
        return len(self.chunks)

    def _utterance(self, epoch: int, index: int) -> SimulatedUtterance:
        key = (epoch, index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        s = self.utterances.simulate(index, epoch)
        self._cache[key] = s
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return s

    def __getitem__(self, key):
        epoch, i = _split_key(key, self.epoch)
        index, start, n = self.chunks[i]
        s = self._utterance(epoch, index)
        t, c = len(s.feats), self.chunk_size
        if t != n:
            start = min(int(round(start * t / n)), max(t - c, 0))
        idx = np.clip(np.arange(start - self.left, start + c + self.right), 0, t - 1)
        tgt = np.full(c, IGNORE, dtype=np.int64)
        m = min(c, t - start)
        tgt[:m] = s.targets[start : start + m]
        return s.utt, s.feats[idx], tgt

    def __getitems__(self, keys: list) -> list:
        """A whole batch (DataLoader's batched fetch): each utterance simulated once."""
        return [self[k] for k in keys]


class EpochBatchSampler:
    """Wraps a batch sampler so its batches carry the epoch: ``[i, ...] -> [(epoch, i), ...]``.

    ``set_epoch``, ``state_dict``, ``load_state_dict`` and ``len`` go to the wrapped sampler
    (e.g. :class:`~pykaldi2.data.samplers.BucketBatchSampler`), whose ``epoch`` is the one
    attached, so the trainer's resume logic is unchanged and persistent DataLoader workers
    simulate each epoch afresh.
    """

    def __init__(self, batch_sampler) -> None:
        self.batch_sampler = batch_sampler
        self._epoch = 0

    @property
    def epoch(self) -> int:
        return int(getattr(self.batch_sampler, "epoch", self._epoch))

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batch_sampler:
            e = self.epoch
            yield [(e, int(i)) for i in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)
