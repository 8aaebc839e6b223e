"""Batch samplers for training: sharded over ranks, deterministic given a seed, resumable.

A sampler yields batches (lists of dataset indices). ``set_epoch(e)`` reshuffles
deterministically from ``(seed, e)``; every rank sees the same number of batches (the short
ranks wrap around), so collectives line up. ``state_dict()`` records how many batches of the
current epoch were consumed, and ``load_state_dict()`` makes the next iteration skip them: a
run resumed from a checkpoint sees exactly the batches it would have seen.

    >>> s = BucketBatchSampler(lengths, max_frames=20000, rank=r, world_size=n, seed=0)
    >>> s.set_epoch(epoch)
    >>> for batch in s: ...
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class BucketBatchSampler:
    """Batches of similar-length items, capped by a frame budget and/or an item count.

    Args:
        lengths: (num_items,) length of each item (frames); used for bucketing and budgets.
        max_frames: a batch's padded size ``len(batch) * max(length)`` stays within this
            (0: no frame cap). A single item longer than the cap forms a batch of its own.
        batch_size: at most this many items per batch (0: no item cap).
        shuffle: shuffle items within buckets and the order of batches each epoch.
        num_buckets: items are sorted by length and cut into this many buckets.
        rank, world_size: this process's shard.
        seed: base seed; epoch e uses ``(seed, e)``.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        max_frames: int = 0,
        batch_size: int = 0,
        shuffle: bool = True,
        num_buckets: int = 10,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        if max_frames <= 0 and batch_size <= 0:
            raise ValueError("BucketBatchSampler needs max_frames > 0 or batch_size > 0")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_frames, self.batch_size = max_frames, batch_size
        self.shuffle, self.num_buckets = shuffle, max(1, num_buckets)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0
        self._skip = 0  # batches of the current epoch already consumed (resume)
        self._consumed = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = np.argsort(self.lengths, kind="stable")
        buckets = np.array_split(order, min(self.num_buckets, max(1, len(order))))
        batches: list[list[int]] = []
        for bucket in buckets:
            items = rng.permutation(bucket) if self.shuffle else bucket
            cur: list[int] = []
            cur_max = 0
            for i in items.tolist():
                new_max = max(cur_max, int(self.lengths[i]))
                too_many = self.batch_size > 0 and len(cur) + 1 > self.batch_size
                too_big = self.max_frames > 0 and (len(cur) + 1) * new_max > self.max_frames
                if cur and (too_many or too_big):
                    batches.append(cur)
                    cur, new_max = [], int(self.lengths[i])
                cur.append(i)
                cur_max = new_max
            if cur:
                batches.append(cur)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _my_batches(self) -> list[list[int]]:
        batches = self._all_batches()
        if not batches:
            return []
        per_rank = -(-len(batches) // self.world_size)
        total = per_rank * self.world_size
        batches = batches + batches[: total - len(batches)]  # wrap so all ranks get per_rank
        return batches[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self._my_batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._my_batches()
        start, self._skip = self._skip, 0
        self._consumed = start
        for b in batches[start:]:
            self._consumed += 1
            yield b

    def state_dict(self) -> dict:
        """Position within the epoch: resume continues after the last yielded batch."""
        return {"epoch": self.epoch, "batches_done": self._consumed, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self._skip = int(state["batches_done"])
        self.seed = int(state.get("seed", self.seed))
