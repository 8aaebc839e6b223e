"""Speaker-adapted training with fMLLR: steps/train_sat.sh and steps/align_fmllr.sh.

Features of a SAT system are the speaker-independent (SI) ones of the previous system (e.g.
LDA+MLLT, ``final.mat``) times a per-speaker fMLLR transform (``trans.JOB``: a Kaldi ark of
(D, D + 1) matrices keyed by speaker, one archive per job of the data split).

train_sat.sh: initial transforms from the previous system's model and alignments (unless its
ali dir has ``trans.*``); a tree on the adapted features; training as train_deltas.sh, with
the transforms re-estimated at ``fmllr_iters`` (each new one composed onto the old); at the end
the *alignment model* ``final.alimdl``: the final model's Gaussians re-estimated on the SI
features with the SAT model's posteriors (gmm-acc-stats-twofeats), for first-pass alignment and
decoding of new speakers.

align_fmllr.sh: align with ``final.alimdl`` on SI features; estimate each speaker's transform
with the alignment model's Gaussian posteriors and the final model's Gaussians
(gmm-post-to-gpost | gmm-est-fmllr-gpost); align again with ``final.mdl`` on the adapted
features. The ali dir gets ``trans.JOB`` too.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pykaldi2.hmm.align import AlignConfig
from pykaldi2.hmm.fmllr import FmllrOptions, FmllrStats, fmllr_stats, fmllr_update
from pykaldi2.hmm.gmm import GmmAccumulator, MleOptions, am_arrays, gmm_est, write_accs
from pykaldi2.hmm.jobs import AlignJob, AlignSpec, JobSummary, align_job, sum_summaries
from pykaldi2.hmm.kaldi_io import write_transforms
from pykaldi2.hmm.lda import compose_transforms
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.streams import (
    FeaturePipeline,
    check_texts,
    iter_alis,
    iter_feats,
    join,
    read_matrix_ark,
)
from pykaldi2.hmm.training import TreeConfig
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.jobs import JobRunner, job_log

log = logging.getLogger(__name__)


@dataclass
class FmllrJob:
    """gmm-est-fmllr (or gmm-post-to-gpost | gmm-est-fmllr-gpost) for one job's speakers.

    Attributes:
        model: the model whose Gaussians the transform adapts to.
        data: the job's data dir; its utt2spk groups the utterances (contiguous per speaker).
        pipe: the features the transform applies to (SI, or SI + the current transforms).
        ali_in: alignments (the pdfs of the frames; silence frames weighted ``silence_weight``).
        out: the job's transform archive.
        compose_with: the current transforms (``trans.JOB``): the new one is composed onto them.
        post_model, post_pipe: Gaussian posteriors from this model (the alignment model) on
            these features (gmm-post-to-gpost), instead of ``model`` on ``pipe``.
    """

    model: str
    data: str
    pipe: FeaturePipeline
    ali_in: list[str]
    out: str
    silence_phones: list[int] = field(default_factory=list)
    silence_weight: float = 0.0
    compose_with: str | None = None
    post_model: str | None = None
    post_pipe: FeaturePipeline | None = None
    opts: FmllrOptions = field(default_factory=FmllrOptions)


def fmllr_job(job: FmllrJob) -> JobSummary:
    """Per-speaker fMLLR transforms of one job, written to ``job.out``."""
    from pykaldi2.data.tables import read_table

    model = GmmModel.load(job.model)
    arrays = am_arrays(model.am)
    post_model = GmmModel.load(job.post_model) if job.post_model else None
    post_arrays = am_arrays(post_model.am) if post_model else None
    utt2spk = read_table(Path(job.data) / "utt2spk")
    prev = read_matrix_ark(job.compose_with) if job.compose_with else {}
    sil = np.isin(model.tid2phone, job.silence_phones)
    streams = [iter_feats(job.data, job.pipe), iter_alis(job.ali_in)]
    if post_model is not None:
        streams.append(iter_feats(job.data, job.post_pipe or job.pipe))
    out: dict[str, np.ndarray] = {}
    summary = JobSummary()
    spk, stats, done_spk = None, None, set()
    impr_tot = 0.0

    def finish(s: str, st: FmllrStats) -> None:
        nonlocal impr_tot
        w, impr = fmllr_update(st, job.opts)
        if s in prev:
            w = compose_transforms(w, prev[s], b_is_affine=True)
        out[s] = w
        impr_tot += impr
        log.info(
            "For speaker %s, auxf-impr from fMLLR is %.4f, over %.1f frames",
            s,
            impr / max(st.beta, 1e-10),
            st.beta,
        )

    for row in join(*streams):
        utt, x, ali = row[0], row[1], np.asarray(row[2], dtype=np.int64)
        s = utt2spk[utt]
        if s != spk:
            if s in done_spk:
                raise DataError(
                    f"the utterances of speaker {s} are not contiguous",
                    file=str(Path(job.data) / "utt2spk"),
                    fix="sort the data dir (utt ids prefixed by their speaker)",
                )
            if spk is not None:
                finish(spk, stats)
                done_spk.add(spk)
            spk, stats = s, FmllrStats.zeros(x.shape[1])
        w = np.where(sil[ali], job.silence_weight, 1.0)
        st, like = fmllr_stats(
            arrays,
            x,
            model.tid2pdf[ali],
            w,
            post_arrays=post_arrays,
            post_x=row[3] if post_model is not None else None,
        )
        stats.add(st)
        summary.num_done += 1
        summary.tot_like += like
        summary.num_frames += len(ali)
    if spk is not None:
        finish(spk, stats)
    # speakers without aligned data keep their transform (or the unit one)
    for s in sorted(set(utt2spk.values()) - set(out)):
        d = model.dim
        out[s] = prev.get(s, np.concatenate([np.eye(d), np.zeros((d, 1))], axis=1))
    write_transforms(job.out, out)
    log.info(
        "gmm-est-fmllr: %d utterances, %d speakers; overall auxf impr %.4f per frame",
        summary.num_done,
        len(out),
        impr_tot / max(summary.num_frames, 1),
    )
    return summary


def estimate_fmllr(
    tr, model_path: Path, pipe: FeaturePipeline, ali: list[list[Path]], x, silence, **kw
) -> list[str]:
    """fMLLR jobs writing ``trans.JOB`` into ``tr.exp_dir`` (via ``tmp_trans.JOB``, composed
    onto the current transforms when ``compose``); returns the archives' paths."""
    compose = kw.pop("compose", False)
    outs = [tr.path(f"trans.{j + 1}") for j in range(tr.nj)]
    tmps = [tr.path(f"tmp_trans.{j + 1}") for j in range(tr.nj)]
    jobs = [
        FmllrJob(
            model=str(model_path),
            data=str(tr.splits[j]),
            pipe=p,
            ali_in=[str(a) for a in ali[j]],
            out=str(tmps[j]),
            silence_phones=list(silence),
            compose_with=str(outs[j]) if compose else None,
            **kw,
        )
        for j, p in enumerate(tr.pipes(pipe))
    ]
    tr.runner(fmllr_job, jobs, log=tr.log(f"fmllr.{x}.JOB.log"), desc="gmm-est-fmllr")
    for tmp, out in zip(tmps, outs):
        os.replace(tmp, out)
    return [str(o) for o in outs]


