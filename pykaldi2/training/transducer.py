"""RNN-Transducer training end to end (Myrtle's / MLPerf's RNN-T recipe on the shared trainer).

From data dir(s) with fbank features (feats.scp, HDF5 or ark) and ``text`` to a self-contained
``transducer`` model dir::

    >>> cfg = TrainTransducerConfig.load("conf/transducer.yaml", overrides=["trainer.max_steps=5"])
    >>> train_transducer(cfg, "exp/rnnt")      # resumes from exp/rnnt/checkpoints
    exp/rnnt/final/{model.yaml, weights.pt, tokenizer.model}

Steps: a sentencepiece tokenizer (:mod:`pykaldi2.lang.tokenizer`) trained on the training text
into ``EXP_DIR/tokenizer`` (or ``tokenizer_model`` given); features through the
:class:`TransducerFrontendConfig` (sliding-window CMN, which a stream can reproduce, then
stacking ``frame_stack`` frames and keeping every ``frame_subsample``-th, Myrtle's 3x3);
utterances whose token count exceeds the encoder frames after time reduction, without text, or
with characters the tokenizer cannot encode (``tokenizer.on_unknown: skip``) are skipped and
counted in ``EXP_DIR/log/skipped.json`` (those without a ``text`` line are also named in a
warning, and more than ``max_missing_text_fraction`` of them is an error); length-bucketed batches; SpecAugment on the fly; the
shared :class:`~pykaldi2.training.trainer.Trainer` (AMP, grad accumulation, warmup/hold/exp
decay, NaN skipping, exact resume, torchrun/horovod) with a separate LR factor for the joiner's
output layer and EMA weights kept in every checkpoint and used for the final model. With
``simulation: conf/sim.yaml`` the training utterances are simulated on the fly from the audio
(:class:`~pykaldi2.simulation.dataset.SimulatedUtteranceDataset`, then the same front end);
validation stays clean.

Dimension legend: B batch, T frames after the front end, F' = frame_stack * F, U tokens.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pykaldi2.data.transcripts import MAX_MISSING_TEXT_FRACTION
from pykaldi2.features.transducer_frontend import TransducerFrontendConfig
from pykaldi2.lang.tokenizer import TokenizerConfig
from pykaldi2.losses.output import LossOutput
from pykaldi2.simulation.config import SimulationConfig, SpecAugConfig
from pykaldi2.training.config import TrainConfigMixin, as_list, options_from_dict, simulation_config
from pykaldi2.training.ema import Ema
from pykaldi2.training.model_dir import save_transducer_dir
from pykaldi2.training.shards import ShardDataConfig
from pykaldi2.training.trainer import Trainer, TrainerConfig, evaluate, make_optimizer
from pykaldi2.training.transducer_egs import (
    ALI_TARGETS,
    transducer_loaders,
    transducer_tokenizer,
    warm_start_ewma,
)
from pykaldi2.utils.config import ConfigMixin, check_fields, check_keys, option
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import append_jsonl, get_logger

log = get_logger(__name__)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
TRANSDUCER_LOSSES = ("full", "pruned")


@dataclass
class PrunedLossConfig(ConfigMixin):
    """Pruned RNN-T training (``loss: pruned``; :mod:`pykaldi2.losses.rnnt_pruned`), with the
    loss weights of icefall's pruned_transducer_stateless recipes: ``loss = s_n * simple +
    p_n * pruned`` where, at step n < ``warm_step``, ``s_n`` falls linearly from 1 to
    ``simple_loss_scale`` and ``p_n`` rises linearly from 0.1 to 1 (the band of the pruned loss
    comes from the simple joiner, so it must first learn an alignment); from ``warm_step`` on
    ``s_n = simple_loss_scale`` and ``p_n = 1``.

    Attributes:
        prune_range: R, the lattice columns kept at each frame (k2's ``s_range``).
        simple_loss_scale: the simple loss's weight after the warm-up.
        warm_step: optimizer steps of the warm-up.
        lm_scale, am_scale: smoothing of the simple loss (k2's ``lm_only_scale`` and
            ``am_only_scale``; icefall: 0.25 and 0).
    """

    prune_range: int = option(5, ge=2)
    simple_loss_scale: float = option(0.5, ge=0, le=1)
    warm_step: int = option(2000, ge=0)
    lm_scale: float = option(0.25, ge=0, lt=1)
    am_scale: float = option(0.0, ge=0, lt=1)

    def __post_init__(self) -> None:
        if self.lm_scale + self.am_scale >= 1:
            raise Pykaldi2Error("pruned.lm_scale and am_scale must be >= 0 with a sum < 1")

    def scales(self, step: int) -> tuple[float, float]:
        """(simple, pruned) loss weights at optimizer step ``step``."""
        if step >= self.warm_step:
            return self.simple_loss_scale, 1.0
        f = step / self.warm_step
        return 1.0 - f * (1.0 - self.simple_loss_scale), 0.1 + 0.9 * f


@dataclass
class TrainTransducerConfig(TrainConfigMixin):
    """Everything ``train-transducer`` needs; saved (resolved, with provenance) in the exp dir.

    Attributes:
        train_data, valid_data: data dirs with feats.scp and text; empty valid_data: hold out
            ``valid_fraction`` of the training utterances (0: no validation).
        tokenizer: sentencepiece options (``vocab_size`` counts blank); ``tokenizer_model``: use
            this trained ``tokenizer.model`` instead of training one.
        frontend: CMN and frame stacking (:class:`TransducerFrontendConfig`).
        model_size: a :class:`~pykaldi2.nnet.transducer.TransducerConfig` preset (tiny, testing,
            base); ``model``: overrides of its fields (``in_feats``/``vocab_size`` come from the
            data and the tokenizer).
        specaug: SpecAugment applied on the fly to training batches.
        batch_size, max_frames, num_buckets: length-bucketed batches (per rank).
        max_frames_per_utt: training utterances longer than this many feature frames are
            skipped (``too_long`` in skipped.json; 0: none): a few very long utterances can
            cost more than all the others (icefall keeps 1-20 s).
        num_workers: DataLoader workers.
        ema_decay: EMA of the weights (0: off); the final model uses the EMA weights. The decay
            at step n is ``min(ema_decay, (1 + n) / (10 + n))`` (a warm-up, so that a short run
            does not keep a share of the random initialization in its final weights).
        loss: ``full`` (the RNN-T loss on the whole (B, T', U+1, V) joiner output) or
            ``pruned`` (k2's pruned RNN-T: a simple additive joiner, trained with its own
            loss, chooses a band of ``pruned.prune_range`` columns per frame and the real
            joiner runs on the band only; the model gets the simple joiner's projections).
        pruned: :class:`PrunedLossConfig` (band width, loss weights and their warm-up).
        ctc_weight: weight of an auxiliary CTC loss on the encoder output (a linear CTC head
            over the same symbols, blank shared; 0: off). The training loss is
            ``rnnt + ctc_weight * ctc``; validation reports the RNN-T loss alone (with
            ``loss: pruned``, the pruned loss: the loss of the paths inside the band, an upper
            bound of the full loss).
        ali_dir: HMM-GMM alignment dir(s) of ``train_data`` (ours or Kaldi's: final.mdl +
            ali.*.gz), for an auxiliary frame cross-entropy on the encoder output (a linear
            head over the ``ali_targets`` labels: ``phone`` or ``pdf``; the label of an
            encoder frame is the alignment's at its centre, stretched with a speed-perturbed
            copy): training on the hybrid system's alignments as Hu et al. (ICASSP 2020,
            "Exploring pre-training with alignments for RNN transducer based end-to-end speech
            recognition") pre-train with them, here as a multi-task loss weighted
            ``ali_weight`` (the training loss adds ``ali_weight * ce``, CE summed over encoder
            frames). Utterances without an alignment (or one more than a frame off the
            features) are skipped as ``no_alignment``; data dirs only (not shards).
        average_best: the final model is the mean of the weights of the ``average_best``
            epochs with the lowest validation loss (ESPnet's ``--keep_nbest_models N`` and
            its ``valid.loss.ave_Nbest`` model; 0: the last epoch's weights). The weights
            ranked are the final model's kind (EMA when enabled), each validated once more
            for it (``final_loss`` in log/valid.jsonl); the kept ones are in
            ``checkpoints/best/``, and ``final_last/`` keeps the last epoch's model beside
            the averaged ``final/``. Needs validation data.
        joint_lr_factor: LR multiplier of the joiner's output layer (Myrtle's ``joint_net_lr``).
        max_symbols_per_frame: greedy decoding setting saved with the model.
        max_missing_text_fraction: utterances with features but no ``text`` line are listed
            and left out; more than this fraction of a data dir set is an error.
        joiner_max_nodes: the RNN-T loss runs the joiner on groups of utterances holding at
            most this many lattice nodes (t, u) at a time, each recomputed in the backward pass
            (:mod:`pykaldi2.losses.rnnt_chunked`): the joiner's memory is bounded by this
            budget (or the largest utterance's lattice) instead of batch x T x U. Same loss and
            gradients; a batch within the budget runs as one piece. ``loss: full`` only: the
            pruned loss runs the joiner on B x T' x ``prune_range`` nodes, the band, which is
            already that much smaller.
        trainer: :class:`TrainerConfig` (optimizer, AMP, accum_grad, schedule, checkpoints).
        simulation: null (default: the stored features) or a sim.yaml (saved resolved): the
            training utterances are simulated on the fly from the audio of ``train_data`` (one
            data dir with wav.scp and conf/feats.json); validation stays clean.
        shards: :class:`~pykaldi2.training.shards.ShardDataConfig`: train on WebDataset shards
            read as a stream instead of ``train_data`` (features computed on the fly with
            ``shards.features``; the tokenizer trained on the shards' transcripts; validation
            on ``shards.valid`` or ``valid_data``; ``num_workers`` DataLoader workers).
    """

    train_data: list[str] = field(default_factory=list)
    valid_data: list[str] = field(default_factory=list)
    valid_fraction: float = 0.05
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenizer_model: str = ""
    frontend: TransducerFrontendConfig = field(default_factory=TransducerFrontendConfig)
    model_size: str = "testing"
    model: dict[str, Any] = field(default_factory=dict)
    specaug: SpecAugConfig = field(default_factory=SpecAugConfig)
    batch_size: int = 32
    max_frames: int = 0
    max_frames_per_utt: int = option(0, ge=0)
    num_buckets: int = option(10, ge=1)
    num_workers: int = 2
    ema_decay: float = 0.999
    loss: str = option("full", choices=TRANSDUCER_LOSSES)
    pruned: PrunedLossConfig = field(default_factory=PrunedLossConfig)
    ctc_weight: float = 0.0
    ali_dir: list[str] = field(default_factory=list)
    ali_weight: float = option(0.0, ge=0)
    ali_targets: str = option("phone", choices=ALI_TARGETS)
    average_best: int = option(0, ge=0)
    joint_lr_factor: float = 1.0
    max_symbols_per_frame: int = 3
    max_missing_text_fraction: float = option(MAX_MISSING_TEXT_FRACTION, ge=0, le=1)
    joiner_max_nodes: int = option(100_000, ge=1)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    simulation: SimulationConfig | str | None = None
    shards: ShardDataConfig = field(default_factory=ShardDataConfig)

    def __post_init__(self) -> None:
        self.train_data = as_list(self.train_data)
        self.valid_data = as_list(self.valid_data)
        self.ali_dir = as_list(self.ali_dir)
        self.build_sections()
        self.simulation = simulation_config(self.simulation)
        self.model = dict(self.model or {})
        problems = []
        if not self.train_data and not self.shards.enabled:
            problems.append("train_data: at least one data dir (or shards.train) is required")
        if self.shards.enabled and (self.train_data or self.simulation is not None):
            problems.append("shards.train replaces train_data (and simulation): give one")
        if self.batch_size <= 0 and self.max_frames <= 0:
            problems.append("batch_size or max_frames must be > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append("ema_decay must be in [0, 1)")
        if self.ctc_weight < 0:
            problems.append("ctc_weight must be >= 0")
        if bool(self.ali_dir) != (self.ali_weight > 0):
            problems.append("ali_dir and ali_weight > 0 go together (the alignments' frame CE)")
        if self.ali_dir and self.shards.enabled:
            problems.append("ali_dir works with train_data dirs, not shards")
        if self.average_best and not (self.valid_data or self.valid_fraction > 0
                                      or self.shards.valid):  # fmt: skip
            problems.append("average_best ranks epochs by validation loss: give valid_data")
        if self.joint_lr_factor <= 0:
            problems.append("joint_lr_factor must be > 0")
        if not 0.0 <= self.valid_fraction < 1.0:
            problems.append("valid_fraction must be in [0, 1)")
        if self.num_workers < 0 or self.max_symbols_per_frame < 1:
            problems.append("num_workers >= 0 and max_symbols_per_frame >= 1 required")
        if problems:
            raise Pykaldi2Error("TrainTransducerConfig: " + "; ".join(problems))
        from pykaldi2.nnet.transducer import TransducerConfig

        check_keys(self.model, TransducerConfig.field_names(), where="model")
        check_fields(TransducerConfig, self.model, where="model")

    # The unknown-key and bad-value messages are train-ce's.
    from_dict = classmethod(options_from_dict)


# ---------------------------------------------------------------------------------------------
# Loss task and trainer
# ---------------------------------------------------------------------------------------------
class TransducerTask:
    """RNN-T loss summed over the batch's utterances (count = utterances), plus ``ctc_weight``
    times the CTC loss of the model's CTC head in training mode (``stats``: ``rnnt``, ``ctc``)
    and ``ali_weight`` times the frame cross-entropy of its alignment head against the
    batch's ``frame_labels`` (:class:`~pykaldi2.training.transducer_egs.FrameLabelDataset`;
    summed over the labelled encoder frames; ``stats``: ``ali_ce``, ``ali_frames``,
    ``ali_correct``).
    The full loss runs the joiner on groups of at most ``joiner_max_nodes`` lattice nodes
    (:func:`~pykaldi2.losses.rnnt_chunked.rnnt_loss_chunked`), so its memory stays bounded.

    With ``pruned`` (a :class:`PrunedLossConfig`) the RNN-T loss is pruned RNN-T's: in training
    ``s_n * simple + p_n * pruned`` with the warm-up weights at the trainer's step
    (``current_step()``, set by the trainer), in evaluation the pruned loss alone (``stats``:
    ``simple``, ``pruned``).

    Batches are :func:`~pykaldi2.data.datasets.collate_frames` dicts: targets padded with a
    negative value, so ``target_lengths = (targets >= 0).sum(1)``. With ``specaug`` enabled,
    each utterance is augmented while the model is in training mode, with draws from numpy's
    global RNG (which the trainer reseeds every step, so resume is exact).
    """

    def __init__(
        self,
        device,
        specaug: SpecAugConfig | None = None,
        ctc_weight: float = 0.0,
        pruned: PrunedLossConfig | None = None,
        joiner_max_nodes: int = 100_000,
        ali_weight: float = 0.0,
    ) -> None:
        self.device = torch.device(device)
        self.ali_weight = float(ali_weight)
        self.specaug = specaug if specaug is not None and specaug.enable else None
        self.ctc_weight = float(ctc_weight)
        self.pruned = pruned
        self.joiner_max_nodes = int(joiner_max_nodes)
        self.current_step = lambda: 0

    def _augment(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        from pykaldi2.simulation.specaug import spec_augment

        rng = np.random.default_rng(np.random.randint(2**31))
        feats = feats.clone()
        for i, n in enumerate(lengths.tolist()):
            feats[i, :n] = spec_augment(feats[i, :n], self.specaug, rng)[0]
        return feats

    def compute_loss(self, model, batch) -> LossOutput:
        from pykaldi2.losses.rnnt_chunked import rnnt_loss_chunked

        feats = batch["feats"].to(self.device)
        lengths = batch["lengths"].to(self.device)
        targets = batch["targets"].to(self.device)
        if self.specaug is not None and model.training:
            feats = self._augment(feats, lengths)
        target_lengths = (targets >= 0).sum(1)
        targets = targets.clamp(min=0)
        enc, enc_lengths, pred = model.encode_and_predict(feats, lengths, targets)
        stats = {"tokens": float(target_lengths.sum())}
        if self.pruned is None:
            loss = rnnt_loss_chunked(model.joiner, enc, pred, targets, enc_lengths,
                                     target_lengths, model.blank, self.joiner_max_nodes)  # fmt: skip
        else:
            loss = self._pruned_loss(model, (enc, enc_lengths, pred), targets, target_lengths,
                                     stats)  # fmt: skip
        stats["rnnt"] = float(loss.detach())
        if self.ctc_weight > 0 and model.training:
            ctc = ctc_loss_sum(model.ctc_log_probs(enc), targets, enc_lengths, target_lengths,
                               model.blank)  # fmt: skip
            loss = loss + self.ctc_weight * ctc
            stats["ctc"] = float(ctc.detach())
        labels = batch.get("frame_labels")
        if self.ali_weight > 0 and model.training and labels is not None:
            loss = loss + self.ali_weight * frame_ce_sum(model.ali_log_probs(enc),
                                                         labels.to(self.device), stats)  # fmt: skip
        return LossOutput(loss, float(len(lengths)), stats)

    def _pruned_loss(self, model, encoded, targets, target_lengths, stats) -> torch.Tensor:
        from pykaldi2.losses.rnnt_pruned import pruned_rnnt_loss

        p = self.pruned
        simple, pruned = pruned_rnnt_loss(
            model, None, None, targets, target_lengths, p.prune_range, "sum",
            p.lm_scale, p.am_scale, encoded=encoded,
        )  # fmt: skip
        stats["simple"], stats["pruned"] = float(simple.detach()), float(pruned.detach())
        if not model.training:
            return pruned
        s_scale, p_scale = p.scales(self.current_step())
        return s_scale * simple + p_scale * pruned


def ctc_loss_sum(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int,
) -> torch.Tensor:
    """CTC loss summed over the batch: log_probs (B, T', V), targets (B, U) (padding: any
    value), lengths (B,), target_lengths (B,). Utterances too short for their targets (CTC
    needs a frame per symbol plus one per repeat) contribute 0 instead of inf."""
    return torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1),
        targets.clamp(min=0),
        lengths,
        target_lengths,
        blank=blank,
        reduction="sum",
        zero_infinity=True,
    )


def frame_ce_sum(log_probs: torch.Tensor, labels: torch.Tensor, stats: dict) -> torch.Tensor:
    """Cross-entropy summed over the labelled frames: log_probs (B, T', C), labels (B, T'')
    (IGNORE where padded; T'' <= T' after padding, the longer of the two cut to the shorter).
    Adds ``ali_ce`` (the sum), ``ali_frames`` and ``ali_correct`` (argmax hits) to ``stats``."""
    from pykaldi2.data.datasets import IGNORE

    n = min(log_probs.shape[1], labels.shape[1])
    lp, y = log_probs[:, :n], labels[:, :n]
    ce = torch.nn.functional.nll_loss(lp.reshape(-1, lp.shape[-1]), y.reshape(-1),
                                      ignore_index=IGNORE, reduction="sum")  # fmt: skip
    mask = y != IGNORE
    stats["ali_ce"] = float(ce.detach())
    stats["ali_frames"] = float(mask.sum())
    stats["ali_correct"] = float(((lp.argmax(-1) == y) & mask).sum())
    return ce


class TransducerTrainer(Trainer):
    """The shared trainer plus the joiner-output LR group and EMA weights in the checkpoints."""

    def __init__(self, model, task, cfg: TrainerConfig, exp_dir, *, joint_lr_factor, ema_decay,
                 **kw) -> None:  # fmt: skip
        super().__init__(model, task, cfg, exp_dir, **kw)
        out = {id(p) for p in self.model.joiner.out.parameters()}
        self.optimizer = make_optimizer(
            cfg, (p for p in self.model.parameters() if id(p) not in out)
        )
        self.optimizer.add_param_group(
            {"params": list(self.model.joiner.out.parameters()), "lr_factor": joint_lr_factor}
        )
        self.ema = Ema(self.model, ema_decay) if ema_decay > 0 else None
        user_after = self.after_step

        def after_step(m, step):
            if self.ema is not None:
                self.ema.update(m, step)
            if user_after is not None:
                user_after(m, step)

        self.after_step = after_step

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["ema"] = self.ema.state_dict() if self.ema is not None else None
        return state

    def resume(self, path=None) -> bool:
        from pykaldi2.training import checkpoint as ckpt

        path = Path(path) if path else ckpt.latest_checkpoint(self.ckpt_dir)
        if not super().resume(path):
            return False
        ema = ckpt.load_checkpoint(path, map_location=self.dist.device).get("ema")
        if self.ema is not None and ema:
            self.ema.load_state_dict(ema)
        return True

    def final_state(self) -> dict[str, torch.Tensor]:
        """The weights of the final model: EMA when enabled."""
        if self.ema is not None:
            return self.ema.model_state(self.model)
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def final_model(self) -> torch.nn.Module:
        """The model with the final weights (a copy holding the EMA weights when enabled;
        the training model itself otherwise)."""
        if self.ema is None:
            return self.model
        import copy

        m = copy.deepcopy(self.model)
        m.load_state_dict(self.ema.model_state(self.model))
        return m


# ---------------------------------------------------------------------------------------------
# train-transducer
# ---------------------------------------------------------------------------------------------
def transducer_model_config(
    cfg: TrainTransducerConfig, in_feats: int, vocab_size: int, ali_classes: int = 0
):
    """The :class:`TransducerConfig`: the preset + ``cfg.model`` with the data's sizes (and
    the alignment head's ``ali_classes``)."""
    from pykaldi2.nnet.transducer import TransducerConfig

    over = dict(cfg.model)
    if cfg.ctc_weight > 0:
        over["ctc_head"] = True
    if ali_classes:
        over["ali_classes"] = int(ali_classes)
    if cfg.loss == "pruned":
        over["simple_proj"] = True
    for k, v in (("in_feats", in_feats), ("vocab_size", vocab_size), ("blank", 0)):
        if over.get(k) not in (None, v):
            raise DataError(f"model.{k}={over[k]} but the data/tokenizer give {v}",
                            fix=f"remove model.{k} from the config")  # fmt: skip
        over[k] = v
    return TransducerConfig.preset(cfg.model_size, **over)


def train_transducer(cfg: TrainTransducerConfig, exp_dir: str | os.PathLike) -> Path:
    """Train (or resume) an RNN-T in ``exp_dir``; returns the model dir ``exp_dir/final``."""
    from pykaldi2.nnet.transducer import Transducer, TransducerConfig
    from pykaldi2.training.distributed import Dist

    exp_dir = Path(exp_dir)
    dist = Dist.from_env()
    try:
        if cfg.frontend.uses_stats and not cfg.frontend.ewma.ready:
            warm_start_ewma(cfg)
        if dist.is_main:
            exp_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(exp_dir / "config.yaml")
        tok = transducer_tokenizer(cfg, exp_dir, dist)
        k = (
            int(cfg.model.get("enc_stack_time_factor", 0))
            or TransducerConfig.preset(cfg.model_size).enc_stack_time_factor
        )
        data = transducer_loaders(cfg, tok, k, exp_dir / "egs", dist)
        mcfg = transducer_model_config(cfg, cfg.frontend.output_dim(data.feats.dim),
                                       tok.vocab_size, data.ali_classes)  # fmt: skip
        torch.manual_seed(cfg.seed)
        model = Transducer(mcfg)
        dist.broadcast_parameters(model)
        counts = {r: len(u) for r, u in data.skipped.items()}
        what = (
            f"{data.num_utts} utterances"
            if data.num_utts is not None
            else f"{len(data.loader.shards)} shards, {len(data.loader)} batches an epoch"
        )
        log.info("train-transducer: %s, skipped %s; %s", what, counts, model.summary())  # fmt: skip
        if dist.is_main:
            from pykaldi2.utils.io import atomic_write_text

            doc = {"counts": counts, "utts": {r: u[:100] for r, u in data.skipped.items()}}
            atomic_write_text(exp_dir / "log" / "skipped.json", json.dumps(doc, indent=1) + "\n")
        pruned = cfg.pruned if cfg.loss == "pruned" else None
        task = TransducerTask(dist.device, cfg.specaug, cfg.ctc_weight, pruned,
                              cfg.joiner_max_nodes, cfg.ali_weight)  # fmt: skip
        loader, vloader = data.loader, data.valid_loader
        valid_fn, best = None, None
        if cfg.average_best:
            if vloader is None or not len(vloader):
                raise DataError("average_best needs validation utterances; none were found",
                                fix="give valid_data, or set average_best: 0")  # fmt: skip
            if dist.is_main:
                from pykaldi2.training.checkpoint import BestSnapshots

                best = BestSnapshots(exp_dir / "checkpoints" / "best", cfg.average_best)
        if vloader is not None and len(vloader):

            def valid_fn(m) -> float:
                res = evaluate(m, vloader, task, dist)
                rec = {"step": trainer.step, "loss": res["loss"], "utts": res["frames"]}
                if cfg.average_best:  # rank the final model's weights (EMA) on all ranks
                    fm = trainer.final_model()
                    rec["final_loss"] = evaluate(fm, vloader, task, dist)["loss"]
                    del fm
                if dist.is_main:
                    what = "pruned RNN-T" if pruned is not None else "RNN-T"
                    log.info("validation: %s loss per utterance %.4f", what, res["loss"])
                    if best is not None:
                        kept = best.update(trainer.epoch, rec["final_loss"], trainer.final_state)
                        log.info("epoch %d: final-weights loss %.4f%s", trainer.epoch,
                                 rec["final_loss"], ", kept" if kept else "")  # fmt: skip
                    append_jsonl(exp_dir / "log" / "valid.jsonl", rec)
                return res["loss"]

        trainer = TransducerTrainer(
            model,
            task,
            cfg.trainer,
            exp_dir,
            dist=dist,
            model_config=mcfg.to_dict(),
            valid_fn=valid_fn,
            joint_lr_factor=cfg.joint_lr_factor,
            ema_decay=cfg.ema_decay,
        )
        task.current_step = lambda: trainer.step
        # checkpoints of older pykaldi2 lack the newer TransducerConfig fields (their defaults)
        trainer.model_config_defaults = TransducerConfig().to_dict()
        trainer.resume()
        summary = trainer.fit(loader)
        final = exp_dir / "final"
        if dist.is_main:
            training = {
                "steps": trainer.step,
                "ema": cfg.ema_decay > 0,
                **{f"final_{k}": float(v) for k, v in summary.items()},
            }

            def write(where: Path, weights: dict, **extra) -> None:
                save_transducer_dir(where, weights, mcfg, tok.model_file, cfg.frontend,
                                    data.raw_feature_config,
                                    max_symbols_per_frame=cfg.max_symbols_per_frame,
                                    training={**training, **extra})  # fmt: skip

            weights = trainer.final_state()
            if best is not None:
                if not best.entries:
                    raise DataError(f"average_best: {best.dir} holds no epoch snapshots "
                                    "(a run trained without average_best, resumed with it)",
                                    fix="train with average_best from the start")  # fmt: skip
                write(exp_dir / "final_last", weights)
                epochs = [int(e["epoch"]) for e in best.entries]
                log.info("final model: the mean of epochs %s (validation losses %s)", epochs,
                         [round(float(e["loss"]), 4) for e in best.entries])  # fmt: skip
                write(final, best.average(), averaged_epochs=epochs,
                      averaged_valid_losses=[float(e["loss"]) for e in best.entries])  # fmt: skip
            else:
                write(final, weights)
        dist.barrier()
        return final
    finally:
        dist.shutdown()
