"""Decoding a data set in NJ jobs into a Kaldi-style decode dir (steps/decode.sh: one
gmm-latgen-faster / latgen-faster-mapped / nnet3-latgen-faster per job).

Each job is a :class:`DecodeJob`: it reads ``HCLG.fst`` (VectorFst or ConstFst), keeps one
decoder and, for GMMs, one :class:`~pykaldi2.decoding.wfst.GmmScorer`, reads its own share of
the inputs from disk (a picklable *source*: its part of an scp, its utterances of a data dir
with the model's feature pipeline, or a network computing log-likelihoods, see
:mod:`pykaldi2.decoding.nnet`) and writes its own lattice archive, with one BLAS thread. The
jobs run where :class:`~pykaldi2.utils.jobs.JobRunner` runs them (``--cmd``: this machine or
a cluster; logs in ``DECODE_DIR/log/decode.JOB.log``). The decode dir::

    DECODE_DIR/lat.J.gz         Kaldi's gzipped binary archive of determinized CompactLattices
                                (acoustic costs unscaled) of job J's utterances, J=1..nj.
                                With ``text_lattices``: lat.J.ark, Kaldi's text form; with
                                ``determinize_lattice=False`` raw state-level lattices.
    DECODE_DIR/hyp.txt          best path at the decoding acoustic scale, ``utt w1 w2 ...``
    DECODE_DIR/num_jobs         nj (as Kaldi's scripts read it)
    DECODE_DIR/decode_info.json config, graph dir, num_jobs, counts (failed / partial)
    DECODE_DIR/log/             the jobs' logs

A source yields ``(utt, matrix)`` pairs: (T, num_pdfs) log-likelihoods, or, with
``gmm_am=...``, (T, D) features scored with a GmmScorer in the job. A list of pairs is a
source too (tests, small inputs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.decoding.lattice_io import LatticeWriter
from pykaldi2.decoding.wfst import DecoderConfig, GmmScorer, decode_utterance, make_decoder
from pykaldi2.hmm.decoder import TransitionTables, load_graph
from pykaldi2.hmm.graph_model import check_graph_labels, check_graph_model
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.io import atomic_write_text
from pykaldi2.utils.jobs import JobRunner, job_progress
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

Source = Iterable[tuple[str, np.ndarray]]


# ---------------------------------------------------------------------------------------------
# Sources: what one job decodes, read from disk in the job
# ---------------------------------------------------------------------------------------------
@dataclass
class MatrixTable:
    """Matrices of a Kaldi ``.scp`` (the job's entries: ``(key, rxspec)``) or ``.ark`` (every
    ``stride[1]``-th entry from ``stride[0]``: an ark has no index, each job reads it through),
    compressed ones decoded as Kaldi's CopyToMat does (:mod:`pykaldi2.features.compressed`;
    kaldiio is a float step off on some values), the scp's archives kept open while read."""

    path: str
    entries: list[tuple[str, str]] | None = None
    stride: tuple[int, int] = (0, 1)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        from pykaldi2.features.compressed import iter_kaldi_ark, load_kaldi_mat

        if self.entries is not None:
            fds: dict = {}
            try:
                for key, rx in self.entries:
                    yield key, load_kaldi_mat(rx, fd_dict=fds)
            finally:
                for fd in fds.values():
                    fd.close()
            return
        j, n = self.stride
        for i, (key, mat) in enumerate(iter_kaldi_ark(self.path)):
            if i % n == j:
                yield key, mat


def matrix_tables(path: str | os.PathLike, nj: int) -> tuple[list[MatrixTable], int | None]:
    """A ``.scp`` or ``.ark`` of matrices as ``nj`` job sources (an scp split in contiguous
    parts, as split_scp.pl), and the number of matrices if known (scp)."""
    from pykaldi2.data.split import split_utts

    path = Path(path)
    if not path.is_file():
        raise DataError("no such matrix file", file=str(path), fix="pass an .scp or .ark")
    if path.suffix != ".scp":
        return [MatrixTable(str(path), stride=(j, nj)) for j in range(nj)], None
    entries = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                key, _, rx = line.strip().partition(" ")
                if not rx.strip():
                    raise DataError(
                        "an scp line needs a key and a location", file=str(path), line=n
                    )
                entries.append((key, rx.strip()))
    index = {k: i for i, (k, _) in enumerate(entries)}
    parts = split_utts([k for k, _ in entries], nj)
    return [MatrixTable(str(path), [entries[index[k]] for k in p]) for p in parts], len(entries)


