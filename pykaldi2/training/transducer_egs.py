"""RNN-T training examples: utterances through the front end with their token sequences.

``train-transducer``'s data: the sentencepiece tokenizer (trained into the exp dir or given),
the encoded transcripts, the utterances it can train on (:func:`select_utts`; the others are
counted by reason), :class:`TokenDataset` (or the simulated utterances with ``simulation``),
with ``ali_dir`` the HMM-GMM alignments' labels at the encoder frames
(:class:`FrameLabelDataset`), and a length-bucketed resumable loader; or, with ``shards``, WebDataset shards streamed through
:class:`TokenItems` (:mod:`pykaldi2.training.shards`); the EWMA front end's warm start from the
training data.
``cfg`` is a :class:`~pykaldi2.training.transducer.TrainTransducerConfig`.

Dimension legend: T frames after the front end, F' = frame_stack * F, U tokens, T' encoder
frames (ceil(T / enc_stack_time_factor)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pykaldi2.data.manifests import list_shards
from pykaldi2.features.transducer_frontend import TransducerFrontendConfig
from pykaldi2.training.data import (
    DataDirFeatures,
    egs_path,
    epoch_batches,
    held_out_split,
    shared_store,
    simulated_utterances,
)
from pykaldi2.utils.errors import DataError

#: What the alignments' frame labels are (``ali_targets``): phones (ali-to-phones, position
#: dependent, as phones.txt numbers them) or pdfs (ali-to-pdf, the GMM's tree leaves).
ALI_TARGETS = ("phone", "pdf")
#: ``ali_dir``: allowed |feature frames - alignment frames| of an utterance (train-ce's
#: default), and the fraction of training utterances that may lack a usable alignment.
ALI_LENGTH_TOLERANCE, ALI_MAX_MISSING_FRACTION = 1, 0.2


def encoder_frames(frontend: TransducerFrontendConfig, stack_time_factor: int, raw: int) -> int:
    """Encoder output frames T' of an utterance with ``raw`` feature frames."""
    return -(-frontend.num_frames(raw) // stack_time_factor)


class TokenDataset(torch.utils.data.Dataset):
    """Item i -> (utt, feats (T, F') float32 after the front end, tokens (U,) int64)."""

    def __init__(
        self,
        feats: Mapping[str, np.ndarray],
        tokens: Mapping[str, Sequence[int]],
        utts: Sequence[str],
        frontend: TransducerFrontendConfig,
    ) -> None:
        self.feats, self.tokens, self.utts, self.frontend = feats, tokens, list(utts), frontend
        self.lengths = [frontend.num_frames(feats.shape(u)[0]) for u in self.utts]

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int):
        utt = self.utts[i]
        x = self.frontend.transform(np.asarray(self.feats[utt], np.float32))
        return utt, x, np.asarray(self.tokens[utt], dtype=np.int64)


