"""Decoding one utterance through HCLG (Kaldi's gmm-latgen-faster, latgen-faster-mapped,
decode-faster-mapped, gmm-decode-faster).

Log-likelihoods come as a (T, num_pdfs) matrix (a neural net's pseudo log-likelihoods, or GMM
log-likelihoods from :class:`GmmScorer`); the compiled LatticeFasterDecoder of
:mod:`pykaldi2.hmm.decoder` reads them through ``tid2pdf`` times the acoustic scale (Kaldi's
DecodableMatrixScaledMapped). The graph may be a path (read once per process, VectorFst or
ConstFst), a :class:`~pykaldi2.hmm.decoder.Graph` or a kaldifst FST.

    >>> res = decode_faster(hclg, loglik, tid2pdf, DecoderConfig(beam=13))   # best path only
    >>> res, clat = decode_utterance(hclg, loglik, tables)   # + determinized CompactLattice
    >>> res, lat = decode_lattice(hclg, loglik, tid2pdf)     # + raw state-level Lattice
    >>> res.words, clat.num_arcs
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pykaldi2.decoding.compact_lattice import CompactLattice
from pykaldi2.decoding.lattice import Lattice
from pykaldi2.hmm.decoder import (
    Decoder,
    DeterminizeConfig,
    LatticeFasterDecoderConfig,
    TransitionTables,
)
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)


@dataclass
class DecoderConfig(LatticeFasterDecoderConfig):
    """Decoding options (Kaldi's ``steps/decode.sh`` defaults: gmm-latgen-faster with
    ``--max-active 7000 --beam 13 --lattice-beam 6``).

    Attributes (besides :class:`~pykaldi2.hmm.decoder.LatticeFasterDecoderConfig`'s beam,
    max_active, min_active, lattice_beam, prune_interval, beam_delta, hash_ratio, prune_scale):
        acoustic_scale: scale of the log-likelihoods (``--acoustic-scale``; 0.1 for GMM and
            cross-entropy nets, 1.0 for chain models).
        allow_partial: output the best partial path when no final state is reached
            (``--allow-partial``); otherwise that utterance fails.
        determinize_lattice: write determinized CompactLattices (``--determinize-lattice``);
            false: raw state-level lattices.
        phone_determinize, word_determinize, max_mem: the determinization passes and memory
            limit (``--phone-determinize``, ``--word-determinize``, ``--max-mem``).
    """

    acoustic_scale: float = 0.1
    allow_partial: bool = True
    determinize_lattice: bool = True
    phone_determinize: bool = True
    word_determinize: bool = True
    max_mem: int = 50_000_000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.acoustic_scale <= 0:
            raise Pykaldi2Error(
                f"DecoderConfig: acoustic_scale must be > 0, got {self.acoustic_scale}"
            )
        self.determinize_config()

    def determinize_config(self) -> DeterminizeConfig:
        return DeterminizeConfig(
            phone_determinize=self.phone_determinize,
            word_determinize=self.word_determinize,
            max_mem=self.max_mem,
        )

    def search_config(self) -> LatticeFasterDecoderConfig:
        names = LatticeFasterDecoderConfig.field_names()
        return LatticeFasterDecoderConfig(**{n: getattr(self, n) for n in names})


@dataclass
class DecodeResult:
    """The decoder's best path.

    Attributes:
        words: word ids (olabels of HCLG).
        ali: transition_ids, one per frame.
        graph_cost: total graph cost of the path.
        ac_cost: total acoustic cost, *unscaled* (``-sum loglik``).
        reached_final: False when ``allow_partial`` produced a path that ends in a non-final state.
    """

    words: list[int]
    ali: list[int] = field(repr=False)
    graph_cost: float
    ac_cost: float
    reached_final: bool = True

    def cost(self, acoustic_scale: float) -> float:
        """The decoder's total cost: graph + scaled acoustic (Kaldi logs -cost / frames)."""
        return self.graph_cost + acoustic_scale * self.ac_cost


def tid2pdf_of(trans_model) -> np.ndarray:
    """(num_transition_ids + 1,) int64: transition_id -> pdf_id (index 0 unused)."""
    return np.asarray(trans_model.transition_id_to_pdf_array(), dtype=np.int64)


def _tables(tables) -> TransitionTables:
    """TransitionTables from tables, a khg TransitionModel or a bare tid2pdf array."""
    if isinstance(tables, TransitionTables):
        return tables
    if hasattr(tables, "transition_id_to_pdf_array"):
        return TransitionTables.from_trans_model(tables)
    return TransitionTables.from_arrays(tables)


