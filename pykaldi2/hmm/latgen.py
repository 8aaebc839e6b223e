"""Lattices from log-likelihoods in a pool of worker processes (Kaldi's ``latgen-faster-mapped``
with ``--determinize-lattice=false``, and ``nnet-align-compiled`` for on-the-fly numerators).

A batch's (N, T, C) log-likelihoods go through a denominator HCLG with the compiled
LatticeFasterDecoder of :mod:`pykaldi2.hmm.decoder` (max_active, beam and lattice beam as
Kaldi's make_denlats.sh; the decodable is ``kappa * loglik[t, tid2pdf[tid]]``, Kaldi's
DecodableMatrixScaledMapped), one raw state-level lattice per utterance (connected, acoustic
costs unscaled), handed over as arrays -- no text -- and returned as picklable
:class:`~pykaldi2.hmm.lattice_arrays.LatticeArrays`.

Parallelism: lattices are made in a pool of worker processes (``multiprocessing`` with
``spawn``, one thread each); each worker reads HCLG.fst (VectorFst or ConstFst) once and keeps
one decoder. Nothing a worker imports loads torch (this module, the decoder, the lattice arrays
and, for numerators, the GMM model and graph compiler are numpy and the Kaldi bindings): a
worker is the interpreter, numpy, the bindings and its graph, about 200 MB less than one that
imports torch. The caller may hand torch tensors; they are converted in the calling process.

On-the-fly numerators (PyKaldi2's ``train_se2``): given a :class:`TrainGraphSource` (the
model's final.mdl, L.fst, disambiguation phones) and the transcripts' word ids, the same job
also Viterbi-aligns the utterance with the same log-likelihoods through its training graph
(Kaldi's ``compile-train-graphs`` + ``nnet-align-compiled``, transition scale 1.0, self-loop
scale 0.1, acoustic scale ``acoustic_scale``). The graphs are compiled in the workers, each
once per utterance, and kept in a per-worker LRU cache (``graph_cache``): FSTs do not pickle,
compiling is cheap next to decoding and runs in parallel there, and training starts without a
compile-train-graphs pass over the whole corpus. An utterance that does not align (even with
``ali_retry_beam``) gets ``None``: the caller falls back to its stored alignment.

    >>> gen = LatticeGenerator("exp/tri/graph/HCLG.fst", info, LatticeGenConfig(num_workers=2))
    >>> handle = gen.submit(["utt1", "utt2"], loglik, lengths)   # returns at once
    >>> lattices = handle.get()                                   # list[LatticeArrays]
    >>> gen.close()
    >>> gen = LatticeGenerator(hclg, info, cfg, TrainGraphSource("final.mdl", "lang/L.fst"))
    >>> lattices, alis = gen.submit(utts, loglik, lengths, words=word_ids).get()
"""

from __future__ import annotations

import multiprocessing
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pykaldi2.hmm.decoder import (
    Decoder,
    LatticeFasterDecoderConfig,
    as_graph,
    check_graph_header,
    load_graph,
)
from pykaldi2.hmm.lattice_arrays import LatticeArrays, TransitionInfo
from pykaldi2.utils.errors import DataError, Pykaldi2Error

__all__ = [
    "LatticeGenConfig",
    "LatticeGenerator",
    "Ready",
    "TrainGraphSource",
    "generate_lattice",
    "lattice_arrays",
    "nnet_align_compiled",
]


@dataclass
class LatticeGenConfig(LatticeFasterDecoderConfig):
    """Lattice generation options (Kaldi's ``make_denlats.sh``: beam 13, lattice beam 7,
    max_active 5000).

    Attributes (besides the decoder's search options, see
    :class:`~pykaldi2.hmm.decoder.LatticeFasterDecoderConfig`):
        acoustic_scale: kappa used for decoding (the acoustic costs stored in the lattice are
            divided by it again, i.e. unscaled).
        num_workers: processes of the pool; 0 generates in the calling process.
        ali_beam, ali_retry_beam: beams of the on-the-fly numerator alignment (Kaldi's
            ``align.sh``: 10 and 40).
        graph_cache: training graphs kept per worker (on-the-fly numerators; LRU).
    """

    beam: float = 13.0
    lattice_beam: float = 7.0
    max_active: int = 5000
    acoustic_scale: float = 0.1
    num_workers: int = 2
    ali_beam: float = 10.0
    ali_retry_beam: float = 40.0
    graph_cache: int = 5000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.acoustic_scale <= 0 or self.ali_beam <= 0:
            raise Pykaldi2Error(f"LatticeGenConfig: acoustic_scale, ali_beam must be > 0: {self}")
        if self.ali_retry_beam < 0 or self.graph_cache < 0:
            raise Pykaldi2Error("LatticeGenConfig: ali_retry_beam, graph_cache must be >= 0")
        if self.num_workers < 0:
            raise Pykaldi2Error("LatticeGenConfig: num_workers must be >= 0")

    def search_config(self) -> LatticeFasterDecoderConfig:
        names = LatticeFasterDecoderConfig.field_names()
        return LatticeFasterDecoderConfig(**{n: getattr(self, n) for n in names})