@dataclass
class DataDirFeats:
    """A GMM's input features for ``utts`` of a data dir: CMVN + the model's deltas / LDA,
    streamed one utterance at a time in feats.scp order (as gmm-latgen-faster reads its
    feature pipe); with fMLLR from ``transform_dir``'s ``trans.*`` (decode.sh
    --transform-dir), read ``chunk`` utterances at a time."""

    model: str
    data: str
    utts: list[str]
    transform_dir: str | None = None
    chunk: int = 100

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        from pykaldi2.hmm.exp_dir import read_transforms_dir
        from pykaldi2.hmm.inputs import feats_for_model
        from pykaldi2.hmm.model import GmmModel
        from pykaldi2.hmm.streams import FeaturePipeline, iter_feats

        model = GmmModel.load(self.model)
        if not self.transform_dir:
            # one matrix at a time: a chunk of 100 utterances' features (and their CMVN and
            # delta copies) was 4 MB of a 60-utterance job's peak
            yield from iter_feats(self.data, FeaturePipeline.for_model(model), self.utts)
            return
        tr = read_transforms_dir(self.transform_dir)
        for i in range(0, len(self.utts), self.chunk):
            part = self.utts[i : i + self.chunk]
            yield from sorted(feats_for_model(model, self.data, utts=part, transforms=tr).items())


@dataclass
class PipelineFeats:
    """The features of a (split) data dir through a :class:`~pykaldi2.hmm.streams.FeaturePipeline`
    (its fMLLR transforms included), streamed."""

    data: str
    pipe: Any

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        from pykaldi2.hmm.streams import iter_feats

        yield from iter_feats(self.data, self.pipe)


def split_pairs(pairs: Sequence[tuple[str, np.ndarray]], nj: int) -> list[list]:
    """In-memory ``(utt, matrix)`` pairs as ``nj`` contiguous job sources."""
    bounds = np.linspace(0, len(pairs), nj + 1).round().astype(int)
    return [list(pairs[bounds[j] : bounds[j + 1]]) for j in range(nj)]


# ---------------------------------------------------------------------------------------------
# One job
# ---------------------------------------------------------------------------------------------
@dataclass
class DecodeJob:
    """One decoding job: the graph, the transition tables, the decoder options, the optional
    GMM scorer, its source and its lattice archive."""

    hclg: str
    tables: TransitionTables
    config: dict
    source: Source
    lattices: str
    scorer: GmmScorer | None = None
    text: bool = False


@dataclass
class DecodeSummary:
    """Counts of a :func:`decode_dir` run (also saved in decode_info.json)."""

    num_done: int = 0
    num_partial: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def decode_job(job: DecodeJob) -> tuple[list[tuple[str, list[int]]], DecodeSummary]:
    """gmm-latgen-faster / latgen-faster-mapped for one job: decode its source into its
    lattice archive; returns ``(utt, word ids)`` of its best paths and its counts. An utterance
    that fails is logged and counted, not fatal; one progress unit per utterance."""
    config = DecoderConfig.from_dict(job.config)
    decoder = make_decoder(load_graph(job.hclg), config)
    hyps: list[tuple[str, list[int]]] = []
    summary = DecodeSummary()
    with LatticeWriter(job.lattices, binary=not job.text) as ark:
        for utt, mat in job.source:
            try:
                loglik = mat if job.scorer is None else job.scorer(mat)
                res, lat = decode_utterance(None, loglik, job.tables, config, utt, decoder)
                ark.write(utt, lat)
            except Pykaldi2Error as e:
                summary.failed[utt] = str(e)
                log.warning("decoding failed for %s: %s", utt, e)
            else:
                hyps.append((utt, list(res.words)))
                summary.num_done += 1
                summary.num_partial += int(not res.reached_final)
            job_progress(1)
    log.info(
        "%s: %d utterances decoded (%d partial, %d failed)",
        job.lattices, summary.num_done, summary.num_partial, len(summary.failed),
    )  # fmt: skip
    return hyps, summary


