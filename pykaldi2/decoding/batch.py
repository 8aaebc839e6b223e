"""Decoding many utterances in parallel processes into a Kaldi-style decode dir.

The work is spread over ``nj`` processes (the bindings hold the GIL, and one process per job is
Kaldi's way); each worker reads ``HCLG.fst`` once (VectorFst or ConstFst), keeps one decoder
and, for GMMs, one :class:`~pykaldi2.decoding.wfst.GmmScorer`, with one BLAS thread. The parent
reads the inputs, hands one utterance at a time to the pool (order kept, a bounded number in
flight) and writes::

    DECODE_DIR/lat.J.gz         Kaldi's gzipped binary archive of determinized CompactLattices
                                (acoustic costs unscaled), J=1..nj; utterance i goes to job
                                (i mod nj) + 1 -- what gmm-latgen-faster writes in decode.sh.
                                With ``text_lattices``: lat.J.ark, Kaldi's text form; with
                                ``determinize_lattice=False`` raw state-level lattices.
    DECODE_DIR/hyp.txt          best path at the decoding acoustic scale, ``utt w1 w2 ...``
    DECODE_DIR/num_jobs         nj (as Kaldi's scripts read it)
    DECODE_DIR/decode_info.json config, graph dir, num_jobs, counts (failed / partial)

Inputs are ``(utt, matrix)`` pairs: (T, num_pdfs) log-likelihoods, or, with ``gmm=...``,
(T, D) features scored with a :class:`~pykaldi2.decoding.wfst.GmmScorer` in the worker.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.decoding.lattice_io import LatticeWriter, lattice_entry_bytes
from pykaldi2.decoding.wfst import DecoderConfig, GmmScorer, decode_utterance, make_decoder
from pykaldi2.hmm.decoder import TransitionTables, load_graph
from pykaldi2.hmm.graph_model import check_graph_labels, check_graph_model
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.io import atomic_write_text
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)

_WORKER: dict[str, Any] = {}


def _init_worker(
    hclg_path: str, tables: TransitionTables, config: dict, scorer: GmmScorer | None, text: bool
) -> None:
    from threadpoolctl import threadpool_limits

    # An exception here would make the pool respawn workers forever: keep it for _decode_one.
    _WORKER["error"] = ""
    _WORKER["blas"] = threadpool_limits(limits=1)  # one thread per job, as Kaldi's jobs
    _WORKER["config"] = DecoderConfig.from_dict(config)
    try:
        _WORKER["decoder"] = make_decoder(load_graph(hclg_path), _WORKER["config"])
    except Pykaldi2Error as e:
        _WORKER["error"] = str(e)
    _WORKER["tables"] = tables
    _WORKER["text"] = text
    _WORKER["gmm"] = scorer  # numpy arrays: a worker needs no Kaldi binding


def _decode_one(item: tuple[str, np.ndarray]) -> tuple[str, list[int] | None, bool, bytes, str]:
    """Worker: ``(utt, matrix)`` -> ``(utt, words, reached_final, archive entry, error)``."""
    utt, mat = item
    if _WORKER["error"]:
        return utt, None, False, b"", _WORKER["error"]
    try:
        loglik = mat if _WORKER["gmm"] is None else _WORKER["gmm"](mat)
        res, lat = decode_utterance(
            None, loglik, _WORKER["tables"], _WORKER["config"], utt, _WORKER["decoder"]
        )
        entry = lattice_entry_bytes(utt, lat, binary=not _WORKER["text"])
    except Pykaldi2Error as e:
        return utt, None, False, b"", str(e)
    return utt, res.words, res.reached_final, entry, ""


def _imap_bounded(pool, inputs: Iterable, depth: int) -> Iterator:
    """``pool.imap(_decode_one, inputs)`` with at most ``depth`` inputs in flight.

    ``Pool.imap`` reads its whole input ahead (all log-likelihood matrices in memory at once);
    this keeps memory bounded and the order of ``inputs``.
    """
    pending: deque = deque()
    for item in inputs:
        pending.append(pool.apply_async(_decode_one, (item,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


@dataclass
class DecodeSummary:
    """Counts of a :func:`decode_dir` run (also saved in decode_info.json)."""

    num_done: int = 0
    num_partial: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def decode_dir(
    graph_dir: str | os.PathLike,
    inputs: Iterable[tuple[str, np.ndarray]],
    decode_dir: str | os.PathLike,
    trans_model=None,
    *,
    model: str | os.PathLike | None = None,
    graph_fix: str | None = None,
    tid2pdf: np.ndarray | None = None,
    tables: TransitionTables | None = None,
    config: DecoderConfig | None = None,
    nj: int = 1,
    gmm_am=None,
    num_utts: int | None = None,
    text_lattices: bool = False,
) -> DecodeSummary:
    """Decode ``inputs`` with ``graph_dir/HCLG.fst``; write lattices and hyps into ``decode_dir``.

    Args:
        graph_dir: a graph dir from :func:`pykaldi2.lang.hclg.mkgraph` or Kaldi's mkgraph.sh
            (HCLG.fst, words.txt).
        inputs: ``(utt, (T, num_pdfs) log-likelihoods)`` pairs, or ``(utt, (T, D) features)``
            when ``gmm_am`` (a ``khg.AmDiagGmm``) is given.
        trans_model: ``khg.TransitionModel`` (or pass ``tables``, or a bare ``tid2pdf``: then
            determinization has no phone pass). The graph dir must have been built for it
            (:func:`~pykaldi2.hmm.graph_model.check_graph_model`: its ``model_id``, else its
            ``num_pdfs``); with any of the three, the graph's transition-ids must be in range.
        model: the model file ``trans_model`` came from, named in mismatch errors.
        graph_fix: the fix those errors give (default: mkgraph for ``model``).
        nj: worker processes (1: decode in this process).
        num_utts: length of ``inputs`` for the progress bar, if known.
        text_lattices: write Kaldi's text form (lat.J.ark) instead of lat.J.gz.
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
    if nj < 1:
        raise Pykaldi2Error(f"decode_dir: nj must be >= 1, got {nj}")
    if trans_model is not None:
        check_graph_model(graph_dir, trans_model, model or "the model", fix=graph_fix)
    check_graph_labels(  # fail here on a bad graph, not in every worker
        load_graph(hclg_path), tables.num_transition_ids, graph_file=str(hclg_path),
        model=str(model or "the model"),
    )  # fmt: skip
    scorer = None if gmm_am is None else GmmScorer(gmm_am)
    initargs = (str(hclg_path), tables, config.to_dict(), scorer, text_lattices)
    summary = DecodeSummary()
    hyps: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    suffix = "ark" if text_lattices else "gz"
    for stale in list(out.glob("lat.*.ark")) + list(out.glob("lat.*.gz")):
        # From an earlier run with more jobs or the other format: not ours to score.
        job = stale.name.split(".")[1]
        if job.isdigit() and (int(job) > nj or not stale.name.endswith(suffix)):
            stale.unlink()
    with ExitStack() as stack:
        arks = [
            stack.enter_context(
                LatticeWriter(out / f"lat.{j + 1}.{suffix}", binary=not text_lattices)
            )
            for j in range(nj)
        ]
        results: Iterator
        if nj == 1:
            _init_worker(*initargs)
            results = map(_decode_one, inputs)
        else:
            ctx = mp.get_context("spawn")
            pool = stack.enter_context(ctx.Pool(nj, initializer=_init_worker, initargs=initargs))
            results = _imap_bounded(pool, inputs, depth=4 * nj)
        bar = stack.enter_context(progress(total=num_utts, desc="decode", unit="utt"))
        for i, (utt, word_ids, final, entry, err) in enumerate(results):
            bar.update(1)
            if word_ids is None:
                summary.failed[utt] = err
                log.warning("decoding failed for %s: %s", utt, err)
                continue
            summary.num_done += 1
            summary.num_partial += int(not final)
            arks[i % nj].write_entry(entry)  # serialized by the worker
            hyps.append(" ".join([utt, *words.syms(word_ids)]) + "\n")
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