def lattice_arrays(raw: dict, utt: str = "") -> LatticeArrays:
    """The decoder's raw lattice dict (acoustic costs unscaled) as :class:`LatticeArrays`;
    final weights keep graph + acoustic cost together (the decoder's final acoustic cost is
    0)."""
    if len(raw["src"]) == 0:
        raise DataError("the decoder produced an empty lattice", utt=utt or None)
    fg = np.asarray(raw["final_graph"], np.float64)
    final_cost = np.where(np.isfinite(fg), fg + np.asarray(raw["final_ac"], np.float64), np.inf)
    return LatticeArrays(
        num_states=int(raw["num_states"]),
        start=int(raw["start"]),
        src=np.asarray(raw["src"], np.int64),
        dst=np.asarray(raw["dst"], np.int64),
        tid=np.asarray(raw["ilabel"], np.int64),
        word=np.asarray(raw["olabel"], np.int64),
        graph_cost=np.asarray(raw["graph"], np.float64),
        ac_cost=np.asarray(raw["ac"], np.float64),
        final_cost=final_cost,
        utt=utt,
    )


def _decodable_matrix(loglik: np.ndarray, info: TransitionInfo, scale: float, utt: str):
    """(T, num_transition_ids) ``scale * loglik[:, tid2pdf[1:]]`` (khg's aligner needs it)."""
    loglik = np.asarray(loglik, dtype=np.float32)
    if loglik.ndim != 2 or loglik.shape[1] != info.num_pdfs or loglik.shape[0] == 0:
        raise DataError(
            f"log-likelihoods of shape {loglik.shape}, the model has {info.num_pdfs} pdfs",
            utt=utt or None,
            fix="the network's output dim must equal the tree's num_pdfs; drop empty utterances",
        )
    if not np.isfinite(loglik).all():
        raise DataError("log-likelihoods contain NaN or inf", utt=utt or None)
    return np.ascontiguousarray(scale * loglik[:, info.tid2pdf[1:]], dtype=np.float32)


def _tid2pdf(info: TransitionInfo) -> np.ndarray:
    t = np.asarray(info.tid2pdf, np.int32).copy()
    t[0] = 0
    return t


