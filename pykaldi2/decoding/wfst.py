"""Decoding one utterance through HCLG (Kaldi's decode-faster-mapped, latgen, gmm-decode-faster).

Log-likelihoods come as a (T, num_pdfs) matrix (a neural net's pseudo log-likelihoods, or GMM
log-likelihoods from :func:`gmm_compute_likes`). The decoders index a decodable by
transition_id; :func:`decodable_matrix` builds ``M = acoustic_scale * loglik[:, tid2pdf[1:]]``
(T, num_transition_ids) so that ``kaldi_decoder.DecodableCtc(M)`` — which returns
``M[t, i - 1]`` for index ``i`` — is exactly Kaldi's ``DecodableMatrixScaledMapped``.

    >>> res = decode_faster(hclg, loglik, tid2pdf, DecoderConfig(beam=13))   # best path only
    >>> res, lat = decode_lattice(hclg, loglik, tid2pdf)                      # + raw lattice
    >>> res.words, lat.num_arcs
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pykaldi2.decoding.lattice import Lattice
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError, Pykaldi2Error


@dataclass
class DecoderConfig(ConfigMixin):
    """Decoder options (Kaldi's ``steps/decode.sh`` defaults).

    Attributes:
        beam: decoding beam (``--beam``).
        lattice_beam: lattice pruning beam (``--lattice-beam``; lattice decoding only).
        max_active: most active states per frame (``--max-active``; best-path decoding only:
            ``LatticeSimpleDecoder`` has no such limit).
        min_active: fewest active states per frame (best-path decoding only).
        acoustic_scale: scale of the log-likelihoods (``--acoustic-scale``; 0.1 for GMM and
            cross-entropy nets, 1.0 for chain models).
        prune_interval: frames between lattice prunings (lattice decoding only).
        allow_partial: output the best partial path when no final state is reached
            (``--allow-partial``); otherwise that utterance fails.
    """

    beam: float = 13.0
    lattice_beam: float = 6.0
    max_active: int = 7000
    min_active: int = 200
    acoustic_scale: float = 0.1
    prune_interval: int = 25
    allow_partial: bool = True

    def __post_init__(self) -> None:
        bad = [
            n
            for n in ("beam", "lattice_beam", "acoustic_scale", "max_active", "prune_interval")
            if getattr(self, n) <= 0
        ]
        if bad or self.min_active < 0 or self.min_active > self.max_active:
            raise Pykaldi2Error(
                f"DecoderConfig: invalid {bad or ['min_active']} in {self.to_dict()}; "
                "beams, acoustic_scale, max_active, prune_interval must be > 0 and "
                "0 <= min_active <= max_active"
            )


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


def tid2pdf_of(trans_model) -> np.ndarray:
    """(num_transition_ids + 1,) int64: transition_id -> pdf_id (index 0 unused)."""
    return np.asarray(trans_model.transition_id_to_pdf_array(), dtype=np.int64)


def decodable_matrix(loglik: np.ndarray, tid2pdf: np.ndarray, acoustic_scale: float) -> np.ndarray:
    """(T, num_pdfs) log-likelihoods -> (T, num_transition_ids) float32 ``DecodableCtc`` matrix.

    ``tid2pdf``: (num_transition_ids + 1,) as from :func:`tid2pdf_of` (index 0 unused).
    """
    loglik = np.asarray(loglik)
    num_pdfs = int(tid2pdf[1:].max()) + 1
    if loglik.ndim != 2 or loglik.shape[1] != num_pdfs:
        raise DataError(
            f"log-likelihoods of shape {loglik.shape}, the model has {num_pdfs} pdfs",
            fix="the acoustic model's output dim must equal the tree's num_pdfs",
        )
    if not np.isfinite(loglik).all():
        raise DataError("log-likelihoods contain NaN or +-inf", fix="check the acoustic model")
    return np.ascontiguousarray(acoustic_scale * loglik[:, tid2pdf[1:]], dtype=np.float32)


def _result_from_path(ok: bool, path, acoustic_scale: float, reached_final: bool) -> DecodeResult:
    from pykaldi2.kaldi import kaldifst

    if not ok:
        raise Pykaldi2Error("decoding produced no path (empty graph or all tokens pruned)")
    linear, ali, words, w = kaldifst.get_linear_symbol_sequence(path)
    if not linear:
        raise Pykaldi2Error("decoder best path is not linear")
    return DecodeResult(
        words=list(words),
        ali=list(ali),
        graph_cost=float(w.value1),
        ac_cost=float(w.value2) / acoustic_scale,
        reached_final=reached_final,
    )


def _check_frames(T: int, utt: str) -> None:
    if T == 0:
        raise DataError("zero frames to decode", utt=utt or None, fix="drop empty utterances")


def _decodable(loglik: np.ndarray, tid2pdf: np.ndarray, config: DecoderConfig, utt: str):
    """``kaldi_decoder.DecodableCtc`` over :func:`decodable_matrix` (checked)."""
    from pykaldi2.kaldi import kaldi_decoder

    M = decodable_matrix(loglik, tid2pdf, config.acoustic_scale)
    _check_frames(M.shape[0], utt)
    return kaldi_decoder.DecodableCtc(M)


def _best_path(dec, final: bool, config: DecoderConfig, utt: str) -> DecodeResult:
    """The best path of a finished decoder (any binding's decoder with ``get_best_path``)."""
    if not final and not config.allow_partial:
        raise Pykaldi2Error(f"utterance {utt}: no final state reached (try a larger beam)")
    # As Kaldi's decoders: use_final_probs=True falls back to the best active token when no
    # final state was reached (and use_final_probs=False is an error after FinalizeDecoding).
    ok, path = dec.get_best_path(use_final_probs=True)
    return _result_from_path(ok, path, config.acoustic_scale, final)


def decode_faster(
    hclg,
    loglik: np.ndarray,
    tid2pdf: np.ndarray,
    config: DecoderConfig | None = None,
    utt: str = "",
) -> DecodeResult:
    """Kaldi's ``decode-faster-mapped``: best path only (``FasterDecoder``, with max_active).

    Args:
        hclg: ``kaldifst.StdVectorFst`` (or ``StdConstFst``) decoding graph.
        loglik: (T, num_pdfs) log-likelihoods.
        tid2pdf: (num_transition_ids + 1,) transition_id -> pdf_id.
    """
    from pykaldi2.kaldi import kaldi_decoder

    config = config or DecoderConfig()
    decodable = _decodable(loglik, tid2pdf, config, utt)
    opts = kaldi_decoder.FasterDecoderOptions(
        beam=config.beam, max_active=config.max_active, min_active=config.min_active
    )
    dec = kaldi_decoder.FasterDecoder(hclg, opts)
    dec.decode(decodable)
    return _best_path(dec, dec.reached_final(), config, utt)


def decode_lattice(
    hclg,
    loglik: np.ndarray,
    tid2pdf: np.ndarray,
    config: DecoderConfig | None = None,
    utt: str = "",
) -> tuple[DecodeResult, Lattice]:
    """Kaldi's ``latgen-faster-mapped`` without determinization: best path + raw lattice.

    Uses ``kaldi_decoder.LatticeSimpleDecoder`` (``max_active``/``min_active`` do not apply).
    Returns the best path and the raw :class:`Lattice` (acoustic costs unscaled).
    """
    from pykaldi2.kaldi import kaldi_decoder

    config = config or DecoderConfig()
    decodable = _decodable(loglik, tid2pdf, config, utt)
    opts = kaldi_decoder.LatticeSimpleDecoderConfig(
        beam=config.beam,
        lattice_beam=config.lattice_beam,
        prune_interval=config.prune_interval,
        determinize_lattice=False,
    )
    dec = kaldi_decoder.LatticeSimpleDecoder(hclg, opts)
    final = bool(dec.decode(decodable)) and dec.final_relative_cost() != float("inf")
    result = _best_path(dec, final, config, utt)
    ok, raw = dec.get_raw_lattice(use_final_probs=True)
    if not ok:
        raise Pykaldi2Error(f"utterance {utt}: the decoder produced no lattice")
    return result, Lattice.from_kaldifst(raw, acoustic_scale=config.acoustic_scale)


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

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        """(T, D) features -> (T, num_pdfs) float32 log-likelihoods."""
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DataError(f"features of shape {x.shape}, the GMMs expect dim {self.dim}")
        comp = np.concatenate([x, x * x], axis=1) @ self.weights + self.gconsts  # (T, G)
        top = np.maximum.reduceat(comp, self.starts, axis=1)  # (T, P)
        idx = np.repeat(np.arange(self.num_pdfs), np.diff(np.append(self.starts, comp.shape[1])))
        summed = np.add.reduceat(np.exp(comp - top[:, idx]), self.starts, axis=1)
        return (top + np.log(summed)).astype(np.float32)


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
    """Kaldi's ``gmm-decode-faster``: khg's ``FasterDecoder`` + ``DecodableAmDiagGmmScaled``.

    The GMM log-likelihoods are computed inside Kaldi, frame by frame, for active pdfs only.
    For lattices from a GMM, decode ``GmmScorer(am)(feats)`` with :func:`decode_lattice`.
    """
    from pykaldi2.kaldi import khg

    config = config or DecoderConfig()
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[1] != am.dim:
        raise DataError(
            f"features of shape {feats.shape}, the GMMs expect dim {am.dim}", utt=utt or None
        )
    _check_frames(feats.shape[0], utt)
    opts = khg.FasterDecoderOptions(
        beam=config.beam, max_active=config.max_active, min_active=config.min_active
    )
    dec = khg.FasterDecoder(hclg, opts)
    dec.decode(khg.DecodableAmDiagGmmScaled(am, trans_model, feats, config.acoustic_scale))
    return _best_path(dec, dec.reached_final(), config, utt)
