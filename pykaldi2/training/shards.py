"""Training straight from WebDataset shards: streamed, never unpacked (corpora too large to
unpack, Myrtle's ``--read_from_tar``).

Each sample (``<key>.flac|wav`` + ``<key>.txt``, :mod:`pykaldi2.data.manifests`) is decoded
and its features computed on the fly (``features``: a raw feature config, as
``conf/feats.json`` holds), then turned into training items by the criterion's function
(``make_items(key, raw_feats, text) -> [(key, x, y), ...]``: one token sequence for the RNN-T,
the chunks of an utterance for frame CE), shuffled in a buffer and batched by length.

Determinism and resume (the trainer's contract, :class:`~pykaldi2.training.trainer.Trainer`):
an epoch of a rank is exactly :meth:`ShardLoader.__len__` batches, the same on every rank. The
shard order is shuffled per epoch from ``(seed, epoch)``; rank r takes every ``world_size``-th
shard, and its shards are dealt to ``num_streams`` streams (``max(1, num_workers)``). Batch k of
the epoch comes from stream ``k % num_streams``; each stream is a seeded, deterministic
sequence of batches (it reads its shards again, reshuffled, if it runs out), so batch k is the
same whatever happened before: a run resumed at batch S (``load_state_dict``) skips S batches
and continues exactly. With DataLoader workers, worker w runs stream ``(w + S) %
num_streams``: the DataLoader's round-robin then yields batches S, S+1, ... in order.

The epoch length: ``ceil(samples of the rank's shards / batch_size)`` averaged over ranks
(shard sample counts are read from the tar headers once); a stream whose items run short
(filtered utterances, chunking) reads its shards again, a stream with more stops early.

Dimension legend: T frames, F feature dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pykaldi2.data.manifests import (
    count_shard_samples,
    decode_sample_audio,
    iter_shard_samples,
    list_shards,
)
from pykaldi2.utils.config import ConfigMixin, option
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

#: (key, raw features (T, F), transcript or None) -> training items (key, x, y)
MakeItems = Callable[[str, np.ndarray, str | None], list[tuple[str, np.ndarray, Any]]]


@dataclass
class ShardDataConfig(ConfigMixin):
    """``shards:`` of a training config (empty ``train``: train on data dirs).

    Attributes:
        train: WebDataset shards (paths or globs) of the training data.
        valid: shards of the validation data (read in order, once per validation).
        features: the raw feature config the audio is turned into, a
            :meth:`~pykaldi2.features.extractors.FrameConfig.to_dict` mapping (``feat_type``
            plus its fields, e.g. ``{feat_type: fbank, num_mel_bins: 80}``).
        shuffle_buffer: items shuffled together (then sorted by length into batches).
        stats_utts: utterances read for the global feature statistics when the front end needs
            them and no stats file is given (Myrtle's ``--n_utterances_only``).
    """

    train: list[str] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=lambda: {"feat_type": "fbank"})
    shuffle_buffer: int = option(512, ge=1)
    stats_utts: int = option(2000, ge=1)

    def __post_init__(self) -> None:
        self.train = [str(x) for x in ([self.train] if isinstance(self.train, str) else self.train)]
        self.valid = [str(x) for x in ([self.valid] if isinstance(self.valid, str) else self.valid)]

    @property
    def enabled(self) -> bool:
        return bool(self.train)

    def frame_config(self):
        from pykaldi2.features.extractors import config_from_dict

        return config_from_dict(dict(self.features))


def raw_features(shards: Sequence[str], frame_config) -> Iterator[tuple[str, np.ndarray, Any]]:
    """(key, raw features (T, F), transcript) of every sample of the shards, in order."""
    from pykaldi2.features.extractors import make_extractor

    extractor = make_extractor(frame_config)
    sr = int(frame_config.sample_frequency)
    for s in iter_shard_samples(shards):
        x, _ = decode_sample_audio(s, target_sr=sr)
        yield s.key, extractor.compute(x, sr), s.text


def shard_texts(shards: Sequence[str]) -> dict[str, str]:
    """key -> transcript of every sample (a sample without a ``.txt`` is an error)."""
    out: dict[str, str] = {}
    for s in iter_shard_samples(shards):
        if s.text is None:
            raise DataError(f"sample {s.key} has no transcript (.txt)", file=s.shard)
        if s.key in out:
            raise DataError(f"sample {s.key} comes twice", file=s.shard)
        out[s.key] = s.text
    return out


class _StreamDataset(torch.utils.data.IterableDataset):
    """The batches of one rank and epoch, stream by stream (see the module doc)."""

    def __init__(self, loader: ShardLoader, epoch: int, skip: int) -> None:
        self.loader, self.epoch, self.skip = loader, epoch, skip

    def __iter__(self):
        L = self.loader
        info = torch.utils.data.get_worker_info()
        if info is None:  # in-process: interleave the streams round-robin from batch skip
            gens = [L._stream(self.epoch, v, self.skip) for v in range(L.num_streams)]
            order = [(self.skip + i) % L.num_streams for i in range(L.num_streams)]
            live = [gens[v] for v in order]
            while live:
                nxt = []
                for g in live:
                    b = next(g, None)
                    if b is not None:
                        yield b
                        nxt.append(g)
                live = nxt
        else:
            yield from L._stream(self.epoch, (info.id + self.skip) % L.num_streams, self.skip)


class ShardLoader:
    """The training loader over shards (the trainer iterates it, calls ``set_epoch``,
    ``load_state_dict`` and ``len``); see the module doc.

    Args:
        shards: shard paths; make_items: the criterion's item function; collate: items ->
            batch; batch_size: items per batch; frame_config: raw features of the audio.
    """

    def __init__(
        self,
        shards: Sequence[str],
        make_items: MakeItems,
        collate: Callable,
        *,
        batch_size: int,
        frame_config,
        shuffle_buffer: int = 512,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        self.shards = list_shards(shards)
        if len(self.shards) < world_size:
            raise DataError(
                f"{len(self.shards)} shard(s) for {world_size} ranks", file=", ".join(shards),
                fix="write at least one shard per rank (better: several per DataLoader worker)",
            )  # fmt: skip
        self.counts = {s: count_shard_samples(s) for s in self.shards}
        if not sum(self.counts.values()):
            raise DataError("the shards hold no samples", file=", ".join(shards))
        self.make_items, self.collate = make_items, collate
        self.batch_size, self.shuffle_buffer = int(batch_size), int(shuffle_buffer)
        self.frame_config, self.seed = frame_config, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        per_rank = -(-len(self.shards) // world_size)
        self.num_streams = max(1, min(num_workers or 1, per_rank))
        self.epoch, self._skip = 0, 0

    # -- the trainer's sampler protocol -------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._skip = int(state["epoch"]), int(state["batches_done"])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": self._skip}

    def __len__(self) -> int:
        total = sum(self.counts.values())
        return max(1, math.ceil(total / (self.world_size * self.batch_size)))

    def __iter__(self):
        skip, self._skip = self._skip, 0
        ds = _StreamDataset(self, self.epoch, skip)
        if self.num_workers == 0:
            return iter(ds)
        return iter(
            torch.utils.data.DataLoader(
                ds, batch_size=None, num_workers=self.num_streams, persistent_workers=False
            )
        )

    # -- the streams ----------------------------------------------------------------------------
    def _my_shards(self, epoch: int, stream: int) -> list[str]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        mine = [self.shards[i] for i in order[self.rank :: self.world_size]]
        return mine[stream :: self.num_streams]

    def _stream_len(self, stream: int) -> int:
        n = len(self)
        return max(0, -(-(n - stream) // self.num_streams))

    def _stream(self, epoch: int, stream: int, skip: int) -> Iterator[Any]:
        """The batches of ``stream`` for global batch indices >= ``skip``."""
        want = self._stream_len(stream)
        done = max(0, -(-(skip - stream) // self.num_streams))  # its batches before skip
        k = 0
        for batch in self._stream_batches(epoch, stream):
            if k >= want:
                return
            if k >= done:
                yield self.collate(batch)
            k += 1

    def _stream_batches(self, epoch: int, stream: int) -> Iterator[list]:
        """Lists of items: the stream's shards read (again, reshuffled, as often as needed),
        items buffered, shuffled, sorted by length into batches in a shuffled order."""
        shards = self._my_shards(epoch, stream)
        rng = np.random.default_rng([self.seed, epoch, self.rank, stream, 7])
        buf: list = []
        for rnd in range(1 << 30):
            order = shards if rnd == 0 else [shards[i] for i in rng.permutation(len(shards))]
            produced = False
            for key, raw, text in raw_features(order, self.frame_config):
                for item in self.make_items(key, raw, text):
                    buf.append(item)
                    produced = True
                if len(buf) >= self.shuffle_buffer:
                    yield from self._flush(buf, rng, keep_partial=True)
            if not produced and not buf:
                raise DataError("no usable training items in the shards", file=", ".join(shards))
            yield from self._flush(buf, rng, keep_partial=False)

    def _flush(self, buf: list, rng, keep_partial: bool) -> Iterator[list]:
        items = [buf[i] for i in rng.permutation(len(buf))]
        items.sort(key=lambda it: len(it[1]))
        n = len(items) // self.batch_size if keep_partial else -(-len(items) // self.batch_size)
        batches = [items[i * self.batch_size : (i + 1) * self.batch_size] for i in range(n)]
        buf[:] = items[n * self.batch_size :]
        for i in rng.permutation(len(batches)):
            yield batches[i]


def valid_batches(shards, make_items, collate, batch_size: int, frame_config) -> list:
    """The validation batches of ``shards`` (every sample once, in order), collated."""
    items = [it for k, raw, t in raw_features(list_shards(shards), frame_config)
             for it in make_items(k, raw, t)]  # fmt: skip
    return [collate(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


class ShardFeatures:
    """What the model-dir writers read of a training set's features (``dim``, and the raw
    archive's dim and feature config: :func:`~pykaldi2.training.model_dir.feature_doc`), for
    features computed from shards instead of read from a data dir."""

    class _Raw:
        def __init__(self, dim: int, config: dict) -> None:
            self.dim, self._config = dim, config

        def metadata(self) -> dict:
            return {"feature_config": dict(self._config)}

    class _Part:
        def __init__(self, raw) -> None:
            self.raw = raw

    def __init__(self, raw_dim: int, dim: int, frame_config) -> None:
        self.dim = dim
        self.parts = [self._Part(self._Raw(raw_dim, frame_config.to_dict()))]
