"""The data layer every criterion shares: features, alignment targets, the validation split.

- :class:`DataDirFeatures`: the processed features of one or more data dirs as one
  ``utt -> (T, F)`` mapping (CMVN / deltas / splicing of
  :class:`~pykaldi2.features.pipeline.ProcessedFeatures`);
- alignment dirs (``final.mdl`` + ``ali.scp`` / ``ali.ark`` / ``ali.*.gz``, ours or Kaldi's) as
  targets on disk: :func:`alignment_store` (transition_ids, or ``ali-to-pdf``'s pdf_ids) writes
  them once, streamed, into a memory-mapped :class:`~pykaldi2.data.vector_store.VectorStore`
  in the exp dir's ``egs/`` (as Kaldi's training reads targets from archives per example), so
  neither the trainer nor a DataLoader worker holds a corpus of them; :func:`shared_store` does
  that for any per-utterance vectors (transcripts, token ids). :func:`load_alignments` and
  :func:`load_pdf_targets` read the same into dicts (small corpora);
- :func:`checked_utts` (the utterances whose targets fit their features), :func:`held_out_split`;
- on-the-fly simulation: :func:`simulated_utterances`, :func:`epoch_batches`.

Each criterion's training examples are built on these in its own ``*_egs`` module (as Kaldi's
NnetExample / NnetChainExample / NnetDiscriminativeExample): :mod:`.ce_egs` (frame-target
chunks), :mod:`.chain_egs` (numerator supervision), :mod:`.se_egs` (whole utterances with
numerator alignments), :mod:`.transducer_egs` (token sequences).

Dimension legend: T frames, F feature dim.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.data.vector_store import VectorStore, VectorStoreWriter, read_store_meta
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
# Targets on disk: vector stores in the exp dir's egs/
# ---------------------------------------------------------------------------------------------
def egs_path(egs_dir: str | os.PathLike | None) -> Path:
    """``egs_dir`` (made if needed), or when None a temp dir of this process, removed at its
    exit (callers without an exp dir: tests, notebooks)."""
    global _TEMP_EGS
    if egs_dir is not None:
        Path(egs_dir).mkdir(parents=True, exist_ok=True)
        return Path(egs_dir)
    if _TEMP_EGS is None or _TEMP_EGS[0] != os.getpid():
        path = Path(tempfile.mkdtemp(prefix="pykaldi2-egs-"))
        pid = os.getpid()
        atexit.register(lambda: os.getpid() == pid and shutil.rmtree(path, ignore_errors=True))
        _TEMP_EGS = (pid, path)
    return _TEMP_EGS[1]


_TEMP_EGS: tuple[int, Path] | None = None


def file_fingerprint(paths: Iterable[str | os.PathLike]) -> list[list]:
    """``[resolved path, size, mtime_ns]`` of each file: what a store made from them records,
    so that a changed input makes it stale."""
    out = []
    for p in map(Path, paths):
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out


def shared_store(
    path: str | os.PathLike,
    source: Any,
    build: Callable[[VectorStoreWriter], None],
    dist=None,
    dtype: Any = np.int32,
) -> VectorStore:
    """The :class:`VectorStore` at ``path``: written by ``build(writer)`` on rank 0 unless a
    finished store made from the same ``source`` (JSON) is there already (a resumed run reuses
    it); the other ranks wait for it (``dist``: a :class:`~pykaldi2.training.distributed.Dist`,
    None for one process) and all map the same files. If rank 0 fails, its launcher (torchrun,
    horovodrun) stops the others."""
    source = json.loads(json.dumps(source))
    if dist is None or dist.is_main:
        meta = read_store_meta(path)
        if meta is None or meta.get("source") != source:
            with VectorStoreWriter(path, dtype, source) as w:
                build(w)
    if dist is not None:
        dist.barrier()
    return VectorStore(path)


def alignment_store(
    ali_dirs: Sequence[str | os.PathLike],
    path: str | os.PathLike,
    *,
    to_pdf: bool = False,
    dist=None,
) -> tuple[VectorStore, Any]:
    """The alignments of ``ali_dirs`` (ours or Kaldi's) as a store at ``path``: transition_ids,
    or with ``to_pdf`` their pdf_ids (``ali-to-pdf``), int32; and the GmmModel that made them.

    Streamed: one archive entry at a time (:func:`pykaldi2.hmm.exp_dir.iter_ali_dir`, with its
    checks: range, model_id, HMM paths); all dirs must come from one transition model. Made
    once per set of inputs (their paths, sizes and mtimes are the store's source), by rank 0
    (:func:`shared_store`). A later dir's alignment of an utterance wins (as a dict update).
    """
    from pykaldi2.hmm.exp_dir import ali_dir_model, ali_files, iter_ali_dirs

    dirs = [Path(d) for d in ali_dirs]
    if not dirs:
        raise DataError("no alignment dir given", fix="set ali_dir in the config")
    model = ali_dir_model(dirs[0])
    files = [f for d in dirs for f in (*ali_files(d), d / "final.mdl")]
    source = {"alignments": file_fingerprint(files), "to_pdf": bool(to_pdf)}

    def build(w: VectorStoreWriter) -> None:
        for utt, ali in iter_ali_dirs(dirs, model):
            w.add(utt, model.tid2pdf[ali] if to_pdf else ali)

    return shared_store(path, source, build, dist), model


def strings_digest(strings: Iterable[str]) -> str:
    """sha1 of the strings (in order): part of a store's source when a list selects its keys."""
    h = hashlib.sha1()
    for x in strings:
        h.update(x.encode("utf-8") + b"\n")
    return h.hexdigest()


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
