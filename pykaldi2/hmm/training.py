"""The training loop shared by steps/train_mono.sh, train_deltas.sh, train_lda_mllt.sh and
train_sat.sh, run as Kaldi runs it: the data split in NJ parts by speaker, one job per part.

Iteration ``x`` (1 .. num_iters - 1) of :meth:`GmmTraining.iterate`:

1. a hook may change the model and its features first (MLLT, fMLLR re-estimation);
2. NJ jobs each stream their part: at ``realign_iters`` they realign it with ``x.mdl``
   (silence boosted) and write ``ali.JOB.gz``, else they read it; they accumulate statistics
   into ``x.JOB.acc`` (gmm-acc-stats-ali), logging to ``log/acc.x.JOB.log``;
3. the statistics are summed (gmm-sum-accs) and the model re-estimated and mixed up to the
   current Gaussian target (gmm-est, ``log/update.x.log``), written as ``x+1.mdl``.

The Gaussian target starts at ``numgauss`` and grows by ``incgauss`` after each iteration up to
``max_iter_inc``, as the scripts' shell arithmetic does. A killed run resumes: the iteration
whose ``x.mdl`` is on disk is redone (the mixing-up perturbations are keyed by the iteration,
so the result is the same as an uninterrupted run).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pykaldi2.data.transcripts import MAX_MISSING_TEXT_FRACTION
from pykaldi2.hmm.ali import write_model_id
from pykaldi2.hmm.align import AlignConfig
from pykaldi2.hmm.gmm import GmmAccs, MleOptions, gmm_est, gmm_sum_accs
from pykaldi2.hmm.jobs import AccJob, AlignSpec, JobSummary, acc_stats_job, sum_summaries
from pykaldi2.hmm.model import GmmModel, gmm_info, remove_model
from pykaldi2.hmm.streams import FeaturePipeline, check_texts
from pykaldi2.utils.config import ConfigMixin, option
from pykaldi2.utils.io import atomic_write_text
from pykaldi2.utils.jobs import JobRunner, job_log
from pykaldi2.utils.log import append_jsonl

log = logging.getLogger(__name__)


@dataclass
class GmmTrainConfig(ConfigMixin):
    """Options every steps/train_*.sh has (Kaldi's names and defaults).

    ``power`` is 0.25 as the scripts pass it (gmm-est's own default is 0.2). ``seed`` starts
    the stream of the mixing-up perturbations in every re-estimation (1, as ``rand()`` in each
    fresh Kaldi process; 0 is the same as 1).
    ``max_missing_text_fraction`` (not Kaldi's): utterances with features but no transcript are
    listed and left out, and more than this fraction of them stops the command
    (:func:`pykaldi2.data.transcripts.check_transcribed`).
    """

    num_iters: int = 35
    max_iter_inc: int = 25
    realign_iters: list[int] = field(default_factory=lambda: [10, 20, 30])
    beam: float = 10.0
    retry_beam: float = option(40.0, ge=0)
    careful: bool = False
    boost_silence: float = option(1.0, gt=0)
    power: float = option(0.25, gt=0)
    acoustic_scale: float = option(0.1, gt=0)
    transition_scale: float = option(1.0, ge=0)
    self_loop_scale: float = option(0.1, ge=0)
    perturb_factor: float = option(0.01, ge=0)
    min_count: float = option(20.0, ge=0)
    seed: int = 1
    max_missing_text_fraction: float = option(MAX_MISSING_TEXT_FRACTION, ge=0, le=1)

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.num_iters < 1 or not 0 <= self.max_iter_inc <= self.num_iters:
            raise ValueError(f"{name}: need num_iters >= 1 and 0 <= max_iter_inc <= num_iters")
        if self.beam <= 0 or self.boost_silence <= 0 or self.power <= 0:
            raise ValueError(f"{name}: beam, boost_silence and power must be > 0")
        if self.retry_beam < 0:
            raise ValueError(f"{name}: retry_beam must be >= 0")

    def align_config(self, beam: float | None = None) -> AlignConfig:
        return AlignConfig(
            beam=self.beam if beam is None else beam,
            retry_beam=self.retry_beam,
            careful=self.careful,
            acoustic_scale=self.acoustic_scale,
            transition_scale=self.transition_scale,
            self_loop_scale=self.self_loop_scale,
        )


@dataclass
class TreeConfig(GmmTrainConfig):
    """Triphone systems: tree size (``numleaves``, build-tree's ``--max-leaves``), Gaussian
    target (``totgauss``) and build-tree options (``--thresh``, ``--cluster-thresh``)."""

    num_leaves: int = 2000
    tot_gauss: int = 10000
    cluster_thresh: float = -1.0
    tree_thresh: float = 300.0
    round_num_leaves: bool = True
    context_width: int = 3
    central_position: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_leaves < 1 or self.tot_gauss < self.num_leaves:
            raise ValueError(f"{type(self).__name__}: need 1 <= num_leaves <= tot_gauss")
        if not 0 <= self.central_position < self.context_width:
            raise ValueError(f"{type(self).__name__}: central_position not in [0, context_width)")


def gauss_schedule(start: int, total: int, max_iter_inc: int) -> Callable[[int], int]:
    """The Gaussian target of iteration x: ``start + inc * min(x - 1, max_iter_inc)`` with
    ``inc = (total - start) // max_iter_inc`` (the scripts' integer arithmetic)."""
    inc = (total - start) // max_iter_inc if max_iter_inc > 0 else 0

    def at(x: int) -> int:
        return start + inc * max(0, min(x - 1, max_iter_inc))

    return at


@dataclass
class GmmTraining:
    """The run-time context of a training command: where things are and who runs the jobs.

    Attributes:
        exp_dir: the output dir (``x.mdl``, ``ali.JOB.gz``, ``log/``).
        splits: the data dir's parts (``split<N>/<JOB>``), one per job.
        lang_dir: the lang dir (L.fst, topo, phones/).
        silence: phones whose likelihood ``boost_silence`` scales (optional_silence).
        runner: runs the jobs.
        fmllr: per-job fMLLR transform archives (``trans.JOB``) for speaker-adapted systems.
    """

    exp_dir: Path
    splits: list[Path]
    lang_dir: Path
    silence: list[int]
    runner: JobRunner
    fmllr: list[str] | None = None
    occs: np.ndarray | None = None  # pdf occupancies of the last re-estimation (final.occs)

    @property
    def nj(self) -> int:
        return len(self.splits)

    def path(self, name: str) -> Path:
        return self.exp_dir / name

    def mdl(self, x: int | str) -> Path:
        return self.exp_dir / f"{x}.mdl"

    def ali_paths(self) -> list[Path]:
        return [self.exp_dir / f"ali.{j + 1}.gz" for j in range(self.nj)]

    def graph_paths(self) -> list[Path]:
        """The jobs' compiled training graphs (compile-train-graphs' ``fsts.JOB``)."""
        return [self.exp_dir / f"fsts.{j + 1}" for j in range(self.nj)]

    def compile_graphs(self, model_path: Path) -> None:
        """compile-train-graphs per job (once per system: the graphs depend on the tree and
        topology only), unless already there."""
        from pykaldi2.hmm.jobs import CompileGraphsJob, compile_graphs_job

        paths = self.graph_paths()
        if all(p.is_file() for p in paths):
            return
        jobs = [
            CompileGraphsJob(str(model_path), str(d), str(self.lang_dir), str(p))
            for d, p in zip(self.splits, paths)
        ]
        results = self.runner(
            compile_graphs_job, jobs, log=self.log("compile_graphs.JOB.log"), desc="compile graphs"
        )
        failed = sum_summaries(results).failed
        if failed:
            log.warning(
                "compile-train-graphs: %d transcripts have no graph (skipped): %s",
                len(failed),
                " ".join(failed[:10]),
            )

    def log(self, name: str) -> Path:
        return self.exp_dir / "log" / name

    def pipes(self, pipe: FeaturePipeline) -> list[FeaturePipeline]:
        """``pipe`` per job, with the job's fMLLR transforms when the system has them."""
        if not self.fmllr:
            return [pipe] * self.nj
        return [replace(pipe, fmllr=f) for f in self.fmllr]

    # ---- one pass ------------------------------------------------------------------------
    def accumulate(
        self,
        model_path: Path,
        x: int | str,
        pipe: FeaturePipeline,
        align: AlignSpec | None,
        ali_in: Sequence[Path] | None = None,
    ) -> tuple[GmmAccs, JobSummary]:
        """NJ jobs: [realign with ``align``] + gmm-acc-stats-ali; the summed statistics."""
        ali_out = self.ali_paths()
        jobs = [
            AccJob(
                model=str(model_path),
                data=str(self.splits[j]),
                pipe=p,
                ali_in=[str(a) for a in (ali_in or [ali_out[j]])],
                acc_out=str(self.path(f"{x}.{j + 1}.acc")),
                align=align,
                ali_out=str(ali_out[j]) if align else None,
                graphs=str(self.graph_paths()[j]) if align else None,
            )
            for j, p in enumerate(self.pipes(pipe))
        ]
        results = self.runner(
            acc_stats_job, jobs, log=self.log(f"acc.{x}.JOB.log"), desc=f"pass {x}"
        )
        paths = [Path(j.acc_out) for j in jobs]
        accs = gmm_sum_accs(paths)
        for p in paths:
            p.unlink()
        return accs, sum_summaries(results)

    def realign(self, model_path: Path, pipe: FeaturePipeline, spec: AlignSpec, x) -> JobSummary:
        """NJ gmm-align-compiled jobs writing ``ali.JOB.gz`` (``log/align.x.JOB.log``)."""
        from pykaldi2.hmm.jobs import AlignJob, align_job

        jobs = [
            AlignJob(str(model_path), str(d), p, spec, str(a), str(g))
            for d, p, a, g in zip(
                self.splits, self.pipes(pipe), self.ali_paths(), self.graph_paths()
            )
        ]
        results = self.runner(
            align_job, jobs, log=self.log(f"align.{x}.JOB.log"), desc=f"align {x}"
        )
        return sum_summaries(results)

    def align_spec(self, cfg: GmmTrainConfig, beam: float | None = None) -> AlignSpec:
        return AlignSpec(
            lang=str(self.lang_dir),
            config=cfg.align_config(beam),
            boost_silence=cfg.boost_silence,
            silence_phones=list(self.silence),
        )

    def estimate(
        self,
        model: GmmModel,
        accs: GmmAccs,
        x: int | str,
        cfg: GmmTrainConfig,
        mixup: int,
        opts: MleOptions | None = None,
    ) -> dict:
        """gmm-est with mixing up (``log/update.x.log``); returns the log record."""
        with job_log(self.log(f"update.{x}.log"), f"gmm-est --mix-up={mixup} (iteration {x})"):
            est = gmm_est(
                model,
                accs,
                mixup=mixup,
                power=cfg.power,
                perturb_factor=cfg.perturb_factor,
                min_count=cfg.min_count,
                opts=opts,
                seed=cfg.seed,
            )
            log.info(
                "gmm-est: transition objf impr %.4f, GMM objf impr %.4f per frame over %d "
                "frames; avg like per frame %.4f; %d Gaussians (%d variance elements floored, "
                "%d removed)",
                est.trans_impr_per_frame,
                est.gmm_impr_per_frame,
                est.num_frames,
                est.like_per_frame,
                est.num_gauss,
                est.floored_elements,
                est.removed,
            )
        self.occs = accs.pdf_occs()
        return {
            "like_per_frame": est.like_per_frame,
            "frames": est.num_frames,
            "num_gauss": est.num_gauss,
        }

    # ---- the loop -------------------------------------------------------------------------
    def resume_point(self, first: int, last: int) -> int | None:
        """The iteration to resume at: the highest ``x`` in [first, last] with ``x.mdl``."""
        for x in range(last, first - 1, -1):
            if self.mdl(x).is_file():
                return x
        return None

    def iterate(
        self,
        model: GmmModel,
        cfg: GmmTrainConfig,
        numgauss: Callable[[int], int],
        *,
        first: int = 1,
        beam: Callable[[int], float] | None = None,
        before_acc: Callable[[int, GmmModel], GmmModel] | None = None,
    ) -> GmmModel:
        """Iterations ``first .. num_iters - 1`` from ``first.mdl`` (``model``, on disk);
        returns the final model (``num_iters.mdl``).

        ``before_acc(x, model)`` changes the model and its features before the statistics of
        iteration x (MLLT, fMLLR); at a realignment iteration it runs after the alignment,
        as in the scripts."""
        if any(x in cfg.realign_iters for x in range(first, cfg.num_iters)):
            self.compile_graphs(self.mdl(first))
        for x in range(first, cfg.num_iters):
            t0 = time.time()
            rec: dict = {"iter": x}
            realign = x in cfg.realign_iters
            spec = self.align_spec(cfg, beam(x) if beam else None) if realign else None
            summary = None
            if before_acc is not None:
                if realign:  # align first: the hook sees the new alignments
                    summary = self.realign(self.mdl(x), FeaturePipeline.for_model(model), spec, x)
                    spec = None
                model = before_acc(x, model)
            accs, acc_summary = self.accumulate(
                self.mdl(x), x, FeaturePipeline.for_model(model), spec
            )
            summary = summary or acc_summary
            if self.fmllr:  # the features' Jacobian, as train_sat.sh adds "average logdet"
                rec["logdet_per_frame"] = acc_summary.logdet / max(acc_summary.num_frames, 1)
            if realign:
                rec["align_like"] = summary.align_like / max(summary.align_frames, 1)
                rec["align_failed"] = len(summary.failed)
                if summary.failed:
                    log.warning(
                        "iteration %d: %d utterances failed to align: %s",
                        x,
                        len(summary.failed),
                        " ".join(summary.failed[:10]),
                    )
            rec.update(self.estimate(model, accs, x, cfg, numgauss(x)))
            model.save(self.mdl(x + 1))
            remove_model(self.mdl(x))
            rec["seconds"] = round(time.time() - t0, 2)
            log.info("iter %d: %s", x, json.dumps(rec))
            append_jsonl(self.log("history.jsonl"), rec)
        return model

    def start(self, config: ConfigMixin, system: str) -> bool:
        """Prepare the exp dir; True when an interrupted run with the same config resumes."""
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        want = {"system": system, "config": config.to_dict(), "nj": self.nj}
        state = self.path("config.json")
        if state.is_file():
            try:
                same = json.loads(state.read_text()) == want
            except json.JSONDecodeError:
                same = False
            if same and any(self.exp_dir.glob("*.mdl")) and not self.path("final.mdl").is_file():
                log.info("%s: resuming the interrupted run in %s", system, self.exp_dir)
                return True
        stale = [*self.exp_dir.glob("*.mdl"), *self.exp_dir.glob("*.acc"), *self.graph_paths()]
        for p in stale:
            p.unlink(missing_ok=True)
        hist = self.log("history.jsonl")
        hist.unlink(missing_ok=True)
        atomic_write_text(state, json.dumps(want, indent=2) + "\n")
        return False

    def finish(
        self, model: GmmModel, cfg: GmmTrainConfig, system: str, extra_info: dict | None = None
    ) -> tuple[GmmModel, list[dict]]:
        """final.mdl and the exp dir's side files (the last iteration's model is removed);
        returns the model and the iterations' history."""
        history = [
            json.loads(line)
            for line in self.log("history.jsonl").read_text().splitlines()
            if line.strip()
        ]
        model.info = {
            "system": system,
            "config": cfg.to_dict(),
            "gmm_info": gmm_info(model),
            **(extra_info or {}),
        }
        write_exp_dir(self.exp_dir, model, history, cfg.to_dict(), nj=self.nj, occs=self.occs)
        remove_model(self.mdl(cfg.num_iters))
        for p in self.graph_paths():
            p.unlink(missing_ok=True)
        return model, history


def training_setup(
    data_dir: str | os.PathLike,
    lang_dir: str | os.PathLike,
    exp_dir: str | os.PathLike,
    nj: int,
    runner: JobRunner,
    max_missing_text_fraction: float = MAX_MISSING_TEXT_FRACTION,
) -> GmmTraining:
    """Split the data dir into ``nj`` parts and gather what the jobs need. Utterances without a
    transcript are listed (the jobs leave them out); more than ``max_missing_text_fraction`` of
    them is a :class:`DataError`."""
    from pykaldi2.data.split import split_data
    from pykaldi2.data.transcripts import check_data_dir_transcribed
    from pykaldi2.lang.lang_dir import load_lang

    check_data_dir_transcribed(data_dir, max_missing_fraction=max_missing_text_fraction)
    lang = load_lang(lang_dir)
    check_texts(data_dir, lang)
    return GmmTraining(
        exp_dir=Path(exp_dir),
        splits=split_data(data_dir, nj),
        lang_dir=Path(lang_dir),
        silence=[lang.optional_silence],
        runner=runner,
    )


def write_occs(path: str | os.PathLike, occs: np.ndarray) -> None:
    """A Kaldi text vector (``final.occs``: gmm-est --write-occs)."""
    atomic_write_text(path, "[ " + " ".join(f"{v:g}" for v in occs) + " ]\n")


def write_exp_dir(
    exp_dir: str | os.PathLike,
    model: GmmModel,
    history: list[dict],
    config: dict,
    *,
    nj: int = 1,
    occs: np.ndarray | None = None,
) -> None:
    """A self-describing exp dir, Kaldi's layout: final.mdl, tree (Kaldi binary), model_id, ali.JOB.gz
    (already there: the last realignment), num_jobs, final.occs, final.mat (LDA systems),
    config.json, log/history.jsonl. Alignment files of an older layout are removed."""
    d = Path(exp_dir)
    d.mkdir(parents=True, exist_ok=True)
    model.save(d / "final.mdl")
    model.write_tree(d / "tree")
    write_model_id(d, model)
    atomic_write_text(d / "num_jobs", f"{nj}\n")
    if occs is not None:
        write_occs(d / "final.occs", occs)
    if model.transform is not None:
        import kaldiio

        kaldiio.save_mat(str(d / "final.mat"), np.asarray(model.transform, dtype=np.float32))
    for stale in ("ali.ark", "ali.scp", "pdf.ark", "pdf.scp"):
        (d / stale).unlink(missing_ok=True)
    atomic_write_text(d / "config.json", json.dumps(config, indent=2) + "\n")
    atomic_write_text(d / "log" / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def copy_lang_files(lang_dir: str | os.PathLike, exp_dir: str | os.PathLike) -> None:
    """phones.txt into the exp dir, as the scripts copy it (check_phones_compatible.sh)."""
    src = Path(lang_dir) / "phones.txt"
    if src.is_file():
        shutil.copyfile(src, Path(exp_dir) / "phones.txt")
