"""Denominator lattices (and alignments) generated on the fly from the current model.

Kaldi's lattice sequence training decodes the training data once with the CE model
(``make_denlats.sh``); PyKaldi2's ``train_se2`` regenerates lattices with the model being
trained. The generation itself -- the worker pool, the decoder, on-the-fly numerator
alignments -- is :mod:`pykaldi2.hmm.latgen` (torch-free, so its workers do not load torch);
its names are re-exported here. This module feeds it from training:
:class:`LatticePrefetcher` keeps the pool busy while the trainer works: when the trainer
receives batch k, the log-likelihoods of batch k+1 have just been computed (an extra no-grad
forward) by the model as it is *before* step k and sent to the workers. So the lattices a step
trains on come from the model before the previous step's update: one optimizer step stale. With
small sequence-training learning rates the difference is negligible; Kaldi's lattices are a
whole training run stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from pykaldi2.hmm.latgen import (
    LatticeGenConfig,
    LatticeGenerator,
    Ready,
    TrainGraphSource,
    generate_lattice,
    lattice_arrays,
    nnet_align_compiled,
)
from pykaldi2.utils.errors import Pykaldi2Error

__all__ = [
    "LatticeGenConfig",
    "LatticeGenerator",
    "LatticePrefetcher",
    "Ready",
    "TrainGraphSource",
    "attach_lattices",
    "generate_lattice",
    "lattice_arrays",
    "nnet_align_compiled",
]


class LatticePrefetcher:
    """Wrap a training loader so every batch arrives with ``batch["lattices"]`` filled.

    ``loglik_fn(batch) -> (N, T, C)`` computes the current model's log-likelihoods (called
    under ``torch.no_grad``, e.g. ``lambda b: task.log_likelihoods(model(b["feats"],
    b["lengths"]))``); batches need ``utt_ids`` and ``lengths``. Batches with ``words`` (N
    transcripts as word ids) get on-the-fly numerator alignments too
    (:func:`attach_lattices`). Batch k+1 is submitted to the
    generator before batch k is handed to the trainer, so generation overlaps training and
    the lattices are one optimizer step stale (see the module docstring). ``batch_sampler`` /
    ``sampler`` of the wrapped loader are exposed for the trainer's ``set_epoch`` and resume.
    """

    def __init__(
        self,
        loader: Iterable[dict],
        loglik_fn: Callable[[dict], torch.Tensor],
        generator: LatticeGenerator,
    ) -> None:
        self.loader, self.loglik_fn, self.generator = loader, loglik_fn, generator

    def __getattr__(self, name: str):
        if name in ("batch_sampler", "sampler", "dataset"):
            return getattr(self.loader, name)
        raise AttributeError(name)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def _submit(self, batch: dict):
        if "utt_ids" not in batch:
            raise Pykaldi2Error("LatticePrefetcher: batches must carry 'utt_ids'")
        with torch.no_grad():
            loglik = self.loglik_fn(batch)
        return self.generator.submit(
            batch["utt_ids"], loglik, batch["lengths"], words=batch.get("words")
        )

    def __iter__(self) -> Iterator[dict]:
        it = iter(self.loader)
        prev = next(it, None)
        if prev is None:
            return
        handle = self._submit(prev)
        for nxt in it:
            nxt_handle = self._submit(nxt)
            yield attach_lattices(prev, handle.get())
            prev, handle = nxt, nxt_handle
        yield attach_lattices(prev, handle.get())


def attach_lattices(batch: dict, result) -> dict:
    """The batch with the generator's ``result``: ``"lattices"``; with on-the-fly numerators
    (``result`` = (lattices, alis)) also ``"ali"`` (N, T) replaced by the new alignments where
    there is one (the stored alignment stays where ``alis[i]`` is None) and ``"ali_failed"``,
    the number of such fallbacks."""
    if not isinstance(result, tuple):
        return {**batch, "lattices": result}
    lattices, alis = result
    ali = batch["ali"].clone()
    failed = 0
    for i, a in enumerate(alis):
        if a is None:
            failed += 1
            continue
        ali[i] = 0
        ali[i, : len(a)] = torch.from_numpy(np.asarray(a, dtype=np.int64))
    return {**batch, "lattices": lattices, "ali": ali, "ali_failed": failed}
