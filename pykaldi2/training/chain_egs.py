"""LF-MMI training examples (Kaldi's NnetChainExample): input frames with numerator graphs.

``train-chain``'s data: the alignments of the training data dirs give the chain transition
model, the phone LM, den.fst and the normalization FST, and per utterance the numerator
supervision of whole utterances or Kaldi-style chunks (:mod:`pykaldi2.hmm.chain`);
:class:`ChainDataset` serves them with their input frames (:class:`SimulatedChainDataset`: the
input simulated on the fly). ``cfg`` is a :class:`~pykaldi2.training.chain.TrainChainConfig`.

Dimension legend: N examples, T input frames, F feature dim.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pykaldi2.hmm.chain import chunk_ranges, chunk_supervision
from pykaldi2.training.data import DataDirFeatures, simulated_utterances
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)


class ChainDataset:
    """Training examples: whole utterances or fixed-size chunks of them (Kaldi's chain egs).

    Item ``i`` is ``(key, feats (T_in, F) float32, numerator ChainGraph, num_out)``: the input
    frames ``[factor * begin - left, factor * end + right)`` of the utterance (edge frames
    repeated outside it, so all full-size chunks have the same length; features cut or padded
    to the alignment's length) and the numerator of the output frames ``[begin, end)``;
    ``num_out = end - begin``; ``key`` is ``utt`` or ``utt:begin``.
    """

    def __init__(
        self, feats, graphs: Mapping[str, Any], frames: Mapping[str, int], examples,
        factor: int, left: int = 0, right: int = 0,
    ) -> None:  # fmt: skip
        self.feats, self.graphs, self.frames = feats, graphs, frames
        #: (utt, begin, end) in output frames, sorted
        self.examples = sorted(examples)
        self.factor, self.left, self.right = int(factor), int(left), int(right)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def utts(self) -> list[str]:
        return sorted({u for u, _, _ in self.examples})

    @property
    def lengths(self) -> list[int]:
        """Input frames of each example (for length bucketing)."""
        return [self.left + self.factor * (e - b) + self.right for _, b, e in self.examples]

    def __getitem__(self, i: int):
        utt, begin, end = self.examples[i]
        x = np.asarray(self.feats[utt], dtype=np.float32)
        n = int(self.frames[utt])
        # every chunk of an utterance has the same input length (the last frame repeats past
        # the end): a batch of equal lengths keeps the LSTMs on their fast (unpacked) path
        lo, hi = self.factor * begin - self.left, self.factor * end + self.right
        idx = np.clip(np.arange(lo, hi), 0, min(n, len(x)) - 1)
        key = utt if (begin, end) == (0, -(-n // self.factor)) else f"{utt}:{begin}"
        return key, x[idx], self.graphs[(utt, begin)], end - begin


def collate_chain(items) -> dict[str, Any]:
    """List of (key, feats (T_i, F), ChainGraph, num_out) -> ``{"utts", "feats" (N, T, F)
    zero-padded, "lengths" (N,) input frames, "out_lengths" (N,) supervised output frames,
    "num_graphs" NumeratorGraphs}``."""
    import torch

    from pykaldi2.lang.chain_supervision import NumeratorGraphs

    lengths = torch.tensor([len(it[1]) for it in items], dtype=torch.int64)
    feats = torch.zeros(len(items), int(lengths.max()), items[0][1].shape[1])
    for i, it in enumerate(items):
        feats[i, : len(it[1])] = torch.as_tensor(np.array(it[1]))
    return {
        "utts": [it[0] for it in items],
        "feats": feats,
        "lengths": lengths,
        "out_lengths": torch.tensor([it[3] for it in items], dtype=torch.int64),
        "num_graphs": NumeratorGraphs.from_graphs([it[2] for it in items]),
    }


@dataclass
class ChainData:
    """Everything the chain training loop reads."""

    feats: Any  # DataDirFeatures
    train: ChainDataset
    valid: ChainDataset | None
    chain_model: Any  # GmmModel: chain transition model + tree (no GMMs)
    phone_lm: Any
    den_fst: Any
    den_graph: Any  # DenGraph
    norm_fst: Any
    ali_model: Any = None  # GmmModel that made the alignments (its tree is the chain tree)

    @property
    def num_pdfs(self) -> int:
        return int(self.chain_model.tm.num_pdfs)


def load_chain_data(cfg) -> ChainData:
    """Features, chain transition model, den graph and per-chunk supervision in memory: the
    path of configs without ``egs.chunk_widths`` (``chunk_size`` chunks, whole utterances,
    on-the-fly simulation). The alignments are streamed twice (the phone LM,
    :func:`~pykaldi2.training.chain_data.chain_utterances`; then the supervision, one
    utterance at a time); what stays is each chunk's numerator graph, which training reads
    every epoch (for a large corpus: ``egs.chunk_widths``, the graphs on disk)."""
    from pykaldi2.training.chain_data import chain_utterances, iter_phone_segments

    feats = DataDirFeatures(cfg.train_data, cfg.features)
    cu = chain_utterances(cfg, feats)
    frames, chain_model, norm = cu.frames, cu.chain_model, cu.norm_fst
    sup_opts = cfg.supervision_options()
    f = cfg.frame_subsampling_factor
    graphs, examples, failed = {}, {}, []
    segments = iter_phone_segments(cfg.ali_dir, cu.ali_model, frames)
    for utt, phones, durations in progress(segments, desc="chain-get-supervision", unit="utt",
                                           total=len(frames)):  # fmt: skip
        ranges = chunk_ranges(-(-frames[utt] // f), cfg.chunk_size // f)
        try:
            parts = chunk_supervision(phones, durations, chain_model, norm, sup_opts, ranges, utt)
        except DataError as e:
            failed.append(utt)
            log.warning("dropping %s: %s", utt, e)
            continue
        for (b, _), g in zip(ranges, parts):
            graphs[(utt, b)] = g
        examples[utt] = [(utt, b, e) for b, e in ranges]
    if len(failed) > cfg.max_missing_fraction * len(frames):
        raise DataError(
            f"no numerator supervision for {len(failed)} of {len(frames)} utterances "
            f"(e.g. {failed[:3]})",
            file=", ".join(cfg.ali_dir),
            fix="raise left_tolerance/right_tolerance or lower frame_subsampling_factor",
        )
    ctx = (cfg.chunk_left_context, cfg.chunk_right_context) if cfg.chunk_size else (0, 0)

    def dataset(us):
        ex = [x for u in us if u in examples for x in examples[u]]
        return ChainDataset(feats, graphs, frames, ex, f, *ctx) if ex else None

    train, valid = dataset(cu.train), dataset(cu.valid)
    if train is None:
        raise DataError("no training utterance left", file=", ".join(cfg.ali_dir))
    if cfg.simulation is not None:
        train = simulated_chain_dataset(cfg, train, feats.dim)
    return ChainData(feats, train, valid, chain_model, cu.phone_lm, cu.den_fst, cu.den_graph,
                     norm, cu.ali_model)  # fmt: skip


def make_chain_loader(dataset: ChainDataset, cfg, *, rank, world_size, shuffle):
    """A DataLoader over whole utterances, bucketed by length (resumable sampler)."""
    import torch

    from pykaldi2.data.samplers import BucketBatchSampler

    sampler = BucketBatchSampler(
        dataset.lengths,
        batch_size=cfg.batch_size,
        max_frames=cfg.max_frames,
        shuffle=shuffle,
        rank=rank,
        world_size=world_size,
        seed=cfg.seed,
    )
    kw: dict[str, Any] = {"persistent_workers": True} if cfg.num_workers > 0 else {}
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=chain_batches(sampler, dataset),
        collate_fn=collate_chain,
        num_workers=cfg.num_workers,
        **kw,
    )


# ---------------------------------------------------------------------------------------------
# On-the-fly simulation
# ---------------------------------------------------------------------------------------------
class SimulatedChainFeatures:
    """``utt -> (T, F)`` float32 features of ``utt`` simulated for the current ``epoch`` (the
    feature source of :class:`SimulatedChainDataset`).

    The simulation is seeded by the utterance's index in ``utterances.utts`` (never by the chunk
    index), so every chunk of an utterance in one epoch cuts its window from the same simulated
    audio; each process keeps the last ``CACHE_SIZE`` simulated utterances. The frame count must
    stay within ``tolerance`` of ``frames[utt]`` (the numerator's input frames).
    """

    def __init__(self, utterances, frames: Mapping[str, int], tolerance: int = 1) -> None:
        from collections import OrderedDict

        self.utterances, self.frames, self.tolerance = utterances, frames, int(tolerance)
        self.index = {u: i for i, u in enumerate(utterances.utts)}
        self.epoch = 0
        self._cache: OrderedDict = OrderedDict()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": type(self._cache)()}

    def __getitem__(self, utt: str) -> np.ndarray:
        from pykaldi2.simulation.dataset import CACHE_SIZE

        key = (self.epoch, self.index[utt])
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        x = self.utterances.simulate(key[1], key[0]).feats
        if abs(len(x) - int(self.frames[utt])) > self.tolerance:
            raise DataError(
                f"{len(x)} simulated feature frames vs {self.frames[utt]} alignment frames",
                file=str(self.utterances.datadir / "conf" / "feats.json"), utt=utt,
                fix="compute the data dir's features with the config in conf/feats.json",
            )  # fmt: skip
        self._cache[key] = x
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return x


class SimulatedChainDataset(ChainDataset):
    """:class:`ChainDataset` whose input features are simulated on the fly
    (:class:`SimulatedChainFeatures`) around the same precomputed numerators.

    Keys are example indices ``i`` (the dataset's ``epoch``, :meth:`set_epoch`) or ``(epoch, i)``
    from an :class:`~pykaldi2.simulation.dataset.EpochBatchSampler`: the simulation of an
    example depends only on (seed, epoch, utterance index), not on the worker or on resumes.
    """

    def __init__(self, base: ChainDataset, feats: SimulatedChainFeatures) -> None:
        super().__init__(
            feats, base.graphs, base.frames, base.examples, base.factor, base.left, base.right
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, key):
        from pykaldi2.simulation.dataset import _split_key

        self.feats.epoch, i = _split_key(key, self.epoch)
        return super().__getitem__(i)


def simulated_chain_dataset(cfg, train: ChainDataset, dim: int):
    """``train`` with its features simulated on the fly (``cfg.simulation``) from the audio of
    ``cfg.train_data`` through ``cfg.features``, checked to have dimension ``dim``."""

    utt_ds = simulated_utterances(
        cfg.train_data, cfg.simulation, None, cfg.features, dim, utts=train.utts
    )
    log.info("train-chain: training features simulated on the fly from %s", utt_ds.datadir)
    return SimulatedChainDataset(
        train, SimulatedChainFeatures(utt_ds, train.frames, cfg.length_tolerance)
    )


def chain_batches(sampler, dataset):
    """``sampler``, wrapped in an :class:`~pykaldi2.simulation.dataset.EpochBatchSampler` when
    ``dataset`` simulates on the fly (its keys then carry the epoch to the workers)."""
    from pykaldi2.simulation.dataset import EpochBatchSampler

    return EpochBatchSampler(sampler) if isinstance(dataset, SimulatedChainDataset) else sampler


# ---------------------------------------------------------------------------------------------
# Examples from an egs dir (chain-get-egs): streamed archive by archive
# ---------------------------------------------------------------------------------------------
class EgsDataset:
    """The examples of an egs dir, keyed ``(archive, index)`` (``archive`` -1: valid.npz).

    Item: ``(key, feats (T, F) float32, numerator ChainGraph, num_out)`` as
    :class:`ChainDataset`'s (``feats`` carry the model's context plus ``extra_context`` on
    each side). One archive is kept in memory per process (batches come archive by archive).
    """

    def __init__(self, info) -> None:
        self.info = info
        self._cached: tuple[int, Any] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cached": None}

    def _archive(self, k: int):
        from pykaldi2.training.egs_archive import EgsArchive

        if self._cached is None or self._cached[0] != k:
            path = self.info.valid_archive if k < 0 else self.info.archive(k)
            self._cached = (k, EgsArchive(path))
        return self._cached[1]

    def __getitem__(self, key):
        k, i = key
        ex = self._archive(int(k))[int(i)]
        return ex.key, ex.feats.astype(np.float32), ex.graph(self.info.num_pdfs), ex.num_out


def archive_num_out(path) -> np.ndarray:
    """(N,) output frames of each example of an archive (reads that one array only)."""
    with np.load(path, allow_pickle=False) as z:
        return np.asarray(z["num_out"])


class EgsBatchSampler:
    """Minibatches of ``batch_size`` chunks of one width from one archive at a time (Kaldi's
    nnet3-chain-merge-egs): each epoch the archives are visited in a seeded random order, rank
    ``r`` of ``W`` taking every ``W``-th; the chunks of an archive are grouped by width,
    shuffled and cut into batches (a last batch smaller than half of ``batch_size`` is
    dropped, unless it is the width's only one), and the archive's batches are shuffled. Every rank gets the same number of
    batches per epoch (the smallest rank's), so their all-reduces stay in step. Resumable:
    ``load_state_dict({"epoch", "batches_done"})`` skips the batches already consumed.
    """

    def __init__(
        self, num_out: list[np.ndarray], batch_size: int, *, rank: int = 0, world_size: int = 1,
        seed: int = 0, shuffle: bool = True, archive_ids: list[int] | None = None,
        equalize: bool = True,
    ) -> None:  # fmt: skip
        self.num_out, self.batch_size = num_out, int(batch_size)
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.archive_ids = archive_ids if archive_ids is not None else list(range(len(num_out)))
        self.equalize = equalize
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.skip = int(epoch), 0

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.skip = int(state["epoch"]), int(state["batches_done"])

    def _archive_batches(self, pos: int) -> list[list[tuple[int, int]]]:
        k = self.archive_ids[pos]
        rng = np.random.default_rng([self.seed, self.epoch, pos, 11])
        widths = self.num_out[pos]
        out = []
        for w in np.unique(widths):
            idx = np.flatnonzero(widths == w)
            if self.shuffle:
                idx = rng.permutation(idx)
            for b in range(0, len(idx), self.batch_size):
                part = idx[b : b + self.batch_size]
                if len(part) * 2 >= self.batch_size or len(idx) < self.batch_size:
                    out.append([(k, int(i)) for i in part])
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def _rank_batches(self, rank: int) -> list[list[tuple[int, int]]]:
        order = np.arange(len(self.num_out))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 5]).permutation(order)
        batches = []
        for pos in order[rank :: self.world_size]:
            batches += self._archive_batches(int(pos))
        return batches

    def _counts(self) -> int:
        return min(len(self._rank_batches(r)) for r in range(self.world_size))

    def __len__(self) -> int:
        if not self.equalize:
            return len(self._rank_batches(self.rank))
        return self._counts()

    def __iter__(self):
        batches = self._rank_batches(self.rank)
        if self.equalize:
            batches = batches[: self._counts()]
        yield from batches[self.skip :]


def make_egs_loaders(info, cfg, *, rank: int, world_size: int):
    """(train loader, valid loader or None) over an egs dir; ``cfg.batch_size`` chunks per
    batch (per rank)."""
    import torch

    ds = EgsDataset(info)
    num_out = [archive_num_out(info.archive(k)) for k in range(info.num_archives)]
    if world_size > info.num_archives:
        raise DataError(
            f"{world_size} ranks but the egs dir has {info.num_archives} archives",
            file=str(info.dir), fix="raise egs.min_archives to a multiple of the ranks",
        )  # fmt: skip
    sampler = EgsBatchSampler(num_out, cfg.batch_size, rank=rank, world_size=world_size,
                              seed=cfg.seed)  # fmt: skip
    kw: dict[str, Any] = {"persistent_workers": True} if cfg.num_workers > 0 else {}
    train = torch.utils.data.DataLoader(
        ds, batch_sampler=sampler, collate_fn=collate_chain, num_workers=cfg.num_workers, **kw
    )
    valid = None
    if info.num_valid_chunks:
        vs = EgsBatchSampler([archive_num_out(info.valid_archive)], cfg.batch_size, rank=rank,
                             world_size=1, shuffle=False, archive_ids=[-1], equalize=False)  # fmt: skip
        if world_size > 1:
            vs = _Strided(vs, rank, world_size)
        valid = torch.utils.data.DataLoader(ds, batch_sampler=vs, collate_fn=collate_chain)
    return train, valid


class _Strided:
    """Every ``world``-th batch of ``sampler`` from ``rank`` on (validation shares)."""

    def __init__(self, sampler, rank: int, world: int) -> None:
        self.sampler, self.rank, self.world = sampler, rank, world

    def __iter__(self):
        for i, b in enumerate(self.sampler):
            if i % self.world == self.rank:
                yield b

    def __len__(self) -> int:
        return len(range(self.rank, len(self.sampler), self.world))
