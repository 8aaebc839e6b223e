"""LF-MMI ("chain") training end to end (Kaldi's steps/nnet3/chain/train.py, one process loop).

From data dir(s) with features and a GMM alignment dir to a self-contained chain model dir::

    >>> cfg = TrainChainConfig.load("conf/chain_tdnnf.yaml", overrides=["trainer.max_epochs=2"])
    >>> train_chain(cfg, "exp/chain_tdnnf")       # resumes from exp/chain_tdnnf/checkpoints
    exp/chain_tdnnf/final/{final.pt, model.yaml, features.yaml, final.mdl, tree, den.fst,
                           normalization.fst, phone_lm.fst, config.yaml}

Steps (each the function named after the Kaldi binary it replaces):

1. The chain transition model (:func:`~pykaldi2.hmm.chain.chain_transition_model`): the chain
   topology (one HMM state, separate forward and self-loop pdf classes) for every phone of the
   alignment model, on the alignment model's tree. Kaldi builds a *new* tree for the chain
   topology from the alignments subsampled by 3; here the GMM tree is reused with its pdf
   classes 0 and 1 (the pdfs of the other classes stay unused outputs) -- a documented
   simplification.
2. chain-est-phone-lm on the phone sequences of the training alignments, then
   chain-make-den-fst (den.fst, :class:`~pykaldi2.lang.den_fst.DenGraph`) and the normalization
   FST.
3. chain-get-supervision per utterance (whole utterances, left/right tolerance, frame
   subsampling), composed with the normalization FST
   (:func:`~pykaldi2.hmm.chain.utterance_supervision`); the examples are
   :mod:`pykaldi2.training.chain_egs`'s.
4. One :class:`~pykaldi2.training.trainer.Trainer` loop with :class:`ChainTask` (LF-MMI with
   the leaky HMM, l2 and xent regularization of
   :class:`~pykaldi2.losses.lfmmi.ChainTrainingOptions`) on a
   :class:`~pykaldi2.nnet.chain.ChainModel` (TDNN-F with subsampling, or a BLSTM whose output
   is taken every ``frame_subsampling_factor`` frames), held-out validation objective each
   epoch.

On-the-fly simulation (``simulation: conf/sim.yaml``, as in ``train-ce``): the training
examples' input features are simulated from the audio of the one ``train_data`` dir
(:class:`~pykaldi2.training.chain_egs.SimulatedChainDataset`: noise, reverberation, volume,
SpecAugment, seeded per (seed, epoch, utterance index), so every chunk of an utterance in one
epoch sees the same simulated audio and resumes are exact); the numerators stay the
precomputed ones, so speed perturbation, which changes the frame count, is refused (perturb
the data dir offline and align it instead).
Validation stays on the stored features.

Decoding (:func:`pykaldi2.decoding.nnet.decode_chain`): HCLG built from ``final/final.mdl`` with
self-loop scale 1.0, the raw chain outputs as log-likelihoods (no priors), acoustic scale 1.0.

Dimension legend: N utterances, T input frames, T' = ceil(T / frame_subsampling_factor) output
frames, F feature dim, P pdf_ids.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.features.pipeline import FeaturePipelineConfig
from pykaldi2.lang.phone_lm import PhoneLmOptions
from pykaldi2.losses.lfmmi import ChainTrainingOptions
from pykaldi2.nnet.chain import ChainModel
from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.training.chain_egs import load_chain_data, make_chain_loader, make_egs_loaders
from pykaldi2.training.chain_get_egs import (
    ChainEgsConfig,
    chain_get_egs,
    egs_dir_of,
    wait_for_egs,
)
from pykaldi2.training.config import TrainConfigMixin, as_list, simulation_config
from pykaldi2.training.model_dir import (
    MODEL_TYPES,
    build_chain_model,
    check_model_options,
    load_final_dir,
    model_config,
    write_chain_dir,
)
from pykaldi2.training.trainer import TrainerConfig
from pykaldi2.utils.config import option
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.io import atomic_write_text
from pykaldi2.utils.log import append_jsonl, get_logger

log = get_logger(__name__)

__all__ = ["ChainTask", "TrainChainConfig", "chain_model_for", "init_from_ce", "train_chain"]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainChainConfig(TrainConfigMixin):
    """Everything ``train-chain`` needs; saved (resolved, with provenance) as EXP_DIR/config.yaml.

    Attributes:
        train_data: training data dir(s) with feats.scp (and cmvn.scp for speaker CMVN).
        ali_dir: GMM alignment dir(s) (``final.mdl`` + ``ali.scp|ali.ark|ali.*.gz``), all from
            one model: the phones and their durations of the numerator supervision.
        tree_dir: the chain tree and transition model (``pykaldi2 build-tree-chain``: Kaldi's
            steps/nnet3/chain/build_tree.sh); empty: the alignment model's tree (see
            ``topology``).
        egs: :class:`~pykaldi2.training.chain_get_egs.ChainEgsConfig`: with ``chunk_widths``
            the examples are made once on disk by chain-get-egs (NJ jobs, resumable, reused
            by resumed runs) in the model's exact context and streamed from there; without,
            they are made in memory at every start (``chunk_size`` etc. below).
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
        max_models_combine: the final model is nnet3-chain-combine's average of up to this
            many of the last checkpoints (Kaldi's ``--trainer.max-models-combine``, 20 of its
            iterations), chosen by the held-out chain objective, batchnorm statistics
            recomputed (:mod:`pykaldi2.training.chain_combine`); needs held-out egs and
            ``trainer.keep_last`` that many checkpoints. 0 or 1: the last model (default).
        trainer: the :class:`TrainerConfig` (optimizer, epochs, schedule, checkpoints).
        seed: model initialisation, sampler shuffling and the validation split.
        simulation: null (default: the stored features) or a sim.yaml
            (:class:`~pykaldi2.simulation.config.SimulationConfig`; saved resolved): the
            training features are simulated on the fly from the audio of ``train_data`` (one
            data dir, with wav.scp and conf/feats.json;
            :class:`~pykaldi2.training.chain_egs.SimulatedChainDataset`); ``speed.enable``
            must be false (the numerators have fixed frame counts).
    """

    train_data: list[str] = field(default_factory=list)
    ali_dir: list[str] = field(default_factory=list)
    tree_dir: str = ""
    egs: ChainEgsConfig = field(default_factory=ChainEgsConfig)
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
    max_models_combine: int = option(0, ge=0)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    simulation: SimulationConfig | str | None = None

    def __post_init__(self) -> None:

        self.train_data = as_list(self.train_data)
        self.ali_dir = as_list(self.ali_dir)
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
        if self.egs.enabled and self.simulation is not None:
            problems.append(
                "simulation needs the in-memory examples: remove egs.chunk_widths (egs on "
                "disk hold features)"
            )
        if self.egs.enabled and self.chunk_size:
            problems.append("chunk_size is for the in-memory examples; with egs.chunk_widths "
                            "set it to 0")  # fmt: skip
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
        check_model_options(self.model_type, self.model)

    def supervision_options(self):
        from pykaldi2.lang.chain_supervision import SupervisionOptions

        return SupervisionOptions(
            self.left_tolerance, self.right_tolerance, self.frame_subsampling_factor
        )


def chain_simulation_problems(cfg: TrainChainConfig) -> list[str]:
    """Resolve ``cfg.simulation`` (path / mapping / None, as train-ce's) in place; the problems
    of a simulation train-chain cannot do (speed perturbation) as config error messages."""

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


# ---------------------------------------------------------------------------------------------
# Model and task
# ---------------------------------------------------------------------------------------------
def chain_model_config(cfg: TrainChainConfig, input_dim: int, num_pdfs: int):
    """The body's config: ``cfg.model`` with input_dim / num_classes (and a TDNN-F's
    subsampling = frame_subsampling_factor) filled in; returns (config, output subsample)."""

    d = {k: v for k, v in cfg.model.items() if k not in ("subsampling", "xent_branch")}
    mcfg = model_config(cfg.model_type, d, input_dim, num_pdfs)
    if cfg.model_type == "tdnnf":
        xent = cfg.chain.xent_regularize > 0
        mcfg = dataclasses.replace(mcfg, subsampling=cfg.frame_subsampling_factor, xent_branch=xent)
        return mcfg, 1
    return mcfg, cfg.frame_subsampling_factor


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

    In-memory examples (``extra_context`` None): ``left_context`` input frames before each
    example's first supervised frame are dropped from the output (``left_context / factor``
    output frames); with ``frame_shift`` a training batch is shifted by a random
    0..factor-1 frames. Egs-dir examples (``extra_context`` e >= 0) carry the model's exact
    context plus e frames on each side: the window the model reads is cut at a random shift
    in ``[-e, e]`` (Kaldi's ``--frame-shift``; 0 in evaluation), and the model runs on it with
    ``context_included``. Shifts come from torch's RNG, which the trainer reseeds per step:
    resumes are exact. A body with per-layer l2 (``l2_penalty``, Kaldi's ``l2-regularize`` of
    each component) adds ``num_chunks * l2_penalty`` to the loss, as Kaldi adds it per
    sequence of the minibatch.
    """

    def __init__(
        self, den_graph, opts: ChainTrainingOptions, factor: int, device,
        left_context: int = 0, frame_shift: bool = False, extra_context: int | None = None,
        den_kernel: str = "auto",
    ) -> None:  # fmt: skip
        self.den_graph = den_graph.to(device)
        self.opts, self.factor, self.device = opts, int(factor), device
        self.offset, self.frame_shift = int(left_context) // int(factor), bool(frame_shift)
        self.extra = extra_context
        self.den_kernel = den_kernel

    def compute_loss(self, model, batch):
        import torch

        from pykaldi2.losses.lfmmi import chain_loss
        from pykaldi2.losses.output import LossOutput

        inner = getattr(model, "module", model)  # a wrapped model (DDP-style)
        feats = batch["feats"].to(self.device)
        lengths = batch["lengths"].to(self.device)
        out_len = batch.get("out_lengths")
        if self.extra is not None:
            e = int(self.extra)
            k = int(torch.randint(-e, e + 1, ())) if self.frame_shift and model.training else 0
            width = feats.shape[1] - 2 * e
            feats = feats[:, e + k : e + k + width]
            lengths = torch.clamp(lengths - 2 * e, max=width)
            out, xent = inner.forward_train(feats, lengths, context_included=True)
            offset = 0
        else:
            if self.frame_shift and self.factor > 1 and model.training:
                feats = shift_frames(feats, lengths, int(torch.randint(self.factor, ())))
            out, xent = inner.forward_train(feats, lengths)
            offset = self.offset
        if out_len is None:
            out_len = (lengths + self.factor - 1) // self.factor
        out_len = out_len.to(self.device)
        need = offset + int(out_len.max())
        if out.shape[1] < need:
            raise Pykaldi2Error(
                f"the model gives {out.shape[1]} output frames for {int(lengths.max())} input "
                f"frames; frame_subsampling_factor {self.factor} needs {need}"
            )
        out = out[:, offset:need]
        xent = xent[:, offset:need] if xent is not None else None
        res = chain_loss(
            out, out_len, self.den_graph, batch["num_graphs"], self.opts, xent_output=xent,
            den_kernel=self.den_kernel,
        )  # fmt: skip
        loss = res.loss * res.num_frames
        l2 = getattr(inner.body, "l2_penalty", None)
        if l2 is not None and model.training:
            loss = loss + len(out_len) * l2()
        return LossOutput(
            loss=loss,
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


def _egs_chain_data(cfg: TrainChainConfig, exp_dir: Path, dist, model):
    """The egs dir of ``model``'s context (built by rank 0 if missing; the other ranks wait)
    and what training reads from it, as :class:`~pykaldi2.training.chain_egs.ChainData`."""
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import kaldifst
    from pykaldi2.lang.den_fst import read_den_graph
    from pykaldi2.training.chain_egs import ChainData, EgsDataset
    from pykaldi2.training.data import DataDirFeatures

    egs_dir = egs_dir_of(cfg, exp_dir)
    left, right = model.left_context, model.right_context
    if dist.is_main:
        info = chain_get_egs(cfg, egs_dir, left, right)
    else:
        info = wait_for_egs(egs_dir)
    if (info.left_context, info.right_context) != (left, right):
        raise DataError(
            f"the egs dir has context {info.left_context}/{info.right_context}, the model "
            f"{left}/{right}", file=str(egs_dir), fix="delete the egs dir to rebuild it",
        )  # fmt: skip
    chain_model = GmmModel.load(egs_dir / "final.mdl")
    den_graph = read_den_graph(egs_dir / "den.fst", int(chain_model.tm.num_pdfs))
    fsts = {n: kaldifst.StdVectorFst.read(str(egs_dir / f"{n}.fst"))
            for n in ("den", "normalization", "phone_lm")
            if (egs_dir / f"{n}.fst").is_file()}  # fmt: skip
    fsts.setdefault("phone_lm", None)  # den_fst_dir without phone_lm.fst
    return info, ChainData(
        DataDirFeatures(cfg.train_data, cfg.features), EgsDataset(info), None, chain_model,
        fsts["phone_lm"], fsts["den"], den_graph, fsts["normalization"],
    )  # fmt: skip


def _input_dim_and_pdfs(cfg: TrainChainConfig) -> tuple[int, int]:
    from pykaldi2.hmm.chain import load_chain_model
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.training.data import DataDirFeatures

    dim = DataDirFeatures(cfg.train_data, cfg.features).dim
    ali_model = GmmModel.load(Path(cfg.ali_dir[0]) / "final.mdl")
    return dim, int(load_chain_model(cfg.tree_dir, ali_model, cfg.topology).tm.num_pdfs)


def chain_model_for(cfg: TrainChainConfig) -> ChainModel:
    """The (randomly initialised) chain model of ``cfg`` (its context decides the egs)."""
    import torch

    dim, num_pdfs = _input_dim_and_pdfs(cfg)
    mcfg, subsample = chain_model_config(cfg, dim, num_pdfs)
    torch.manual_seed(cfg.seed)
    return build_chain_model(cfg.model_type, mcfg, subsample, cfg.chain.xent_regularize > 0)


def _whole_run_decay(cfg: TrainChainConfig, steps_per_epoch: int) -> TrainerConfig:
    """``schedule.decay_steps: 0`` with ``decay: exp``: decay over the whole run (Kaldi's
    learning rate goes from its initial to its final value geometrically over training)."""
    sch = cfg.trainer.schedule
    if sch.decay != "exp" or sch.decay_steps > 0:
        return cfg.trainer
    total = cfg.trainer.max_epochs * max(1, steps_per_epoch // cfg.trainer.accum_grad)
    if cfg.trainer.max_steps > 0:
        total = min(total, cfg.trainer.max_steps)
    steps = max(1, total - sch.warmup_steps - sch.hold_steps)
    return dataclasses.replace(cfg.trainer, schedule=dataclasses.replace(sch, decay_steps=steps))


def _combine(cfg: TrainChainConfig, model, task: ChainTask, vloader, dist, exp_dir: Path) -> None:
    """train.py's combine stage: ``model`` becomes nnet3-chain-combine's average of the last
    checkpoints (every rank computes it; the objective is summed over ranks)."""
    import torch

    from pykaldi2.training import checkpoint as ckpt
    from pykaldi2.training.chain_combine import chain_combine

    paths = ckpt.list_checkpoints(exp_dir / "checkpoints")[-cfg.max_models_combine :][::-1]
    if len(paths) < 2:
        log.info("combine: %d checkpoint(s) kept, the final model is the last", len(paths))
        return
    states = [ckpt.load_checkpoint(p, map_location=dist.device)["model"] for p in paths]

    def objf(m) -> float:
        tot = frames = 0.0
        for batch in vloader:
            out = task.compute_loss(m, batch)
            tot, frames = tot + out.stats["objf"], frames + out.count
        tot, frames = dist.allreduce_scalars([tot, frames])
        return tot / max(frames, 1e-12)

    with torch.no_grad():
        res = chain_combine(
            model, states, objf, lambda: iter(vloader), lambda m, b: task.compute_loss(m, b)
        )
    if dist.is_main:
        rec = {
            "checkpoints": [p.name for p in paths],
            "num_models": res.num_models,
            "objf_last": res.objf_last,
            "objf": res.objf,
            "evaluated": res.evaluated,
        }
        atomic_write_text(exp_dir / "log" / "combine.json", json.dumps(rec, indent=1) + "\n")


def train_chain(cfg: TrainChainConfig, exp_dir: str | os.PathLike) -> Path:
    """Train (or resume) a chain model in ``exp_dir``; returns ``exp_dir/final``.

    Resumes automatically from ``exp_dir/checkpoints/latest``. Works under torchrun /
    horovodrun (every rank builds the graphs; rank 0 writes config.yaml, logs, the final dir).
    """
    import torch

    from pykaldi2.training.distributed import Dist
    from pykaldi2.training.trainer import Trainer, evaluate

    exp_dir = Path(exp_dir)
    dist = Dist.from_env()
    try:
        if cfg.egs.enabled:
            dim, num_pdfs = _input_dim_and_pdfs(cfg)
        else:
            data = load_chain_data(cfg)
            dim, num_pdfs = data.feats.dim, data.num_pdfs
        mcfg, subsample = chain_model_config(cfg, dim, num_pdfs)
        torch.manual_seed(cfg.seed)
        model = build_chain_model(cfg.model_type, mcfg, subsample, cfg.chain.xent_regularize > 0)
        if dist.is_main:
            exp_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(exp_dir / "config.yaml")
        vloader = None
        if cfg.egs.enabled:
            info, data = _egs_chain_data(cfg, exp_dir, dist, model)
            loader, vloader = make_egs_loaders(
                info, cfg, rank=dist.rank, world_size=dist.world_size
            )
            task = ChainTask(
                data.den_graph, cfg.chain, cfg.frame_subsampling_factor, dist.device,
                frame_shift=cfg.frame_shift, extra_context=info.extra_context,
            )  # fmt: skip
            examples = f"{info.num_chunks} chunks of {info.num_utts} utterances in {info.dir}"
        else:
            task = ChainTask(
                data.den_graph, cfg.chain, cfg.frame_subsampling_factor, dist.device,
                left_context=data.train.left, frame_shift=cfg.frame_shift,
            )  # fmt: skip
            loader = make_chain_loader(
                data.train, cfg, rank=dist.rank, world_size=dist.world_size, shuffle=True
            )
            if data.valid is not None:
                vloader = make_chain_loader(
                    data.valid, cfg, rank=dist.rank, world_size=dist.world_size, shuffle=False
                )
            examples = f"{len(data.train.utts)} utterances ({len(data.train)} examples)"
        if cfg.init_model:
            init_from_ce(
                model, cfg.model_type, mcfg, cfg.init_model, cfg.init_acoustic_scale,
                data.ali_model,
            )  # fmt: skip
        dist.broadcast_parameters(model)
        valid_fn = None
        if vloader is not None:

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
            _whole_run_decay(cfg, len(loader.batch_sampler)),
            exp_dir,
            dist=dist,
            model_config={"model_type": cfg.model_type, **mcfg.to_dict(), "subsample": subsample},
            model_config_defaults=type(mcfg).field_defaults(),
            valid_fn=valid_fn,
            after_step=_orthonormal_hook(cfg.orthonormal_every),
        )
        trainer.resume()
        log.info(
            "train-chain: %s, %d pdfs, den.fst %d states / %d arcs, %s model with %.2fM "
            "parameters (context %d/%d)", examples, data.num_pdfs, data.den_graph.num_states,
            data.den_graph.num_arcs, cfg.model_type,
            sum(p.numel() for p in model.parameters()) / 1e6, model.left_context,
            model.right_context,
        )  # fmt: skip
        summary = trainer.fit(loader)
        if cfg.max_models_combine > 1 and vloader is not None:
            _combine(cfg, model, task, vloader, dist, exp_dir)
        final = exp_dir / "final"
        if dist.is_main:
            write_chain_dir(final, cfg, model, mcfg, subsample, data, summary)
        dist.barrier()
        return final
    finally:
        dist.shutdown()