@dataclass
class SatConfig(TreeConfig):
    """steps/train_sat.sh options (same names and defaults): fMLLR re-estimated at
    ``fmllr_iters`` with silence weighted ``silence_weight``; ``power`` 0.2 as the script."""

    num_leaves: int = 2500
    tot_gauss: int = 15000
    fmllr_iters: list[int] = field(default_factory=lambda: [2, 4, 6, 12])
    silence_weight: float = 0.0
    power: float = 0.2
    fmllr_min_count: float = 500.0
    fmllr_num_iters: int = 40

    def fmllr_opts(self) -> FmllrOptions:
        return FmllrOptions(self.fmllr_min_count, self.fmllr_num_iters)


@dataclass
class AlimdlJob:
    """gmm-acc-stats-twofeats: posteriors from the SAT model on adapted features, statistics
    of the SI features."""

    model: str
    data: str
    pipe: FeaturePipeline  # adapted
    si_pipe: FeaturePipeline
    ali_in: list[str]
    acc_out: str


def alimdl_acc_job(job: AlimdlJob) -> JobSummary:
    model = GmmModel.load(job.model)
    acc = GmmAccumulator(model)
    streams = join(
        iter_feats(job.data, job.pipe), iter_alis(job.ali_in), iter_feats(job.data, job.si_pipe)
    )
    for utt, x, ali, x_si in streams:
        acc.add(utt, x, ali, stats_feats=x_si)
    accs = acc.finish()
    write_accs(job.acc_out, accs)
    return JobSummary(num_done=accs.num_done, tot_like=accs.tot_like, num_frames=accs.num_frames)