def _run(decoder: Decoder, loglik, tables: TransitionTables, config: DecoderConfig, utt: str):
    final = decoder.decode(loglik, tables.tid2pdf, config.acoustic_scale, utt)
    if not final and not config.allow_partial:
        raise Pykaldi2Error(f"utterance {utt}: no final state reached (try a larger beam)")
    ali, words, g, a = decoder.best_path()
    return DecodeResult(words.tolist(), ali.tolist(), g, a, reached_final=final)


def make_decoder(hclg, config: DecoderConfig | None = None) -> Decoder:
    """A reusable :class:`~pykaldi2.hmm.decoder.Decoder` for ``hclg`` with ``config``'s search
    options (one per process: its memory pools stay between utterances)."""
    config = config or DecoderConfig()
    return Decoder(hclg, config.search_config())


def decode_utterance(
    hclg,
    loglik: np.ndarray,
    tables,
    config: DecoderConfig | None = None,
    utt: str = "",
    decoder: Decoder | None = None,
) -> tuple[DecodeResult, CompactLattice | Lattice]:
    """Kaldi's DecodeUtteranceLatticeFaster (gmm-latgen-faster, latgen-faster-mapped).

    Args:
        hclg: the decoding graph (path, Graph or kaldifst FST; ignored when ``decoder`` is
            given).
        loglik: (T, num_pdfs) log-likelihoods.
        tables: :class:`~pykaldi2.hmm.decoder.TransitionTables` (a khg TransitionModel or a
            tid2pdf array also do; without phone tables determinization skips its phone pass).
        decoder: a decoder from :func:`make_decoder` to reuse.
    Returns the best path and, with ``config.determinize_lattice``, the determinized
    :class:`CompactLattice` (else the raw :class:`Lattice`), acoustic costs unscaled.
    """
    config = config or DecoderConfig()
    tables = _tables(tables)
    decoder = decoder or make_decoder(hclg, config)
    res = _run(decoder, loglik, tables, config, utt)
    if config.determinize_lattice:
        d, complete = decoder.compact_lattice(
            tables.phone_start, config.determinize_config(), keep_raw=False
        )
        if not complete:  # as gmm-latgen-faster warns; the lattice is pruned tighter
            log.warning(
                "utterance %s: determinization stopped before the lattice beam (max_mem)", utt
            )
        return res, CompactLattice.from_dict(d)
    return res, Lattice.from_dict(decoder.raw_lattice())


def decode_faster(
    hclg,
    loglik: np.ndarray,
    tid2pdf,
    config: DecoderConfig | None = None,
    utt: str = "",
    decoder: Decoder | None = None,
) -> DecodeResult:
    """Kaldi's ``decode-faster-mapped``: the best path only (max_active, beam as configured).

    Args:
        hclg: the decoding graph (path, Graph or kaldifst FST).
        loglik: (T, num_pdfs) log-likelihoods.
        tid2pdf: (num_transition_ids + 1,) transition_id -> pdf_id (or TransitionTables).
    """
    config = config or DecoderConfig()
    return _run(decoder or make_decoder(hclg, config), loglik, _tables(tid2pdf), config, utt)


def decode_lattice(
    hclg,
    loglik: np.ndarray,
    tid2pdf,
    config: DecoderConfig | None = None,
    utt: str = "",
) -> tuple[DecodeResult, Lattice]:
    """Kaldi's ``latgen-faster-mapped --determinize-lattice=false``: best path + raw lattice
    (connected, acoustic costs unscaled)."""
    from dataclasses import replace

    config = replace(config or DecoderConfig(), determinize_lattice=False)
    res, lat = decode_utterance(hclg, loglik, _tables(tid2pdf), config, utt)
    return res, lat  # type: ignore[return-value]


