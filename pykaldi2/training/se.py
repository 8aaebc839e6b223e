"""Lattice sequence training end to end: MMI, boosted MMI, sMBR, MPFE (PyKaldi2's train_se2;
Kaldi's steps/nnet3/train_discriminative.sh without the separate make_denlats stage).

From a CE model dir (``pykaldi2 train-ce``: EXP/final) to a sequence-trained model dir in the
same format, so ``pykaldi2 decode-nnet`` decodes it unchanged::

    >>> cfg = TrainSEConfig.load("conf/se_blstm.yaml", overrides=["sequence.criterion=mmi"])
    >>> train_se(cfg, "exp/blstm_se")            # resumes from exp/blstm_se/checkpoints
    exp/blstm_se/final/{final.pt, model.yaml, features.yaml, priors.npy, final.mdl, tree,
                        config.yaml}

Steps:

1. The CE model dir gives the network, its feature pipeline, the pdf priors and the transition
   model (``final.mdl``); the numerator is the alignment dir's transition_id alignments (the
   same transition model: checked), one whole utterance per item (no chunks).
   With ``numerator: online`` (PyKaldi2's train_se2) each utterance's numerator is instead
   re-aligned with the current model: the lattice workers compile the utterance's training
   graph from the data dir's ``text`` and the lang dir's L.fst (``lang_dir``; once per
   utterance, cached per worker) and Viterbi-align it with the same log-likelihoods the
   lattice is made from, in the same asynchronous job (no extra forward, no extra wait). An
   utterance that does not align keeps its stored alignment; these fallbacks are counted
   (``ali_failed`` of ``ali_utts`` in log/train.jsonl). A transcript word missing from the
   lang dir's words.txt is an error before training starts.
2. Every batch's denominator lattices are generated on the fly through the denominator graph
   (``den_graph``: e.g. the decoding graph exp/tri2/graph) from the current model's
   log-likelihoods (``log_softmax - prior_scale * log_priors``, the network in eval mode) in a
   pool of ``lattice.num_workers`` processes, one batch ahead of the trainer
   (:class:`~pykaldi2.losses.lattice_gen.LatticePrefetcher`): a step trains on lattices of the
   model before the previous step's update.
3. One :class:`~pykaldi2.training.trainer.Trainer` loop with
   :class:`~pykaldi2.losses.lattice.SequenceTask` (acoustic scale kappa applied consistently,
   frame-smoothing CE with ``sequence.ce_weight``). The *true* objective (MMI value, or expected
   frame accuracy for sMBR/MPFE) per frame is logged every ``trainer.log_every`` steps
   (log/train.jsonl, tensorboard ``train/objf``) and on the held-out utterances before training
   and after each epoch (log/valid.jsonl).

On-the-fly simulation (``simulation: conf/sim.yaml``, as in ``train-ce``): the training
utterances are simulated from the audio of the one ``train_data`` dir
(:class:`~pykaldi2.simulation.dataset.SimulatedUtteranceDataset` through the CE model's feature
pipeline; noise, reverberation, speed, SpecAugment seeded per (seed, epoch, utterance index), so
runs and resumes are reproducible) and the lattices (and ``online`` numerators) are made from
the current model's log-likelihoods of the *simulated* features of the batch; validation stays
on the stored (clean) features. The stored numerator alignments (transition_ids) are the
targets: without speed perturbation they are cut/padded to the simulated frame count (within
``length_tolerance``; reverberation keeps the timing), under speed perturbation they are
stretched by nearest-neighbour frame mapping
(:func:`~pykaldi2.simulation.perturb.rescale_ali`). Every frame then still holds a valid
transition_id of the same transition model, which is all the losses read (its pdf for the MMI
numerator and the CE smoothing, its phone for sMBR/MPFE accuracies and bMMI boosting); the
stretched sequence need not be a valid HMM path (a state may repeat its forward transition or
a one-frame state may be skipped), which no SE loss needs. With ``numerator: online`` the
utterances are re-aligned on the perturbed frames anyway (the rescaled alignment is only the
fallback).

Exact resume: the lattices of the batch after a checkpoint were made by the model *before* the
checkpoint's last step, so they are saved with it (``checkpoints/lattices-<step>.rank<r>.pt``,
with the on-the-fly alignments when ``numerator: online``) and served to the resumed run;
everything else (weights, optimizer, sampler position, RNG) is the trainer's checkpoint.
Distributed like ``train-ce`` (torchrun / horovodrun: each rank has its own lattice pool; rank 0
writes config.yaml, logs and the final dir).

Dimension legend: N utterances, T frames (padded), F feature dim, C pdf_ids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.data.transcripts import MAX_MISSING_TEXT_FRACTION
from pykaldi2.hmm.latgen import LatticeGenConfig, Ready
from pykaldi2.losses.lattice import SequenceConfig, SequenceTask
from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.training.config import TrainConfigMixin, as_list, simulation_config
from pykaldi2.training.model_dir import load_final_dir, write_se_dir
from pykaldi2.training.se_egs import lang_files, load_se_data, make_se_loader
from pykaldi2.training.trainer import TrainerConfig
from pykaldi2.utils.config import option
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import append_jsonl, get_logger

log = get_logger(__name__)

__all__ = ["SETask", "TrainSEConfig", "criterion_overrides", "evaluate_se", "train_se"]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainSEConfig(TrainConfigMixin):
    """Everything ``train-se`` needs; saved (resolved, with provenance) as EXP_DIR/config.yaml.

    Attributes:
        init_model: the CE model dir to start from (EXP/final of ``pykaldi2 train-ce``).
        train_data: training data dir(s) with feats.scp (the CE model's features).
        ali_dir: alignment dir(s) of train_data (numerators), from the CE model's transition
            model (e.g. the ali dir the CE model was trained on); with ``numerator: online``
            the fallback of utterances the current model does not align.
        numerator: ``ali`` (the stored alignments) or ``online`` (re-aligned with the current
            model in the lattice workers, PyKaldi2's train_se2).
        lang_dir: with ``online``: the lang dir (L.fst, words.txt, phones/disambig.int) the
            training graphs are compiled from (the CE model's lang).
        den_graph: the denominator graph: a graph dir (HCLG.fst; its phones/silence.csl gives
            the silence phones when ``sequence.silence_phones`` is empty) or an HCLG.fst.
        valid_fraction: held-out utterances for the validation objective (0: none).
        sequence: criterion, acoustic scale, boost, silence handling, CE frame smoothing
            (:class:`~pykaldi2.losses.lattice.SequenceConfig`).
        lattice: lattice beams and the size of the generation pool
            (:class:`~pykaldi2.hmm.latgen.LatticeGenConfig`).
        batch_size: utterances per batch (per rank); max_frames: optional cap on N * T.
        num_workers: DataLoader worker processes (features).
        length_tolerance: allowed |feature frames - alignment frames| per utterance.
        max_missing_fraction: more utterances than this without a usable alignment is an error.
        max_missing_text_fraction: with ``online``: utterances without a transcript are listed
            (their stored alignment is their numerator); more than this fraction is an error.
        trainer: the :class:`TrainerConfig` (small LR: sequence training moves a trained model).
        seed: sampler shuffling and the validation split.
        simulation: null (default: the stored features) or a sim.yaml
            (:class:`~pykaldi2.simulation.config.SimulationConfig`; saved resolved): the
            training utterances are simulated on the fly from the audio of ``train_data`` (one
            data dir, with wav.scp and conf/feats.json) and their lattices made from the
            simulated features; validation stays clean (see the module docstring).
    """

    init_model: str = ""
    train_data: list[str] = field(default_factory=list)
    ali_dir: list[str] = field(default_factory=list)
    den_graph: str = ""
    numerator: str = "ali"
    lang_dir: str = ""
    valid_fraction: float = 0.05
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    lattice: LatticeGenConfig = field(default_factory=LatticeGenConfig)
    batch_size: int = 8
    max_frames: int = 0
    num_workers: int = 1
    length_tolerance: int = 1
    max_missing_fraction: float = 0.2
    max_missing_text_fraction: float = option(MAX_MISSING_TEXT_FRACTION, ge=0, le=1)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    simulation: SimulationConfig | str | None = None

    def __post_init__(self) -> None:

        self.train_data = as_list(self.train_data)
        self.ali_dir = as_list(self.ali_dir)
        self.simulation = simulation_config(self.simulation)
        self.init_model, self.den_graph = str(self.init_model or ""), str(self.den_graph or "")
        self.lang_dir = str(self.lang_dir or "")
        self.build_sections()
        problems = []
        for name in ("init_model", "den_graph", "train_data", "ali_dir"):
            if not getattr(self, name):
                problems.append(f"{name} is required")
        if self.numerator not in ("ali", "online"):
            problems.append(f"numerator must be ali or online, not {self.numerator!r}")
        elif self.numerator == "online" and not self.lang_dir:
            problems.append("numerator online needs lang_dir (L.fst, words.txt)")
        if self.batch_size <= 0 and self.max_frames <= 0:
            problems.append("batch_size or max_frames must be > 0")
        if self.num_workers < 0:
            problems.append("num_workers must be >= 0")
        if not 0.0 <= self.valid_fraction < 1.0:
            problems.append("valid_fraction must be in [0, 1)")
        if self.length_tolerance < 0 or not 0.0 <= self.max_missing_fraction <= 1.0:
            problems.append("length_tolerance >= 0 and max_missing_fraction in [0, 1] required")
        if problems:
            raise Pykaldi2Error("TrainSEConfig: " + "; ".join(problems))

    @property
    def hclg_path(self) -> Path:
        p = Path(self.den_graph)
        return p / "HCLG.fst" if p.is_dir() else p


def criterion_overrides(criterion: str, boost: float = 0.1) -> list[str]:
    """``--criterion`` as config overrides: the criterion, and ``sequence.boost`` = ``boost``
    for bmmi, 0 otherwise (boost applies to bmmi only)."""
    return [
        f"sequence.criterion={criterion}",
        f"sequence.boost={boost if criterion == 'bmmi' else 0}",
    ]


def silence_phones_of(graph: str | os.PathLike) -> list[int]:
    """The graph dir's ``phones/silence.csl`` (colon-separated phone ids); [] when absent."""
    p = Path(graph)
    csl = (p if p.is_dir() else p.parent) / "phones" / "silence.csl"
    if not csl.is_file():
        return []
    text = csl.read_text().strip()
    try:
        return [int(x) for x in text.split(":") if x]
    except ValueError:
        raise DataError(
            f"not a colon-separated list of phone ids: {text!r}", file=str(csl)
        ) from None


# ---------------------------------------------------------------------------------------------
# Task, lattices, resume
# ---------------------------------------------------------------------------------------------
class SETask(SequenceTask):
    """:class:`SequenceTask` that also sums its training stats (objf, ce, frames; with
    on-the-fly numerators ``ali_failed`` and ``ali_utts``) between log steps
    (:meth:`pop_sums`); evaluation (no grad) is not counted."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.sums: dict[str, float] = {}

    def compute_loss(self, model, batch):
        import torch

        out = super().compute_loss(model, batch)
        if torch.is_grad_enabled():
            stats = {**out.stats, "frames": out.count}
            if "ali_failed" in batch:
                stats.update(ali_failed=batch["ali_failed"], ali_utts=len(batch["utt_ids"]))
            for k, v in stats.items():
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
        return out

    def pop_sums(self) -> dict[str, float]:
        sums, self.sums = self.sums, {}
        return sums

    def loglik_fn(self, model):
        """``batch -> (N, T, C)`` log-likelihoods of ``model`` in eval mode (no dropout), for
        lattice generation."""
        import torch

        def fn(batch) -> torch.Tensor:
            was = model.training
            model.eval()
            try:
                lengths = batch["lengths"].to(self.device)
                return self.log_likelihoods(model(batch["feats"].to(self.device), lengths))
            finally:
                model.train(was)

        return fn


class ResumableGenerator:
    """A :class:`~pykaldi2.hmm.latgen.LatticeGenerator` front that remembers the last
    submitted batch (``last``: (utt_ids, handle)) and serves ``saved`` lattices (utt_ids,
    lattices) once, to the first submission of exactly those utterances (resume)."""

    def __init__(self, generator) -> None:
        self.generator = generator
        self.last: tuple[list[str], Any] | None = None
        self.saved: tuple[list[str], list] | None = None

    def submit(self, utts, loglik, lengths=None, words=None):
        if self.saved is not None and list(utts) == self.saved[0]:
            handle = Ready(self.saved[1])
            self.saved = None
        else:
            handle = self.generator.submit(utts, loglik, lengths, words=words)
        self.last = (list(utts), handle)
        return handle


def _lattice_file(ckpt_dir: Path, step: int, rank: int) -> Path:
    return ckpt_dir / f"lattices-{step}.rank{rank}.pt"


def save_pending_lattices(trainer, rgen: ResumableGenerator) -> None:
    """Save the lattices (and on-the-fly alignments: ``alis``, else None) of the next batch (made
    before the last step) beside the checkpoint of ``trainer.step``; drop those of checkpoints
    that no longer exist."""
    from pykaldi2.training import checkpoint as ckpt

    ckpt_dir, rank = trainer.ckpt_dir, trainer.dist.rank
    keep = {int(p.stem.split("-")[1]) for p in ckpt.list_checkpoints(ckpt_dir)} | {trainer.step}
    for p in ckpt_dir.glob(f"lattices-*.rank{rank}.pt"):
        if int(p.name.split("-")[1].split(".")[0]) not in keep:
            p.unlink(missing_ok=True)
    utts, handle = rgen.last
    result = handle.get()
    lattices, alis = result if isinstance(result, tuple) else (result, None)
    state = {
        "step": trainer.step, "epoch": trainer.epoch, "batches_done": trainer.batches_done,
        "utts": utts, "lattices": lattices, "alis": alis,
    }  # fmt: skip
    ckpt.save_checkpoint(_lattice_file(ckpt_dir, trainer.step, rank), state)


def load_pending_lattices(trainer, rgen: ResumableGenerator, online: bool = False) -> bool:
    """After ``trainer.resume()`` mid-epoch: hand the saved lattices (with ``online``: and
    alignments) of the first batch to ``rgen``. False (and a warning) when they are missing:
    the run then continues, not bit-exactly, with lattices from the resumed model."""
    from pykaldi2.training import checkpoint as ckpt

    ckpt.remove_stale_temps(trainer.ckpt_dir, rf"lattices-\d+\.rank{trainer.dist.rank}\.pt")
    if trainer.step == 0 or trainer.batches_done == 0:
        return True
    path = _lattice_file(trainer.ckpt_dir, trainer.step, trainer.dist.rank)
    state = ckpt.load_checkpoint(path) if path.is_file() else {}
    pos = (state.get("epoch"), state.get("batches_done"))
    stale = pos != (trainer.epoch, trainer.batches_done)
    if stale or online != (state.get("alis") is not None):  # also: numerator mode changed
        log.warning(
            "%s missing or stale: the first batch after resuming gets lattices of the resumed "
            "model (the run is not bit-exact with an uninterrupted one)", path,
        )  # fmt: skip
        return False
    lattices = state["lattices"]
    rgen.saved = (state["utts"], (lattices, state["alis"]) if online else lattices)
    return True


def evaluate_se(model, loader, task: SETask, dist) -> dict[str, float]:
    """The objective over ``loader`` (batches with lattices), summed over ranks:
    ``{"objf", "loss", "ce"}`` per frame and ``"frames"``."""
    import torch

    model.eval()
    sums = np.zeros(4)
    with torch.no_grad():
        for batch in loader:
            out = task.compute_loss(model, batch)
            sums += [float(out.loss), out.stats["objf"], out.stats.get("ce", 0.0), out.count]
    loss, objf, ce, frames = dist.allreduce_scalars(sums.tolist())
    n = max(frames, 1e-12)
    return {"objf": objf / n, "loss": loss / n, "ce": ce / n, "frames": frames}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def train_se(cfg: TrainSEConfig, exp_dir: str | os.PathLike) -> Path:
    """Sequence-train (or resume) the CE model ``cfg.init_model`` in ``exp_dir``; returns
    ``exp_dir/final`` (a CE-format model dir: ``decode-nnet`` decodes it)."""

    from pykaldi2.hmm.latgen import LatticeGenerator, TrainGraphSource
    from pykaldi2.hmm.lattice_arrays import TransitionInfo
    from pykaldi2.losses.lattice_gen import LatticePrefetcher
    from pykaldi2.training.distributed import Dist
    from pykaldi2.training.trainer import Trainer

    exp_dir = Path(exp_dir)
    dist = Dist.from_env()
    generator = None
    try:
        md = load_final_dir(cfg.init_model, device=str(dist.device))
        data = load_se_data(cfg, md, exp_dir / "egs", dist)
        seq = cfg.sequence
        if not seq.silence_phones:
            seq.silence_phones = silence_phones_of(cfg.den_graph)
            if not seq.silence_phones and seq.criterion != "mmi":
                log.warning("no silence phones (den_graph has no phones/silence.csl)")
        _check_graph(cfg, md)
        info = TransitionInfo.from_trans_model(md.ali_model.tm)
        model = md.model
        model.train()
        dist.broadcast_parameters(model)
        if dist.is_main:
            exp_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(exp_dir / "config.yaml")
        task = SETask(seq, info, log_priors=md.log_priors, device=dist.device)
        source = None
        if cfg.numerator == "online":
            lex, _, disambig = lang_files(cfg.lang_dir)
            source = TrainGraphSource(str(md.path / "final.mdl"), str(lex), tuple(disambig))
        generator = LatticeGenerator(cfg.hclg_path, info, cfg.lattice, source)
        rgen = ResumableGenerator(generator)
        loader = LatticePrefetcher(
            make_se_loader(data.train, cfg, rank=dist.rank, world_size=dist.world_size,
                           shuffle=True, words=data.words),
            task.loglik_fn(model), rgen,
        )  # fmt: skip
        valid_fn = None
        if data.valid is not None:
            vloader = LatticePrefetcher(
                make_se_loader(data.valid, cfg, rank=dist.rank, world_size=dist.world_size,
                               shuffle=False, words=data.words),
                task.loglik_fn(model), generator,
            )  # fmt: skip

            def valid_fn(m) -> float:
                res = evaluate_se(m, vloader, task, dist)
                if dist.is_main:
                    log.info("validation: %s objective %.5f per frame", seq.criterion, res["objf"])
                    append_jsonl(exp_dir / "log" / "valid.jsonl", {"step": trainer.step, **res})
                return res["loss"]

        mcfg = model.cfg.to_dict()
        trainer = Trainer(
            model, task, cfg.trainer, exp_dir, dist=dist,
            model_config={"model_type": md.model_type, **mcfg},
            valid_fn=valid_fn,
            after_step=_after_step_hook(cfg, task, rgen, lambda: len(loader), lambda: trainer),
        )  # fmt: skip
        if not trainer.resume() and valid_fn is not None:
            valid_fn(model)  # the objective of the CE model (step 0)
        load_pending_lattices(trainer, rgen, online=source is not None)
        log.info(
            "train-se (%s): %d utterances from %s, %d pdfs, lattices through %s in %d processes, "
            "numerator %s%s", seq.criterion, len(data.train), cfg.init_model, md.num_pdfs,
            cfg.hclg_path, cfg.lattice.num_workers, cfg.numerator,
            ", simulated on the fly" if cfg.simulation is not None else "",
        )  # fmt: skip
        summary = trainer.fit(loader)
        final = exp_dir / "final"
        if dist.is_main:
            write_se_dir(final, cfg, model, md, summary)
        dist.barrier()
        return final
    finally:
        if generator is not None:
            generator.close()
        dist.shutdown()


def _check_graph(cfg: TrainSEConfig, md) -> None:
    """den_graph must be a graph built for the CE model dir ``md``'s final.mdl (its model_id,
    else its num_pdfs). The graph itself is read by the lattice workers, whose decoder refuses
    transition-ids beyond the model's."""
    from pykaldi2.hmm.graph_model import check_graph_model, rebuild_fix

    path = cfg.hclg_path
    if not path.is_file():
        raise DataError(
            "denominator graph not found", file=str(path),
            fix="set den_graph to a graph dir of the CE model's tree (e.g. exp/tri2/graph)",
        )  # fmt: skip
    model = md.path / "final.mdl"
    fix = rebuild_fix(path.parent, model) + ", and set den_graph to it"
    check_graph_model(path.parent, md.ali_model.tm, model, fix=fix)


def _after_step_hook(cfg: TrainSEConfig, task: SETask, rgen: ResumableGenerator, epoch_len,
                     get_trainer):  # fmt: skip
    """Log the true objective every ``log_every`` steps (per frame; the counts ``ali_failed``,
    ``ali_utts`` of on-the-fly numerators as sums); save the pending lattices whenever the
    trainer is about to write a checkpoint mid-epoch (``epoch_len()``: batches per epoch)."""
    tcfg = cfg.trainer

    def after_step(model, step: int) -> None:
        trainer = get_trainer()
        if tcfg.log_every > 0 and step % tcfg.log_every == 0:
            sums = task.pop_sums()
            keys = sorted(sums)
            tot = dict(zip(keys, trainer.dist.allreduce_scalars([sums[k] for k in keys])))
            n = max(tot.pop("frames", 0.0), 1e-12)
            counts = {k: int(tot.pop(k)) for k in ("ali_failed", "ali_utts") if k in tot}
            rec = {"step": step, **{k: v / n for k, v in tot.items()}, "frames": n, **counts}
            if trainer.dist.is_main:
                append_jsonl(trainer.exp_dir / "log" / "train.jsonl", rec)
                trainer.writer.add_scalar("train/objf", rec.get("objf", 0.0), step)
        saving = (tcfg.checkpoint_every > 0 and step % tcfg.checkpoint_every == 0) or (
            tcfg.max_steps > 0 and step >= tcfg.max_steps
        )
        if saving and trainer.batches_done < epoch_len():
            save_pending_lattices(trainer, rgen)

    return after_step
