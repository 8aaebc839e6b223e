"""Hybrid decoding with a CE-trained network (Kaldi's nnet3-compute + latgen-faster-mapped).

A model dir from ``pykaldi2 train-ce`` (EXP/final) turns features into pseudo log-likelihoods
``log_softmax(logits) - prior_scale * log(priors)`` (T, num_pdfs), computed in batches in
each of the ``nj`` jobs of :func:`pykaldi2.decoding.batch.decode_dir` (:class:`NnetLoglikes`;
as Kaldi's nnet3-latgen-faster, a job runs the network on its utterances and decodes them
through HCLG); then the decode dir is scored over LM weights x insertion penalties::

    >>> decode_nnet("exp/blstm_ce/final", "exp/tri2/graph", "data/test",
    ...             "exp/blstm_ce/decode_test", nj=4)

``utterance`` mode (the default) runs whole utterances; ``chunk`` mode cuts each utterance into
the training chunks (``chunk_size`` frames + left/right context, the last chunk shifted back to
end at the last frame) and keeps the centre outputs, which bounds memory on long recordings. A
BLSTM trained on chunks *without* context (PyKaldi2's recipe, AN4's conf/ce_blstm.yaml) is
much better on whole utterances (AN4: 4.40% vs 5.82% WER in chunk mode).

Dimension legend: K chunks, T frames, F feature dim, C pdf_ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pykaldi2.data.datasets import chunk_starts
from pykaldi2.decoding.batch import DecodeSummary, decode_dir
from pykaldi2.decoding.wfst import DecoderConfig
from pykaldi2.hmm.graph_model import rebuild_fix
from pykaldi2.training.model_dir import CEModelDir, load_final_dir
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

INFERENCE_MODES = ("chunk", "utterance")


def check_inference_mode(mode: str) -> None:
    """Raise unless ``mode`` is one of :data:`INFERENCE_MODES`."""
    if mode not in INFERENCE_MODES:
        raise Pykaldi2Error(f"inference mode {mode!r} not in {INFERENCE_MODES}")


@dataclass
class NnetComputeConfig(ConfigMixin):
    """How log-likelihoods are computed: ``mode`` (chunk | utterance), chunks per forward pass
    (``batch_chunks``), ``prior_scale`` (0: posteriors only) and the torch ``device``."""

    mode: str = "utterance"
    batch_chunks: int = 64
    prior_scale: float = 1.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_inference_mode(self.mode)
        if self.batch_chunks < 1 or self.prior_scale < 0:
            raise Pykaldi2Error("batch_chunks must be >= 1 and prior_scale >= 0")


def chunk_windows(n: int, chunk_size: int, left: int, right: int) -> tuple[list[int], np.ndarray]:
    """Chunk starts and (K, left + chunk_size + right) frame indices of an ``n``-frame utterance
    (edges repeat the first/last frame, as in training)."""
    starts = chunk_starts(n, chunk_size)
    offsets = np.arange(-left, chunk_size + right)
    idx = np.clip(np.asarray(starts)[:, None] + offsets[None, :], 0, n - 1)
    return starts, idx


def _log_likelihoods(md: CEModelDir, logits, cfg: NnetComputeConfig) -> np.ndarray:
    import torch

    from pykaldi2.nnet.priors import log_likelihoods

    lp = torch.from_numpy(md.log_priors).float()
    return log_likelihoods(logits, lp, cfg.prior_scale).cpu().numpy()


def _forward(md: CEModelDir, x: np.ndarray, cfg: NnetComputeConfig):
    """(N, T, F) features -> (N, T, C) logits."""
    import torch

    xt = torch.from_numpy(np.require(x, np.float32, ["C", "W"])).to(cfg.device)
    lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
    with torch.no_grad():
        return md.model(xt, lengths)


def nnet_compute(
    md: CEModelDir,
    feats: Mapping[str, np.ndarray],
    utts: Sequence[str],
    cfg: NnetComputeConfig | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """``(utt, (T, C) float32 log-likelihoods)`` for each of ``utts``, in order."""
    cfg = cfg or NnetComputeConfig()
    c, left, right = md.chunk_size, md.left_context, md.right_context
    pending: list[tuple[str, np.ndarray, list[int], int]] = []  # utt, windows, starts, n

    def flush() -> Iterator[tuple[str, np.ndarray]]:
        x = np.concatenate([w for _, w, _, _ in pending])  # (K, left + c + right, F)
        ll = _log_likelihoods(md, _forward(md, x, cfg)[:, left : left + c], cfg)  # (K, c, C)
        k = 0
        for utt, _, starts, n in pending:
            out = np.empty((n, ll.shape[-1]), dtype=np.float32)
            for s in starts:  # later chunks overwrite the overlap of the shifted last chunk
                m = min(c, n - s)
                out[s : s + m] = ll[k, :m]
                k += 1
            yield utt, out
        pending.clear()

    for utt in utts:
        x = np.asarray(feats[utt], dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise DataError("empty or malformed feature matrix", utt=utt)
        if x.shape[1] != md.feature_dim:
            raise DataError(
                f"feature dim {x.shape[1]} but the model expects {md.feature_dim}",
                utt=utt,
                fix="compute the features the model was trained on (see its features.yaml)",
            )
        if cfg.mode == "utterance":
            yield utt, _log_likelihoods(md, _forward(md, x[None], cfg)[0], cfg)
            continue
        starts, idx = chunk_windows(len(x), c, left, right)
        pending.append((utt, x[idx], starts, len(x)))
        if sum(len(p[2]) for p in pending) >= cfg.batch_chunks:
            yield from flush()
    if pending:
        yield from flush()


@dataclass
class NnetLoglikes:
    """A decoding job's source: a CE model dir's log-likelihoods of ``utts`` of a data dir,
    computed in the job (Kaldi's nnet3-latgen-faster: each job runs the network itself)."""

    model_dir: str
    data_dir: str
    utts: list[str]
    compute: NnetComputeConfig

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        from pykaldi2.features.pipeline import ProcessedFeatures

        md = load_final_dir(self.model_dir, device=self.compute.device)
        feats = ProcessedFeatures(self.data_dir, md.features)
        yield from nnet_compute(md, feats, self.utts, self.compute)


def decode_nnet(
    model_dir: str | os.PathLike,
    graph_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    nj: int = 1,
    decoder: DecoderConfig | None = None,
    compute: NnetComputeConfig | None = None,
    score: bool = True,
    text_lattices: bool = False,
    cmd: str | None = None,
) -> DecodeSummary:
    """Decode ``data_dir`` with a CE model dir through ``graph_dir/HCLG.fst`` into ``out_dir``
    (lat.J.gz, hyp.txt, decode_info.json) in ``nj`` jobs (``cmd``: where they run, Kaldi's
    ``--cmd``), each computing its utterances' log-likelihoods and decoding them; when
    ``data_dir/text`` exists and ``score``, score it (wer_LMWT_WIP, best_wer)."""
    compute = compute or NnetComputeConfig()
    md = load_final_dir(model_dir, device=compute.device)
    return _decode_and_score(
        md, md.ali_model.tm,
        lambda utts: NnetLoglikes(str(Path(model_dir).absolute()), str(data_dir), utts, compute),
        graph_dir, data_dir, out_dir, decoder or DecoderConfig(), nj, score,
        text_lattices=text_lattices, cmd=cmd,
    )  # fmt: skip


def _decode_and_score(
    md, trans_model, source_fn, graph_dir, data_dir, out_dir, decoder: DecoderConfig, nj: int,
    score: bool, lm_weights: Sequence[float] | None = None, text_lattices: bool = False,
    graph_fix: str | None = None, cmd: str | None = None,
) -> DecodeSummary:  # fmt: skip
    """What decode-nnet and decode-chain share: check that the graph was built for the model
    dir's final.mdl (``trans_model``; ``graph_fix`` says how to rebuild it), split the
    utterances of ``data_dir`` with features into ``nj`` contiguous parts, decode the sources
    ``source_fn(utts)`` of the parts through ``graph_dir/HCLG.fst`` in ``nj`` jobs, and, with
    ``score`` and a ``data_dir/text``, score over ``lm_weights`` (None: the default sweep)."""
    from pykaldi2.data.split import split_utts
    from pykaldi2.features.pipeline import ProcessedFeatures

    graph_dir, data_dir = Path(graph_dir), Path(data_dir)
    feats = ProcessedFeatures(data_dir, md.features)
    utts = list(feats.keys())
    summary = decode_dir(
        graph_dir, [source_fn(part) for part in split_utts(utts, nj)], out_dir, trans_model,
        model=md.path / "final.mdl", graph_fix=graph_fix, config=decoder, num_utts=len(utts),
        text_lattices=text_lattices, cmd=cmd,
    )  # fmt: skip
    text = data_dir / "text"
    if score and text.is_file():
        from pykaldi2.decoding.sweep import score_dir

        kw = {} if lm_weights is None else {"lm_weights": lm_weights}
        score_dir(out_dir, text, **kw)
    return summary


# ---------------------------------------------------------------------------------------------
# Chain (LF-MMI) models: raw outputs at 1/frame_subsampling_factor of the frame rate
# ---------------------------------------------------------------------------------------------
#: LM weights for chain lattices: Kaldi's post-decode-acwt 10 with LMWT 7..17.
CHAIN_LM_WEIGHTS = tuple(w / 10 for w in range(7, 18))


def chain_windows(n: int, factor: int, chunk_size: int, left: int, right: int):
    """Output-frame chunk starts and (K, left + chunk_size + right) input frame indices of an
    ``n``-frame utterance for a chain model trained on chunks (``chunk_size`` and ``left``
    multiples of ``factor``): chunk k covers output frames ``[s_k, s_k + chunk_size / factor)``,
    the last one shifted back to end at ``ceil(n / factor)``; edges repeat the first/last
    frame, as in training."""
    n_out = -(-n // factor)
    starts = chunk_starts(n_out, chunk_size // factor)
    offsets = np.arange(-left, chunk_size + right)
    idx = np.clip(factor * np.asarray(starts)[:, None] + offsets[None, :], 0, n - 1)
    return starts, idx


def chain_compute(
    md,
    feats: Mapping[str, np.ndarray],
    utts: Sequence[str],
    device: str = "cpu",
    mode: str = "chunk",
):
    """``(utt, (ceil(T / factor), P) float32 log-likelihoods)``: a chain model dir's
    (:func:`pykaldi2.training.model_dir.load_chain_dir`) raw outputs (no log-softmax, no
    priors), as Kaldi's nnet3-latgen-faster with a chain model: on whole utterances
    (``mode="utterance"``, or a model trained without chunks), else on the training chunks with
    their context (:func:`chain_windows`)."""
    import torch

    check_inference_mode(mode)

    f = md.frame_subsampling_factor
    c, left, right = md.chunk_size, md.chunk_left_context, md.chunk_right_context
    for utt in utts:
        x = np.asarray(feats[utt], dtype=np.float32)
        if x.ndim != 2 or len(x) == 0 or x.shape[1] != md.feature_dim:
            raise DataError(
                f"feature matrix of shape {x.shape}, the model expects (T, {md.feature_dim})",
                utt=utt,
                fix="compute the features the model was trained on (see its features.yaml)",
            )
        n = -(-len(x) // f)
        if mode == "utterance" or c <= 0 or n <= c // f:
            xt = torch.from_numpy(np.require(x[None], np.float32, ["C", "W"])).to(device)
            with torch.no_grad():
                out = md.model(xt, torch.tensor([len(x)]))[0]
            yield utt, out[:n].float().cpu().numpy()
            continue
        starts, idx = chain_windows(len(x), f, c, left, right)
        xt = torch.from_numpy(np.require(x[idx], np.float32, ["C", "W"])).to(device)
        with torch.no_grad():
            out = md.model(xt, torch.full((len(starts),), idx.shape[1]))
        out = out[:, left // f : left // f + c // f].float().cpu().numpy()
        ll = np.empty((n, out.shape[-1]), dtype=np.float32)
        for k, s in enumerate(starts):  # the shifted last chunk overwrites the overlap
            ll[s : s + c // f] = out[k]
        yield utt, ll


@dataclass
class ChainLoglikes:
    """A decoding job's source: a chain model dir's outputs for ``utts`` of a data dir
    (:func:`chain_compute`), computed in the job."""

    model_dir: str
    data_dir: str
    utts: list[str]
    device: str = "cpu"
    mode: str = "chunk"

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        from pykaldi2.features.pipeline import ProcessedFeatures
        from pykaldi2.training.model_dir import load_chain_dir

        md = load_chain_dir(self.model_dir, device=self.device)
        feats = ProcessedFeatures(self.data_dir, md.features)
        yield from chain_compute(md, feats, self.utts, self.device, self.mode)


def decode_chain(
    model_dir: str | os.PathLike,
    graph_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    nj: int = 1,
    decoder: DecoderConfig | None = None,
    device: str = "cpu",
    score: bool = True,
    mode: str = "chunk",
    text_lattices: bool = False,
    cmd: str | None = None,
) -> DecodeSummary:
    """Decode ``data_dir`` with a chain model dir (``pykaldi2 train-chain``) through
    ``graph_dir/HCLG.fst`` (mkgraph with the model dir's final.mdl and self-loop scale 1.0) at
    the subsampled frame rate, acoustic scale 1.0 by default; score over
    :data:`CHAIN_LM_WEIGHTS` when ``data_dir/text`` exists. ``mode``: see
    :func:`chain_compute`; ``nj`` jobs, each running the network on its utterances, where
    ``cmd`` runs them (Kaldi's ``--cmd``)."""
    from pykaldi2.training.model_dir import load_chain_dir

    check_inference_mode(mode)
    md = load_chain_dir(model_dir, device=device)
    return _decode_and_score(
        md, md.chain_model.tm,
        lambda utts: ChainLoglikes(str(Path(model_dir).absolute()), str(data_dir), utts, device,
                                   mode),
        graph_dir, data_dir, out_dir, decoder or DecoderConfig(acoustic_scale=1.0), nj, score,
        CHAIN_LM_WEIGHTS, text_lattices,
        rebuild_fix(graph_dir, md.path / "final.mdl", " --self-loop-scale 1.0"), cmd,
    )  # fmt: skip
