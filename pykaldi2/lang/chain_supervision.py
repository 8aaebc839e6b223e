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
from dataclasses import dataclass

import numpy as np
import torch

from pykaldi2.kaldi import kaldifst
from pykaldi2.lang.den_fst import ChainGraph, map_fst_to_pdf_ids_plus_one, transition_id_fst
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError, Pykaldi2Error

__all__ = [
    "NumeratorGraphs",
    "SupervisionOptions",
    "add_weight_to_supervision",
    "alignment_to_proto_supervision",
    "chain_get_supervision",
    "e2e_supervision",
    "split_supervision",
    "state_depths",
    "phone_alternatives_fst",
]


@dataclass
class SupervisionOptions(ConfigMixin):
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


def alignment_to_proto_supervision(
    phones: list[int],
    durations: list[int],
    opts: SupervisionOptions | None = None,
    utt: str | None = None,
) -> list[set[int]]:
    """The phones allowed at each output frame, from a phone alignment (input frame rate).

    ``phones``/``durations`` are the segments of a transition-id alignment, e.g. from
    :func:`pykaldi2.hmm.ali.split_to_phones` (``(phone, start, num_frames)`` triples).

    Phone ``i`` spanning input frames ``[b, e)`` is allowed on input frames
    ``[max(0, b - left_tolerance), min(T, e + right_tolerance))``, and on output frame ``u`` if
    ``u * factor`` falls in that range. Returns one set per output frame,
    ``ceil(T / frame_subsampling_factor)`` of them.
    """
    opts = opts or SupervisionOptions()
    if len(phones) != len(durations) or not phones:
        raise DataError(
            f"{len(phones)} phones but {len(durations)} durations", utt=utt,
            fix="pass the segments of pykaldi2.hmm.ali.split_to_phones",
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
    for ok in allowed:
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


def state_depths(fst) -> list[int]:
    """The output frame (number of arcs from the start) at which each state is reached.

    For an alignment supervision (:func:`chain_get_supervision`): acyclic, every path of one
    length, so each state has one depth. Raises :class:`Pykaldi2Error` if a state is reachable
    at two depths (e.g. an end-to-end numerator).
    """
    depth = [-1] * fst.num_states
    frontier = [fst.start]
    depth[fst.start] = 0
    d = 0
    while frontier:
        nxt = []
        for s in frontier:
            for arc in kaldifst.ArcIterator(fst, s):
                n = arc.nextstate
                if depth[n] < 0:
                    depth[n] = d + 1
                    nxt.append(n)
                elif depth[n] != d + 1:
                    raise Pykaldi2Error(
                        "split_supervision: the numerator is not layered (a state is reached "
                        "after different numbers of frames); only alignment supervision splits"
                    )
        frontier, d = nxt, d + 1
    return depth


def split_supervision(fst, begin: int, end: int, utt: str | None = None):
    """The numerator of output frames ``[begin, end)`` of an utterance's supervision (Kaldi's
    SupervisionSplitter::GetFrameRange), for chunked LF-MMI training.

    ``fst`` is a whole-utterance alignment supervision from :func:`chain_get_supervision`,
    *before* the normalization FST. The result has a new start state carrying the outgoing arcs
    of every state at depth ``begin`` (any state the utterance can be in at that frame), the
    arcs up to depth ``end``, and every state at depth ``end`` final; so its paths are exactly
    the frames ``[begin, end)`` of the utterance's paths. Compose it with the normalization FST
    (:func:`add_weight_to_supervision`) as a whole utterance's, which starts each chunk from
    the denominator's initial distribution as Kaldi does.
    """
    depth = state_depths(fst)
    total = max(depth)
    if not 0 <= begin < end <= total:
        raise DataError(
            f"frame range [{begin}, {end}) is outside the supervision's {total} output frames",
            utt=utt,
        )
    out = kaldifst.StdVectorFst()
    start = out.add_state()
    out.start = start
    new_id: dict[int, int] = {}

    def state(s: int) -> int:
        if s not in new_id:
            new_id[s] = out.add_state()
        return new_id[s]

    for s in range(fst.num_states):
        d = depth[s]
        if d < begin or d >= end:
            continue
        src = start if d == begin else state(s)
        for arc in kaldifst.ArcIterator(fst, s):
            dst = state(arc.nextstate)
            out.add_arc(src, kaldifst.StdArc(arc.ilabel, arc.olabel, arc.weight.value, dst))
    for s, n in new_id.items():
        if depth[s] == end:
            w = fst.final(s).value if end == total else 0.0
            if math.isfinite(w):
                out.set_final(n, w)
    kaldifst.connect(out)
    if out.num_states == 0:
        raise DataError(f"no numerator path over output frames [{begin}, {end})", utt=utt)
    return _determinize_minimize(out)


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
        arc_frame: (A,) the only frame at which an arc can be taken, or -1. Alignment-based
            supervision is acyclic with every path of the same length, so each state lies at
            one depth from the start: the forward-backward then visits only that frame's arcs
            instead of every arc on every frame. Cyclic (e.g. end-to-end) graphs get -1.
    """

    src: torch.Tensor
    dst: torch.Tensor
    pdf: torch.Tensor
    log_weight: torch.Tensor
    arc_seq: torch.Tensor
    final_log_weight: torch.Tensor
    state_seq: torch.Tensor
    start_states: torch.Tensor
    arc_frame: torch.Tensor
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
    def from_graphs(cls, graphs: list[ChainGraph], layered: bool = True) -> NumeratorGraphs:
        """Concatenate per-sequence :class:`ChainGraph` s (all with the same ``num_pdfs``).

        ``layered=False`` skips the depth analysis (every arc is visited on every frame).
        """
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
        src, dst, arc_seq = torch.cat(cat["src"]), torch.cat(cat["dst"]), torch.cat(cat["aseq"])
        state_seq = torch.cat(sseq)
        start_states = torch.tensor(starts, dtype=torch.int64)
        arc_frame = _arc_frames(src, dst, arc_seq, state_seq, start_states, layered)
        return cls(
            src=src,
            dst=dst,
            pdf=torch.cat(cat["pdf"]),
            log_weight=torch.cat(cat["lw"]),
            arc_seq=arc_seq,
            final_log_weight=torch.cat(finals),
            state_seq=state_seq,
            start_states=start_states,
            arc_frame=arc_frame,
            num_pdfs=num_pdfs,
        )

    def arcs_by_frame(self, num_frames: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Arc ids that can be taken only at frame ``t``, for each ``t < num_frames``, and the
        ids of the arcs that can be taken at any frame (``arc_frame == -1``)."""
        free = torch.nonzero(self.arc_frame < 0).flatten()
        order = torch.argsort(self.arc_frame.clamp_min(0), stable=True)
        order = order[self.arc_frame[order] >= 0]
        counts = torch.bincount(self.arc_frame[order], minlength=num_frames)[:num_frames]
        return list(torch.split(order[: int(counts.sum())], counts.tolist())), free

    @classmethod
    def from_fsts(cls, fsts, num_pdfs: int, layered: bool = True) -> NumeratorGraphs:
        """From epsilon-free ``StdVectorFst`` acceptors over ``pdf_id + 1``."""
        return cls.from_graphs([ChainGraph.from_fst(f, num_pdfs) for f in fsts], layered)

    def to(self, device) -> NumeratorGraphs:
        kw = {
            k: (
                getattr(self, k).to(device)
                if torch.is_tensor(getattr(self, k))
                else getattr(self, k)
            )
            for k in self.__dataclass_fields__
        }
        return NumeratorGraphs(**kw)


def _arc_frames(src, dst, arc_seq, state_seq, start_states, layered: bool) -> torch.Tensor:
    """Breadth-first depths: (A,) depth of each arc's source state, -1 where not unique.

    A sequence's graph is layered when no arc reaches a state already given a different depth
    (a cycle or two paths of different lengths); its arcs get -1 otherwise.
    """
    num_arcs = src.numel()
    if not layered or num_arcs == 0:
        return torch.full((num_arcs,), -1, dtype=torch.int64)
    src_np, dst_np = src.numpy(), dst.numpy()
    seq_of_state = state_seq.numpy()
    order = np.argsort(src_np, kind="stable")
    num_states = seq_of_state.size
    first = np.searchsorted(src_np[order], np.arange(num_states + 1))
    depth = np.full(num_states, -1, dtype=np.int64)
    ok = np.ones(start_states.numel(), dtype=bool)
    frontier = start_states.numpy()
    depth[frontier] = 0
    d = 0
    while frontier.size:
        lo, cnt = first[frontier], first[frontier + 1] - first[frontier]
        rel = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        nxt = dst_np[order[np.repeat(lo, cnt) + rel]]
        seen = depth[nxt]
        ok[seq_of_state[nxt[(seen >= 0) & (seen != d + 1)]]] = False
        new = np.unique(nxt[seen < 0])
        depth[new] = d + 1
        frontier = new[ok[seq_of_state[new]]]
        d += 1
    arc_depth = depth[src_np]
    arc_depth[~ok[arc_seq.numpy()]] = -1
    return torch.from_numpy(arc_depth)