def decode_dir(
    graph_dir: str | os.PathLike,
    sources: Sequence[Source],
    decode_dir: str | os.PathLike,
    trans_model=None,
    *,
    model: str | os.PathLike | None = None,
    graph_fix: str | None = None,
    tid2pdf: np.ndarray | None = None,
    tables: TransitionTables | None = None,
    config: DecoderConfig | None = None,
    gmm_am=None,
    num_utts: int | None = None,
    text_lattices: bool = False,
    cmd: str | None = None,
) -> DecodeSummary:
    """Decode ``sources`` (one per job) with ``graph_dir/HCLG.fst`` into ``decode_dir``.

    Args:
        graph_dir: a graph dir from :func:`pykaldi2.lang.hclg.mkgraph` or Kaldi's mkgraph.sh
            (HCLG.fst, words.txt).
        sources: one picklable source per job (nj = their number), each yielding
            ``(utt, (T, num_pdfs) log-likelihoods)``, or ``(utt, (T, D) features)`` when
            ``gmm_am`` (a ``khg.AmDiagGmm``) is given: :class:`MatrixTable`,
            :class:`DataDirFeats`, :class:`PipelineFeats`, a list of pairs
            (:func:`split_pairs`), the network sources of :mod:`pykaldi2.decoding.nnet`.
        trans_model: ``khg.TransitionModel`` (or pass ``tables``, or a bare ``tid2pdf``: then
            determinization has no phone pass). The graph dir must have been built for it
            (:func:`~pykaldi2.hmm.graph_model.check_graph_model`: its ``model_id``, else its
            ``num_pdfs``); with any of the three, the graph's transition-ids must be in range.
        model: the model file ``trans_model`` came from, named in mismatch errors.
        graph_fix: the fix those errors give (default: mkgraph for ``model``).
        num_utts: the number of utterances, for the progress bar, if known.
        text_lattices: write Kaldi's text form (lat.J.ark) instead of lat.J.gz.
        cmd: where the jobs run (Kaldi's ``--cmd``; :mod:`pykaldi2.utils.jobs`): one job runs
            in this process with run.pl.
    """
    from pykaldi2.lang.symbols import SymbolTable

    config = config or DecoderConfig()
    graph_dir, out = Path(graph_dir), Path(decode_dir)
    hclg_path = graph_dir / "HCLG.fst"
    if not hclg_path.is_file():
        raise DataError("no HCLG.fst", file=str(hclg_path), fix="run `pykaldi2 mkgraph` first")
    words = SymbolTable.read(graph_dir / "words.txt")
    if tables is None:
        if trans_model is not None:
            tables = TransitionTables.from_trans_model(trans_model)
        elif tid2pdf is not None:
            tables = TransitionTables.from_arrays(tid2pdf)
        else:
            raise Pykaldi2Error("decode_dir: pass trans_model, tables or tid2pdf")
    nj = len(sources)
    if nj < 1:
        raise Pykaldi2Error("decode_dir: no job sources")
    if trans_model is not None:
        check_graph_model(graph_dir, trans_model, model or "the model", fix=graph_fix)
    check_graph_labels(  # fail here on a bad graph, not in every job
        load_graph(hclg_path), tables.num_transition_ids, graph_file=str(hclg_path),
        model=str(model or "the model"),
    )  # fmt: skip
    scorer = None if gmm_am is None else GmmScorer(gmm_am)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "ark" if text_lattices else "gz"
    for stale in list(out.glob("lat.*.ark")) + list(out.glob("lat.*.gz")):
        # From an earlier run with more jobs or the other format: not ours to score.
        job = stale.name.split(".")[1]
        if job.isdigit() and (int(job) > nj or not stale.name.endswith(suffix)):
            stale.unlink()
    jobs = [
        DecodeJob(
            str(hclg_path.absolute()), tables, config.to_dict(), src,
            str((out / f"lat.{j + 1}.{suffix}").absolute()), scorer, text_lattices,
        )
        for j, src in enumerate(sources)
    ]  # fmt: skip
    with JobRunner(nj, cmd=cmd) as run:
        results = run(
            decode_job, jobs, log=out / "log" / "decode.JOB.log", desc="decode", total=num_utts
        )
    summary = DecodeSummary()
    hyps: list[str] = []
    for job_hyps, s in results:
        summary.num_done += s.num_done
        summary.num_partial += s.num_partial
        summary.failed.update(s.failed)
        hyps += [" ".join([utt, *words.syms(w)]) + "\n" for utt, w in job_hyps]
    if summary.num_done == 0:
        raise Pykaldi2Error(
            f"decode_dir: no utterance decoded ({len(summary.failed)} failed); "
            + (next(iter(summary.failed.values()), "no inputs"))
        )
    atomic_write_text(out / "hyp.txt", "".join(hyps))
    atomic_write_text(out / "num_jobs", f"{nj}\n")
    kind = "determinized CompactLattices" if config.determinize_lattice else "raw lattices"
    form = "Kaldi text archives lat.J.ark" if text_lattices else "gzipped binary archives lat.J.gz"
    info = {
        "graph_dir": str(graph_dir.resolve()),
        "num_jobs": nj,
        "config": config.to_dict(),
        "gmm": gmm_am is not None,
        "num_done": summary.num_done,
        "num_partial": summary.num_partial,
        "failed": summary.failed,
        "lattices": f"{kind}, {form}; acoustic costs unscaled",
    }
    atomic_write_text(out / "decode_info.json", json.dumps(info, indent=2) + "\n")
    log.info(
        "decoded %d utterances into %s (%d partial, %d failed)",
        summary.num_done,
        out,
        summary.num_partial,
        len(summary.failed),
    )
    return summary