def encoder_labels(labels: np.ndarray, frames: int, k: int) -> np.ndarray:
    """(A,) per-feature-frame labels -> (T',) labels of the encoder frames of an input of
    ``frames`` (T) frames after the front end, T' = ceil(T / k): the label at the centre of
    each encoder frame on the time axis scaled to the A labels. Unperturbed, encoder frame j
    covers feature frames [j*S, (j+1)*S) (S = frame_subsample * k) and gets the label of
    frame j*S + S/2; a speed-perturbed copy (T scaled by 1/speed) gets the alignment
    stretched with it, as Kaldi's ``rescale_ali`` does for frame targets."""
    e = -(-int(frames) // int(k))
    pos = ((np.arange(e) + 0.5) * (len(labels) / max(e, 1))).astype(np.int64)
    return np.asarray(labels, np.int64)[np.minimum(pos, len(labels) - 1)]


class FrameLabelDataset(torch.utils.data.Dataset):
    """``base``'s items (utt, feats (T, F'), tokens (U,)) with the alignment's labels at the
    encoder frames appended: (utt, feats, tokens, labels (T',) int64), by
    :func:`encoder_labels`. ``ali``: utt -> transition_ids (a store); ``label_of``: transition_id
    -> label (the GMM's tid2phone or tid2pdf); ``num_classes``: labels are < this. Keys go to
    ``base`` unchanged (the simulated dataset's (epoch, index) keys included)."""

    def __init__(self, base, ali, label_of: np.ndarray, num_classes: int, k: int) -> None:
        self.base, self.ali, self.k = base, ali, int(k)
        self.label_of, self.num_classes = np.asarray(label_of, np.int64), int(num_classes)
        self.utts, self.lengths = base.utts, base.lengths

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        utt, x, tokens = self.base[key]
        labels = self.label_of[np.asarray(self.ali[utt], np.int64)]
        return utt, x, tokens, encoder_labels(labels, len(x), self.k)


def collate_labelled(items):
    """:func:`~pykaldi2.data.datasets.collate_frames` of the (utt, feats, tokens) part, plus
    ``frame_labels`` (B, T'max) int64 padded with IGNORE when the items carry labels
    (:class:`FrameLabelDataset`), else None."""
    from pykaldi2.data.datasets import IGNORE, collate_frames

    batch = collate_frames([it[:3] for it in items])
    batch["frame_labels"] = None
    if len(items[0]) > 3:
        labels = torch.full((len(items), max(len(it[3]) for it in items)), IGNORE)
        for i, it in enumerate(items):
            labels[i, : len(it[3])] = torch.from_numpy(it[3])
        batch["frame_labels"] = labels
    return batch


def aligned_utts(cfg, feats, utts: Sequence[str], egs: Path, dist=None):
    """(the utterances of ``utts`` with a usable alignment in ``cfg.ali_dir``, those without
    (or whose alignment is more than :data:`ALI_LENGTH_TOLERANCE` frames off the features),
    the alignment store, transition_id -> label table, number of classes). More than
    :data:`ALI_MAX_MISSING_FRACTION` without is an error naming some of them."""
    from pykaldi2.data.datasets import match_targets
    from pykaldi2.training.data import alignment_store

    ali, model = alignment_store(cfg.ali_dir, egs / "ali_tids", dist=dist)
    if cfg.ali_targets == "pdf":
        table, classes = np.asarray(model.tid2pdf), int(model.tm.num_pdfs)
    else:
        table = np.asarray(model.tid2phone)
        classes = int(table.max()) + 1
    table = np.where(table < 0, 0, table)  # index 0 (no transition) never occurs in an alignment
    check = match_targets(
        dict.fromkeys(utts),
        ali,
        frame_lengths={u: int(feats.shape(u)[0]) for u in utts},
        tolerance=ALI_LENGTH_TOLERANCE,
        max_missing_fraction=ALI_MAX_MISSING_FRACTION,
        source=", ".join(cfg.ali_dir),
    )
    missing = sorted([*check.missing, *(u for u, _, _ in check.mismatched)])
    return check.utts, missing, ali, table, classes


def select_utts(
    feats,
    tokens: Mapping[str, Sequence[int]],
    frontend,
    stack_time_factor: int,
    max_frames_per_utt: int = 0,
) -> tuple[list[str], dict[str, list[str]]]:
    """Utterances usable for RNN-T training, and the skipped ones by reason.

    ``no_text``: features but no (encodable) transcript; ``too_many_tokens``: more tokens than
    encoder frames after time reduction; ``no_frames``: no encoder frame at all; ``too_long``:
    more than ``max_frames_per_utt`` raw feature frames (0: no limit).
    """
    keep: list[str] = []
    skipped: dict[str, list[str]] = {
        "no_text": [], "too_many_tokens": [], "no_frames": [], "too_long": []
    }  # fmt: skip
    for utt in sorted(feats):
        if utt not in tokens:
            skipped["no_text"].append(utt)
            continue
        raw = feats.shape(utt)[0]
        frames = encoder_frames(frontend, stack_time_factor, raw)
        if max_frames_per_utt and raw > max_frames_per_utt:
            skipped["too_long"].append(utt)
        elif frames < 1:
            skipped["no_frames"].append(utt)
        elif len(tokens[utt]) > frames:
            skipped["too_many_tokens"].append(utt)
        else:
            keep.append(utt)
    return keep, skipped


def simulated_tokens(cfg, feats, tokens, utts: Sequence[str]):
    """Training utterances simulated on the fly (``cfg.simulation``) from the audio of
    ``cfg.train_data``, through the front end: items as :class:`TokenDataset`'s."""
    fe = cfg.frontend
    ds = simulated_utterances(
        cfg.train_data,
        cfg.simulation,
        tokens,
        fe.pipeline(),
        feats.dim,
        utts=utts,
        target_type="labels",
        feats_transform=fe.transform,
    )
    ds.lengths = [fe.num_frames(feats.shape(u)[0]) for u in ds.utts]  # clean, after stacking
    return ds


def make_loader(dataset: TokenDataset, cfg, *, rank, world_size, shuffle):
    """DataLoader with a resumable, length-bucketed :class:`BucketBatchSampler`."""
    from pykaldi2.data.samplers import BucketBatchSampler

    sampler = BucketBatchSampler(
        dataset.lengths,
        batch_size=cfg.batch_size,
        max_frames=cfg.max_frames,
        shuffle=shuffle,
        num_buckets=cfg.num_buckets,
        rank=rank,
        world_size=world_size,
        seed=cfg.seed,
    )
    kw: dict[str, Any] = {"persistent_workers": True} if cfg.num_workers > 0 else {}
    return torch.utils.data.DataLoader(
        dataset,
        # a FrameLabelDataset passes its keys to the dataset it wraps (simulated: epoch keys)
        batch_sampler=epoch_batches(sampler, getattr(dataset, "base", dataset)),
        collate_fn=collate_labelled,
        num_workers=cfg.num_workers,
        **kw,
    )


class TokenItems:
    """Shard samples -> RNN-T items (:data:`pykaldi2.training.shards.MakeItems`): raw features
    through the front end, the transcript through the tokenizer; utterances without text, with
    characters the tokenizer cannot encode (``tokenizer.on_unknown: skip``; else an error) or
    with more tokens than encoder frames give no item. Picklable (DataLoader workers)."""

    def __init__(self, frontend: TransducerFrontendConfig, tokenizer, on_unknown: str, k: int,
                 max_raw: int = 0):  # fmt: skip
        self.frontend, self.tok, self.on_unknown, self.k = frontend, tokenizer, on_unknown, k
        self.max_raw = max_raw

    def __call__(self, key: str, raw: np.ndarray, text: str | None):
        if text is None or not len(raw) or (self.max_raw and len(raw) > self.max_raw):
            return []
        try:
            ids = self.tok.encode(text, utt=key)
        except DataError:
            if self.on_unknown == "skip":
                return []
            raise
        if len(ids) > encoder_frames(self.frontend, self.k, len(raw)):
            return []
        x = self.frontend.from_raw(np.asarray(raw, np.float32))
        return [(key, x, np.asarray(ids, np.int64))]


def shard_tokenizer_text(cfg, out_dir: Path) -> Path:
    """A data dir holding the training shards' transcripts (``text``), to train the tokenizer
    on when the training data are shards."""
    from pykaldi2.training.shards import shard_texts
    from pykaldi2.utils.io import atomic_write_text

    texts = shard_texts(list_shards(cfg.shards.train))
    atomic_write_text(out_dir / "text", "".join(f"{k} {t}\n" for k, t in sorted(texts.items())))
    return out_dir


def warm_start_ewma(cfg) -> None:
    """Fill ``cfg.frontend.ewma``'s mean/var (the EWMA warm start, or the ``global``
    normalization) from ``ewma.stats_file`` (``pykaldi2 compute-mel-stats``) or else with the
    global statistics of the training data."""
    from pykaldi2.features.ewma_norm import (
        ewma_warm_start,
        read_global_stats,
        stats_mean_var,
    )
    from pykaldi2.utils.log import progress

    ewma = cfg.frontend.ewma
    if ewma.stats_file:
        mean, var = stats_mean_var(read_global_stats(ewma.stats_file), ewma.stats_file)
    elif cfg.shards.enabled:  # the first stats_utts utterances of the shards
        from itertools import islice

        from pykaldi2.features.pipeline import ProcessedFeatures
        from pykaldi2.training.shards import raw_features

        pipe = ProcessedFeatures(".", cfg.frontend.pipeline(), open_raw=False)
        raws = raw_features(list_shards(cfg.shards.train), cfg.shards.frame_config())
        mean, var = ewma_warm_start(
            pipe.apply(k, r) for k, r, _ in progress(islice(raws, cfg.shards.stats_utts),
                                                    desc="mel stats", unit="utt")
        )  # fmt: skip
    else:
        feats = DataDirFeatures(cfg.train_data, cfg.frontend.pipeline())
        mean, var = ewma_warm_start(feats[u] for u in progress(list(feats), desc="mel stats"))
    ewma.mean, ewma.var = mean.tolist(), var.tolist()


def transducer_tokenizer(cfg, exp_dir: Path, dist):
    from pykaldi2.lang.tokenizer import MODEL_FILE, Tokenizer, train_tokenizer

    if cfg.tokenizer_model:
        return Tokenizer(cfg.tokenizer_model)
    path = exp_dir / "tokenizer" / MODEL_FILE
    if dist.is_main and not path.is_file():  # a resumed run keeps its tokenizer
        sources = cfg.train_data
        if cfg.shards.enabled:
            sources = [shard_tokenizer_text(cfg, exp_dir / "shard_text")]
        train_tokenizer(sources, path.parent, cfg.tokenizer)
    dist.barrier()
    return Tokenizer(path)


def _encoded(tok, data_dirs, on_unknown, feats, max_missing_fraction: float):
    """The transcripts of ``data_dirs`` encoded; those of utterances in ``feats`` checked to
    be there (:func:`pykaldi2.data.transcripts.check_transcribed`)."""
    from pykaldi2.data.transcripts import check_transcribed
    from pykaldi2.lang.tokenizer import encode_text, read_transcripts

    src = ", ".join(f"{d}/text" for d in data_dirs)
    transcripts = read_transcripts(data_dirs)
    check_transcribed(
        sorted(feats), transcripts, text_file=src, max_missing_fraction=max_missing_fraction
    )
    return encode_text(tok, transcripts, on_unknown, source=src)


@dataclass
class TransducerData:
    """What train-transducer trains on: the training features (or what the model dir needs of
    them: :class:`~pykaldi2.training.shards.ShardFeatures`), the loaders, the utterances
    skipped by reason (data dirs; shards skip on the fly), the number of training utterances
    (None for shards: the epoch is the loader's length), the raw feature config and the
    number of alignment label classes (``ali_dir``; 0: none)."""

    feats: Any
    loader: Any
    valid_loader: Any
    skipped: dict[str, list[str]]
    num_utts: int | None
    raw_feature_config: dict
    ali_classes: int = 0


def transducer_loaders(cfg, tok, k: int, egs_dir=None, dist=None) -> TransducerData:
    """The training/validation loaders of data dirs (:func:`load_transducer_data`, token
    stores in ``egs_dir``) or, with ``cfg.shards``, of WebDataset shards
    (:class:`~pykaldi2.training.shards.ShardLoader`: tokens encoded per sample). ``dist`` (a
    :class:`~pykaldi2.training.distributed.Dist`, None: one process) gives rank and world."""
    rank, world_size = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    if not cfg.shards.enabled:
        feats, train, valid, skipped = load_transducer_data(cfg, tok, k, egs_dir, dist)
        loader = make_loader(train, cfg, rank=rank, world_size=world_size, shuffle=True)
        vloader = None
        if valid is not None and len(valid):
            vloader = make_loader(valid, cfg, rank=rank, world_size=world_size, shuffle=False)
        raw = feats.parts[0].raw.metadata().get("feature_config", {})
        classes = train.num_classes if isinstance(train, FrameLabelDataset) else 0
        return TransducerData(feats, loader, vloader, skipped, len(train), raw, classes)
    from pykaldi2.data.datasets import collate_frames
    from pykaldi2.training.shards import ShardFeatures, ShardLoader, valid_batches

    sh = cfg.shards
    fc = sh.frame_config()
    items = TokenItems(cfg.frontend, tok, cfg.tokenizer.on_unknown, k, cfg.max_frames_per_utt)
    loader = ShardLoader(
        sh.train, items, collate_frames, batch_size=cfg.batch_size, frame_config=fc,
        shuffle_buffer=sh.shuffle_buffer, seed=cfg.seed, rank=rank, world_size=world_size,
        num_workers=cfg.num_workers,
    )  # fmt: skip
    vloader = None
    if sh.valid:
        vitems = TokenItems(cfg.frontend, tok, "skip", k)
        vloader = valid_batches(sh.valid, vitems, collate_frames, cfg.batch_size, fc)
    elif cfg.valid_data:
        vfeats = DataDirFeatures(cfg.valid_data, cfg.frontend.pipeline())
        venc = _encoded(tok, cfg.valid_data, "skip", vfeats, cfg.max_missing_text_fraction)
        vtokens = token_store(venc.tokens, egs_path(egs_dir) / "valid_tokens", dist)
        vutts, _ = select_utts(vfeats, vtokens, cfg.frontend, k)
        vloader = make_loader(TokenDataset(vfeats, vtokens, vutts, cfg.frontend), cfg,
                              rank=rank, world_size=world_size, shuffle=False)  # fmt: skip
    feats = ShardFeatures(fc.dim, fc.dim, fc)
    return TransducerData(feats, loader, vloader, {}, None, fc.to_dict())


def token_store(tokens: Mapping[str, Sequence[int]], path, dist=None):
    """``tokens`` as a memory-mapped store at ``path`` (written by rank 0, unless one with the
    same content is there): what the datasets and their DataLoader workers read."""
    import hashlib

    h = hashlib.sha1()
    for utt in sorted(tokens):
        h.update(utt.encode("utf-8") + b" " + np.asarray(tokens[utt], np.int32).tobytes())

    def build(w) -> None:
        for utt in sorted(tokens):
            w.add(utt, tokens[utt])

    return shared_store(path, {"tokens": h.hexdigest(), "utts": len(tokens)}, build, dist)


def load_transducer_data(cfg, tok, mcfg_k: int, egs_dir=None, dist=None):
    """(train feats, train dataset, valid dataset | None, skipped utterances by reason).

    With ``cfg.ali_dir`` the training dataset is a :class:`FrameLabelDataset` over the
    utterances with an alignment (the others skipped as ``no_alignment``); validation items
    have no labels (validation reports the RNN-T loss alone). The token sequences (and
    alignments) are stores in ``egs_dir`` (``tokens``, ``valid_tokens``, ``ali_tids``; a temp
    dir when None) made by rank 0 of ``dist``: no dict of them in the DataLoader workers."""

    fe = cfg.frontend
    egs = egs_path(egs_dir)
    feats = DataDirFeatures(cfg.train_data, fe.pipeline())
    frac = cfg.max_missing_text_fraction
    enc = _encoded(tok, cfg.train_data, cfg.tokenizer.on_unknown, feats, frac)
    tokens = token_store(enc.tokens, egs / "tokens", dist)
    skipped_chars, enc = enc.skipped, None
    utts, skipped = select_utts(feats, tokens, fe, mcfg_k, cfg.max_frames_per_utt)
    skipped["unknown_characters"] = skipped_chars
    valid = None
    if cfg.valid_data:
        vfeats = DataDirFeatures(cfg.valid_data, fe.pipeline())
        venc = _encoded(tok, cfg.valid_data, "skip", vfeats, frac)
        vtokens = token_store(venc.tokens, egs / "valid_tokens", dist)
        venc = None
        vutts, _ = select_utts(vfeats, vtokens, fe, mcfg_k)
        valid = TokenDataset(vfeats, vtokens, vutts, fe)
    elif cfg.valid_fraction > 0:
        utts, vutts = held_out_split(utts, cfg.valid_fraction, cfg.seed)
        valid = TokenDataset(feats, tokens, vutts, fe)
    labelled = None  # after the held-out split: the split does not depend on the alignments
    if cfg.ali_dir and utts:
        utts, skipped["no_alignment"], *labelled = aligned_utts(cfg, feats, utts, egs, dist)
    if not utts:
        raise DataError(
            f"no usable training utterances (skipped: { {k: len(v) for k, v in skipped.items()} })",
            file=", ".join(cfg.train_data),
            fix="check that feats.scp and text cover the same utterances",
        )
    if cfg.simulation is not None:
        train = simulated_tokens(cfg, feats, tokens, utts)
    else:
        train = TokenDataset(feats, tokens, utts, fe)
    if labelled is not None:
        train = FrameLabelDataset(train, *labelled, k=mcfg_k)
    return feats, train, valid, skipped
