"""HCLG decoding with pykaldi2's compiled LatticeFasterDecoder (Kaldi's gmm-latgen-faster core).

The C++ extension ``pykaldi2.hmm._decoder`` (sources in ``pykaldi2/hmm/csrc``, built by pip
from our own code: no Kaldi or OpenFst sources) holds

- the graph: an OpenFst binary ``VectorFst`` or ``ConstFst`` (StdArc) read straight into flat
  arrays (:func:`read_graph`; Kaldi's mkgraph.sh writes HCLG.fst as a ConstFst);
- Kaldi's LatticeFasterDecoder algorithm (``max_active`` / ``min_active`` / ``beam`` with its
  adaptive cutoff, emitting then epsilon arcs per frame, ``PruneActiveTokens`` every
  ``prune_interval`` frames with ``lattice_beam``, final costs, partial traceback) over a
  decodable that maps ``(T, num_pdfs)`` log-likelihoods through ``tid2pdf`` times the
  acoustic scale (Kaldi's DecodableMatrixScaledMapped: no (T, num_transition_ids) copy);
- pruned lattice determinization (DeterminizeLatticePhonePrunedWrapper: a phone + word pass,
  then a word pass; the best alignment kept per word sequence, within ``lattice_beam``);
- Kaldi's binary lattice format (read and write, in :mod:`pykaldi2.decoding.kaldi_lattice`).

Why compiled: a token-passing decoder touches every active arc of every frame (millions per
utterance on a large graph); in Python that is 100x too slow, and the PyPI bindings have no
LatticeFasterDecoder that returns lattices (kaldi-decoder: LatticeSimpleDecoder without
max_active; kaldi-hmm-gmm: LatticeFasterDecoder best path only). It lives in ``hmm/`` (not
``decoding/``) because train-se's lattice generator (``losses/``) uses it too and modules only
import from the pipeline stages to their left.

    >>> graph = load_graph("exp/tri1/graph/HCLG.fst")
    >>> dec = Decoder(graph, LatticeFasterDecoderConfig(beam=13.0))
    >>> reached_final = dec.decode(loglik, tables.tid2pdf, acoustic_scale=0.1, utt="utt1")
    >>> ali, words, graph_cost, ac_cost = dec.best_path()
    >>> clat, complete = dec.compact_lattice(tables.phone_start, DeterminizeConfig())

Lattices come back as dicts of numpy arrays (see ``csrc/module.cc``), acoustic costs
*unscaled* as Kaldi writes them (the decoding acoustic scale divided out).
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError, Pykaldi2Error

try:
    from pykaldi2.hmm import _decoder
except ImportError as e:  # pragma: no cover - only when the extension was not built
    raise ImportError(
        "pykaldi2's compiled decoder (pykaldi2.hmm._decoder) is missing: reinstall with "
        "`make install` or `pip install -e .` (needs a C++17 compiler)"
    ) from e

__all__ = [
    "Decoder",
    "DeterminizeConfig",
    "LatticeFasterDecoderConfig",
    "TransitionTables",
    "as_graph",
    "determinize_lattice_pruned",
    "load_graph",
    "read_graph",
]

Graph = _decoder.Graph


@dataclass
class LatticeFasterDecoderConfig(ConfigMixin):
    """Kaldi's LatticeFasterDecoderConfig; the defaults are ``steps/decode.sh``'s.

    Attributes:
        beam: decoding beam (``--beam``).
        max_active: most tokens per frame (``--max-active``): the cutoff tightens to the
            max_active-th best cost when the beam lets more through.
        min_active: fewest tokens per frame (``--min-active``): the cutoff widens to keep them.
        lattice_beam: how far from the best path lattice arcs may be (``--lattice-beam``).
        prune_interval: frames between prunings of the token lattice (``--prune-interval``).
        beam_delta: slack added to the beam when max_active / min_active sets the cutoff
            (``--beam-delta``).
        hash_ratio: token hash size per active token (``--hash-ratio``).
        prune_scale: of lattice_beam, the tolerance of the periodic pruning (not a Kaldi
            command-line option; 0.1 there).
    """

    beam: float = 13.0
    max_active: int = 7000
    min_active: int = 200
    lattice_beam: float = 6.0
    prune_interval: int = 25
    beam_delta: float = 0.5
    hash_ratio: float = 2.0
    prune_scale: float = 0.1

    def __post_init__(self) -> None:
        self.check_search()

    def check_search(self) -> None:
        """Kaldi's LatticeFasterDecoderConfig::Check, as a Pykaldi2Error naming the fields."""
        bad = [
            n
            for n in ("beam", "lattice_beam", "beam_delta", "prune_interval")
            if getattr(self, n) <= 0
        ]
        if self.max_active <= 1:
            bad.append("max_active")
        if self.min_active < 0 or self.min_active > self.max_active:
            bad.append("min_active")
        if self.hash_ratio < 1.0:
            bad.append("hash_ratio")
        if not 0.0 < self.prune_scale < 1.0:
            bad.append("prune_scale")
        if bad:
            raise Pykaldi2Error(
                f"{type(self).__name__}: invalid {', '.join(bad)} in {self.to_dict()}; need "
                "beam, lattice_beam, beam_delta, prune_interval > 0, max_active > 1, "
                "0 <= min_active <= max_active, hash_ratio >= 1, 0 < prune_scale < 1"
            )

    def options(self):
        """The extension's ``DecoderOptions``."""
        o = _decoder.DecoderOptions()
        for name in (
            "beam", "max_active", "min_active", "lattice_beam", "prune_interval", "beam_delta",
            "hash_ratio", "prune_scale",
        ):  # fmt: skip
            setattr(o, name, getattr(self, name))
        return o


