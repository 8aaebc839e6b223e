"""Monophone training: Kaldi's gmm-init-mono and steps/train_mono.sh.

>>> model, history = train_mono("data/train", "data/lang", "exp/mono", MonoConfig(), nj=4)

As train_mono.sh: the flat-start model's global mean and variance come from the first 10
utterances of job 1 (``subset-feats --n=10``); pass 0 aligns every transcript equally
(align-equal-compiled) and re-estimates with ``--min-gaussian-occupancy=3``; then 39 passes
realign at ``realign_iters`` (beam 6 the first time, then 10) and mix up towards ``totgauss``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pykaldi2.hmm.gmm import MleOptions, gmm_sum_accs
from pykaldi2.hmm.jobs import EqualAlignJob, equal_align_job, sum_summaries
from pykaldi2.hmm.model import GmmModel, remove_model
from pykaldi2.hmm.streams import FeaturePipeline, iter_feats
from pykaldi2.hmm.topo import read_topo
from pykaldi2.hmm.training import (
    GmmTrainConfig,
    copy_lang_files,
    gauss_schedule,
    training_setup,
)
from pykaldi2.utils.config import option
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.jobs import JobRunner, job_log
from pykaldi2.utils.log import append_jsonl

log = logging.getLogger(__name__)


def global_mean_var(feats: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean (D,) and variance (D,) over all frames of ``feats``, and the frame count."""
    n, s, s2 = 0, None, None
    for x in feats:
        x = np.asarray(x, dtype=np.float64)
        if s is None:
            s, s2 = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        n += len(x)
        s += x.sum(axis=0)
        s2 += (x * x).sum(axis=0)
    if not n:
        raise DataError("no feature frames to initialize the model from", fix="check feats")
    mean = s / n
    return mean, np.maximum(s2 / n - mean * mean, 1e-6), n


def gmm_init_mono(
    topo,
    feats: Iterable[np.ndarray],
    shared_phones: Sequence[Sequence[int]] | None = None,
    perturb_factor: float = 0.0,
) -> GmmModel:
    """A flat-start monophone model (gmm-init-mono): every pdf is one global Gaussian.

    Args:
        topo: ``khg.HmmTopology``, its text, or a path to lang/topo.
        feats: (T, D) feature matrices giving the global mean and variance.
        shared_phones: phone groups sharing pdfs (Kaldi's ``--shared-phones``), e.g. the
            word-position variants of one phone.
        perturb_factor: perturb the means by this times the standard deviation.
    """
    from pykaldi2.kaldi import khg

    if not isinstance(topo, khg.HmmTopology):
        topo = read_topo(topo)
    mean, var, _ = global_mean_var(feats)
    n2c = topo.get_phone_to_num_pdf_classes()
    if shared_phones:
        tree = khg.monophone_context_dependency_shared(
            phone_classes=[sorted(int(p) for p in g) for g in shared_phones],
            phone2num_pdf_classes=n2c,
        )
    else:
        tree = khg.monophone_context_dependency(phones=topo.phones, phone2num_pdf_classes=n2c)
    gmm = khg.DiagGmm(nmix=1, dim=len(mean))
    gmm.set_weights(np.ones(1, dtype=np.float32))
    gmm.set_means(mean[None].astype(np.float32))
    gmm.set_invvars((1.0 / var)[None].astype(np.float32))
    gmm.compute_gconsts()
    am = khg.AmDiagGmm()
    for _ in range(tree.num_pdfs):
        am.add_pdf(gmm)
    if perturb_factor:
        for p in range(tree.num_pdfs):
            am.get_pdf(p).perturb(perturb_factor)
    tm = khg.TransitionModel(ctx_dep=tree, hmm_topo=topo)
    return GmmModel(tm=tm, tree=tree, am=am)


#: train_mono.sh's realign_iters.
MONO_REALIGN_ITERS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)


