"""LF-MMI numerator supervision (Kaldi's chain-get-supervision) and its batched tensor form.

Two ways to build a numerator graph, both an epsilon-free acceptor over ``pdf_id + 1`` at the
subsampled (output) frame rate:

* From a phone-level alignment (:func:`chain_get_supervision`): each phone may occupy the frames
  of its aligned segment widened by ``left_tolerance`` / ``right_tolerance`` (at the input frame
  rate), which gives a set of allowed phones per output frame (:func:`alignment_to_proto_supervision`).
  The phone sequence is expanded with context and HMM (no transition probabilities, as in
  Kaldi) and intersected with the time constraint, frame by frame.
* End to end, from transcripts (:func:`e2e_supervision`): the phone sequence, with pronunciation
  alternatives per word, expanded with context and HMM, with no time constraint.

Either may then be composed with the normalization FST (:func:`add_weight_to_supervision`) so
the numerator includes the phone-LM and initial probabilities, like the denominator.
:class:`NumeratorGraphs` concatenates the graphs of a minibatch for the batched forward-backward
of :mod:`pykaldi2.losses.lfmmi`.

Dimension legend: N sequences, S states, A arcs (summed over the batch).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from pykaldi2.kaldi import kaldifst
from pykaldi2.lang.den_fst import ChainGraph, map_fst_to_pdf_ids_plus_one, transition_id_fst
from pykaldi2.utils.errors import DataError, Pykaldi2Error

__all__ = [
    "NumeratorGraphs",
    "SupervisionOptions",
    "add_weight_to_supervision",
    "alignment_to_proto_supervision",
    "chain_get_supervision",
    "e2e_supervision",
    "phone_alternatives_fst",
    "split_to_phones",
]


@dataclass
class SupervisionOptions:
    """Kaldi's SupervisionOptions (chain-get-supervision).

    left_tolerance / right_tolerance: how many input frames earlier / later than its aligned
        segment a phone may start / end (Kaldi default 5).
    frame_subsampling_factor: input frames per output frame (3 for typical chain models).
    """

    left_tolerance: int = 5
    right_tolerance: int = 5
    frame_subsampling_factor: int = 1

    def __post_init__(self) -> None:
        if self.left_tolerance < 0 or self.right_tolerance < 0:
            raise Pykaldi2Error("SupervisionOptions: tolerances must be >= 0")
        if self.frame_subsampling_factor < 1:
            raise Pykaldi2Error("SupervisionOptions: frame_subsampling_factor must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SupervisionOptions:
        return cls(**d)


def split_to_phones(ali: list[int], trans_model, utt: str | None = None):
    """ali-to-phones --write-lengths: a transition-id alignment to (phones, durations).

    A new phone starts at every transition-id that is the start of a phone's HMM.
    """
    phones: list[int] = []
    durations: list[int] = []
    ntid = trans_model.num_transition_ids
    for t, tid in enumerate(ali):
        if not 1 <= tid <= ntid:
            raise DataError(
                f"transition-id {tid} at frame {t} out of range [1, {ntid}]",
                utt=utt,
                fix="align with the same transition model",
            )
        if not phones or trans_model.transition_ids_is_start_of_phone(tid):
            phones.append(trans_model.transition_id_to_phone(tid))
            durations.append(1)
        else:
            durations[-1] += 1
    return phones, durations


def alignment_to_proto_supervision(
    phones: list[int],
    durations: list[int],
    opts: SupervisionOptions | None = None,
    utt: str | None = None,
) -> list[set[int]]:
    """The phones allowed at each output frame, from a phone alignment (input frame rate).

    Phone ``i`` spanning input frames ``[b, e)`` is allowed on input frames
    ``[max(0, b - left_tolerance), min(T, e + right_tolerance))``, and on output frame ``u`` if
    ``u * factor`` falls in that range. Returns one set per output frame,
    ``ceil(T / frame_subsampling_factor)`` of them.
    """
    opts = opts or SupervisionOptions()
    if len(phones) != len(durations) or not phones:
        raise DataError(
            f"{len(phones)} phones but {len(durations)} durations", utt=utt,
            fix="pass the output of split_to_phones",
        )  # fmt: skip
    if min(durations) < 1:
        raise DataError("a phone has a duration < 1 frame", utt=utt)
    f = opts.frame_subsampling_factor
    num_frames = sum(durations)
    allowed: list[set[int]] = [set() for _ in range(-(-num_frames // f))]
    begin = 0
    for phone, dur in zip(phones, durations):
        lo = max(0, begin - opts.left_tolerance)
        hi = min(num_frames, begin + dur + opts.right_tolerance)
        for u in range(-(-lo // f), -(-hi // f)):
            allowed[u].add(phone)
        begin += dur
    return allowed


def _linear_phone_fst(phones: list[int]):
    return kaldifst.make_linear_acceptor(list(phones))


def phone_alternatives_fst(words: list[list[list[int]]]):
    """A phone acceptor for a transcript: word after word, each one of its pronunciations.

    ``words[i]`` is the list of alternative phone sequences of word ``i`` (e.g. from the
    lexicon, optionally with an optional-silence alternative already expanded by the caller).
    """
    fst = kaldifst.StdVectorFst()
    cur = fst.add_state()
    fst.start = cur
    for i, prons in enumerate(words):
        if not prons or any(not p for p in prons):
            raise DataError(f"word {i} of the transcript has an empty pronunciation list/entry")
        nxt = fst.add_state()
        for pron in prons:
            s = cur
            for j, ph in enumerate(pron):
                d = nxt if j == len(pron) - 1 else fst.add_state()
                fst.add_arc(s, kaldifst.StdArc(ph, ph, 0.0, d))
                s = d
        cur = nxt
    fst.set_final(cur, 0.0)
    return fst


def _pdf_acceptor(phone_fst, ctx_dep, trans_model):
    """Context + HMM on a phone acceptor, no transition probs, epsilons removed (tid labels)."""
    fst = transition_id_fst(
        phone_fst, ctx_dep, trans_model, transition_scale=0.0, self_loop_scale=0.0
    )
    kaldifst.rmepsilon(fst)
    return fst


def _determinize_minimize(fst):
    """Unweighted determinization + minimization (each pdf sequence once)."""
    if fst.num_states == 0:
        return fst
    kaldifst.determinize_star(fst)
    kaldifst.minimize(fst)
    return fst


def _time_enforce(tid_fst, allowed: list[set[int]], trans_model):
    """Unroll ``tid_fst`` over output frames keeping arcs whose phone is allowed at that frame.

    Returns an acceptor over ``pdf_id + 1`` whose paths all have exactly ``len(allowed)`` arcs.
    """
    tid2pdf = trans_model.transition_id_to_pdf_array()
    phone_of = {}
    out = kaldifst.StdVectorFst()
    layer = {tid_fst.start: out.add_state()}
    out.start = layer[tid_fst.start]
    for t, ok in enumerate(allowed):
        nxt: dict[int, int] = {}
        for s, s_out in layer.items():
            for arc in kaldifst.ArcIterator(tid_fst, s):
                tid = arc.ilabel
                ph = phone_of.get(tid)
                if ph is None:
                    ph = phone_of[tid] = trans_model.transition_id_to_phone(tid)
                if ph not in ok:
                    continue
                d = nxt.get(arc.nextstate)
                if d is None:
                    d = nxt[arc.nextstate] = out.add_state()
                lab = int(tid2pdf[tid]) + 1
                out.add_arc(s_out, kaldifst.StdArc(lab, lab, arc.weight.value, d))
        layer = nxt
        if not layer:
            break
    for s, s_out in layer.items():
        fw = tid_fst.final(s).value
        if math.isfinite(fw):
            out.set_final(s_out, fw)
    kaldifst.connect(out)
    return out


def chain_get_supervision(
    phones: list[int],
    durations: list[int],
    ctx_dep,
    trans_model,
    opts: SupervisionOptions | None = None,
    utt: str | None = None,
):
    """chain-get-supervision: a numerator acceptor (labels ``pdf_id + 1``) from a phone alignment.

    Every path has exactly ``ceil(sum(durations) / frame_subsampling_factor)`` arcs, and at output
    frame ``u`` uses an HMM state of a phone allowed there
    (:func:`alignment_to_proto_supervision`). Raises :class:`DataError` if no path fits (e.g.
    a phone sequence with more HMM states than output frames).
    """
    opts = opts or SupervisionOptions()
    allowed = alignment_to_proto_supervision(phones, durations, opts, utt=utt)
    tid_fst = _pdf_acceptor(_linear_phone_fst(phones), ctx_dep, trans_model)
    fst = _time_enforce(tid_fst, allowed, trans_model)
    if fst.num_states == 0:
        raise DataError(
            f"no HMM path of {len(allowed)} output frames fits the alignment "
            f"({len(phones)} phones)",
            utt=utt,
            fix="use a smaller frame_subsampling_factor, larger tolerances, or drop the utterance",
        )
    return _determinize_minimize(fst)


def e2e_supervision(words: list[list[list[int]]], ctx_dep, trans_model):
    """End-to-end numerator (no alignment): the transcript's phone alternatives with the HMM.

    ``words`` as in :func:`phone_alternatives_fst`. No time constraint: any path length that the
    HMM allows; the forward-backward picks paths of the utterance's frame count.
    """
    tid_fst = _pdf_acceptor(phone_alternatives_fst(words), ctx_dep, trans_model)
    map_fst_to_pdf_ids_plus_one(tid_fst, trans_model)
    return _determinize_minimize(tid_fst)


def add_weight_to_supervision(supervision_fst, normalization_fst, utt: str | None = None):
    """Compose a numerator with the normalization FST (Kaldi's AddWeightToSupervisionFst).

    The result scores each pdf sequence by the denominator's phone LM and initial probs, so
    that ``log p_num <= log p_den`` (up to the leaky HMM). Raises :class:`DataError` when the
    composition is empty (the numerator uses pdf sequences the den graph does not allow).
    """
    sup = supervision_fst.copy()
    kaldifst.arcsort(sup, sort_type="olabel")
    out = kaldifst.compose(sup, normalization_fst)
    kaldifst.connect(out)
    if out.num_states == 0:
        raise DataError(
            "numerator supervision is empty after composing with the normalization FST",
            utt=utt,
            fix="build den.fst from a phone LM estimated on these alignments (and this tree)",
        )
    kaldifst.rmepsilon(out)
    return out


@dataclass
class NumeratorGraphs:
    """The numerator graphs of a minibatch, concatenated with state offsets.

    Attributes:
        src, dst: (A,) int64 global state ids; pdf: (A,) 0-based pdf ids;
        log_weight: (A,) float64; arc_seq: (A,) sequence index of each arc.
        final_log_weight: (S,) float64 (``-inf``: not final); state_seq: (S,) sequence index.
        start_states: (N,) global start state of each sequence.
    """

    src: torch.Tensor
    dst: torch.Tensor
    pdf: torch.Tensor
    log_weight: torch.Tensor
    arc_seq: torch.Tensor
    final_log_weight: torch.Tensor
    state_seq: torch.Tensor
    start_states: torch.Tensor
    num_pdfs: int

    @property
    def num_seqs(self) -> int:
        return int(self.start_states.numel())

    @property
    def num_states(self) -> int:
        return int(self.final_log_weight.numel())

    @property
    def device(self) -> torch.device:
        return self.src.device

    @classmethod
    def from_graphs(cls, graphs: list[ChainGraph]) -> NumeratorGraphs:
        """Concatenate per-sequence :class:`ChainGraph` s (all with the same ``num_pdfs``)."""
        if not graphs:
            raise Pykaldi2Error("NumeratorGraphs.from_graphs: empty list")
        num_pdfs = graphs[0].num_pdfs
        cat: dict[str, list[torch.Tensor]] = {k: [] for k in ("src", "dst", "pdf", "lw", "aseq")}
        finals, sseq, starts = [], [], []
        offset = 0
        for i, g in enumerate(graphs):
            if g.num_pdfs != num_pdfs:
                raise Pykaldi2Error(f"numerator graph {i} has {g.num_pdfs} pdfs, not {num_pdfs}")
            g = g.to("cpu")
            cat["src"].append(g.src + offset)
            cat["dst"].append(g.dst + offset)
            cat["pdf"].append(g.pdf)
            cat["lw"].append(g.log_weight)
            cat["aseq"].append(torch.full((g.num_arcs,), i, dtype=torch.int64))
            finals.append(g.final_log_weight)
            sseq.append(torch.full((g.num_states,), i, dtype=torch.int64))
            starts.append(g.start + offset)
            offset += g.num_states
        return cls(
            src=torch.cat(cat["src"]),
            dst=torch.cat(cat["dst"]),
            pdf=torch.cat(cat["pdf"]),
            log_weight=torch.cat(cat["lw"]),
            arc_seq=torch.cat(cat["aseq"]),
            final_log_weight=torch.cat(finals),
            state_seq=torch.cat(sseq),
            start_states=torch.tensor(starts, dtype=torch.int64),
            num_pdfs=num_pdfs,
        )

    @classmethod
    def from_fsts(cls, fsts, num_pdfs: int) -> NumeratorGraphs:
        """From epsilon-free ``StdVectorFst`` acceptors over ``pdf_id + 1``."""
        return cls.from_graphs([ChainGraph.from_fst(f, num_pdfs) for f in fsts])

    def to(self, device) -> NumeratorGraphs:
        kw = {
            k: (getattr(self, k).to(device) if torch.is_tensor(getattr(self, k)) else getattr(self, k))
            for k in self.__dataclass_fields__
        }
        return NumeratorGraphs(**kw)