@dataclass
class DeterminizeConfig(ConfigMixin):
    """Kaldi's DeterminizeLatticePhonePrunedOptions (``--phone-determinize`` etc.).

    Attributes:
        phone_determinize: first a determinization on words + phones (faster on deep lattices).
        word_determinize: then on words only (what makes one path per word sequence).
        max_mem: approximate memory (bytes) after which determinization stops early, the
            lattice then pruned tighter than the beam (``--max-mem``).
        delta: tolerance when comparing weights (``--delta``).
    """

    phone_determinize: bool = True
    word_determinize: bool = True
    max_mem: int = 50_000_000
    delta: float = 1.0 / 1024

    def __post_init__(self) -> None:
        if not (self.phone_determinize or self.word_determinize):
            raise Pykaldi2Error(
                "DeterminizeConfig: phone_determinize and word_determinize are both off"
            )
        if self.delta <= 0:
            raise Pykaldi2Error(f"DeterminizeConfig: delta must be > 0, got {self.delta}")


@dataclass(frozen=True)
class TransitionTables:
    """What the decoder needs of a transition model.

    Attributes:
        tid2pdf: (num_transition_ids + 1,) int32 transition_id -> pdf_id (index 0 unused).
        phone_start: (num_transition_ids + 1,) int32: the phone a transition-id starts (its HMM
            state 0, not a self-loop; Kaldi's TransitionIdIsStartOfPhone), else 0. None: no
            phone pass in determinization.
    """

    tid2pdf: np.ndarray
    phone_start: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, tid2pdf, tid2phone=None, tid2hmm_state=None, tid_is_self_loop=None):
        """From per-transition_id arrays (index 0 unused); the phone tables are optional."""
        t2p = np.asarray(tid2pdf, dtype=np.int32).copy()
        t2p[0] = 0
        if tid2phone is None:
            return cls(t2p)
        start = (np.asarray(tid2hmm_state) == 0) & ~np.asarray(tid_is_self_loop, dtype=bool)
        phone_start = np.where(start, np.asarray(tid2phone), 0).astype(np.int32)
        phone_start[0] = 0
        return cls(t2p, phone_start)

    @classmethod
    def from_trans_model(cls, tm) -> TransitionTables:
        """From a ``khg.TransitionModel``."""
        from pykaldi2.hmm.model import transition_id_tables

        phone, hmm_state, _, _, is_self_loop, _ = transition_id_tables(tm)
        tid2pdf = np.asarray(tm.transition_id_to_pdf_array(), dtype=np.int32)
        return cls.from_arrays(tid2pdf, phone, hmm_state, is_self_loop)

    @property
    def num_transition_ids(self) -> int:
        return int(self.tid2pdf.shape[0]) - 1

    @property
    def num_pdfs(self) -> int:
        return int(self.tid2pdf[1:].max()) + 1


# ---- graphs ---------------------------------------------------------------------------------
def _require_graph_file(path: str) -> None:
    if not os.path.isfile(path):
        raise DataError(
            "decoding graph not found", file=path, fix="build it with `pykaldi2 mkgraph`"
        )


def read_graph(path: str | os.PathLike) -> Graph:
    """An OpenFst binary VectorFst or ConstFst (StdArc) file as a decoding graph."""
    path = str(path)
    _require_graph_file(path)
    try:
        return Graph.read(path)
    except RuntimeError as e:
        raise DataError(
            f"not a readable OpenFst graph: {e}",
            file=path,
            fix="pass an OpenFst binary VectorFst or ConstFst with tropical (StdArc) weights",
        ) from None


_FST_MAGIC = 2125659606


