"""Denominator lattices (and alignments) generated on the fly from the current model.

Kaldi's lattice sequence training decodes the training data once with the CE model
(``make_denlats.sh``); PyKaldi2's ``train_se2`` regenerates lattices with the model being
trained. Here a batch's (N, T, C) log-likelihoods go through a denominator HCLG with
``kaldi_decoder.LatticeSimpleDecoder`` over ``DecodableCtc(M)``, ``M = kappa *
loglik[:, tid2pdf[1:]]`` (Kaldi's DecodableMatrixScaledMapped), one raw lattice per utterance,
returned as picklable :class:`~pykaldi2.losses.lattice.LatticeArrays`.

Parallelism: none of the bindings releases the GIL, so lattices are made in a pool of worker
processes (``multiprocessing`` with ``spawn``); each worker reads HCLG.fst itself (a
``StdVectorFst`` does not pickle). :class:`LatticePrefetcher` keeps the pool busy while the
trainer works: when the trainer receives batch k, the log-likelihoods of batch k+1 have just
been computed (an extra no-grad forward) by the model as it is *before* step k and sent to the
workers. So the lattices a step trains on come from the model before the previous step's update:
one optimizer step stale. With small sequence-training learning rates the difference
is negligible; Kaldi's lattices are a whole training run stale.

    >>> gen = LatticeGenerator("exp/tri/graph/HCLG.fst", info, LatticeGenConfig(num_workers=2))
    >>> handle = gen.submit(["utt1", "utt2"], loglik, lengths)   # returns at once
    >>> lattices = handle.get()                                   # list[LatticeArrays]
    >>> gen.close()
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pykaldi2.losses.lattice import LatticeArrays, TransitionInfo
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError, Pykaldi2Error

__all__ = [
    "LatticeGenConfig",
    "LatticeGenerator",
    "LatticePrefetcher",
    "generate_lattice",
    "lattice_from_kaldifst",
    "nnet_align_compiled",
]


@dataclass
class LatticeGenConfig(ConfigMixin):
    """Lattice generation options (Kaldi's ``make_denlats.sh``: beam 13, lattice beam 7).

    Attributes:
        beam, lattice_beam, prune_interval: ``LatticeSimpleDecoder`` options.
        acoustic_scale: kappa used for decoding (the acoustic costs stored in the lattice are
            divided by it again, i.e. unscaled).
        num_workers: processes of the pool; 0 generates in the calling process.
    """

    beam: float = 13.0
    lattice_beam: float = 7.0
    prune_interval: int = 25
    acoustic_scale: float = 0.1
    num_workers: int = 2

    def __post_init__(self) -> None:
        if min(self.beam, self.lattice_beam, self.acoustic_scale, self.prune_interval) <= 0:
            raise Pykaldi2Error(
                f"LatticeGenConfig: beams, scale, prune_interval must be > 0: {self}"
            )
        if self.num_workers < 0:
            raise Pykaldi2Error("LatticeGenConfig: num_workers must be >= 0")


def lattice_from_kaldifst(raw, acoustic_scale: float = 1.0, utt: str = "") -> LatticeArrays:
    """A ``kaldifst.Lattice`` (e.g. ``get_raw_lattice()``) as :class:`LatticeArrays`.

    Acoustic costs are divided by ``acoustic_scale`` (the scale the decoder applied); final
    weights keep graph + acoustic cost together (the decoder's final acoustic cost is 0).
    """
    text = raw.to_str(is_acceptor=False, show_weight_one=True)
    arcs, finals = [], []
    for line in text.replace(",", "\t").splitlines():
        f = line.split()
        if len(f) == 6:
            arcs.append(f)
        elif len(f) == 3:
            finals.append(f)
        elif line.strip():
            raise DataError(f"unexpected lattice line {line!r}", utt=utt or None)
    if not arcs:
        raise DataError("the decoder produced an empty lattice", utt=utt or None)
    a = np.asarray(arcs, dtype=np.float64)
    ints = a[:, :4].astype(np.int64)
    fin = np.asarray(finals, dtype=np.float64).reshape(-1, 3)
    num_states = int(raw.num_states)
    final_cost = np.full(num_states, np.inf)
    final_cost[fin[:, 0].astype(np.int64)] = fin[:, 1] + fin[:, 2] / acoustic_scale
    return LatticeArrays(
        num_states=num_states,
        start=int(raw.start),
        src=ints[:, 0],
        dst=ints[:, 1],
        tid=ints[:, 2],
        word=ints[:, 3],
        graph_cost=a[:, 4],
        ac_cost=a[:, 5] / acoustic_scale,
        final_cost=final_cost,
        utt=utt,
    )


def _decodable_matrix(loglik: np.ndarray, info: TransitionInfo, scale: float, utt: str):
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


def generate_lattice(
    hclg, loglik: np.ndarray, info: TransitionInfo, cfg: LatticeGenConfig, utt: str = ""
) -> LatticeArrays:
    """One raw lattice (Kaldi's ``latgen-faster-mapped`` without determinization).

    Args:
        hclg: ``kaldifst.StdVectorFst`` denominator graph.
        loglik: (T, C) log-likelihoods of one utterance.
    The final states are used when reached; otherwise the lattice ends on the last frame's
    states (Kaldi's ``--allow-partial``).
    """
    from pykaldi2.kaldi import kaldi_decoder

    M = _decodable_matrix(loglik, info, cfg.acoustic_scale, utt)
    opts = kaldi_decoder.LatticeSimpleDecoderConfig(
        beam=cfg.beam,
        lattice_beam=cfg.lattice_beam,
        prune_interval=cfg.prune_interval,
        determinize_lattice=False,
    )
    dec = kaldi_decoder.LatticeSimpleDecoder(hclg, opts)
    final = bool(dec.decode(kaldi_decoder.DecodableCtc(M)))
    final = final and dec.final_relative_cost() != float("inf")
    # use_final_probs=False after decode() (FinalizeDecoding) is an error in kaldi-decoder;
    # True falls back to all active tokens when no final state was reached, as Kaldi does.
    ok, raw = dec.get_raw_lattice(use_final_probs=True)
    if not ok:
        raise Pykaldi2Error(f"utterance {utt}: the decoder produced no lattice (larger beam?)")
    return lattice_from_kaldifst(raw, cfg.acoustic_scale, utt)


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

_WORKER: dict[str, Any] = {}


def _load_hclg(path: str):
    from pykaldi2.kaldi import kaldifst

    if not os.path.isfile(path):
        raise DataError("denominator graph not found", file=path, fix="build HCLG.fst (mkgraph)")
    fst = kaldifst.StdVectorFst.read(path)
    if fst is None or fst.num_states == 0:
        raise DataError("denominator graph is empty or unreadable", file=path)
    return fst


def _worker_init(hclg_path: str, info: TransitionInfo, cfg: LatticeGenConfig) -> None:
    torch.set_num_threads(1)
    _WORKER.update(hclg=_load_hclg(hclg_path), info=info, cfg=cfg)


def _worker_generate(job: tuple[str, np.ndarray]) -> LatticeArrays:
    utt, loglik = job
    return generate_lattice(_WORKER["hclg"], loglik, _WORKER["info"], _WORKER["cfg"], utt)


class _Done:
    """A finished in-process result with the same ``get`` as an AsyncResult."""

    def __init__(self, value) -> None:
        self.value = value

    def get(self, timeout: float | None = None):
        return self.value


class LatticeGenerator:
    """Lattices for batches of log-likelihoods, from a pool of ``num_workers`` processes.

    Args:
        hclg_path: the denominator HCLG.fst (each worker reads it).
        info: transition_id tables of the model (:meth:`TransitionInfo.from_trans_model`).
    """

    def __init__(
        self, hclg_path: str | os.PathLike, info: TransitionInfo, cfg: LatticeGenConfig
    ) -> None:
        self.hclg_path, self.info, self.cfg = os.fspath(hclg_path), info, cfg
        self._hclg = None
        self._pool = None
        if cfg.num_workers > 0:
            _load_hclg(self.hclg_path).num_states  # fail here, not in a worker  # noqa: B018
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(
                cfg.num_workers, _worker_init, (self.hclg_path, info, cfg), maxtasksperchild=None
            )
        else:
            self._hclg = _load_hclg(self.hclg_path)

    def _jobs(self, utts: Sequence[str], loglik, lengths) -> list[tuple[str, np.ndarray]]:
        x = loglik.detach().float().cpu().numpy() if torch.is_tensor(loglik) else loglik
        lengths = [int(n) for n in (lengths if lengths is not None else [x.shape[1]] * len(x))]
        if len(utts) != x.shape[0] or len(lengths) != x.shape[0]:
            raise Pykaldi2Error(
                f"LatticeGenerator: {len(utts)} utterance ids, {len(lengths)} lengths for "
                f"log-likelihoods of shape {tuple(x.shape)}"
            )
        return [(u, np.ascontiguousarray(x[i, :n])) for i, (u, n) in enumerate(zip(utts, lengths))]

    def submit(self, utts: Sequence[str], loglik, lengths=None):
        """Start generating; returns a handle whose ``get()`` gives ``list[LatticeArrays]``.

        ``loglik``: (N, T, C) tensor or array; ``lengths``: (N,) frames (default T).
        """
        jobs = self._jobs(utts, loglik, lengths)
        if self._pool is None:
            return _Done([generate_lattice(self._hclg, x, self.info, self.cfg, u) for u, x in jobs])
        return self._pool.map_async(_worker_generate, jobs, chunksize=1)

    def generate(self, utts: Sequence[str], loglik, lengths=None) -> list[LatticeArrays]:
        """Synchronous :meth:`submit`."""
        return self.submit(utts, loglik, lengths).get()

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


class LatticePrefetcher:
    """Wrap a training loader so every batch arrives with ``batch["lattices"]`` filled.

    ``loglik_fn(batch) -> (N, T, C)`` computes the current model's log-likelihoods (called
    under ``torch.no_grad``, e.g. ``lambda b: task.log_likelihoods(model(b["feats"],
    b["lengths"]))``); batches need ``utt_ids`` and ``lengths``. Batch k+1 is submitted to the
    generator before batch k is handed to the trainer, so generation overlaps training and
    the lattices are one optimizer step stale (see the module docstring). ``batch_sampler`` /
    ``sampler`` of the wrapped loader are exposed for the trainer's ``set_epoch`` and resume.
    """

    def __init__(
        self,
        loader: Iterable[dict],
        loglik_fn: Callable[[dict], torch.Tensor],
        generator: LatticeGenerator,
    ) -> None:
        self.loader, self.loglik_fn, self.generator = loader, loglik_fn, generator

    def __getattr__(self, name: str):
        if name in ("batch_sampler", "sampler", "dataset"):
            return getattr(self.loader, name)
        raise AttributeError(name)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def _submit(self, batch: dict):
        if "utt_ids" not in batch:
            raise Pykaldi2Error("LatticePrefetcher: batches must carry 'utt_ids'")
        with torch.no_grad():
            loglik = self.loglik_fn(batch)
        return self.generator.submit(batch["utt_ids"], loglik, batch["lengths"])

    def __iter__(self) -> Iterator[dict]:
        it = iter(self.loader)
        prev = next(it, None)
        if prev is None:
            return
        handle = self._submit(prev)
        for nxt in it:
            nxt_handle = self._submit(nxt)
            yield {**prev, "lattices": handle.get()}
            prev, handle = nxt, nxt_handle
        yield {**prev, "lattices": handle.get()}
