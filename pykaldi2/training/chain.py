"""LF-MMI ("chain") training end to end (Kaldi's steps/nnet3/chain/train.py, one process loop).

From data dir(s) with features and a GMM alignment dir to a self-contained chain model dir::

    >>> cfg = TrainChainConfig.load("conf/chain_tdnnf.yaml", overrides=["trainer.max_epochs=2"])
    >>> train_chain(cfg, "exp/chain_tdnnf")       # resumes from exp/chain_tdnnf/checkpoints
    exp/chain_tdnnf/final/{final.pt, model.yaml, features.yaml, final.mdl, tree, den.fst,
                           normalization.fst, phone_lm.fst, config.yaml}

Steps (each the function named after the Kaldi binary it replaces):

1. The chain transition model (:func:`chain_transition_model`): the chain topology (one HMM
   state, separate forward and self-loop pdf classes) for every phone of the alignment model,
   on the alignment model's tree. Kaldi builds a *new* tree for the chain topology from the
   alignments subsampled by 3; here the GMM tree is reused with its pdf classes 0 and 1 (the
   pdfs of the other classes stay unused outputs) -- a documented simplification.
2. chain-est-phone-lm on the phone sequences of the training alignments, then
   chain-make-den-fst (den.fst, :class:`~pykaldi2.lang.den_fst.DenGraph`) and the normalization
   FST.
3. chain-get-supervision per utterance (whole utterances, left/right tolerance, frame
   subsampling), composed with the normalization FST (:func:`utterance_supervision`).
4. One :class:`~pykaldi2.training.trainer.Trainer` loop with :class:`ChainTask` (LF-MMI with
   the leaky HMM, l2 and xent regularization of
   :class:`~pykaldi2.losses.lfmmi.ChainTrainingOptions`) on a :class:`ChainModel` (TDNN-F with
   subsampling, or a BLSTM whose output is taken every ``frame_subsampling_factor`` frames),
   held-out validation objective each epoch.

On-the-fly simulation (``simulation: conf/sim.yaml``, as in ``train-ce``): the training
examples' input features are simulated from the audio of the one ``train_data`` dir
(:class:`SimulatedChainDataset`: noise, reverberation, volume, SpecAugment, seeded per (seed,
epoch, utterance index), so every chunk of an utterance in one epoch sees the same simulated
audio and resumes are exact); the numerators stay the precomputed ones, so speed perturbation,
which changes the frame count, is refused (perturb the data dir offline and align it instead).
Validation stays on the stored features.

Decoding (:func:`pykaldi2.decoding.nnet.decode_chain`): HCLG built from ``final/final.mdl`` with
self-loop scale 1.0, the raw chain outputs as log-likelihoods (no priors), acoustic scale 1.0.

Dimension legend: N utterances, T input frames, T' = ceil(T / frame_subsampling_factor) output
frames, F feature dim, P pdf_ids.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from pykaldi2.features.pipeline import FeaturePipelineConfig
from pykaldi2.lang.phone_lm import PhoneLmOptions
from pykaldi2.losses.lfmmi import ChainTrainingOptions
from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.training.config import TrainConfigMixin
from pykaldi2.training.trainer import TrainerConfig
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import append_jsonl, get_logger, progress

log = get_logger(__name__)

__all__ = [
    "ChainData",
    "ChainModel",
    "ChainModelDir",
    "ChainTask",
    "TrainChainConfig",
    "chain_transition_model",
    "load_chain_dir",
    "train_chain",
    "utterance_supervision",
]

#: Files of a final chain model dir.
FINAL_FILES = (
    "final.pt", "model.yaml", "features.yaml", "final.mdl", "den.fst", "normalization.fst",
    "config.yaml",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainChainConfig(TrainConfigMixin):
    """Everything ``train-chain`` needs; saved (resolved, with provenance) as EXP_DIR/config.yaml.

    Attributes:
        train_data: training data dir(s) with feats.scp (and cmvn.scp for speaker CMVN).
        ali_dir: GMM alignment dir(s) (``final.mdl`` + ``ali.scp|ali.ark|ali.*.gz``), all from
            one model; their tree is the chain tree (see the module doc).
        valid_fraction: fraction of the training utterances held out for the validation
            objective (0: none).
        features: the feature pipeline (CMVN / deltas / splicing) applied to the stored feats.
        model_type: ``tdnnf`` (subsampling inside the net) or ``blstm`` (output subsampled).
        model: the model's config fields; ``input_dim``, ``num_classes`` (and ``subsampling``
            of a TDNN-F) are filled in.
        frame_subsampling_factor: input frames per output frame (3 as in Kaldi).
        topology: ``chain`` (Kaldi's chain topology: one HMM state per phone with forward and
            self-loop pdf classes, on the alignment model's tree) or ``ali`` (the alignment
            model's own transition model and topology, e.g. tri2's 3-state HMMs, usually with
            frame_subsampling_factor 1: LF-MMI on the conventional hybrid topology, so a CE
            model trained on that alignment starts from exactly its own pdfs and HMM).
        left_tolerance, right_tolerance: how many input frames a phone may start earlier /
            end later than in its alignment (chain-get-supervision; Kaldi default 5).
        phone_lm: chain-est-phone-lm options.
        den_fst_dir: a dir with ``den.fst`` and ``normalization.fst`` made for this chain
            model (a Kaldi chain dir, e.g. exp/chain/tdnn1a or one from chain-make-den-fst;
            ours) to use instead of estimating the phone LM and den graph from the
            alignments. Its transition model (``0.trans_mdl`` or ``final.mdl`` there, if any)
            must be the chain model's. Empty: estimate them (Kaldi's recipe).
        chain: leaky HMM coefficient, l2 and xent regularization (Kaldi recipes: 0.1, 5e-5... see
            conf/chain_tdnnf.yaml).
        chunk_size: input frames per training chunk (a multiple of frame_subsampling_factor;
            0: whole utterances). Each utterance's supervision is split into chunks of
            ``chunk_size / factor`` output frames (Kaldi's egs; the last chunk shifted back to
            end at the utterance end), each composed with the normalization FST.
        chunk_left_context, chunk_right_context: extra input frames on each side of a chunk
            (edge frames repeated beyond the utterance); left a multiple of the factor.
        frame_shift: shift each training minibatch's input by a random 0..factor-1 frames
            against its supervision (Kaldi's ``--frame-shift`` egs augmentation; the
            subsampled outputs then sample other input frames).
        init_model: a ``train-ce`` final dir to start from (same model_type, sizes and tree):
            the body's weights are copied; the chain output starts as
            ``init_acoustic_scale * (CE logits - log prior)`` (the CE model's scaled
            log-likelihoods) and the xent head as the CE output layer. Empty: random init.
        init_acoustic_scale: see init_model (the CE model's decoding acoustic scale).
        batch_size: utterances (or chunks) per batch (per rank); max_frames: optional cap on
            N * T.
        num_workers: DataLoader worker processes.
        length_tolerance: allowed |feature frames - alignment frames| per utterance.
        max_missing_fraction: more utterances than this without a usable alignment/supervision
            is an error.
        orthonormal_every: apply the TDNN-F semi-orthogonal constraint every this many steps
            (Kaldi: every 4 minibatches; 0: never).
        trainer: the :class:`TrainerConfig` (optimizer, epochs, schedule, checkpoints).
        seed: model initialisation, sampler shuffling and the validation split.
        simulation: null (default: the stored features) or a sim.yaml
            (:class:`~pykaldi2.simulation.config.SimulationConfig`; saved resolved): the
            training features are simulated on the fly from the audio of ``train_data`` (one
            data dir, with wav.scp and conf/feats.json; :class:`SimulatedChainDataset`);
            ``speed.enable`` must be false (the numerators have fixed frame counts).
    """

    train_data: list[str] = field(default_factory=list)
    ali_dir: list[str] = field(default_factory=list)
    valid_fraction: float = 0.05
    features: FeaturePipelineConfig = field(default_factory=FeaturePipelineConfig)
    model_type: str = "tdnnf"
    model: dict[str, Any] = field(default_factory=dict)
    frame_subsampling_factor: int = 3
    topology: str = "chain"
    left_tolerance: int = 5
    right_tolerance: int = 5
    phone_lm: PhoneLmOptions = field(default_factory=PhoneLmOptions)
    den_fst_dir: str = ""
    chain: ChainTrainingOptions = field(default_factory=ChainTrainingOptions)
    chunk_size: int = 0
    chunk_left_context: int = 0
    chunk_right_context: int = 0
    frame_shift: bool = True
    init_model: str = ""
    init_acoustic_scale: float = 0.1
    batch_size: int = 32
    max_frames: int = 0
    num_workers: int = 0
    length_tolerance: int = 1
    max_missing_fraction: float = 0.2
    orthonormal_every: int = 4
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    simulation: SimulationConfig | None = None

    def __post_init__(self) -> None:
        from pykaldi2.training.ce import MODEL_TYPES, _as_list

        self.train_data = _as_list(self.train_data)
        self.ali_dir = _as_list(self.ali_dir)
        self.model = dict(self.model or {})
        self.build_sections()
        problems = chain_simulation_problems(self)
        if not self.train_data:
            problems.append("train_data: at least one data dir is required")
        if not self.ali_dir:
            problems.append("ali_dir: at least one alignment dir is required")
        if self.model_type not in MODEL_TYPES:
            problems.append(f"model_type: {self.model_type!r} not in {', '.join(MODEL_TYPES)}")
        if self.frame_subsampling_factor < 1:
            problems.append("frame_subsampling_factor must be >= 1")
        if self.topology not in ("chain", "ali"):
            problems.append(f"topology: {self.topology!r} not in chain, ali")
        if self.left_tolerance < 0 or self.right_tolerance < 0:
            problems.append("left_tolerance/right_tolerance must be >= 0")
        if self.batch_size <= 0 and self.max_frames <= 0:
            problems.append("batch_size or max_frames must be > 0")
        f = max(self.frame_subsampling_factor, 1)
        if self.chunk_size < 0 or self.chunk_size % f:
            problems.append(f"chunk_size must be 0 or a positive multiple of {f}")
        if self.chunk_left_context < 0 or self.chunk_left_context % f:
            problems.append(f"chunk_left_context must be a multiple of {f} (>= 0)")
        if self.chunk_right_context < 0:
            problems.append("chunk_right_context must be >= 0")
        if self.init_acoustic_scale <= 0:
            problems.append("init_acoustic_scale must be > 0")
        if self.num_workers < 0 or self.orthonormal_every < 0:
            problems.append("num_workers and orthonormal_every must be >= 0")
        if not 0.0 <= self.valid_fraction < 1.0:
            problems.append("valid_fraction must be in [0, 1)")
        if self.length_tolerance < 0 or not 0.0 <= self.max_missing_fraction <= 1.0:
            problems.append("length_tolerance >= 0 and max_missing_fraction in [0, 1] required")
        if problems:
            raise Pykaldi2Error("TrainChainConfig: " + "; ".join(problems))

    def supervision_options(self):
        from pykaldi2.lang.chain_supervision import SupervisionOptions

        return SupervisionOptions(
            self.left_tolerance, self.right_tolerance, self.frame_subsampling_factor
        )


# ---------------------------------------------------------------------------------------------
# The chain transition model, den.fst and numerator supervision
# ---------------------------------------------------------------------------------------------
def chain_transition_model(ali_model):
    """A :class:`~pykaldi2.hmm.model.GmmModel` (no GMMs) with the chain topology on the tree of
    ``ali_model``: every phone one HMM state, forward pdf class 0, self-loop pdf class 1.

    The tree must give every phone at least two pdf classes (any 2+-state GMM topology does).
    """
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import khg
    from pykaldi2.lang.topo import TopoConfig, make_topo

    phones = sorted(int(p) for p in ali_model.tm.phones)
    n2c = ali_model.tm.topo.get_phone_to_num_pdf_classes()
    few = [p for p in phones if n2c[p] < 2]
    if few:
        raise DataError(
            f"phones {few[:10]} have fewer than 2 pdf classes in the alignment model's tree; the "
            "chain topology needs a forward and a self-loop pdf class",
            fix="align with a model whose topology has >= 2 states per phone (e.g. tri2)",
        )
    topo = khg.HmmTopology()
    topo.read(make_topo(phones, [], TopoConfig.chain()))
    tm = khg.TransitionModel(ali_model.tree, topo)
    return GmmModel(tm=tm, tree=ali_model.tree, am=khg.AmDiagGmm(), info={"chain": True})


def load_alignments(ali_dirs: Sequence[str | os.PathLike]) -> tuple[dict[str, np.ndarray], Any]:
    """Transition-id alignments of every dir: ({utt: (T,) int32}, the GmmModel that made them).

    All dirs must share the model; out-of-range transition_ids are an error naming the utt.
    """
    from pykaldi2.hmm.exp_dir import read_ali_dirs

    return read_ali_dirs(ali_dirs)


def phone_segments(ali_model, alis: Mapping[str, np.ndarray]) -> dict[str, tuple[list, list]]:
    """``{utt: (phones, durations)}`` of each alignment (ali-to-phones with lengths)."""
    from pykaldi2.hmm.ali import split_to_phones

    out = {}
    for utt, ali in alis.items():
        segs = split_to_phones(ali_model, ali)
        out[utt] = ([int(p) for p, _, _ in segs], [int(n) for _, _, n in segs])
    return out


def make_den_graph(segments: Mapping[str, tuple[list, list]], chain_model, opts: PhoneLmOptions):
    """chain-est-phone-lm + chain-make-den-fst: (phone_lm, den.fst, DenGraph, normalization.fst)."""
    from pykaldi2.lang.den_fst import DenGraph, chain_make_den_fst, normalization_fst
    from pykaldi2.lang.phone_lm import PhoneLmEstimator

    est = PhoneLmEstimator(opts)
    for utt in sorted(segments):
        est.add_counts(segments[utt][0], seq_id=utt)
    phone_lm = est.estimate()
    den = chain_make_den_fst(phone_lm, chain_model.tree, chain_model.tm)
    graph = DenGraph.from_fst(den, int(chain_model.tm.num_pdfs))
    return phone_lm, den, graph, normalization_fst(den, graph.initial_probs)


def read_den_graph_dir(den_dir: str | os.PathLike, chain_model):
    """den.fst and normalization.fst of ``den_dir`` (Kaldi's chain dir or ours) for
    ``chain_model``: ``(phone_lm or None, den.fst, DenGraph, normalization.fst)``.

    A ``0.trans_mdl`` (Kaldi) or ``final.mdl`` in the dir must hold the chain model's
    transition model; den.fst's labels (pdf-id + 1) must be the chain model's pdfs.
    """
    from pykaldi2.hmm.kaldi_io import read_transition_model_file, transition_model_tuples
    from pykaldi2.lang.den_fst import DenGraph

    d = Path(den_dir)
    for name in ("0.trans_mdl", "final.mdl"):
        if (d / name).is_file():
            tm = read_transition_model_file(d / name)
            if not np.array_equal(
                transition_model_tuples(tm), transition_model_tuples(chain_model.tm)
            ):
                raise DataError(
                    "its transition model is not the chain model's (other tree or topology)",
                    file=str(d / name),
                    fix="use the den.fst made for the tree and topology of ali_dir (topology: "
                    "ali for a den.fst of the GMM's own HMMs, chain for the chain topology)",
                )
            break
    fsts = []
    for name in ("den.fst", "normalization.fst", "phone_lm.fst"):
        path = d / name
        if not path.is_file():
            if name == "phone_lm.fst":
                fsts.append(None)
                continue
            raise DataError(f"no {name}", file=str(d), fix="run chain-make-den-fst first")
        fst = kaldifst_read(path)
        fsts.append(fst)
    den, norm, phone_lm = fsts
    num_pdfs = int(chain_model.tm.num_pdfs)
    graph = DenGraph.from_fst(den, num_pdfs)
    if int(graph.pdf.max()) >= num_pdfs:
        raise DataError(
            f"den.fst has pdf-id {int(graph.pdf.max())}, the chain model {num_pdfs} pdfs",
            file=str(d / "den.fst"),
            fix="use the den.fst made for this tree",
        )
    log.info("den graph from %s: %d states, %d arcs", d, graph.num_states, graph.num_arcs)
    return phone_lm, den, graph, norm


def kaldifst_read(path: Path):
    """A VectorFst file (ours or Kaldi's), with a clear error for other files."""
    from pykaldi2.kaldi import kaldifst

    fst = kaldifst.StdVectorFst.read(str(path))
    if fst is None:
        raise DataError(
            "not a readable OpenFst VectorFst", file=str(path),
            fix="convert it (fstconvert --fst_type=vector)",
        )  # fmt: skip
    return fst


def utterance_supervision(phones, durations, chain_model, norm_fst, sup_opts, utt=None):
    """chain-get-supervision of one utterance composed with the normalization FST, as a
    :class:`~pykaldi2.lang.den_fst.ChainGraph` of ``ceil(sum(durations) / factor)`` frames."""
    return chunk_supervision(phones, durations, chain_model, norm_fst, sup_opts, None, utt)[0]


def chunk_supervision(phones, durations, chain_model, norm_fst, sup_opts, ranges, utt=None):
    """chain-get-supervision of one utterance, split into output-frame ``ranges``
    (``[(begin, end), ...]``; None: the whole utterance), each composed with the normalization
    FST: one :class:`~pykaldi2.lang.den_fst.ChainGraph` per range."""
    from pykaldi2.lang.chain_supervision import (
        add_weight_to_supervision,
        chain_get_supervision,
        split_supervision,
    )
    from pykaldi2.lang.den_fst import ChainGraph

    sup = chain_get_supervision(
        phones, durations, chain_model.tree, chain_model.tm, sup_opts, utt=utt
    )
    parts = [sup] if ranges is None else [split_supervision(sup, b, e, utt) for b, e in ranges]
    num_pdfs = int(chain_model.tm.num_pdfs)
    return [
        ChainGraph.from_fst(add_weight_to_supervision(p, norm_fst, utt=utt), num_pdfs)
        for p in parts
    ]


def chunk_ranges(num_out: int, chunk_out: int) -> list[tuple[int, int]]:
    """Output-frame ranges of the chunks of an utterance with ``num_out`` output frames:
    ``chunk_out`` frames each, the last shifted back to end at the utterance end (one range
    ``(0, num_out)`` when the utterance is shorter than a chunk; ``chunk_out`` 0: whole)."""
    from pykaldi2.data.datasets import chunk_starts

    if chunk_out <= 0 or num_out <= chunk_out:
        return [(0, num_out)]
    return [(b, b + chunk_out) for b in chunk_starts(num_out, chunk_out)]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
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


def load_chain_data(cfg: TrainChainConfig) -> ChainData:
    """Features, chain transition model, den graph and per-utterance supervision."""
    from pykaldi2.training.ce import DataDirFeatures, held_out_split

    feats = DataDirFeatures(cfg.train_data, cfg.features)
    alis, ali_model = load_alignments(cfg.ali_dir)
    chain_model = chain_transition_model(ali_model) if cfg.topology == "chain" else ali_model
    frames, bad = {}, []
    for utt in sorted(alis):
        if utt not in feats:
            continue
        if abs(feats.shape(utt)[0] - len(alis[utt])) > cfg.length_tolerance:
            bad.append(utt)
            continue
        frames[utt] = len(alis[utt])
    missing = len(feats) - len(frames)
    if not frames or missing > cfg.max_missing_fraction * len(feats):
        raise DataError(
            f"{missing} of {len(feats)} utterances have no alignment of matching length "
            f"(e.g. {(bad or sorted(set(feats) - set(frames)))[:3]})",
            file=", ".join(cfg.ali_dir),
            fix="align these data dirs (align-si) with the features they were computed from",
        )
    segments = phone_segments(ali_model, {u: alis[u] for u in frames})
    utts, vutts = sorted(frames), []
    if cfg.valid_fraction > 0:
        utts, vutts = held_out_split(utts, cfg.valid_fraction, cfg.seed)
    # as Kaldi: the phone LM sees every alignment (held-out ones too: without backoff arcs,
    # an unseen phone n-gram would leave a held-out utterance without numerator paths)
    if cfg.den_fst_dir:
        phone_lm, den, den_graph, norm = read_den_graph_dir(cfg.den_fst_dir, chain_model)
    else:
        phone_lm, den, den_graph, norm = make_den_graph(segments, chain_model, cfg.phone_lm)
    sup_opts = cfg.supervision_options()
    f = cfg.frame_subsampling_factor
    graphs, examples, failed = {}, {}, []
    for utt in progress(sorted(frames), desc="chain-get-supervision", unit="utt"):
        ranges = chunk_ranges(-(-frames[utt] // f), cfg.chunk_size // f)
        try:
            parts = chunk_supervision(*segments[utt], chain_model, norm, sup_opts, ranges, utt)
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

    train, valid = dataset(utts), dataset(vutts)
    if train is None:
        raise DataError("no training utterance left", file=", ".join(cfg.ali_dir))
    if cfg.simulation is not None:
        train = simulated_chain_dataset(cfg, train, feats.dim)
    return ChainData(feats, train, valid, chain_model, phone_lm, den, den_graph, norm, ali_model)


def make_chain_loader(dataset: ChainDataset, cfg: TrainChainConfig, *, rank, world_size, shuffle):
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
def chain_simulation_problems(cfg: TrainChainConfig) -> list[str]:
    """Resolve ``cfg.simulation`` (path / mapping / None, as train-ce's) in place; the problems
    of a simulation train-chain cannot do (speed perturbation) as config error messages."""
    from pykaldi2.training.ce import simulation_config

    cfg.simulation = simulation_config(cfg.simulation)
    if cfg.simulation is not None and cfg.simulation.speed.enable:
        return [
            "simulation: speed.enable is true, but the chain numerators are precomputed for "
            "each utterance's frame count, which speed perturbation changes. Fix: set "
            "`speed: {enable: false}` in the sim.yaml (for speed-perturbed chain training, "
            "write speed-perturbed copies of the data dir offline with `pykaldi2 simulate` and "
            "align them)"
        ]
    return []


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


def simulated_chain_dataset(cfg: TrainChainConfig, train: ChainDataset, dim: int):
    """``train`` with its features simulated on the fly (``cfg.simulation``) from the audio of
    ``cfg.train_data`` through ``cfg.features``, checked to have dimension ``dim``."""
    from pykaldi2.training.ce import simulated_utterances

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
# Model and task
# ---------------------------------------------------------------------------------------------
class ChainModel(nn.Module):
    """A chain acoustic model: a TDNN-F / BLSTM body with the chain output and an xent head.

    ``forward(feats (N, T, F), lengths (N,)) -> (N, T', P)`` raw chain outputs (log-likelihoods
    for decoding; no log-softmax). :meth:`forward_train` also returns the xent head's output
    (N, T', P) (a linear layer on the input of the body's output layer, Kaldi's
    ``output-xent``), or None when ``xent`` is False. ``subsample`` > 1 keeps every
    ``subsample``-th output frame (for bodies that do not subsample themselves).
    """

    def __init__(self, body, num_pdfs: int, subsample: int = 1, xent: bool = True) -> None:
        super().__init__()
        self.body, self.subsample = body, int(subsample)
        self.xent = nn.Linear(body.output.in_features, num_pdfs) if xent else None

    def forward_train(self, feats, lengths):
        hidden = []
        hook = self.body.output.register_forward_hook(lambda m, i, o: hidden.append(i[0]))
        try:
            out = self.body(feats, lengths)
        finally:
            hook.remove()
        xent = self.xent(hidden[0]) if self.xent is not None else None
        if self.subsample > 1:
            out = out[:, :: self.subsample]
            xent = xent[:, :: self.subsample] if xent is not None else None
        return out, xent

    def forward(self, feats, lengths):
        return self.forward_train(feats, lengths)[0]


def chain_model_config(cfg: TrainChainConfig, input_dim: int, num_pdfs: int):
    """The body's config: ``cfg.model`` with input_dim / num_classes (and a TDNN-F's
    subsampling = frame_subsampling_factor) filled in; returns (config, output subsample)."""
    from pykaldi2.training.ce import model_config

    d = {k: v for k, v in cfg.model.items() if k != "subsampling"}
    mcfg = model_config(cfg.model_type, d, input_dim, num_pdfs)
    if cfg.model_type == "tdnnf":
        return dataclasses.replace(mcfg, subsampling=cfg.frame_subsampling_factor), 1
    return mcfg, cfg.frame_subsampling_factor


def build_chain_model(model_type: str, mcfg, subsample: int, xent: bool) -> ChainModel:
    from pykaldi2.training.ce import build_model

    return ChainModel(build_model(model_type, mcfg), mcfg.num_classes, subsample, xent)


def shift_frames(feats, lengths, shift: int):
    """(N, T, F) -> (N, T, F) with frame t of sequence n taken from ``min(t + shift,
    lengths[n] - 1)`` (Kaldi's egs frame shift; the last frame repeats)."""
    import torch

    if shift == 0:
        return feats
    t = torch.arange(feats.shape[1], device=feats.device)
    idx = torch.minimum(t[None, :] + shift, (lengths[:, None] - 1).clamp_min(0))
    return torch.gather(feats, 1, idx[..., None].expand(-1, -1, feats.shape[2]))


class ChainTask:
    """LF-MMI on whole utterances or chunks: ``loss`` is minus the regularized objective summed
    over the output frames, ``count`` the output frames; stats: ``objf`` (the LF-MMI part) and
    ``xent`` (the xent objective), summed.

    ``left_context`` input frames before each example's first supervised frame are dropped from
    the output (``left_context / factor`` output frames); with ``frame_shift`` a training batch
    is shifted by a random 0..factor-1 frames (drawn from torch's RNG, which the trainer
    reseeds per step: resumes are exact).
    """

    def __init__(
        self, den_graph, opts: ChainTrainingOptions, factor: int, device,
        left_context: int = 0, frame_shift: bool = False,
    ) -> None:  # fmt: skip
        self.den_graph = den_graph.to(device)
        self.opts, self.factor, self.device = opts, int(factor), device
        self.offset, self.frame_shift = int(left_context) // int(factor), bool(frame_shift)

    def compute_loss(self, model, batch):
        import torch

        from pykaldi2.losses.lfmmi import chain_loss
        from pykaldi2.losses.output import LossOutput

        feats = batch["feats"].to(self.device)
        lengths = batch["lengths"].to(self.device)
        if self.frame_shift and self.factor > 1 and model.training:
            feats = shift_frames(feats, lengths, int(torch.randint(self.factor, ())))
        fwd = getattr(model, "forward_train", None) or model.module.forward_train  # DDP wraps
        out, xent = fwd(feats, lengths)
        out_len = batch.get("out_lengths")
        if out_len is None:
            out_len = (lengths + self.factor - 1) // self.factor
        out_len = out_len.to(self.device)
        need = self.offset + int(out_len.max())
        if out.shape[1] < need:
            raise Pykaldi2Error(
                f"the model gives {out.shape[1]} output frames for {int(lengths.max())} input "
                f"frames; frame_subsampling_factor {self.factor} needs {need}"
            )
        out = out[:, self.offset : need]
        xent = xent[:, self.offset : need] if xent is not None else None
        res = chain_loss(
            out, out_len, self.den_graph, batch["num_graphs"], self.opts, xent_output=xent
        )
        return LossOutput(
            loss=res.loss * res.num_frames,
            count=float(res.num_frames),
            stats={"objf": float(res.objf), "xent": float(res.xent_objf)},
        )


def init_from_ce(
    model: ChainModel, model_type: str, mcfg, ce_dir, acoustic_scale: float, ali_model=None
) -> None:
    """Start a chain model from a ``train-ce`` final dir (see ``TrainChainConfig.init_model``).

    The CE model must have the same type and sizes, and its pdfs must be the chain model's: the
    chain tree is the alignment model's tree, so ``ali_model`` (when given) must map
    transition_ids to the same pdf_ids as the CE model's ``final.mdl``. The chain topology
    uses only pdf classes 0 and 1, so the chain model may have fewer outputs than the CE model
    (pdfs of the last phone's class 2): the CE output rows are taken up to the chain's count.
    The chain output becomes ``acoustic_scale * (logits - log prior)``.
    """
    import torch

    from pykaldi2.training.ce import load_final_dir

    ce = load_final_dir(ce_dir)
    if ali_model is not None and not np.array_equal(ce.ali_model.tid2pdf, ali_model.tid2pdf):
        raise DataError(
            "init_model was trained on the pdfs of another tree than ali_dir's final.mdl",
            file=str(ce_dir), fix="use the alignments (ali_dir) the CE model was trained on",
        )  # fmt: skip
    num_pdfs = int(mcfg.num_classes)
    if ce.num_pdfs < num_pdfs:
        raise DataError(
            f"init_model has {ce.num_pdfs} outputs, the chain model {num_pdfs}", file=str(ce_dir)
        )
    if ce.model_type != model_type:
        raise DataError(
            f"init_model is a {ce.model_type} model, the chain model is {model_type}",
            file=str(ce_dir), fix="set model_type (and model sizes) to the CE model's",
        )  # fmt: skip
    ce_cfg = ce.model.cfg.to_dict() if hasattr(ce.model, "cfg") else {}
    skip = ("subsampling", "num_classes")
    want = {k: v for k, v in mcfg.to_dict().items() if k not in skip}
    diff = sorted(k for k in want if k in ce_cfg and ce_cfg[k] != want[k])
    if diff:
        raise DataError(
            "init_model has other model sizes: "
            + ", ".join(f"{k} {ce_cfg[k]} (chain: {want[k]})" for k in diff),
            file=str(ce_dir), fix="copy the CE model's `model:` section into the chain config",
        )  # fmt: skip
    state = dict(ce.model.state_dict())
    for k in ("output.weight", "output.bias"):
        state[k] = state[k][:num_pdfs]
    missing, unexpected = model.body.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(
            f"init_model's weights do not fit (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})", file=str(ce_dir),
        )  # fmt: skip
    with torch.no_grad():
        if model.xent is not None:
            model.xent.weight.copy_(model.body.output.weight)
            model.xent.bias.copy_(model.body.output.bias)
        log_prior = torch.as_tensor(ce.log_priors[:num_pdfs], dtype=model.body.output.bias.dtype)
        model.body.output.bias.sub_(log_prior).mul_(acoustic_scale)
        model.body.output.weight.mul_(acoustic_scale)
    log.info("initialised from the CE model %s (acoustic scale %g)", ce_dir, acoustic_scale)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def _orthonormal_hook(every: int):
    def after_step(model, step: int) -> None:
        body = getattr(model, "body", None) or getattr(model.module, "body", None)
        if every > 0 and step % every == 0 and hasattr(body, "constrain_orthonormal"):
            body.constrain_orthonormal()

    return after_step


def train_chain(cfg: TrainChainConfig, exp_dir: str | os.PathLike) -> Path:
    """Train (or resume) a chain model in ``exp_dir``; returns ``exp_dir/final``.

    Resumes automatically from ``exp_dir/checkpoints/latest``. Works under torchrun /
    horovodrun (every rank builds the graphs; rank 0 writes config.yaml, logs, the final dir).
    """
    import torch

    from pykaldi2.training.ce import evaluate
    from pykaldi2.training.distributed import Dist
    from pykaldi2.training.trainer import Trainer

    exp_dir = Path(exp_dir)
    dist = Dist.from_env()
    try:
        data = load_chain_data(cfg)
        mcfg, subsample = chain_model_config(cfg, data.feats.dim, data.num_pdfs)
        torch.manual_seed(cfg.seed)
        model = build_chain_model(cfg.model_type, mcfg, subsample, cfg.chain.xent_regularize > 0)
        if cfg.init_model:
            init_from_ce(
                model, cfg.model_type, mcfg, cfg.init_model, cfg.init_acoustic_scale,
                data.ali_model,
            )  # fmt: skip
        dist.broadcast_parameters(model)
        if dist.is_main:
            exp_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(exp_dir / "config.yaml")
        task = ChainTask(
            data.den_graph, cfg.chain, cfg.frame_subsampling_factor, dist.device,
            left_context=data.train.left, frame_shift=cfg.frame_shift,
        )  # fmt: skip
        loader = make_chain_loader(
            data.train, cfg, rank=dist.rank, world_size=dist.world_size, shuffle=True
        )
        valid_fn = None
        if data.valid is not None:
            vloader = make_chain_loader(
                data.valid, cfg, rank=dist.rank, world_size=dist.world_size, shuffle=False
            )

            def valid_fn(m) -> float:
                res = evaluate(m, vloader, task, dist)
                if dist.is_main:
                    log.info("validation: loss %.4f per output frame", res["loss"])
                    rec = {"step": trainer.step, "loss": res["loss"], "frames": res["frames"]}
                    append_jsonl(exp_dir / "log" / "valid.jsonl", rec)
                return res["loss"]

        trainer = Trainer(
            model,
            task,
            cfg.trainer,
            exp_dir,
            dist=dist,
            model_config={"model_type": cfg.model_type, **mcfg.to_dict(), "subsample": subsample},
            valid_fn=valid_fn,
            after_step=_orthonormal_hook(cfg.orthonormal_every),
        )
        trainer.resume()
        log.info(
            "train-chain: %d utterances (%d examples), %d pdfs, den.fst %d states / %d arcs, "
            "%s model with %.2fM parameters",
            len(data.train.utts), len(data.train), data.num_pdfs, data.den_graph.num_states, data.den_graph.num_arcs,
            cfg.model_type, sum(p.numel() for p in model.parameters()) / 1e6,
        )  # fmt: skip
        summary = trainer.fit(loader)
        final = exp_dir / "final"
        if dist.is_main:
            write_chain_dir(final, cfg, model, mcfg, subsample, data, summary)
        dist.barrier()
        return final
    finally:
        dist.shutdown()


def write_chain_dir(final: Path, cfg, model, mcfg, subsample, data: ChainData, summary) -> None:
    """The self-contained chain model dir (decode-chain / mkgraph read it), written atomically."""
    import yaml

    from pykaldi2.lang.den_fst import write_fst
    from pykaldi2.training.ce import feature_doc, save_final_model
    from pykaldi2.utils.io import atomic_dir

    with atomic_dir(final) as tmp:
        meta = {
            "model_type": cfg.model_type,
            "model_config": mcfg.to_dict(),
            "subsample": subsample,
            "xent": model.xent is not None,
            "frame_subsampling_factor": cfg.frame_subsampling_factor,
        }
        save_final_model(tmp, model, meta, cfg, summary)
        (tmp / "model.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
        feat_doc = feature_doc(
            cfg.features, data.feats,
            frame_subsampling_factor=cfg.frame_subsampling_factor,
            # inference follows training: decode-chain cuts utterances into these chunks
            chunk_size=cfg.chunk_size,
            chunk_left_context=data.train.left,
            chunk_right_context=data.train.right,
        )  # fmt: skip
        (tmp / "features.yaml").write_text(yaml.safe_dump(feat_doc), encoding="utf-8")
        data.chain_model.save(tmp / "final.mdl")
        write_fst(data.den_fst, tmp / "den.fst")
        write_fst(data.norm_fst, tmp / "normalization.fst")
        if data.phone_lm is not None:
            write_fst(data.phone_lm, tmp / "phone_lm.fst")
    log.info("wrote %s", final)


# ---------------------------------------------------------------------------------------------
# Loading a final chain model dir (decode-chain)
# ---------------------------------------------------------------------------------------------
@dataclass
class ChainModelDir:
    """A loaded ``exp/<chain sys>/final`` dir."""

    path: Path
    model: Any  # ChainModel in eval mode
    features: FeaturePipelineConfig
    feature_dim: int
    frame_subsampling_factor: int
    chain_model: Any  # GmmModel: chain transition model + tree
    chunk_size: int = 0  # input frames per inference chunk (0: whole utterances)
    chunk_left_context: int = 0
    chunk_right_context: int = 0

    @property
    def num_pdfs(self) -> int:
        return int(self.chain_model.tm.num_pdfs)


def load_chain_dir(path: str | os.PathLike, device: str = "cpu") -> ChainModelDir:
    """Load a model dir written by :func:`train_chain`, with clear errors for missing files."""
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.training.ce import read_model_dir

    path, state, mcfg, feat = read_model_dir(path, FINAL_FILES, "chain", "train-chain", device)
    model = build_chain_model(state["model_type"], mcfg, state["subsample"], state["xent"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return ChainModelDir(
        path=path,
        model=model,
        features=FeaturePipelineConfig.from_dict(feat["pipeline"]),
        feature_dim=int(feat["dim"]),
        frame_subsampling_factor=int(state["frame_subsampling_factor"]),
        chain_model=GmmModel.load(path / "final.mdl"),
        chunk_size=int(feat.get("chunk_size", 0)),
        chunk_left_context=int(feat.get("chunk_left_context", 0)),
        chunk_right_context=int(feat.get("chunk_right_context", 0)),
    )
