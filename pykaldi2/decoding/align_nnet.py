"""Alignment with a CE network (Kaldi's steps/nnet3/align.sh: compile-train-graphs +
nnet3-align-compiled).

A model dir from ``pykaldi2 train-ce`` (or ``train-se``) re-aligns a data dir to its
transcripts: the network's pseudo log-likelihoods ``log_softmax - prior_scale * log(priors)``
(T, num_pdfs) are Viterbi-aligned through each utterance's training graph (the model dir's
final.mdl: transition model + tree, the lang dir's L.fst; transition scale 1.0, self-loop scale
0.1, acoustic scale 0.1, beam 10 / retry beam 40 as in align.sh)::

    >>> res = align_nnet("exp/blstm_ce/final", "data/train_fbank", "data/lang", nj=2)
    >>> write_ali_dir("exp/blstm_ce_ali", GmmModel.load("exp/blstm_ce/final/final.mdl"), res)

The alignments use the model dir's transition model, so an ali dir written from them is a
drop-in ``ali_dir`` for ``train-ce`` and ``train-se`` with that model (Kaldi's discriminative
recipes take their numerator alignments from the CE network this way, not from the GMM).

Each of ``nj`` worker processes loads the model dir, computes the log-likelihoods of its share
of the utterances (whole utterances by default: ``compute.mode``) and aligns them. Utterances
without a transcript are listed in a warning and not aligned (more than
``config.max_missing_text_fraction`` of them is an error); those without a training graph, or
that do not align even with the retry beam, are listed in
:attr:`~pykaldi2.hmm.align.AlignResult.failed`.

Dimension legend: T frames, C pdf_ids.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pykaldi2.decoding.nnet import NnetComputeConfig
from pykaldi2.hmm.align import AlignConfig, AlignResult, run_align_jobs
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)


def _align_nnet_job(job: tuple) -> AlignResult:
    """One job of :func:`align_nnet`: the utterances ``utts`` of ``data_dir`` (a spawned worker
    process when nj > 1: the model, FSTs and bindings' objects are loaded here)."""
    model_dir, data_dir, lang_dir, utts, cfg, compute, threads = job
    import torch

    from pykaldi2.decoding.nnet import nnet_compute
    from pykaldi2.features.pipeline import ProcessedFeatures
    from pykaldi2.hmm.align import compile_train_graphs
    from pykaldi2.hmm.inputs import load_texts
    from pykaldi2.hmm.latgen import nnet_align_compiled
    from pykaldi2.hmm.lattice_arrays import TransitionInfo
    from pykaldi2.kaldi import khg
    from pykaldi2.lang.lang_dir import load_lang
    from pykaldi2.training.model_dir import load_final_dir

    if threads:
        torch.set_num_threads(threads)
    md = load_final_dir(model_dir, device=compute.device)
    feats = ProcessedFeatures(data_dir, md.features)
    lang = load_lang(lang_dir)
    texts = {u: t for u, t in load_texts(data_dir, lang, utts).items() if u in feats}
    graphs = compile_train_graphs(md.ali_model, lang.read_L(), lang.disambig_phones, texts)
    info = TransitionInfo.from_trans_model(md.ali_model.tm)
    res = AlignResult()
    todo = [u for u in utts if u in graphs]
    res.failed.extend(u for u in utts if u not in graphs)  # no features, text or graph
    for utt, loglik in nnet_compute(md, feats, todo, compute):
        graph = graphs.pop(utt)
        khg.add_transition_probs(
            trans_model=md.ali_model.tm, transition_scale=cfg.transition_scale,
            self_loop_scale=cfg.self_loop_scale, fst=graph,
        )  # fmt: skip
        ali = nnet_align_compiled(
            graph, loglik, info, cfg.acoustic_scale, cfg.beam, cfg.retry_beam, utt
        )
        if ali is None:
            res.failed.append(utt)
            continue
        res.alis[utt] = ali
        res.num_frames += len(ali)
    return res


def align_nnet(
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    lang_dir: str | os.PathLike,
    *,
    config: AlignConfig | None = None,
    compute: NnetComputeConfig | None = None,
    nj: int = 1,
    utts: Sequence[str] | None = None,
    cmd: str | None = None,
    log_dir: str | os.PathLike | None = None,
) -> AlignResult:
    """Align ``data_dir`` (or its ``utts``) with the CE model dir ``model_dir`` in ``nj``
    processes (utterances split evenly in sorted order).

    Args:
        config: beams and scales (Kaldi's align.sh: beam 10, retry beam 40, acoustic scale
            0.1, transition scale 1.0, self-loop scale 0.1).
        compute: how the network runs (default: whole utterances, prior scale 1, CPU).
        cmd: where the jobs run (Kaldi's ``--cmd``, :mod:`pykaldi2.utils.jobs`); ``log_dir``:
            where their logs go (``align.JOB.log``; needed on a cluster).
    Returns the merged :class:`~pykaldi2.hmm.align.AlignResult` (``failed``: utterances
    without an alignment; ``tot_like`` is not computed).
    """
    import torch

    from pykaldi2.data.tables import read_table
    from pykaldi2.data.transcripts import check_transcribed
    from pykaldi2.features.storage import open_features

    cfg = config or AlignConfig()
    compute = compute or NnetComputeConfig(mode="utterance")
    if utts is None:
        reader = open_features(data_dir)
        utts = list(reader)
        reader.close()
    text = Path(data_dir) / "text"
    if not text.is_file():
        raise DataError("no text (transcripts)", file=str(text), fix="alignment needs `text`")
    utts = check_transcribed(
        sorted(utts), read_table(text), text_file=str(text),
        max_missing_fraction=cfg.max_missing_text_fraction, what="alignment",
    )  # fmt: skip
    if not utts:
        raise DataError("no utterance to align", file=str(text))
    nj = max(1, min(nj, len(utts)))
    threads = 0 if nj == 1 else max(1, torch.get_num_threads() // nj)
    jobs = [
        (str(model_dir), str(data_dir), str(lang_dir), utts[j::nj], cfg, compute, threads)
        for j in range(nj)
    ]
    job_logs = None if log_dir is None else Path(log_dir) / "align.JOB.log"
    merged = run_align_jobs(_align_nnet_job, jobs, cmd=cmd, log=job_logs)
    if merged.failed:
        shown = ", ".join(sorted(merged.failed)[:10]) + (" ..." if len(merged.failed) > 10 else "")
        log.warning(
            "align-nnet: %d of %d utterances have no alignment (no features/transcript/graph, "
            "or not aligned with retry beam %g): %s",
            len(merged.failed), len(utts), cfg.retry_beam, shown,
        )  # fmt: skip
    return merged
