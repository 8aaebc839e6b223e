"""Alignment dirs (Kaldi's ``exp/*_ali``): steps/align_si.sh.

An ali dir is what the next stage reads: ``final.mdl``, ``tree``, ``ali.JOB.gz`` (one gzipped
ark of transition-ids per job of the data split), ``num_jobs``, the feature transform
(``final.mat``) of LDA systems, and ``failed_utts`` (ours) when some utterances did not align.

>>> summary = align_si("data/train", "data/lang", "exp/tri1", "exp/tri1_ali", nj=4)
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pykaldi2.hmm.ali import write_model_id
from pykaldi2.hmm.align import AlignConfig
from pykaldi2.hmm.jobs import AlignJob, AlignSpec, JobSummary, align_job, sum_summaries
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.streams import FeaturePipeline, check_texts
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write_text
from pykaldi2.utils.jobs import JobRunner

log = logging.getLogger(__name__)

#: files an ali dir takes over from its source exp dir when present.
SIDE_FILES = ("final.mat", "splice_opts", "cmvn_opts", "phones.txt", "final.occs")


def start_ali_dir(src_dir: str | os.PathLike, out_dir: str | os.PathLike, nj: int) -> Path:
    """Create ``out_dir`` with the source's model, tree and side files (copies)."""
    src, out = Path(src_dir), Path(out_dir)
    if not (src / "final.mdl").is_file():
        raise DataError("no final.mdl", file=str(src), fix="pass a trained GMM exp dir")
    out.mkdir(parents=True, exist_ok=True)
    if src.resolve() != out.resolve():
        GmmModel.load(src / "final.mdl").save(out / "final.mdl")
        for name in ("tree", *SIDE_FILES):
            if (src / name).is_file():
                shutil.copyfile(src / name, out / name)
    for stale in ("ali.ark", "ali.scp", "pdf.ark", "pdf.scp"):
        (out / stale).unlink(missing_ok=True)
    for old in out.glob("ali.*.gz"):
        old.unlink()
    atomic_write_text(out / "num_jobs", f"{nj}\n")
    write_model_id(out, GmmModel.load(out / "final.mdl"))
    return out


def write_failed(out_dir: Path, failed: list[str]) -> None:
    path = out_dir / "failed_utts"
    if failed:
        atomic_write_text(path, "\n".join(sorted(failed)) + "\n")
    else:
        path.unlink(missing_ok=True)


def align_si(
    data_dir: str | os.PathLike,
    lang_dir: str | os.PathLike,
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: AlignConfig | None = None,
    *,
    nj: int = 1,
    boost_silence: float = 1.0,
    transform_dir: str | os.PathLike | None = None,
    runner: JobRunner | None = None,
    cmd: str | None = None,
) -> JobSummary:
    """steps/align_si.sh: align ``data_dir`` with ``src_dir/final.mdl`` in ``nj`` jobs (the
    data split by speaker) into the ali dir ``out_dir``. ``src_dir`` is ours or Kaldi's (its
    final.mdl, tree, final.mat, opts files); ``transform_dir``: a dir whose fMLLR ``trans.*``
    (e.g. a Kaldi SAT ali dir's) are applied after the model's features, per speaker.

    Returns the jobs' summary; utterances that failed (no graph, or no alignment even with
    the retry beam) are in ``failed`` and ``out_dir/failed_utts``, never in the archives.
    """
    from pykaldi2.data.split import split_data
    from pykaldi2.data.transcripts import check_data_dir_transcribed
    from pykaldi2.lang.lang_dir import load_lang

    cfg = config or AlignConfig()
    check_data_dir_transcribed(
        data_dir, max_missing_fraction=cfg.max_missing_text_fraction, what="alignment"
    )
    check_texts(data_dir, load_lang(lang_dir))
    splits = split_data(data_dir, nj)
    if transform_dir is None and GmmModel.load(Path(src_dir) / "final.mdl").info.get("sat"):
        raise DataError(
            "a speaker-adapted (SAT) model: its features need fMLLR transforms",
            file=str(Path(src_dir) / "final.mdl"),
            fix="use `pykaldi2 align-fmllr` for this system (or --transform-dir with its trans.*)",
        )
    out = start_ali_dir(src_dir, out_dir, nj)
    model = GmmModel.load(out / "final.mdl")
    lang = load_lang(lang_dir)
    spec = AlignSpec(str(lang_dir), cfg, boost_silence, [lang.optional_silence])
    pipe = FeaturePipeline.for_model(model, transform_dir)
    jobs = [
        AlignJob(str(out / "final.mdl"), str(d), pipe, spec, str(out / f"ali.{j + 1}.gz"))
        for j, d in enumerate(splits)
    ]
    own = runner is None
    runner = runner or JobRunner(nj, cmd=cmd)
    try:
        results = runner(align_job, jobs, log=out / "log" / "align.JOB.log", desc="align-si")
    finally:
        if own:
            runner.close()
    summary = sum_summaries(results)
    write_failed(out, summary.failed)
    return summary