def check_graph_header(path: str | os.PathLike) -> int:
    """The number of states in the header of the graph file ``path``, after the checks
    :func:`read_graph` would fail that the header shows (missing file, not OpenFst, not a StdArc
    VectorFst or ConstFst), without reading the graph: for a process that only hands the path
    to the ones that decode."""
    path = str(path)
    _require_graph_file(path)
    with open(path, "rb") as f:
        head = f.read(1 << 10)
    try:
        (magic,) = struct.unpack_from("<i", head, 0)
        (n,) = struct.unpack_from("<i", head, 4)
        fst_type = head[8 : 8 + n].decode("ascii") if 0 <= n <= 64 else ""
        (m,) = struct.unpack_from("<i", head, 8 + n)
        arc_type = head[12 + n : 12 + n + m].decode("ascii") if 0 <= m <= 64 else ""
        # version int32, flags int32, properties uint64, start int64, then num_states int64
        (num_states,) = struct.unpack_from("<q", head, 12 + n + m + 4 + 4 + 8 + 8)
    except (struct.error, UnicodeDecodeError):
        magic, fst_type, arc_type, num_states = None, "", "", 0
    if magic != _FST_MAGIC or fst_type not in ("vector", "const") or arc_type != "standard":
        what = "bad magic" if magic != _FST_MAGIC else f"{fst_type!r} FST of {arc_type!r} arcs"
        raise DataError(
            f"not a readable OpenFst graph: {what}",
            file=path,
            fix="pass an OpenFst binary VectorFst or ConstFst with tropical (StdArc) weights",
        )
    return int(num_states)


@lru_cache(maxsize=4)
def _cached_graph(path: str, mtime_ns: int, size: int) -> Graph:
    return read_graph(path)


def load_graph(path: str | os.PathLike) -> Graph:
    """:func:`read_graph`, once per process for an unchanged file (one graph per worker)."""
    path = os.path.realpath(path)
    if not os.path.isfile(path):
        return read_graph(path)  # the error
    st = os.stat(path)
    return _cached_graph(path, st.st_mtime_ns, st.st_size)


def graph_from_kaldifst(fst) -> Graph:
    """A ``kaldifst.StdVectorFst`` / ``StdConstFst`` as a decoding graph (through a temp file)."""
    with tempfile.TemporaryDirectory(prefix="pykaldi2_graph_") as tmp:
        path = str(Path(tmp) / "graph.fst")
        fst.write(path)
        return read_graph(path)


def as_graph(graph) -> Graph:
    """A decoding graph from a :class:`Graph`, a path, or a kaldifst FST."""
    if isinstance(graph, Graph):
        return graph
    if isinstance(graph, str | os.PathLike):
        return load_graph(graph)
    if hasattr(graph, "write") and hasattr(graph, "num_states"):
        return graph_from_kaldifst(graph)
    raise Pykaldi2Error(f"not a decoding graph: {type(graph).__name__}")


