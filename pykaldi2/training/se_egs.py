"""Sequence-training examples (Kaldi's NnetDiscriminativeExample, numerator side): whole
utterances with their numerator alignments, and the transcripts of on-the-fly numerators.

``train-se``'s data for a CE model dir ``md``
(:class:`~pykaldi2.training.model_dir.CEModelDir`): features through its pipeline, the
alignment dir's transition_ids checked against its transition model, the held-out split, and
with ``numerator: online`` the word ids of each utterance's transcript. Alignments and word
ids are memory-mapped stores in ``EXP_DIR/egs`` (``ali``, ``words``), read per utterance. The denominator
lattices are made on the fly during training (:mod:`pykaldi2.losses.lattice_gen`). ``cfg`` is a
:class:`~pykaldi2.training.se.TrainSEConfig`.

Dimension legend: N utterances, T frames (padded), F feature dim.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.data.transcripts import MAX_MISSING_TEXT_FRACTION, check_transcribed
from pykaldi2.training.data import (
    DataDirFeatures,
    alignment_store,
    checked_utts,
    egs_path,
    epoch_batches,
    file_fingerprint,
    held_out_split,
    shared_store,
    simulated_utterances,
    strings_digest,
)
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)


@dataclass
class SEData:
    """Features and whole-utterance datasets (items: utt, feats (T, F), ali (T,) tids); with
    ``numerator: online`` the transcripts (``words``: utt -> word ids) too."""

    feats: Any  # DataDirFeatures
    train: Any  # UtteranceDataset (SimulatedUtteranceDataset with ``simulation``)
    valid: Any | None
    words: Mapping[str, np.ndarray] | None = None  # a VectorStore


def lang_files(lang_dir: str | os.PathLike) -> tuple[Path, Path, list[int]]:
    """(L.fst, words.txt, disambiguation phones) of a lang dir, with clear errors."""
    d = Path(lang_dir)
    for name in ("L.fst", "words.txt"):
        if not (d / name).is_file():
            raise DataError(
                f"{name} not found", file=str(d),
                fix="set lang_dir to the lang dir of the CE model (pykaldi2 prepare-lang)",
            )  # fmt: skip
    dis = d / "phones" / "disambig.int"
    text = dis.read_text().split() if dis.is_file() else []
    if not all(x.isdigit() for x in text):
        raise DataError("not a list of phone ids", file=str(dis))
    return d / "L.fst", d / "words.txt", [int(x) for x in text]


def load_transcripts(
    data_dirs: list[str],
    words_txt: str | os.PathLike,
    utts,
    max_missing_fraction: float = MAX_MISSING_TEXT_FRACTION,
) -> dict[str, np.ndarray]:
    """utt -> (W,) int32 word ids of the data dirs' ``text`` for ``utts`` (on-the-fly
    numerators). Words missing from ``words_txt`` are a :class:`DataError` naming them and
    their utterances; an utterance without a (non-empty) transcript gets no entry (its stored
    alignment is used): they are listed, and more than ``max_missing_fraction`` of ``utts`` is
    an error (:func:`pykaldi2.data.transcripts.check_transcribed`)."""
    from pykaldi2.data.tables import read_table_lines
    from pykaldi2.lang.symbols import SymbolTable
    from pykaldi2.lang.transcripts import words_to_ids

    table = SymbolTable.read(words_txt)
    want = set(utts)
    out: dict[str, np.ndarray] = {}
    for d in data_dirs:
        path = Path(d) / "text"
        if not path.is_file():
            raise DataError(
                "no text (transcripts)", file=str(d), fix="numerator online needs data dir text"
            )
        lines = [(e.key, e.value) for e in read_table_lines(path) if e.key in want]
        ids, _ = words_to_ids(
            [(u, t) for u, t in lines if t.split()], table, oov_word=None, source=str(path),
            words_file=str(words_txt),
        )  # fmt: skip
        out.update({u: np.asarray(w, dtype=np.int32) for u, w in ids.items()})
    check_transcribed(
        sorted(want), out, text_file=", ".join(f"{d}/text" for d in data_dirs),
        max_missing_fraction=max_missing_fraction,
        what="online numerators (their stored alignment is used)",
    )  # fmt: skip
    return out


def transcript_store(
    data_dirs: list[str],
    words_txt: str | os.PathLike,
    utts,
    path,
    dist=None,
    max_missing_fraction: float = MAX_MISSING_TEXT_FRACTION,
) -> Mapping[str, np.ndarray]:
    """:func:`load_transcripts` written into a store at ``path`` (by rank 0; reused while the
    texts, words.txt and the utterance list are unchanged). The word ids are a dict only while
    rank 0 writes the store; training and its DataLoader workers read the memory-mapped store."""
    utts = sorted(utts)
    texts = [Path(d) / "text" for d in data_dirs]
    source = {
        "texts": file_fingerprint([t for t in texts if t.is_file()] + [Path(words_txt)]),
        "utts": strings_digest(utts),
    }

    def build(w) -> None:
        ids = load_transcripts(data_dirs, words_txt, utts, max_missing_fraction)
        for utt in sorted(ids):
            w.add(utt, ids[utt])

    return shared_store(path, source, build, dist)


def load_se_data(cfg, md, egs_dir: str | os.PathLike | None = None, dist=None) -> SEData:
    """The training (and held-out) utterances of ``cfg`` for the CE model dir ``md``
    (:class:`~pykaldi2.training.model_dir.CEModelDir`): features through its pipeline,
    numerator alignments checked against its transition model. Alignments and transcripts are
    stores in ``egs_dir`` (a temp dir when None), made by rank 0 of ``dist``."""
    from pykaldi2.data.datasets import UtteranceDataset
    from pykaldi2.hmm.ali import transition_model_id

    egs = egs_path(egs_dir)
    feats = DataDirFeatures(cfg.train_data, md.features)
    if feats.dim != md.feature_dim:
        raise DataError(
            f"features of dim {feats.dim}, the model {md.path} expects {md.feature_dim}",
            file=", ".join(cfg.train_data),
            fix="use the data dirs (features) the CE model was trained on",
        )
    alis, ali_model = alignment_store(cfg.ali_dir, egs / "ali", dist=dist)
    if transition_model_id(ali_model.tm) != transition_model_id(md.ali_model.tm):
        raise DataError(
            "the alignments come from another transition model than the CE model's final.mdl",
            file=", ".join(cfg.ali_dir),
            fix="use the ali dir the CE model was trained on (its final.mdl is the model's)",
        )
    utts = checked_utts(feats, alis, cfg, source=", ".join(cfg.ali_dir))
    vutts: list[str] = []
    if cfg.valid_fraction > 0:
        utts, vutts = held_out_split(utts, cfg.valid_fraction, cfg.seed)
    words = None
    if cfg.numerator == "online":
        _, words_txt, _ = lang_files(cfg.lang_dir)
        words = transcript_store(
            cfg.train_data, words_txt, [*utts, *vutts], egs / "words", dist,
            cfg.max_missing_text_fraction,
        )  # fmt: skip
    if cfg.simulation is not None:
        train = simulated_se_utterances(cfg, md, alis, utts)
    else:
        train = UtteranceDataset(feats, alis, utts=utts)
    valid = UtteranceDataset(feats, alis, utts=vutts) if vutts else None
    return SEData(feats, train, valid, words)


def simulated_se_utterances(cfg, md, alis, utts):
    """The training utterances simulated on the fly (``cfg.simulation``) from the audio of
    ``cfg.train_data`` through the CE model's feature pipeline: a
    :class:`~pykaldi2.simulation.dataset.SimulatedUtteranceDataset` whose items are (utt,
    feats (T', F), ali (T',) transition_ids matched to the simulated frames)."""

    return simulated_utterances(
        cfg.train_data, cfg.simulation, alis, md.features, md.feature_dim,
        utts=utts, tolerance=cfg.length_tolerance,
    )  # fmt: skip


def collate_se(items, words: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """List of (utt, feats (T_i, F), ali (T_i,) transition_ids) -> ``{"utt_ids", "feats" (N, T,
    F) zero-padded, "lengths" (N,), "ali" (N, T) transition_ids, 0 on padding}``; with
    ``words`` (on-the-fly numerators) also ``"words"``: N word-id arrays ((0,): none)."""
    import torch

    from pykaldi2.data.datasets import collate_frames

    b = collate_frames(items)
    ali = b["targets"]
    batch = {
        "utt_ids": b["utts"],
        "feats": b["feats"],
        "lengths": b["lengths"],
        "ali": torch.where(ali > 0, ali, torch.zeros_like(ali)),
    }
    if words is not None:
        none = np.zeros(0, dtype=np.int32)
        batch["words"] = [words.get(u, none) for u in b["utts"]]
    return batch


def make_se_loader(dataset, cfg, *, rank: int, world_size: int, shuffle: bool, words=None):
    """A DataLoader of whole utterances bucketed by length (resumable BucketBatchSampler, its
    batches carrying the epoch when ``dataset`` simulates on the fly); ``words``: the
    transcripts of on-the-fly numerators (:func:`collate_se`)."""
    import functools

    import torch

    from pykaldi2.data.samplers import BucketBatchSampler

    sampler = BucketBatchSampler(
        dataset.lengths, batch_size=cfg.batch_size, max_frames=cfg.max_frames, shuffle=shuffle,
        rank=rank, world_size=world_size, seed=cfg.seed,
    )  # fmt: skip
    workers = {"persistent_workers": True} if cfg.num_workers > 0 else {}
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=epoch_batches(sampler, dataset),
        collate_fn=functools.partial(collate_se, words=words),
        num_workers=cfg.num_workers, **workers,
    )  # fmt: skip