def generate_lattice(
    hclg,
    loglik: np.ndarray,
    info: TransitionInfo,
    cfg: LatticeGenConfig,
    utt: str = "",
    decoder: Decoder | None = None,
) -> LatticeArrays:
    """One raw lattice (Kaldi's ``latgen-faster-mapped --determinize-lattice=false``).

    Args:
        hclg: the denominator graph (a path, :class:`~pykaldi2.hmm.decoder.Graph` or kaldifst
            FST; ignored when ``decoder`` is given).
        loglik: (T, C) log-likelihoods of one utterance.
        decoder: a :class:`~pykaldi2.hmm.decoder.Decoder` to reuse (one per worker).
    The final states are used when reached; otherwise the lattice ends on the last frame's
    states (Kaldi's ``--allow-partial``).
    """
    decoder = decoder or Decoder(as_graph(hclg), cfg.search_config())
    num_pdfs = info.num_pdfs
    x = np.asarray(loglik, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != num_pdfs or x.shape[0] == 0:
        raise DataError(
            f"log-likelihoods of shape {x.shape}, the model has {num_pdfs} pdfs",
            utt=utt or None,
            fix="the network's output dim must equal the tree's num_pdfs; drop empty utterances",
        )
    decoder.decode(x, _tid2pdf(info), cfg.acoustic_scale, utt)
    return lattice_arrays(decoder.raw_lattice(), utt)


def nnet_align_compiled(
    graph,
    loglik: np.ndarray,
    info: TransitionInfo,
    acoustic_scale: float = 0.1,
    beam: float = 10.0,
    retry_beam: float = 40.0,
    utt: str = "",
) -> np.ndarray | None:
    """Viterbi alignment of one utterance with the network (Kaldi's ``nnet-align-compiled``).

    Args:
        graph: the utterance's training graph with transition probabilities already added
            (``khg.add_transition_probs``), or any decoding graph.
        loglik: (T, C) log-likelihoods of the current model.
    Returns (T,) int32 transition_ids, or None when the alignment failed even with the retry
    beam (on-the-fly numerators of PyKaldi2's train_se2).
    """
    from pykaldi2.kaldi import khg

    M = _decodable_matrix(loglik, info, acoustic_scale, utt)
    _, n_err, _, _, _, ali, _ = khg.align_utterance_wrapper(
        config=khg.AlignConfig(beam=beam, retry_beam=retry_beam, careful=False),
        utt=utt or "utt",
        acoustic_scale=acoustic_scale,
        fst=graph,
        decodable=khg.DecodableCtc(M),
        num_done=0,
        num_error=0,
        num_retried=0,
        tot_like=0.0,
        frame_count=0,
    )
    if n_err or len(ali) != M.shape[0]:
        return None
    return np.asarray(ali, dtype=np.int32)


# --------------------------------------------------------------------------------------------
# The worker pool
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainGraphSource:
    """What a worker needs to compile training graphs (on-the-fly numerators).

    Attributes:
        model: the model's final.mdl (a :class:`~pykaldi2.hmm.model.GmmModel` file: the
            transition model and tree the network's pdf_ids come from).
        lexicon: L.fst of the lang dir (phones to words, no disambiguation loops needed).
        disambig_phones: the lang dir's phones/disambig.int.
    """

    model: str
    lexicon: str
    disambig_phones: tuple[int, ...] = field(default_factory=tuple)


#: Kaldi's ``scale_opts`` of steps/nnet3/align.sh.
TRANSITION_SCALE, SELF_LOOP_SCALE = 1.0, 0.1


class _GenState:
    """The per-process state of generation: HCLG, and for numerators the graph compiler and an
    LRU cache of training graphs (utt -> graph with transition probs, or None: no graph)."""

    def __init__(
        self,
        hclg_path: str,
        info: TransitionInfo,
        cfg: LatticeGenConfig,
        source: TrainGraphSource | None,
    ) -> None:
        self.hclg, self.info, self.cfg = _check_hclg(hclg_path), info, cfg
        self.decoder = Decoder(self.hclg, cfg.search_config())
        self.model = self.compiler = None
        self.graphs: OrderedDict[str, Any] = OrderedDict()
        if source is not None:
            from pykaldi2.hmm.align import training_graph_compiler
            from pykaldi2.hmm.model import GmmModel

            self.model = GmmModel.load(source.model)
            self.compiler = training_graph_compiler(
                self.model, source.lexicon, source.disambig_phones
            )

    def train_graph(self, utt: str, words: np.ndarray):
        """The training graph of ``utt`` (compile-train-graphs + transition probs), cached."""
        if utt in self.graphs:
            self.graphs.move_to_end(utt)
            return self.graphs[utt]
        from pykaldi2.kaldi import khg

        try:
            graph = self.compiler.compile_graph_from_text([int(w) for w in words])
        except RuntimeError:  # the binding's check fails when L has no path for the words
            graph = None
        if graph is not None and graph.num_states > 0:
            khg.add_transition_probs(
                trans_model=self.model.tm, transition_scale=TRANSITION_SCALE,
                self_loop_scale=SELF_LOOP_SCALE, fst=graph,
            )  # fmt: skip
        else:
            graph = None
        if self.cfg.graph_cache > 0:
            self.graphs[utt] = graph
            if len(self.graphs) > self.cfg.graph_cache:
                self.graphs.popitem(last=False)
        return graph

    def align(self, utt: str, loglik: np.ndarray, words: np.ndarray) -> np.ndarray | None:
        """(T,) transition_ids of ``utt`` with ``loglik``, or None (no graph, no alignment)."""
        if self.compiler is None:
            raise Pykaldi2Error("LatticeGenerator: words given without a TrainGraphSource")
        graph = self.train_graph(utt, words) if len(words) else None
        if graph is None:
            return None
        c = self.cfg
        return nnet_align_compiled(
            graph, loglik, self.info, c.acoustic_scale, c.ali_beam, c.ali_retry_beam, utt
        )

    def run(self, job: tuple[str, np.ndarray, np.ndarray | None]):
        """A job (utt, (T, C) loglik, word ids or None) -> its lattice, or (lattice, ali)."""
        utt, loglik, words = job
        lat = generate_lattice(self.hclg, loglik, self.info, self.cfg, utt, self.decoder)
        return lat if words is None else (lat, self.align(utt, loglik, words))


_WORKER: dict[str, _GenState] = {}


def _check_hclg(path: str, load: bool = True):
    """The denominator graph (``load``), or only the checks its header allows (a parent that
    hands the path to its workers: load_graph would keep the graph in it for nothing)."""
    if not os.path.isfile(path):
        raise DataError("denominator graph not found", file=path, fix="build HCLG.fst (mkgraph)")
    graph = load_graph(path) if load else None
    if (graph.num_states if load else check_graph_header(path)) == 0:
        raise DataError("denominator graph is empty", file=path)
    return graph


def _worker_init(hclg_path: str, info, cfg, source) -> None:
    from threadpoolctl import threadpool_limits

    _WORKER["blas"] = threadpool_limits(limits=1)
    try:
        _WORKER["state"] = _GenState(hclg_path, info, cfg, source)
    except Exception as e:  # noqa: BLE001 -- carried to the first job (a Pool whose
        # initializer raises restarts its workers forever instead of failing)
        _WORKER["error"] = str(e) if isinstance(e, Pykaldi2Error) else f"{type(e).__name__}: {e}"


def _worker_run(job):
    if "error" in _WORKER:
        raise Pykaldi2Error(f"lattice worker could not start: {_WORKER['error']}")
    return _WORKER["state"].run(job)


def _collect(results: list, with_ali: bool):
    """Per-utterance job results -> list[LatticeArrays], or (lattices, alis) with words."""
    if not with_ali:
        return results
    return [r[0] for r in results], [r[1] for r in results]


class Ready:
    """A result already at hand (in-process, or saved for a resume), with the same ``get`` as
    an AsyncResult."""

    def __init__(self, value) -> None:
        self.value = value

    def get(self, timeout: float | None = None):
        return self.value


class _Collected:
    """An AsyncResult of per-utterance results, collected by :func:`_collect` on ``get``."""

    def __init__(self, result, with_ali: bool) -> None:
        self.result, self.with_ali = result, with_ali

    def get(self, timeout: float | None = None):
        return _collect(self.result.get(timeout), self.with_ali)


class LatticeGenerator:
    """Lattices for batches of log-likelihoods, from a pool of ``num_workers`` processes.

    Args:
        hclg_path: the denominator HCLG.fst (each worker reads it).
        info: transition_id tables of the model (:meth:`TransitionInfo.from_trans_model`).
        source: for on-the-fly numerator alignments (``submit(..., words=...)``): the model
            and L.fst the workers compile training graphs from.
    """

    def __init__(
        self,
        hclg_path: str | os.PathLike,
        info: TransitionInfo,
        cfg: LatticeGenConfig,
        source: TrainGraphSource | None = None,
    ) -> None:
        self.hclg_path, self.info, self.cfg, self.source = os.fspath(hclg_path), info, cfg, source
        self._state = None
        self._pool = None
        if cfg.num_workers > 0:
            _check_hclg(self.hclg_path, load=False)  # fail here on what the header shows
            if source is not None:
                for path in (source.model, source.lexicon):
                    if not os.path.isfile(path):
                        raise DataError("not found", file=path, fix="check the lang/model dir")
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(
                cfg.num_workers, _worker_init, (self.hclg_path, info, cfg, source),
                maxtasksperchild=None,
            )  # fmt: skip
        else:
            self._state = _GenState(self.hclg_path, info, cfg, source)

    def _jobs(self, utts: Sequence[str], loglik, lengths, words) -> list[tuple]:
        # a torch tensor (train-se's network) without importing torch here
        x = loglik.detach().float().cpu().numpy() if hasattr(loglik, "detach") else loglik
        lengths = [int(n) for n in (lengths if lengths is not None else [x.shape[1]] * len(x))]
        words = list(words) if words is not None else [None] * len(lengths)
        if len(utts) != x.shape[0] or len(lengths) != x.shape[0] or len(words) != x.shape[0]:
            raise Pykaldi2Error(
                f"LatticeGenerator: {len(utts)} utterance ids, {len(lengths)} lengths, "
                f"{len(words)} transcripts for log-likelihoods of shape {tuple(x.shape)}"
            )
        return [
            (u, np.ascontiguousarray(x[i, :n]), None if w is None else np.asarray(w, np.int32))
            for i, (u, n, w) in enumerate(zip(utts, lengths, words))
        ]

    def submit(self, utts: Sequence[str], loglik, lengths=None, words=None):
        """Start generating; returns a handle whose ``get()`` gives ``list[LatticeArrays]``.

        ``loglik``: (N, T, C) tensor or array; ``lengths``: (N,) frames (default T).
        ``words``: N transcripts (word ids) for on-the-fly numerators: ``get()`` then gives
        ``(lattices, alis)``, ``alis[i]`` (lengths[i],) transition_ids or None (no alignment).
        """
        with_ali = words is not None
        jobs = self._jobs(utts, loglik, lengths, words)
        if self._pool is None:
            return Ready(_collect([self._state.run(job) for job in jobs], with_ali))
        return _Collected(self._pool.map_async(_worker_run, jobs, chunksize=1), with_ali)

    def generate(self, utts: Sequence[str], loglik, lengths=None, words=None):
        """Synchronous :meth:`submit`."""
        return self.submit(utts, loglik, lengths, words).get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> LatticeGenerator:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None and exc[0] is not None:
            self._pool.terminate()
        self.close()