@dataclass
class MonoConfig(GmmTrainConfig):
    """steps/train_mono.sh options (same names and defaults): ``initial_beam`` is the beam of
    the first realignment, ``beam`` (the script's ``regular_beam``) of the later ones; pass 0
    (from the equal alignment) uses ``min_gaussian_occupancy_first``; ``init_utts``
    utterances give the flat start's mean and variance."""

    num_iters: int = option(40, ge=1)
    max_iter_inc: int = option(30, ge=0)
    realign_iters: list[int] = field(default_factory=lambda: list(MONO_REALIGN_ITERS))
    totgauss: int = 1000
    initial_beam: float = 6.0
    min_gaussian_occupancy_first: float = option(3.0, ge=0)
    init_utts: int = option(10, ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.totgauss < 1 or self.initial_beam <= 0 or self.init_utts < 1:
            raise ValueError(f"MonoConfig: totgauss, initial_beam, init_utts must be > 0: {self}")


def train_mono(
    data_dir: str | os.PathLike,
    lang_dir: str | os.PathLike,
    exp_dir: str | os.PathLike,
    config: MonoConfig | None = None,
    *,
    nj: int = 1,
    runner: JobRunner | None = None,
    cmd: str | None = None,
) -> tuple[GmmModel, list[dict]]:
    """Flat-start monophone training (steps/train_mono.sh) into ``exp_dir``.

    Args:
        data_dir: feats.scp (MFCC), cmvn.scp and text; features get per-speaker CMN + deltas.
        lang_dir: topo, L.fst, phones/sets.int (shared pdfs), optional_silence.
        config: :class:`MonoConfig`.
        nj: parallel jobs (the data split by speaker); ``runner`` to share worker processes.
        cmd: where the jobs run (Kaldi's ``--cmd``: ``run.pl``, ``slurm.pl ...``; see
            :mod:`pykaldi2.utils.jobs`); None: ``$PYKALDI2_CMD``, else run.pl.

    Returns:
        ``(model, history)``: the final model and one record per iteration.
    """
    from pykaldi2.lang.lang_dir import load_lang

    cfg = config or MonoConfig()
    lang = load_lang(lang_dir)
    own = runner is None
    runner = runner or JobRunner(nj, cmd=cmd)
    try:
        tr = training_setup(data_dir, lang_dir, exp_dir, nj, runner, cfg.max_missing_text_fraction)
        pipe = FeaturePipeline(feat_type="delta")
        first = 1
        if tr.start(cfg, "mono") and (x := tr.resume_point(1, cfg.num_iters)) is not None:
            first, model = x, GmmModel.load(tr.mdl(x))
        else:
            copy_lang_files(lang_dir, exp_dir)
            with job_log(tr.log("init.log"), "gmm-init-mono"):
                init = itertools.islice(
                    (x for _, x in iter_feats(tr.splits[0], pipe)), cfg.init_utts
                )
                model = gmm_init_mono(lang.read_topo(), init, lang.read_int_sets("sets"))
                model.feat_type = "delta"
                log.info("gmm-init-mono: %d pdfs, dim %d", model.num_pdfs, model.dim)
            model.save(tr.mdl(0))
            model.write_tree(tr.path("tree"))
            jobs = [
                EqualAlignJob(
                    model=str(tr.mdl(0)),
                    data=str(tr.splits[j]),
                    lang=str(lang_dir),
                    pipe=pipe,
                    acc_out=str(tr.path(f"0.{j + 1}.acc")),
                    ali_out=str(tr.ali_paths()[j]),
                )
                for j in range(tr.nj)
            ]
            results = runner(equal_align_job, jobs, log=tr.log("align.0.JOB.log"), desc="pass 0")
            paths = [j.acc_out for j in jobs]
            accs = gmm_sum_accs(paths)
            for p in paths:
                os.unlink(p)
            failed = sum_summaries(results).failed
            numgauss = int(model.am.num_gauss)
            rec = {"iter": 0, "equal_align_failed": len(failed)}
            opts = MleOptions(min_gaussian_occupancy=cfg.min_gaussian_occupancy_first)
            rec.update(tr.estimate(model, accs, 0, cfg, numgauss, opts))
            append_jsonl(tr.log("history.jsonl"), rec)
            model.save(tr.mdl(1))
            remove_model(tr.mdl(0))
        # numgauss of train_mono.sh: the Gaussians of 0.mdl, one per pdf
        schedule = gauss_schedule(model.num_pdfs, cfg.totgauss, cfg.max_iter_inc)
        model = tr.iterate(
            model,
            cfg,
            schedule,
            first=first,
            beam=lambda it: cfg.initial_beam if it == 1 else cfg.beam,
        )
        return tr.finish(model, cfg, "mono")
    finally:
        if own:
            runner.close()
