"""Processed features of a data dir: raw feats -> CMVN -> add-deltas -> splice-feats, per utterance.

This is the Python form of Kaldi's feature pipe strings, e.g. ``apply-cmvn --utt2spk=...
scp:cmvn.scp scp:feats.scp ark:- | add-deltas ark:- ark:-`` for a monophone system::

    >>> feats = ProcessedFeatures("data/train", FeaturePipelineConfig(cmvn="speaker", delta_order=2))
    >>> feats["fash-an251-fash-b"].shape            # (T, 3 * F) float32
    >>> feats.dim

CMVN modes: ``none``; ``utterance`` (each utterance's own stats); ``speaker`` (DATADIR/cmvn.scp,
from ``pykaldi2 compute-cmvn``); ``global`` (the sum of all speakers' stats in cmvn.scp, i.e. the
stats of the whole data dir); ``sliding`` (apply-cmvn-sliding, needs no stats: for streaming).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pykaldi2.data.tables import read_table
from pykaldi2.features.cmvn import (
    SlidingCmnConfig,
    apply_cmvn,
    apply_cmvn_sliding,
    compute_cmvn_stats,
)
from pykaldi2.features.compute import load_cmvn
from pykaldi2.features.storage import open_features
from pykaldi2.features.transforms import add_deltas, splice_feats
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError, Pykaldi2Error

CMVN_MODES = ("none", "utterance", "speaker", "global", "sliding")


@dataclass
class FeaturePipelineConfig(ConfigMixin):
    """What to do to the raw features, in this order: CMVN, deltas, splicing."""

    cmvn: str = "speaker"
    norm_vars: bool = False
    sliding: SlidingCmnConfig = field(default_factory=SlidingCmnConfig)
    delta_order: int = 0
    delta_window: int = 2
    splice_left: int = 0
    splice_right: int = 0

    def __post_init__(self) -> None:
        self.build_sections()
        if self.cmvn not in CMVN_MODES:
            raise Pykaldi2Error(f"cmvn mode {self.cmvn!r} not in {', '.join(CMVN_MODES)}")
        if self.delta_order < 0 or self.delta_window < 1:
            raise Pykaldi2Error(f"need delta_order >= 0, delta_window >= 1: {self}")
        if self.splice_left < 0 or self.splice_right < 0:
            raise Pykaldi2Error(f"splice contexts must be >= 0: {self}")

    def output_dim(self, raw_dim: int) -> int:
        """Feature dimension after deltas and splicing of ``raw_dim``-dim features."""
        return raw_dim * (self.delta_order + 1) * (self.splice_left + 1 + self.splice_right)


class ProcessedFeatures(Mapping[str, np.ndarray]):
    """Dict-like ``utt -> (T, F') float32`` features of a data dir after the pipeline."""

    def __init__(
        self,
        datadir: str | os.PathLike,
        config: FeaturePipelineConfig | None = None,
        *,
        open_raw: bool = True,
    ):
        """``open_raw=False``: only :meth:`apply` is used (features computed elsewhere, e.g.
        on the fly by :mod:`pykaldi2.simulation.dataset`); DATADIR needs no feats.scp."""
        self.datadir = Path(datadir)
        self.config = config or FeaturePipelineConfig()
        self.raw = open_features(self.datadir) if open_raw else None
        self._utt2spk: dict[str, str] = {}
        self._stats: dict[str, np.ndarray] = {}
        if self.config.cmvn in ("speaker", "global"):
            self._stats = load_cmvn(self.datadir)
            if self.config.cmvn == "global":
                self._stats = {"": sum(self._stats.values())}
            else:
                self._utt2spk = read_table(self.datadir / "utt2spk")

    def apply(self, utt: str, feats: np.ndarray) -> np.ndarray:
        """Run the pipeline on raw (T, F) ``feats`` of ``utt`` (the utt picks speaker stats)."""
        cfg = self.config
        if cfg.cmvn == "utterance":
            feats = apply_cmvn(feats, compute_cmvn_stats(feats), cfg.norm_vars)
        elif cfg.cmvn in ("speaker", "global"):
            key = self._utt2spk.get(utt) if cfg.cmvn == "speaker" else ""
            if key not in self._stats:
                raise DataError(
                    f"no CMVN stats for speaker {key}",
                    file=str(self.datadir / "cmvn.scp"),
                    utt=utt,
                    fix="re-run `pykaldi2 compute-cmvn` after changing the data dir",
                )
            feats = apply_cmvn(feats, self._stats[key], cfg.norm_vars)
        elif cfg.cmvn == "sliding":
            feats = apply_cmvn_sliding(feats, cfg.sliding)
        if cfg.delta_order:
            feats = add_deltas(feats, cfg.delta_order, cfg.delta_window)
        if cfg.splice_left or cfg.splice_right:
            feats = splice_feats(feats, cfg.splice_left, cfg.splice_right)
        return np.asarray(feats, dtype=np.float32)

    def __getitem__(self, utt: str) -> np.ndarray:
        return self.apply(utt, self.raw[utt])

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __contains__(self, utt: object) -> bool:
        return utt in self.raw

    def num_frames(self, utt: str) -> int:
        """T of ``utt`` (cheap: from the archive header)."""
        return self.raw.shape(utt)[0]

    @property
    def dim(self) -> int:
        """Output feature dimension F'."""
        return self.config.output_dim(self.raw.dim)
