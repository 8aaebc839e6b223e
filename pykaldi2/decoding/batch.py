"""Decoding many utterances in parallel processes into a Kaldi-style decode dir.

None of the Kaldi bindings releases the GIL, so the work is spread over processes; an
``StdVectorFst`` does not pickle, so each worker reads ``HCLG.fst`` itself. The parent reads the
inputs, hands one utterance at a time to the pool (order kept), and writes::

    DECODE_DIR/lat.J.ark        raw lattices, Kaldi text archives (see decoding.lattice), J=1..nj;
                                utterance i goes to job (i mod nj) + 1
    DECODE_DIR/hyp.txt          best path at the decoding acoustic scale, ``utt w1 w2 ...``
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

from pykaldi2.decoding.lattice import write_lattice_text
from pykaldi2.decoding.wfst import DecoderConfig, GmmScorer, decode_lattice
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.io import atomic_write, atomic_write_text
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)

_WORKER: dict[str, Any] = {}


def _init_worker(hclg_path: str, tid2pdf: np.ndarray, config: dict, gmm_am: Any) -> None:
    from pykaldi2.kaldi import kaldifst

    # An exception here would make the pool respawn workers forever: keep it for _decode_one.
    _WORKER["error"] = ""
    _WORKER["hclg"] = kaldifst.StdVectorFst.read(hclg_path)  # None when unreadable
    if _WORKER["hclg"] is None:
        _WORKER["error"] = str(DataError("not a readable OpenFst graph", file=hclg_path))
    _WORKER["tid2pdf"] = tid2pdf
    _WORKER["config"] = DecoderConfig.from_dict(config)
    _WORKER["gmm"] = None if gmm_am is None else GmmScorer(gmm_am)


def _decode_one(item: tuple[str, np.ndarray]) -> tuple[str, list[int] | None, bool, str, str]:
    """Worker: ``(utt, matrix)`` -> ``(utt, words, reached_final, lattice text, error)``."""
    utt, mat = item
    if _WORKER["error"]:
        return utt, None, False, "", _WORKER["error"]
    try:
        loglik = mat if _WORKER["gmm"] is None else _WORKER["gmm"](mat)
        res, lat = decode_lattice(
            _WORKER["hclg"], loglik, _WORKER["tid2pdf"], _WORKER["config"], utt=utt
        )
    except Pykaldi2Error as e:
        return utt, None, False, "", str(e)
    return utt, res.words, res.reached_final, lat.to_text(), ""


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
    tid2pdf: np.ndarray | None = None,
    config: DecoderConfig | None = None,
    nj: int = 1,
    gmm_am=None,
    num_utts: int | None = None,
) -> DecodeSummary:
    """Decode ``inputs`` with ``graph_dir/HCLG.fst``; write lattices and hyps into ``decode_dir``.

    Args:
        graph_dir: a graph dir from :func:`pykaldi2.lang.hclg.mkgraph` (HCLG.fst, words.txt).
        inputs: ``(utt, (T, num_pdfs) log-likelihoods)`` pairs, or ``(utt, (T, D) features)``
            when ``gmm_am`` (a ``khg.AmDiagGmm``) is given.
        trans_model: ``khg.TransitionModel`` (or pass ``tid2pdf`` directly).
        nj: worker processes (1: decode in this process).
        num_utts: length of ``inputs`` for the progress bar, if known.
    """
    from pykaldi2.decoding.wfst import tid2pdf_of
    from pykaldi2.lang.symbols import SymbolTable

    config = config or DecoderConfig()
    graph_dir, out = Path(graph_dir), Path(decode_dir)
    hclg_path = graph_dir / "HCLG.fst"
    if not hclg_path.is_file():
        raise DataError("no HCLG.fst", file=str(hclg_path), fix="run `pykaldi2 mkgraph` first")
    words = SymbolTable.read(graph_dir / "words.txt")
    if tid2pdf is None:
        if trans_model is None:
            raise Pykaldi2Error("decode_dir: pass trans_model or tid2pdf")
        tid2pdf = tid2pdf_of(trans_model)
    if nj < 1:
        raise Pykaldi2Error(f"decode_dir: nj must be >= 1, got {nj}")
    initargs = (str(hclg_path), tid2pdf, config.to_dict(), gmm_am)
    summary = DecodeSummary()
    hyps: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("lat.*.ark"):  # from an earlier run with more jobs: not ours to score
        if stale.name.split(".")[1].isdigit() and int(stale.name.split(".")[1]) > nj:
            stale.unlink()
    with ExitStack() as stack:
        arks = [
            stack.enter_context(atomic_write(out / f"lat.{j + 1}.ark", "w", encoding="utf-8"))
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
        for i, (utt, word_ids, final, lat_text, err) in enumerate(results):
            bar.update(1)
            if word_ids is None:
                summary.failed[utt] = err
                log.warning("decoding failed for %s: %s", utt, err)
                continue
            summary.num_done += 1
            summary.num_partial += int(not final)
            write_lattice_text(arks[i % nj], utt, lat_text)
            hyps.append(" ".join([utt, *words.syms(word_ids)]) + "\n")
        if summary.num_done == 0:
            raise Pykaldi2Error(
                f"decode_dir: no utterance decoded ({len(summary.failed)} failed); "
                + (next(iter(summary.failed.values()), "no inputs"))
            )
        atomic_write_text(out / "hyp.txt", "".join(hyps))
    info = {
        "graph_dir": str(graph_dir.resolve()),
        "num_jobs": nj,
        "config": config.to_dict(),
        "gmm": gmm_am is not None,
        "num_done": summary.num_done,
        "num_partial": summary.num_partial,
        "failed": summary.failed,
        "lattices": "raw Kaldi lattices, text archives lat.J.ark; acoustic costs unscaled",
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