# ---- decoding -------------------------------------------------------------------------------
def check_loglik(loglik, num_pdfs: int, utt: str = "") -> np.ndarray:
    """(T, num_pdfs) float32 C-contiguous log-likelihoods, or a DataError naming ``utt``."""
    x = np.ascontiguousarray(loglik, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != num_pdfs:
        raise DataError(
            f"log-likelihoods of shape {x.shape}, the model has {num_pdfs} pdfs",
            utt=utt or None,
            fix="the acoustic model's output dim must equal the tree's num_pdfs",
        )
    if x.shape[0] == 0:
        raise DataError("zero frames to decode", utt=utt or None, fix="drop empty utterances")
    if not np.isfinite(x).all():
        raise DataError(
            "log-likelihoods contain NaN or +-inf", utt=utt or None, fix="check the acoustic model"
        )
    return x


def _inverse_scale(acoustic_scale: float) -> float:
    """Kaldi's ``1.0 / acoustic_scale`` with a float acoustic scale, in double."""
    return 1.0 / float(np.float32(acoustic_scale))


class Decoder:
    """One LatticeFasterDecoder over one graph, reused utterance after utterance (as
    gmm-latgen-faster keeps one); its memory pools stay allocated between utterances.

    Args:
        graph: a :class:`Graph` (or anything :func:`as_graph` takes).
        config: the search options.
    """

    def __init__(self, graph, config: LatticeFasterDecoderConfig | None = None) -> None:
        self.graph = as_graph(graph)
        self.config = config or LatticeFasterDecoderConfig()
        self._dec = _decoder.LatticeFasterDecoder(self.graph, self.config.options())
        self._scale = 1.0
        self.utt = ""

    def decode(self, loglik, tid2pdf: np.ndarray, acoustic_scale: float, utt: str = "") -> bool:
        """Decode one utterance; returns whether a final state was reached.

        Args:
            loglik: (T, num_pdfs) log-likelihoods (float32 is used as is).
            tid2pdf: (num_transition_ids + 1,) transition_id -> pdf_id.
            acoustic_scale: multiplies the log-likelihoods (0.1 for GMMs and CE nets).
        Raises a Pykaldi2Error naming ``utt`` when no token survives (no traceback at all).
        """
        tid2pdf = np.ascontiguousarray(tid2pdf, dtype=np.int32)
        num_pdfs = int(tid2pdf[1:].max()) + 1
        x = check_loglik(loglik, num_pdfs, utt)
        self.utt, self._scale = utt, acoustic_scale
        try:
            ok = self._dec.decode(x, tid2pdf, float(acoustic_scale))
        except RuntimeError as e:
            raise DataError(
                str(e), utt=utt or None, fix="the graph must come from this model"
            ) from None
        if not ok:
            raise Pykaldi2Error(
                f"utterance {utt}: no tokens survived decoding (empty graph? larger beam?)"
            )
        return self.reached_final

    @property
    def reached_final(self) -> bool:
        return self._dec.final_relative_cost() != float("inf")

    @property
    def num_frames(self) -> int:
        return int(self._dec.num_frames_decoded())

    @property
    def peak_tokens(self) -> int:
        """Most tokens alive at once in the last utterance (a memory gauge)."""
        return int(self._dec.peak_tokens())

    @property
    def pool_bytes(self) -> int:
        """Bytes the decoder's token and link pools hold between utterances: 0, as the tokens
        are freed once the raw lattice is read out (the largest utterance's search memory is
        not kept for the rest of the job)."""
        return int(self._dec.pool_bytes())

    def best_path(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """``(ali, words, graph_cost, ac_cost)``: the best path's transition-ids (one per frame)
        and words, its graph cost and *unscaled* acoustic cost (Kaldi's GetBestPath; the final
        cost when a final state was reached)."""
        ali, words, g, a = self._dec.best_path()
        return ali, words, float(g), float(a) / float(np.float32(self._scale))

    def raw_lattice(self) -> dict:
        """The state-level lattice (connected, acoustic costs unscaled) as arrays."""
        return self._dec.raw_lattice(_inverse_scale(self._scale))

    def compact_lattice(
        self,
        phone_start: np.ndarray | None,
        det: DeterminizeConfig | None = None,
        keep_raw: bool = True,
    ) -> tuple[dict, bool]:
        """The word lattice Kaldi's gmm-latgen-faster writes: the raw lattice determinized
        within ``lattice_beam`` (acoustic costs unscaled). ``complete`` is False when
        determinization stopped early on ``max_mem`` (the lattice is then pruned tighter).
        ``keep_raw=False`` determinizes the raw lattice in place instead of a copy (one
        lattice less in memory); the utterance's raw lattice and best path are then gone."""
        det = det or DeterminizeConfig()
        return self._dec.compact_lattice(
            phone_start if det.phone_determinize else None,
            float(self.config.lattice_beam),
            _inverse_scale(self._scale),
            float(det.delta),
            int(det.max_mem),
            bool(det.phone_determinize and phone_start is not None),
            bool(det.word_determinize),
            bool(keep_raw),
        )


def determinize_lattice_pruned(
    raw: dict,
    beam: float,
    phone_start: np.ndarray | None = None,
    det: DeterminizeConfig | None = None,
    acoustic_scale: float = 1.0,
) -> tuple[dict, bool]:
    """Kaldi's lattice-determinize-pruned (``--acoustic-scale``) on a raw lattice dict
    (ilabel = transition-id, olabel = word): with ``phone_start`` the phone pass first, as
    DeterminizeLatticePhonePrunedWrapper. Acoustic costs are scaled by ``acoustic_scale``
    before and unscaled after, as the Kaldi tool does. Returns ``(compact dict, complete)``."""
    det = det or DeterminizeConfig()
    lat = dict(raw)
    if acoustic_scale != 1.0:
        lat["ac"] = np.asarray(raw["ac"], np.float32) * np.float32(acoustic_scale)
        lat["final_ac"] = np.asarray(raw["final_ac"], np.float32) * np.float32(acoustic_scale)
    clat, complete = _decoder.determinize_lattice_pruned(
        lat,
        phone_start if det.phone_determinize else None,
        float(beam),
        False,
        float(det.delta),
        int(det.max_mem),
        bool(det.phone_determinize and phone_start is not None),
        bool(det.word_determinize),
    )
    if acoustic_scale != 1.0:
        inv = _inverse_scale(acoustic_scale)
        for key in ("ac", "final_ac"):
            v = clat[key].astype(np.float64) * inv
            clat[key] = np.where(np.isinf(clat[key]), clat[key], v).astype(np.float32)
    return clat, complete
