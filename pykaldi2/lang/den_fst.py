"""LF-MMI denominator graph: chain-make-den-fst and its tensor form.

Kaldi's ``chain-make-den-fst`` (CreateDenominatorFst in chain-den-graph.cc) turns the phone LM
of :func:`pykaldi2.lang.phone_lm.chain_est_phone_lm` into an HMM over pdf-ids:

    phone LM  --compose_context-->  C o LM  --H (transition probs)-->  + self-loops
              --transition_id -> pdf_id + 1-->  rmepsilon
              --DenGraphMinimizeWrapper-->  sort states on transition count

DenGraphMinimizeWrapper minimizes three times in each direction with PushSpecial
(:mod:`pykaldi2.lang.push_special`) before each minimization and never pushes in the tropical
semiring (OpenFst's Minimize of a weighted acceptor would), so the graph stays as close to
stochastic as it can be. The result, ``den.fst``, is an epsilon-free acceptor whose labels are
``pdf_id + 1`` (label 0 is epsilon in OpenFst). Its start state and final weights are *not*
used by the LF-MMI denominator computation: as in Kaldi's DenominatorGraph, every sequence
starts in the "initial probs" (the average state occupation over 100 iterations of running
the HMM from the start state) and may end in any state; which is why the pushing matters.

:func:`normalization_fst` gives Kaldi's "normalization FST" (den.fst entered through the
initial probs, every state final) that is composed into numerator supervision so that the
numerator includes the phone LM probabilities and is a subset of the denominator.

:class:`ChainGraph` is the tensor form of any epsilon-free pdf acceptor (numerator or
denominator); :class:`DenGraph` adds the initial probs. Dimension legend: S states, A arcs.

    >>> lm = chain_est_phone_lm(phone_seqs)                           # doctest: +SKIP
    >>> den = chain_make_den_fst(lm, ctx_dep, trans_model)            # doctest: +SKIP
    >>> graph = DenGraph.from_fst(den, num_pdfs=trans_model.num_pdfs).to("cuda")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from pykaldi2.kaldi import kaldifst, khg
from pykaldi2.lang.push_special import DEN_FST_DELTA, K_DELTA, FstArrays, push_special
from pykaldi2.utils.errors import Pykaldi2Error
from pykaldi2.utils.io import atomic_write
from pykaldi2.utils.log import get_logger

__all__ = [
    "ChainGraph",
    "DenGraph",
    "chain_make_den_fst",
    "den_graph_minimize_wrapper",
    "den_initial_probs",
    "fst_to_arrays",
    "map_arcs",
    "map_fst_to_pdf_ids_plus_one",
    "minimize_acceptor_no_push",
    "normalization_fst",
    "read_den_graph",
    "sort_on_transition_count",
    "transition_id_fst",
    "write_fst",
]

log = get_logger(__name__)


def fst_to_arrays(fst) -> dict[str, np.ndarray | int]:
    """Read an epsilon-free acceptor over ``pdf_id + 1`` labels into numpy arrays.

    Returns ``{"src", "dst", "pdf", "log_weight"}`` (each (A,), ``pdf`` 0-based,
    ``log_weight = -cost``), ``"final_log_weight"`` (S,) with ``-inf`` for non-final states,
    ``"start"`` and ``"num_states"``. Raises :class:`Pykaldi2Error` on an epsilon arc.
    """
    num_states = fst.num_states
    src, dst, pdf, lw = [], [], [], []
    final = np.full(num_states, -np.inf)
    for s in range(num_states):
        for arc in kaldifst.ArcIterator(fst, s):
            if arc.ilabel <= 0:
                raise Pykaldi2Error(
                    f"state {s} of the chain FST has an epsilon arc (ilabel {arc.ilabel}); chain "
                    "graphs must be epsilon-free acceptors over pdf_id+1. Fix: run rmepsilon first"
                )
            src.append(s)
            dst.append(arc.nextstate)
            pdf.append(arc.ilabel - 1)
            lw.append(-arc.weight.value)
        fw = fst.final(s).value
        if math.isfinite(fw):
            final[s] = -fw
    return {
        "src": np.asarray(src, dtype=np.int64),
        "dst": np.asarray(dst, dtype=np.int64),
        "pdf": np.asarray(pdf, dtype=np.int64),
        "log_weight": np.asarray(lw, dtype=np.float64),
        "final_log_weight": final,
        "start": int(fst.start),
        "num_states": num_states,
    }


@dataclass
class ChainGraph:
    """An epsilon-free acceptor over pdf-ids as tensors, arcs sorted by (src, dst, pdf).

    Attributes:
        src, dst: (A,) int64 state ids of each arc.
        pdf: (A,) int64 0-based pdf_id of each arc.
        log_weight: (A,) float64 ``-cost`` of each arc (log probability).
        final_log_weight: (S,) float64, ``-inf`` for non-final states.
        start: the start state.
        num_pdfs: the number of pdfs (nnet output dimension).
    """

    src: torch.Tensor
    dst: torch.Tensor
    pdf: torch.Tensor
    log_weight: torch.Tensor
    final_log_weight: torch.Tensor
    start: int
    num_pdfs: int

    @property
    def num_states(self) -> int:
        return int(self.final_log_weight.numel())

    @property
    def num_arcs(self) -> int:
        return int(self.src.numel())

    @property
    def device(self) -> torch.device:
        return self.src.device

    @classmethod
    def from_arrays(
        cls,
        src,
        dst,
        pdf,
        log_weight,
        final_log_weight,
        start: int,
        num_pdfs: int,
    ) -> ChainGraph:
        """Build from array-likes (any order of arcs); checks ranges and sorts the arcs."""
        src = torch.as_tensor(np.asarray(src), dtype=torch.int64)
        dst = torch.as_tensor(np.asarray(dst), dtype=torch.int64)
        pdf = torch.as_tensor(np.asarray(pdf), dtype=torch.int64)
        log_weight = torch.as_tensor(np.asarray(log_weight), dtype=torch.float64)
        final = torch.as_tensor(np.asarray(final_log_weight), dtype=torch.float64)
        n = final.numel()
        if not (src.shape == dst.shape == pdf.shape == log_weight.shape):
            raise Pykaldi2Error("chain graph: src, dst, pdf and log_weight must have one length")
        if n == 0 or not 0 <= start < n:
            raise Pykaldi2Error(f"chain graph: start state {start} not in [0, {n})")
        if src.numel() and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
            raise Pykaldi2Error(f"chain graph: arc state ids outside [0, {n})")
        if pdf.numel() and (pdf.min() < 0 or pdf.max() >= num_pdfs):
            raise Pykaldi2Error(
                f"chain graph: pdf ids in [{int(pdf.min())}, {int(pdf.max())}] but num_pdfs is "
                f"{num_pdfs}. Fix: build the graph with the transition model of this nnet"
            )
        key = (src * n + dst) * max(num_pdfs, 1) + pdf
        order = torch.argsort(key, stable=True)
        return cls(
            src[order], dst[order], pdf[order], log_weight[order], final, int(start), num_pdfs
        )

    @classmethod
    def from_fst(cls, fst, num_pdfs: int) -> ChainGraph:
        """Read an epsilon-free ``StdVectorFst`` acceptor over ``pdf_id + 1`` labels."""
        a = fst_to_arrays(fst)
        return cls.from_arrays(
            a["src"], a["dst"], a["pdf"], a["log_weight"], a["final_log_weight"], a["start"],
            num_pdfs,
        )  # fmt: skip

    def to_fst(self):
        """Back to a ``StdVectorFst`` (labels ``pdf_id + 1``)."""
        fst = kaldifst.StdVectorFst()
        for _ in range(self.num_states):
            fst.add_state()
        fst.start = self.start
        for s, d, p, w in zip(
            self.src.tolist(), self.dst.tolist(), self.pdf.tolist(), self.log_weight.tolist()
        ):
            fst.add_arc(s, kaldifst.StdArc(p + 1, p + 1, -w, d))
        for s, fw in enumerate(self.final_log_weight.tolist()):
            if math.isfinite(fw):
                fst.set_final(s, -fw)
        return fst

    def _fields(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def to(self, device) -> ChainGraph:
        """A copy with every tensor on ``device``."""
        kw = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self._fields().items()}
        return type(self)(**kw)


@dataclass
class DenGraph(ChainGraph):
    """The denominator graph as tensors, with Kaldi's ``initial_probs`` (S,) float64.

    The denominator forward-backward starts every sequence in ``initial_probs`` and lets it end
    in any state (``final_log_weight`` and ``start`` are kept only to write the FST back).
    """

    initial_probs: torch.Tensor | None = None

    @classmethod
    def from_fst(cls, fst, num_pdfs: int, num_iters: int = 100) -> DenGraph:  # type: ignore[override]
        g = ChainGraph.from_fst(fst, num_pdfs)
        init = den_initial_probs(g, num_iters=num_iters)
        return cls(**g._fields(), initial_probs=init)

    @classmethod
    def from_chain_graph(cls, g: ChainGraph, num_iters: int = 100) -> DenGraph:
        return cls(**g._fields(), initial_probs=den_initial_probs(g, num_iters=num_iters))


def den_initial_probs(g: ChainGraph, num_iters: int = 100) -> torch.Tensor:
    """Kaldi's DenominatorGraph initial probs: average occupation over ``num_iters`` HMM steps.

    Each state's outgoing arcs (and final prob) are normalized to sum to one, the probability
    mass starts on the start state and is renormalized after every step (mass leaving through
    final probs is dropped). Returns (S,) float64 summing to one, every entry > 0 for a
    connected graph.
    """
    n = g.num_states
    src, dst = g.src.cpu(), g.dst.cpu()
    p_arc = g.log_weight.cpu().exp()
    tot = g.final_log_weight.cpu().exp().clone()
    tot.index_add_(0, src, p_arc)
    if (tot <= 0).any():
        bad = int(torch.nonzero(tot <= 0)[0])
        raise Pykaldi2Error(f"den graph state {bad} has no arcs and is not final")
    p_norm = p_arc / tot[src]
    cur = torch.zeros(n, dtype=torch.float64)
    cur[g.start] = 1.0
    avg = torch.zeros(n, dtype=torch.float64)
    for _ in range(num_iters):
        avg += cur / num_iters
        nxt = torch.zeros(n, dtype=torch.float64).index_add_(0, dst, cur[src] * p_norm)
        cur = nxt / nxt.sum()
    return avg


def map_arcs(fst, fn) -> None:
    """In place: replace every arc ``(ilabel, olabel, cost, nextstate)`` by ``fn(...)``.

    (The bindings have no mutable arc iterator, so each state's arcs are deleted and re-added.)
    """
    for s in range(fst.num_states):
        n = fst.num_arcs(s)
        if n == 0:
            continue
        arcs = [
            fn(a.ilabel, a.olabel, a.weight.value, a.nextstate)
            for a in kaldifst.ArcIterator(fst, s)
        ]
        fst.delete_arcs(s, n)
        for i, o, w, d in arcs:
            fst.add_arc(s, kaldifst.StdArc(i, o, w, d))


def map_fst_to_pdf_ids_plus_one(fst, trans_model) -> None:
    """In place: every non-epsilon transition-id label becomes ``pdf_id + 1`` (both sides)."""
    tid2pdf = trans_model.transition_id_to_pdf_array()

    def fn(i, o, w, d):
        lab = int(tid2pdf[i]) + 1 if i > 0 else 0
        return lab, lab, w, d

    map_arcs(fst, fn)


def transition_id_fst(phone_fst, ctx_dep, trans_model, *, transition_scale: float = 1.0,
                      self_loop_scale: float = 1.0):  # fmt: skip
    """C, H and self-loops applied to a phone acceptor: an acceptor over transition-ids.

    ``phone_fst`` is an acceptor over phone ids (no epsilons, no disambiguation symbols). Used
    by both the denominator (:func:`chain_make_den_fst`) and numerator supervision.
    """
    # kaldifst.compose_context is Kaldi's ComposeContext: it adds the subsequential loop itself
    # when the context has right context (central_position < context_width - 1).
    clg, ilabels = kaldifst.compose_context(
        [], ctx_dep.context_width, ctx_dep.central_position, phone_fst
    )
    cfg = khg.HTransducerConfig()
    cfg.transition_scale = transition_scale
    h, disambig = khg.get_h_transducer(ilabels, ctx_dep, trans_model, cfg)
    if disambig:
        raise Pykaldi2Error("the H transducer of a chain graph must have no disambiguation symbols")
    kaldifst.arcsort(h, sort_type="olabel")
    kaldifst.arcsort(clg, sort_type="ilabel")
    hc = kaldifst.compose(h, clg)
    out = khg.add_self_loops(
        self_loop_scale=self_loop_scale,
        disambig_syms=[],
        reorder=True,
        trans_model=trans_model,
        ifst=hc,
    )
    _project_input(out)
    return out


def _project_input(fst) -> None:
    map_arcs(fst, lambda i, o, w, d: (i, i, w, d))


def minimize_acceptor_no_push(fst) -> None:
    """Kaldi's MinimizeAcceptorNoPush, in place: quantize the weights (delta ``kDelta * 10``),
    encode labels and weights, minimize as an unweighted acceptor, decode.

    Unlike OpenFst's Minimize (``kaldifst.minimize``), it never pushes weights in the tropical
    semiring first, which would move probability mass towards the start and away from what the
    LF-MMI denominator (free start and end) sees.
    """
    kaldifst.minimize_encoded(fst, delta=K_DELTA * 10.0)


def den_graph_minimize_wrapper(fst):
    """Kaldi's DenGraphMinimizeWrapper: three rounds of (reverse, PushSpecial, minimize,
    reverse, PushSpecial, minimize), then RmEpsilon (the reversals add a super-initial state
    with epsilon arcs) and a last PushSpecial. Returns the new FST (reversal copies)."""
    for i in range(1, 4):
        rev = kaldifst.reverse(fst, require_superinitial=True)
        push_special(rev, DEN_FST_DELTA)
        minimize_acceptor_no_push(rev)
        fst = kaldifst.reverse(rev, require_superinitial=True)
        log.debug("den.fst pass %d: %d states, %d arcs after reversed minimization",
                  i, fst.num_states, _num_arcs(fst))  # fmt: skip
        push_special(fst, DEN_FST_DELTA)
        minimize_acceptor_no_push(fst)
        log.debug("den.fst pass %d: %d states, %d arcs after regular minimization",
                  i, fst.num_states, _num_arcs(fst))  # fmt: skip
    kaldifst.rmepsilon(fst)
    push_special(fst, DEN_FST_DELTA)
    return fst


def sort_on_transition_count(fst):
    """Kaldi's SortOnTransitionCount: renumber states by decreasing number of arcs into plus
    out of them (ties by state id). Returns the renumbered FST."""
    n = fst.num_states
    arcs = FstArrays.from_fst(fst)
    count = np.bincount(arcs.src, minlength=n) + np.bincount(arcs.dst, minlength=n)
    old_of_new = np.lexsort((np.arange(n), -count))
    new_of_old = np.empty(n, dtype=np.int64)
    new_of_old[old_of_new] = np.arange(n)
    out = kaldifst.StdVectorFst()
    for _ in range(n):
        out.add_state()
    out.start = int(new_of_old[arcs.start])
    firsts = np.searchsorted(arcs.src, np.arange(n + 1))
    for new, old in enumerate(old_of_new.tolist()):
        for k in range(firsts[old], firsts[old + 1]):
            d = int(new_of_old[arcs.dst[k]])
            out.add_arc(new, kaldifst.StdArc(int(arcs.ilabel[k]), int(arcs.olabel[k]),
                                             float(arcs.weight[k]), d))  # fmt: skip
        out.set_final(new, float(arcs.final[old]))
    return out


def chain_make_den_fst(phone_lm, ctx_dep, trans_model):
    """chain-make-den-fst (CreateDenominatorFst): the denominator FST (an epsilon-free acceptor
    over ``pdf_id + 1``) from a phone LM.

    Args:
        phone_lm: ``StdVectorFst`` acceptor over phone ids with ``-log`` probabilities
            (:func:`pykaldi2.lang.phone_lm.chain_est_phone_lm`).
        ctx_dep: ``khg.ContextDependency`` (the chain tree).
        trans_model: ``khg.TransitionModel`` built on ``ctx_dep``.

    As Kaldi: context expansion, H with transition probabilities (transition and self-loop
    scale 1, reordered self-loops), transition-ids mapped to ``pdf_id + 1``, epsilons removed,
    :func:`den_graph_minimize_wrapper` (minimization that never pushes in the tropical
    semiring, with PushSpecial between the passes, so the graph ends up as close to stochastic
    as it can be), and states sorted by their number of transitions. On Kaldi's AN4 trees,
    transition models and phone LMs the result has Kaldi's state and arc counts and Kaldi's
    weights (tests/unit/lang/test_lang_den_fst_kaldi.py).
    """
    if phone_lm.num_states == 0:
        raise Pykaldi2Error("chain_make_den_fst: the phone LM is empty")
    fst = transition_id_fst(phone_lm, ctx_dep, trans_model)
    log.info("den.fst: transition-id FST with %d states, %d arcs", fst.num_states, _num_arcs(fst))
    map_fst_to_pdf_ids_plus_one(fst, trans_model)
    kaldifst.rmepsilon(fst)
    n1, a1 = fst.num_states, _num_arcs(fst)
    fst = den_graph_minimize_wrapper(fst)
    fst = sort_on_transition_count(fst)
    log.info(
        "den.fst: %d states, %d arcs after removing epsilons; %d states, %d arcs after "
        "minimization",
        n1, a1, fst.num_states, _num_arcs(fst),
    )  # fmt: skip
    _check_pdfs_seen(fst, trans_model.num_pdfs)
    return fst


def _num_arcs(fst) -> int:
    return sum(fst.num_arcs(s) for s in range(fst.num_states))


def _check_pdfs_seen(fst, num_pdfs: int) -> None:
    seen = np.zeros(num_pdfs, dtype=bool)
    for s in range(fst.num_states):
        for arc in kaldifst.ArcIterator(fst, s):
            seen[arc.ilabel - 1] = True
    if not seen.all():
        log.warning(
            "den.fst: %d of %d pdfs never appear (first: %d); their outputs get no gradient",
            int((~seen).sum()), num_pdfs, int(np.flatnonzero(~seen)[0]),
        )  # fmt: skip


def normalization_fst(den_fst, initial_probs: torch.Tensor | None = None):
    """Kaldi's GetNormalizationFst: den.fst entered through the initial probs, all states final.

    As chain-make-den-fst does it: a new start state with an epsilon arc of probability
    ``initial_probs[s]`` (as a float) to every state ``s``, every old state final with
    probability one, then OpenFst's RmEpsilon (tropical: where two start arcs end up with the
    same label and destination, the more probable one is kept; states no longer reachable,
    such as the old start state, are trimmed) and an ilabel sort. Compose numerator
    supervision with it (:func:`pykaldi2.lang.chain_supervision.add_weight_to_supervision`) so
    that the numerator includes the phone LM and is bounded by the denominator.
    """
    if initial_probs is None:
        initial_probs = den_initial_probs(ChainGraph.from_fst(den_fst, _max_label(den_fst)))
    init = np.asarray(torch.as_tensor(initial_probs).cpu(), dtype=np.float32)
    if len(init) != den_fst.num_states:
        raise Pykaldi2Error(
            f"normalization_fst: {len(init)} initial probs for {den_fst.num_states} states"
        )
    if (init <= 0).any():
        s = int(np.flatnonzero(init <= 0)[0])
        raise Pykaldi2Error(f"normalization_fst: state {s} has initial prob {init[s]} <= 0")
    fst = den_fst.copy()
    new_start = fst.add_state()
    costs = -np.log(init)  # float32, as Kaldi's -log(BaseFloat)
    for s, c in enumerate(costs.tolist()):
        fst.add_arc(new_start, kaldifst.StdArc(0, 0, c, s))
        fst.set_final(s, 0.0)
    fst.start = new_start
    kaldifst.rmepsilon(fst)
    kaldifst.arcsort(fst, sort_type="ilabel")
    return fst


def write_fst(fst, path: str | os.PathLike) -> None:
    """Write a ``StdVectorFst`` (den.fst, normalization.fst, ...) atomically."""
    with atomic_write(path, "wb") as f:  # the binding writes the temp file by name
        if not fst.write(f.name):
            raise Pykaldi2Error(f"could not write {path}")


def read_den_graph(path: str | os.PathLike, num_pdfs: int) -> DenGraph:
    """Read den.fst and return its :class:`DenGraph` (initial probs recomputed)."""
    if not os.path.isfile(path):
        raise Pykaldi2Error(f"{path}: no such den.fst. Fix: run chain_make_den_fst first")
    return DenGraph.from_fst(kaldifst.StdVectorFst.read(os.fspath(path)), num_pdfs)


def _max_label(fst) -> int:
    m = 0
    for s in range(fst.num_states):
        for arc in kaldifst.ArcIterator(fst, s):
            m = max(m, arc.ilabel)
    return m
