"""A pool of recordings from a Kaldi data dir (noises, babble speech, measured RIRs).

Audio is read on demand with :func:`pykaldi2.data.audio.load_utterance`, resampled to the
simulation rate, and kept in a small LRU cache (noise pools are reused across utterances).

    >>> pool = AudioPool("data/musan_noise", sr=16000)
    >>> utt = pool.choice(rng)
    >>> x = pool.load(utt)           # (num_samples,) float32, int16-scaled
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from pykaldi2.data.audio import load_utterance
from pykaldi2.data.datadir import read_data_dir
from pykaldi2.utils.errors import DataError


class AudioPool:
    """Recordings of one data dir at sample rate ``sr``; ``group`` of an utterance is its speaker
    column (for a RIR dir: the room id)."""

    def __init__(self, path: str | os.PathLike, sr: int, cache_size: int = 64) -> None:
        self.path = os.fspath(path)
        self.sr = int(sr)
        self.data = read_data_dir(path)
        self.utt_ids = self.data.utt_ids
        if not self.utt_ids:
            raise DataError("no recordings in this data dir", file=self.path)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = int(cache_size)

    def __len__(self) -> int:
        return len(self.utt_ids)

    def choice(self, rng: np.random.Generator, among: list[str] | None = None) -> str:
        """A uniformly drawn utterance id (of ``among`` when given)."""
        ids = self.utt_ids if among is None else among
        return ids[int(rng.integers(len(ids)))]

    def group(self, utt: str) -> str:
        return self.data.utt2spk[utt]

    def members(self, group: str) -> list[str]:
        return self.data.spk2utt.get(group, [])

    def load(self, utt: str) -> np.ndarray:
        """Samples of ``utt`` at ``self.sr``, (num_samples,) float32 (read-only, cached)."""
        x = self._cache.get(utt)
        if x is not None:
            self._cache.move_to_end(utt)
            return x
        x, _ = load_utterance(self.data, utt, target_sr=self.sr)
        if x.size == 0 or not np.any(x):
            raise DataError("recording is empty or silent", file=self.path, utt=utt)
        x = np.ascontiguousarray(x, dtype=np.float32)
        x.flags.writeable = False
        self._cache[utt] = x
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return x
