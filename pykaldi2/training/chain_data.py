"""What both data paths of ``train-chain`` share, made by streaming the alignment dirs (#19).

``chain-get-egs`` (egs on disk, :mod:`.chain_get_egs`) and the in-memory examples
(:func:`~pykaldi2.training.chain_egs.load_chain_data`) both start from
:func:`chain_utterances`: the utterances whose alignment fits their features, each with its
number of frames; the train / held-out split (copies of one recording, by ``utt2uniq``, on one
side); the chain transition model; the phone LM (chain-est-phone-lm) with den.fst and the
normalization FST (chain-make-den-fst), or those of ``den_fst_dir``.

Nothing here holds the alignments of a corpus: :func:`iter_alignments` reads the ali dirs
(``ali.scp`` / ``ali.ark`` / Kaldi's ``ali.N.gz``) one archive entry at a time, and the phone
LM's estimator takes each utterance's phone sequence as it streams by, as Kaldi's
chain-est-phone-lm reads a stream of phone sequences (``ali-to-phones | chain-est-phone-lm``).
Per utterance only its id and frame count are kept. The egs jobs and the in-memory path read
the alignments again, each its own share (:func:`iter_phone_segments`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

__all__ = [
    "ChainUtterances",
    "chain_utterances",
    "iter_alignments",
    "iter_phone_segments",
    "split_groups",
]


def iter_alignments(ali_dirs: Sequence[str], ali_model=None) -> Iterator[tuple[str, np.ndarray]]:
    """``(utt, (T,) int32 transition-ids)`` of every alignment of ``ali_dirs`` (ours or
    Kaldi's), one archive entry at a time, with
    :func:`~pykaldi2.hmm.exp_dir.iter_ali_dirs`'s checks (one transition model, that of
    ``ali_model``). An utterance aligned twice (in two dirs, or two jobs' archives) is an
    error: the phone LM would count it twice."""
    from pykaldi2.hmm.exp_dir import iter_ali_dirs

    seen: set[str] = set()
    for utt, ali in iter_ali_dirs(ali_dirs, ali_model):
        if utt in seen:
            raise DataError(
                "utterance aligned twice in the alignment dirs",
                file=", ".join(map(str, ali_dirs)), utt=utt,
                fix="list each utterance's alignment dir once in ali_dir",
            )  # fmt: skip
        seen.add(utt)
        yield utt, ali


def _phones(ali_model, ali: np.ndarray, utt: str, ali_dirs) -> tuple[list[int], list[int]]:
    from pykaldi2.hmm.chain import ali_to_phones

    try:
        return ali_to_phones(ali_model, ali)
    except DataError as e:
        raise DataError(e.message, file=", ".join(map(str, ali_dirs)), utt=utt, fix=e.fix) from None


def iter_phone_segments(
    ali_dirs: Sequence[str], ali_model, utts: Collection[str]
) -> Iterator[tuple[str, list[int], list[int]]]:
    """``(utt, phones, durations)`` (``ali-to-phones --write-lengths``) of the utterances
    ``utts`` in the order of the alignment archives, streamed (a job reads its own share;
    the dirs were checked for twice-aligned utterances by :func:`chain_utterances`)."""
    from pykaldi2.hmm.exp_dir import iter_ali_dirs

    for utt, ali in iter_ali_dirs(ali_dirs, ali_model):
        if utt in utts:
            yield (utt, *_phones(ali_model, ali, utt, ali_dirs))


def split_groups(data_dirs: Sequence[str]) -> dict[str, str]:
    """utt -> group (``utt2uniq``: the speed-perturbed copies of one recording share one)."""
    from pykaldi2.data.tables import read_table

    groups: dict[str, str] = {}
    for d in data_dirs:
        p = Path(d) / "utt2uniq"
        if p.is_file():
            groups.update(read_table(p))
    return groups


@dataclass
class ChainUtterances:
    """The utterances of ``train-chain`` and the graphs made from their alignments."""

    #: utt -> number of (input) frames of its alignment, for every usable utterance
    frames: dict[str, int]
    train: list[str]  # sorted
    valid: list[str]  # sorted; held out (their phones are in the phone LM, as Kaldi's)
    ali_model: Any  # GmmModel that made the alignments
    chain_model: Any  # GmmModel: chain transition model + tree (no GMMs)
    phone_lm: Any  # StdVectorFst, or None (den_fst_dir without phone_lm.fst)
    den_fst: Any
    den_graph: Any  # DenGraph
    norm_fst: Any


def chain_utterances(cfg, feats) -> ChainUtterances:
    """One pass over ``cfg.ali_dir``: the utterances of ``feats`` (a
    :class:`~pykaldi2.training.data.DataDirFeatures`) whose alignment has their length
    (within ``cfg.length_tolerance``), the phone LM of all of them (train and held-out:
    without backoff arcs an unseen phone n-gram would leave a held-out utterance without
    numerator paths, as Kaldi's) and the den graph, or those of ``cfg.den_fst_dir``; then the
    held-out split by ``utt2uniq`` group. ``cfg`` is a
    :class:`~pykaldi2.training.chain.TrainChainConfig`."""
    from pykaldi2.hmm.chain import chain_den_graph, load_chain_model, read_den_graph_dir
    from pykaldi2.hmm.exp_dir import ali_dir_model
    from pykaldi2.lang.phone_lm import PhoneLmEstimator
    from pykaldi2.training.data import held_out_split

    ali_model = ali_dir_model(Path(cfg.ali_dir[0]))
    chain_model = load_chain_model(cfg.tree_dir, ali_model, cfg.topology)
    est = None if cfg.den_fst_dir else PhoneLmEstimator(cfg.phone_lm)
    frames: dict[str, int] = {}
    bad: list[str] = []
    for utt, ali in iter_alignments(cfg.ali_dir, ali_model):
        if utt not in feats:
            continue
        if abs(feats.shape(utt)[0] - len(ali)) > cfg.length_tolerance:
            bad.append(utt)
            continue
        frames[utt] = len(ali)
        if est is not None:
            est.add_counts(_phones(ali_model, ali, utt, cfg.ali_dir)[0], seq_id=utt)
    missing = len(feats) - len(frames)
    if not frames or missing > cfg.max_missing_fraction * len(feats):
        raise DataError(
            f"{missing} of {len(feats)} utterances have no alignment of matching length "
            f"(e.g. {(bad or sorted(set(feats) - set(frames)))[:3]})",
            file=", ".join(cfg.ali_dir),
            fix="align these data dirs (align-si) with the features they were computed from",
        )
    frames = dict(sorted(frames.items()))
    groups = split_groups(cfg.train_data)
    keys = sorted({groups.get(u, u) for u in frames})
    valid_set: set[str] = set()
    if cfg.valid_fraction > 0:
        valid_set = set(held_out_split(keys, cfg.valid_fraction, cfg.seed)[1])
    valid = [u for u in frames if groups.get(u, u) in valid_set]
    train = [u for u in frames if groups.get(u, u) not in valid_set]
    if est is None:
        phone_lm, den, den_graph, norm = read_den_graph_dir(cfg.den_fst_dir, chain_model)
        log.info("den graph from %s: %d states, %d arcs", cfg.den_fst_dir,
                 den_graph.num_states, den_graph.num_arcs)  # fmt: skip
    else:
        phone_lm = est.estimate()
        den, den_graph, norm = chain_den_graph(phone_lm, chain_model)
    return ChainUtterances(frames, train, valid, ali_model, chain_model, phone_lm, den,
                           den_graph, norm)  # fmt: skip