def _job_transforms(ali_dir: Path, tr, exp_dir: Path) -> list[str] | None:
    """The previous system's transforms (``trans.*`` of its ali dir) re-split for our jobs."""
    files = sorted(ali_dir.glob("trans.*"))
    if not files:
        return None
    from pykaldi2.data.tables import read_table

    allt: dict[str, np.ndarray] = {}
    for f in files:
        allt.update(read_matrix_ark(f))
    outs = []
    for j, split in enumerate(tr.splits):
        spks = set(read_table(Path(split) / "utt2spk").values())
        missing = spks - set(allt)
        if missing:
            raise DataError(
                f"no transforms for speakers {sorted(missing)[:5]}", file=str(ali_dir),
                fix="align this data dir with align-fmllr first",
            )  # fmt: skip
        out = exp_dir / f"trans.{j + 1}"
        write_transforms(out, {s: allt[s] for s in spks})
        outs.append(str(out))
    return outs


def train_sat(
    data_dir: str | os.PathLike,
    lang_dir: str | os.PathLike,
    ali_dir: str | os.PathLike,
    exp_dir: str | os.PathLike,
    config: SatConfig | None = None,
    *,
    nj: int | None = None,
    runner: JobRunner | None = None,
    cmd: str | None = None,
) -> tuple[GmmModel, list[dict]]:
    """Speaker-adapted training (steps/train_sat.sh) into ``exp_dir``.

    Writes final.mdl (``info["sat"]``: its features need the speakers' transforms),
    final.alimdl (the SI alignment model), trans.JOB (the training speakers' transforms),
    final.mat, and the usual exp dir files.
    """
    from pykaldi2.hmm.training import copy_lang_files, gauss_schedule, training_setup
    from pykaldi2.hmm.tri import build_tree_stage, default_nj, prev_alignments
    from pykaldi2.lang.lang_dir import load_lang

    cfg = config or SatConfig()
    nj = default_nj(ali_dir, nj)
    prev_mdl, prev_alis = prev_alignments(ali_dir)
    prev = GmmModel.load(prev_mdl)
    if prev.info.get("sat"):
        raise DataError(
            "the previous system is speaker-adapted; train SAT from an SI system's alignments",
            file=str(prev_mdl),
        )
    silence = load_lang(lang_dir).silence_phones
    si_pipe = FeaturePipeline.for_model(prev)
    own = runner is None
    runner = runner or JobRunner(nj, cmd=cmd)
    try:
        tr = training_setup(data_dir, lang_dir, exp_dir, nj, runner, cfg.max_missing_text_fraction)
        first = 1
        resuming = tr.start(cfg, "tri_sat")
        if resuming and (x := tr.resume_point(1, cfg.num_iters)) is not None:
            first, model = x, GmmModel.load(tr.mdl(x))
            tr.fmllr = [str(tr.path(f"trans.{j + 1}")) for j in range(nj)]
        else:
            copy_lang_files(lang_dir, exp_dir)
            tr.fmllr = _job_transforms(Path(ali_dir), tr, tr.exp_dir)
            if tr.fmllr is None:  # initial transforms from the SI system
                tr.fmllr = estimate_fmllr(
                    tr, prev_mdl, si_pipe, [prev_alis] * nj, 0, silence,
                    silence_weight=cfg.silence_weight, opts=cfg.fmllr_opts(),
                )  # fmt: skip
            model = build_tree_stage(tr, cfg, prev_mdl, prev_alis, si_pipe)
            model.info = {**model.info, "sat": True}
            model.save(tr.mdl(1))

        def before_acc(x: int, model: GmmModel) -> GmmModel:
            if x in cfg.fmllr_iters and model.info.get("fmllr_done") != x:
                estimate_fmllr(
                    tr, tr.mdl(x), si_pipe, [[a] for a in tr.ali_paths()], x, silence,
                    compose=True, silence_weight=cfg.silence_weight, opts=cfg.fmllr_opts(),
                )  # fmt: skip
                model.info = {**model.info, "fmllr_done": x}
                model.save(tr.mdl(x))
            return model

        schedule = gauss_schedule(cfg.num_leaves, cfg.tot_gauss, cfg.max_iter_inc)
        model = tr.iterate(model, cfg, schedule, first=first, before_acc=before_acc)
        # the alignment model: SI statistics with the SAT model's posteriors
        jobs = [
            AlimdlJob(
                str(tr.mdl(cfg.num_iters)),
                str(d),
                p,
                si_pipe,
                [str(a)],
                str(tr.path(f"{cfg.num_iters}.{j + 1}.acc")),
            )  # fmt: skip
            for j, (d, p, a) in enumerate(zip(tr.splits, tr.pipes(si_pipe), tr.ali_paths()))
        ]
        runner(alimdl_acc_job, jobs, log=tr.log("acc_alimdl.JOB.log"), desc="alignment model")
        from pykaldi2.hmm.gmm import gmm_sum_accs

        accs = gmm_sum_accs([j.acc_out for j in jobs])
        for j in jobs:
            os.unlink(j.acc_out)
        alimdl = GmmModel.load(tr.mdl(cfg.num_iters))
        with job_log(tr.log("est_alimdl.log"), "gmm-est --remove-low-count-gaussians=false"):
            gmm_est(
                alimdl, accs, power=cfg.power, opts=MleOptions(remove_low_count_gaussians=False)
            )
        alimdl.info = {**alimdl.info, "sat": False, "alignment_model": True}
        alimdl.save(tr.path("final.alimdl"))
        return tr.finish(model, cfg, "tri_sat", extra_info={"sat": True})
    finally:
        if own:
            runner.close()


