"""The per-job work of GMM training and alignment: what Kaldi's scripts run as ``JOB=1:nj``.

Each function takes one picklable job description, streams its share of the data from disk
(a ``split<N>/<JOB>`` data dir, its alignments ``ali.JOB.gz``), writes its result to disk (an
``.acc``, a ``.treeacc``, an ``ali.JOB.gz``) and returns a small summary. They run in the
worker processes of :class:`~pykaldi2.utils.jobs.JobRunner`, so a job's memory does not grow
with the corpus.

=========================  ======================================================================
:func:`acc_stats_job`      [gmm-align-compiled ->] gmm-acc-stats-ali (one pass over the features)
:func:`equal_align_job`    align-equal-compiled | gmm-acc-stats-ali (monophone pass 0)
:func:`align_job`          gmm-align-compiled (steps/align_si.sh)
:func:`tree_stats_job`     acc-tree-stats
:func:`convert_ali_job`    convert-ali
=========================  ======================================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pykaldi2.hmm.align import AlignConfig, Aligner, align_equal
from pykaldi2.hmm.gmm import GmmAccumulator, gmm_boost_silence, write_accs
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.streams import (
    AliWriter,
    FeaturePipeline,
    iter_alis,
    iter_feats,
    iter_graphs,
    iter_texts,
    join,
)
from pykaldi2.hmm.tree_stats import TreeStatsAccumulator, write_tree_stats

log = logging.getLogger(__name__)


def kaldi_string_hash(s: str) -> int:
    """Kaldi's StringHasher as an int32 (align-equal-compiled's per-utterance random seed)."""
    h = 0
    for c in s.encode("utf-8"):
        h = (h * 7853 + (c - 256 if c > 127 else c)) & 0xFFFFFFFFFFFFFFFF
    h &= 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


@dataclass
class AlignSpec:
    """What realignment needs besides the model: the lang dir, beams, silence boosting."""

    lang: str
    config: AlignConfig = field(default_factory=AlignConfig)
    boost_silence: float = 1.0
    silence_phones: list[int] = field(default_factory=list)

    def aligner(self, model: GmmModel):
        """An :class:`~pykaldi2.hmm.align.Aligner` for ``model`` (with boosted silence)."""
        from pykaldi2.lang.lang_dir import load_lang

        lang = load_lang(self.lang)
        am = gmm_boost_silence(model, self.silence_phones, self.boost_silence)
        return lang, Aligner(model, lang.read_L(), lang.disambig_phones, self.config, am)


@dataclass
class JobSummary:
    """What a job reports (the numbers Kaldi's job logs end with)."""

    num_done: int = 0
    num_err: int = 0
    tot_like: float = 0.0
    num_frames: int = 0
    align_like: float = 0.0
    align_frames: int = 0
    failed: list[str] = field(default_factory=list)
    retried: int = 0
    logdet: float = 0.0  # sum over frames of log|det A| of the speakers' fMLLR transforms

    def add(self, other: JobSummary) -> JobSummary:
        for k in ("num_done", "num_err", "tot_like", "num_frames", "align_like", "logdet"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.align_frames += other.align_frames
        self.failed += other.failed
        self.retried += other.retried
        return self


def _realigned(spec: AlignSpec, model: GmmModel, data: str, pipe, writer, summary, graphs=None):
    """(utt, feats, ali) of ``data`` realigned with ``model`` (to the compiled ``graphs``
    archive, else to graphs compiled on the fly); alignments go to ``writer``."""
    lang, aligner = spec.aligner(model)
    if graphs is not None:
        pairs = join(iter_feats(data, pipe), iter_graphs(graphs))
        align = aligner.align_graph
    else:
        pairs = join(iter_feats(data, pipe), iter_texts(data, lang))
        align = aligner.align
    for utt, x, g in pairs:
        ali, like, retried = align(utt, g, x)
        summary.retried += int(retried)
        if ali is None:
            summary.failed.append(utt)
            continue
        summary.align_like += like
        summary.align_frames += len(ali)
        writer.write(utt, ali)
        yield utt, x, ali


@dataclass
class AccJob:
    """One job of a training pass: [realign ->] accumulate.

    Attributes:
        model: the current model (``x.mdl``).
        data: the job's data dir (``split<N>/<JOB>``).
        pipe: how the model's features are made.
        ali_in: alignment archives to read when not realigning.
        acc_out: where the statistics go (``x.JOB.acc``).
        align: realign first (with this spec) and write the alignments to ``ali_out``.
        graphs: the job's compiled training graphs (``fsts.JOB``), else compiled on the fly.
    """

    model: str
    data: str
    pipe: FeaturePipeline
    ali_in: list[str]
    acc_out: str
    align: AlignSpec | None = None
    ali_out: str | None = None
    graphs: str | None = None


def _logdets(pipe: FeaturePipeline, data: str):
    """utt -> log|det A| of its speaker's fMLLR transform (transform-feats' logdet), or None."""
    if not pipe.fmllr:
        return None
    from pykaldi2.data.tables import read_table
    from pykaldi2.hmm.streams import read_matrix_ark

    trans = read_matrix_ark(pipe.fmllr)
    d = {s: float(np.linalg.slogdet(m[:, : m.shape[0]])[1]) for s, m in trans.items()}
    utt2spk = read_table(Path(data) / "utt2spk")
    return {u: d.get(s, 0.0) for u, s in utt2spk.items()}


def acc_stats_job(job: AccJob) -> JobSummary:
    """[gmm-align-compiled ->] gmm-acc-stats-ali on one job's data."""
    model = GmmModel.load(job.model)
    acc = GmmAccumulator(model)
    summary = JobSummary()
    logdets = _logdets(job.pipe, job.data)
    if job.align is not None:
        with AliWriter(job.ali_out) as w:
            realigned = _realigned(job.align, model, job.data, job.pipe, w, summary, job.graphs)
            for utt, x, ali in realigned:
                acc.add(utt, x, ali)
                if logdets is not None:
                    summary.logdet += logdets[utt] * len(ali)
        log.info(
            "gmm-align-compiled: %d aligned, %d failed, %d retried; log-like per frame %.4f",
            w.count,
            len(summary.failed),
            summary.retried,
            summary.align_like / max(summary.align_frames, 1),
        )
    else:
        for utt, x, ali in join(iter_feats(job.data, job.pipe), iter_alis(job.ali_in)):
            acc.add(utt, x, ali)
            if logdets is not None:
                summary.logdet += logdets[utt] * len(ali)
    accs = acc.finish()
    write_accs(job.acc_out, accs)
    summary.num_done, summary.tot_like, summary.num_frames = (
        accs.num_done,
        accs.tot_like,
        accs.num_frames,
    )
    log.info(
        "gmm-acc-stats-ali: done %d files; avg like per frame (Gaussian only) = %.4f over %d "
        "frames",
        accs.num_done,
        accs.like_per_frame,
        accs.num_frames,
    )
    return summary


@dataclass
class EqualAlignJob:
    """Monophone pass 0: equal alignment of each transcript, then statistics with ``0.mdl``."""

    model: str
    data: str
    lang: str
    pipe: FeaturePipeline
    acc_out: str
    ali_out: str


def equal_align_job(job: EqualAlignJob) -> JobSummary:
    """align-equal-compiled | gmm-acc-stats-ali; the path of each utterance is drawn with
    Kaldi's seed (StringHasher of the utterance id)."""
    from pykaldi2.hmm.align import compile_graph, training_graph_compiler
    from pykaldi2.lang.lang_dir import load_lang

    model = GmmModel.load(job.model)
    lang = load_lang(job.lang)
    gc = training_graph_compiler(model, lang.read_L(), lang.disambig_phones)
    acc = GmmAccumulator(model)
    summary = JobSummary()
    with AliWriter(job.ali_out) as w:
        for utt, x, words in join(iter_feats(job.data, job.pipe), iter_texts(job.data, lang)):
            g = compile_graph(gc, utt, words)
            ali = (
                None if g is None or len(x) == 0 else align_equal(g, len(x), kaldi_string_hash(utt))
            )
            if ali is None:
                log.warning("align-equal: did not align utterance %s (%d frames)", utt, len(x))
                summary.failed.append(utt)
                continue
            w.write(utt, ali)
            acc.add(utt, x, ali)
    accs = acc.finish()
    write_accs(job.acc_out, accs)
    summary.num_done, summary.tot_like, summary.num_frames = (
        accs.num_done,
        accs.tot_like,
        accs.num_frames,
    )
    log.info("align-equal-compiled: done %d, failed %d", accs.num_done, len(summary.failed))
    return summary


@dataclass
class AlignJob:
    """steps/align_si.sh's job: align the job's data with ``model``, write ``ali_out``."""

    model: str
    data: str
    pipe: FeaturePipeline
    align: AlignSpec
    ali_out: str
    graphs: str | None = None


def align_job(job: AlignJob) -> JobSummary:
    """gmm-align-compiled on one job's data."""
    model = GmmModel.load(job.model)
    summary = JobSummary()
    with AliWriter(job.ali_out) as w:
        for _ in _realigned(job.align, model, job.data, job.pipe, w, summary, job.graphs):
            summary.num_done += 1
    log.info(
        "gmm-align-compiled: done %d, failed %d (%s), retried %d; log-like per frame %.4f over "
        "%d frames",
        summary.num_done,
        len(summary.failed),
        " ".join(summary.failed[:10]),
        summary.retried,
        summary.align_like / max(summary.align_frames, 1),
        summary.align_frames,
    )
    return summary


@dataclass
class CompileGraphsJob:
    """compile-train-graphs of one job's transcripts into ``out`` (a Kaldi ark of FSTs)."""

    model: str
    data: str
    lang: str
    out: str


def compile_graphs_job(job: CompileGraphsJob) -> JobSummary:
    """compile-train-graphs: the training graph of every transcript, written as they come."""
    from pykaldi2.features.storage import atomic_path
    from pykaldi2.hmm.align import compile_graph, training_graph_compiler
    from pykaldi2.kaldi import kaldifst
    from pykaldi2.lang.lang_dir import load_lang

    model = GmmModel.load(job.model)
    lang = load_lang(job.lang)
    gc = training_graph_compiler(model, lang.read_L(), lang.disambig_phones)
    summary = JobSummary()
    with atomic_path(job.out) as tmp:
        w = kaldifst.VectorFstWriter(f"ark:{tmp}")
        for utt, words in iter_texts(job.data, lang):
            g = compile_graph(gc, utt, words)
            if g is None:
                summary.failed.append(utt)
                continue
            w.write(utt, g)
            summary.num_done += 1
        w.close()
    log.info("compile-train-graphs: %d succeeded, %d failed", summary.num_done, len(summary.failed))
    return summary


@dataclass
class TreeStatsJob:
    """acc-tree-stats on one job: alignments of ``model`` (the previous system)."""

    model: str
    data: str
    pipe: FeaturePipeline
    ali_in: list[str]
    out: str
    ci_phones: list[int]
    context_width: int = 3
    central_position: int = 1


def tree_stats_job(job: TreeStatsJob) -> JobSummary:
    """acc-tree-stats: per-context statistics of one job's frames, written to ``out``."""
    model = GmmModel.load(job.model)
    acc = TreeStatsAccumulator(model, job.ci_phones, job.context_width, job.central_position)
    frames = 0
    for utt, x, ali in join(iter_feats(job.data, job.pipe), iter_alis(job.ali_in)):
        acc.add(utt, x, ali)
        frames += len(ali)
    stats = acc.result()
    write_tree_stats(job.out, stats)
    log.info(
        "acc-tree-stats: accumulated stats for %d files; %d separate stats",
        acc.num_utts,
        len(stats.count),
    )
    return JobSummary(num_done=acc.num_utts, num_frames=frames)


@dataclass
class ConvertAliJob:
    """convert-ali of one job's alignments from ``old`` to ``new`` (same topology)."""

    old: str
    new: str
    data: str
    ali_in: list[str]
    ali_out: str


def convert_ali_job(job: ConvertAliJob) -> JobSummary:
    from pykaldi2.data.tables import read_table_lines
    from pykaldi2.hmm.tri import convert_ali

    old, new = GmmModel.load(job.old), GmmModel.load(job.new)
    utts = ((e.key, None) for e in read_table_lines(Path(job.data) / "utt2spk"))
    summary = JobSummary()
    with AliWriter(job.ali_out) as w:
        for utt, _, ali in join(utts, iter_alis(job.ali_in)):
            w.write(utt, convert_ali(old, new, ali))
            summary.num_done += 1
    log.info("convert-ali: succeeded converting alignments for %d files", summary.num_done)
    return summary


def sum_summaries(results: list[JobSummary]) -> JobSummary:
    """The jobs' summaries added up."""
    total = JobSummary()
    for r in results:
        total.add(r)
    return total


__all__ = [
    "AccJob",
    "AlignJob",
    "AlignSpec",
    "ConvertAliJob",
    "EqualAlignJob",
    "JobSummary",
    "TreeStatsJob",
    "acc_stats_job",
    "align_job",
    "convert_ali_job",
    "equal_align_job",
    "kaldi_string_hash",
    "sum_summaries",
    "tree_stats_job",
]