class GmmScorer:
    """Kaldi's ``gmm-compute-likes`` for many utterances: all Gaussians in one matrix product.

    For each Gaussian g of pdf p (Kaldi's ``DiagGmm::LogLikelihoods``)::

        loglik_g(x) = gconst_g + means_invvars_g . x - 0.5 * inv_vars_g . x^2

    and the pdf's log-likelihood is the log-sum-exp over its Gaussians. The parameters of
    ``am`` (a ``khg.AmDiagGmm``) are copied once, at construction.
    """

    def __init__(self, am) -> None:
        gmms = [am.get_pdf(p) for p in range(am.num_pdfs)]
        for g in gmms:
            if not g.valid_gconsts:
                g.compute_gconsts()
        self._set(
            [np.asarray(g.gconsts, np.float64) for g in gmms],
            [np.asarray(g.means_invvars, np.float64) for g in gmms],
            [np.asarray(g.inv_vars, np.float64) for g in gmms],
        )

    @classmethod
    def from_params(cls, gconsts, means_invvars, inv_vars) -> GmmScorer:
        """From per-pdf parameter lists: (G_p,) gconsts, (G_p, D) means_invvars and inv_vars
        (Kaldi's DiagGmm fields, e.g. read from a Kaldi final.mdl)."""
        self = cls.__new__(cls)
        self._set(gconsts, means_invvars, inv_vars)
        return self

    def _set(self, gconsts, means_invvars, inv_vars) -> None:
        mi = [np.asarray(m, np.float64) for m in means_invvars]
        iv = [np.asarray(v, np.float64) for v in inv_vars]
        self.dim = int(mi[0].shape[1])
        self.num_pdfs = len(mi)
        self.gconsts = np.concatenate([np.asarray(g, np.float64) for g in gconsts])  # (G,)
        self.weights = np.concatenate([np.concatenate(mi), -0.5 * np.concatenate(iv)], axis=1).T
        sizes = np.asarray([len(m) for m in mi])
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # (P,) first Gaussian of pdf

    #: Most (frame, Gaussian) cells computed at once: bounds the work arrays (about 2 MB
    #: each) whatever the number of Gaussians and the utterance length.
    BLOCK_CELLS = 250_000

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        """(T, D) features -> (T, num_pdfs) float32 log-likelihoods."""
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DataError(f"features of shape {x.shape}, the GMMs expect dim {self.dim}")
        G = self.gconsts.shape[0]
        if not hasattr(self, "_idx"):
            self._idx = np.repeat(np.arange(self.num_pdfs), np.diff(np.append(self.starts, G)))
        out = np.empty((x.shape[0], self.num_pdfs), dtype=np.float32)
        step = max(1, self.BLOCK_CELLS // max(G, 1))
        for t in range(0, x.shape[0], step):
            xb = x[t : t + step]
            comp = np.concatenate([xb, xb * xb], axis=1) @ self.weights + self.gconsts  # (B, G)
            top = np.maximum.reduceat(comp, self.starts, axis=1)  # (B, P)
            comp -= top[:, self._idx]
            np.exp(comp, out=comp)
            summed = np.add.reduceat(comp, self.starts, axis=1)
            out[t : t + step] = top + np.log(summed)
        return out


def gmm_compute_likes(am, feats: np.ndarray) -> np.ndarray:
    """Kaldi's ``gmm-compute-likes``: (T, D) features -> (T, num_pdfs) GMM log-likelihoods.

    ``am``: ``khg.AmDiagGmm``. For many utterances build one :class:`GmmScorer` instead.
    """
    return GmmScorer(am)(feats)


def gmm_compute_likes_reference(am, feats: np.ndarray) -> np.ndarray:
    """Slow reference of :func:`gmm_compute_likes`: Kaldi's per-pdf ``log_likelihoods_matrix``."""
    from scipy.special import logsumexp

    feats = np.ascontiguousarray(feats, dtype=np.float32)
    out = np.empty((feats.shape[0], am.num_pdfs), dtype=np.float32)
    for p in range(am.num_pdfs):
        comp = np.asarray(am.get_pdf(p).log_likelihoods_matrix(feats))  # (T, num_gauss)
        out[:, p] = logsumexp(comp, axis=1)
    return out


def gmm_decode_faster(
    hclg, am, trans_model, feats: np.ndarray, config: DecoderConfig | None = None, utt: str = ""
) -> DecodeResult:
    """Kaldi's ``gmm-decode-faster``: GMM log-likelihoods (:class:`GmmScorer`) and the best path.

    For many utterances build one :class:`GmmScorer` and one decoder (:func:`make_decoder`).
    """
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[1] != am.dim:
        raise DataError(
            f"features of shape {feats.shape}, the GMMs expect dim {am.dim}", utt=utt or None
        )
    if feats.shape[0] == 0:
        raise DataError("zero frames to decode", utt=utt or None, fix="drop empty utterances")
    return decode_faster(hclg, GmmScorer(am)(feats), trans_model, config, utt)