def align_fmllr(
    data_dir: str | os.PathLike,
    lang_dir: str | os.PathLike,
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: AlignConfig | None = None,
    *,
    nj: int = 1,
    boost_silence: float = 1.0,
    fmllr: FmllrOptions | None = None,
    runner: JobRunner | None = None,
    cmd: str | None = None,
) -> JobSummary:
    """steps/align_fmllr.sh: the ali dir ``out_dir`` with ``ali.JOB.gz`` and ``trans.JOB``.

    Pass 1 aligns with ``src_dir/final.alimdl`` (the SI alignment model; ``final.mdl`` for a
    system without one) on SI features; the transforms use its Gaussian posteriors and
    ``final.mdl``'s Gaussians; pass 2 aligns with ``final.mdl`` on the adapted features."""
    from pykaldi2.data.split import split_data
    from pykaldi2.hmm.ali_dir import start_ali_dir, write_failed
    from pykaldi2.hmm.training import GmmTraining
    from pykaldi2.lang.lang_dir import load_lang

    src = Path(src_dir)
    from pykaldi2.data.transcripts import check_data_dir_transcribed

    cfg = config or AlignConfig()
    check_data_dir_transcribed(
        data_dir, max_missing_fraction=cfg.max_missing_text_fraction, what="alignment"
    )
    check_texts(data_dir, load_lang(lang_dir))
    splits = split_data(data_dir, nj)
    out = start_ali_dir(src, out_dir, nj)
    alimdl = src / "final.alimdl"
    if alimdl.is_file():
        shutil.copyfile(alimdl, out / "final.alimdl")
    first = out / "final.alimdl" if alimdl.is_file() else out / "final.mdl"
    model = GmmModel.load(out / "final.mdl")
    si_pipe = FeaturePipeline.for_model(model).base()
    lang = load_lang(lang_dir)
    spec = AlignSpec(str(lang_dir), cfg, boost_silence, [lang.optional_silence])
    own = runner is None
    runner = runner or JobRunner(nj, cmd=cmd)
    try:
        tr = GmmTraining(
            out, [Path(s) for s in splits], Path(lang_dir), [lang.optional_silence], runner
        )
        pass1 = [out / f"pre_ali.{j + 1}.gz" for j in range(nj)]
        jobs = [AlignJob(str(first), str(d), si_pipe, spec, str(a)) for d, a in zip(splits, pass1)]
        runner(align_job, jobs, log=out / "log" / "align_pass1.JOB.log", desc="align pass 1")
        kw = (
            {"post_model": str(first), "post_pipe": si_pipe} if first.name == "final.alimdl" else {}
        )
        tr.fmllr = estimate_fmllr(
            tr, out / "final.mdl", si_pipe, [[a] for a in pass1], 0, lang.silence_phones,
            opts=fmllr or FmllrOptions(), **kw,
        )  # fmt: skip
        jobs = [
            AlignJob(str(out / "final.mdl"), str(d), p, spec, str(out / f"ali.{j + 1}.gz"))
            for j, (d, p) in enumerate(zip(splits, tr.pipes(si_pipe)))
        ]
        results = runner(
            align_job, jobs, log=out / "log" / "align_pass2.JOB.log", desc="align pass 2"
        )
    finally:
        if own:
            runner.close()
    for p in pass1:
        p.unlink(missing_ok=True)
    summary = sum_summaries(results)
    write_failed(out, summary.failed)
    return summary
