"""chain-est-phone-lm, chain-make-den-fst and chain supervision on a tiny monophone system."""

from __future__ import annotations

import itertools
import math
import random
import re

import numpy as np
import pytest
import torch

from pykaldi2.kaldi import kaldifst, khg
from pykaldi2.lang.chain_supervision import (
    NumeratorGraphs,
    SupervisionOptions,
    add_weight_to_supervision,
    alignment_to_proto_supervision,
    chain_get_supervision,
    e2e_supervision,
    split_supervision,
    state_depths,
)
from pykaldi2.lang.den_fst import (
    ChainGraph,
    DenGraph,
    chain_make_den_fst,
    map_fst_to_pdf_ids_plus_one,
    normalization_fst,
    read_den_graph,
    transition_id_fst,
    write_fst,
)
from pykaldi2.lang.phone_lm import chain_est_phone_lm
from pykaldi2.lang.push_special import K_DELTA
from pykaldi2.lang.topo import TopoConfig, TopoEntry, make_topo
from pykaldi2.losses.lfmmi import (
    ChainTrainingOptions,
    chain_loss,
    den_log_likelihood,
    num_log_likelihood,
)
from pykaldi2.losses.lfmmi_reference import num_log_likelihood_reference
from pykaldi2.utils.errors import DataError


def monophone_system(entry: TopoEntry, pdf_classes: int):
    """Phones 1, 2, 3 with one topology entry, a monophone tree and its transition model."""
    topo = khg.HmmTopology()
    topo.read(make_topo([1, 2, 3], [], TopoConfig(entry, entry)))
    ctx = khg.monophone_context_dependency([1, 2, 3], [0] + [pdf_classes] * 3)
    return ctx, khg.TransitionModel(ctx, topo)


@pytest.fixture(scope="module")
def system():
    """One emitting state per phone with a self-loop: pdf_id = phone - 1."""
    return monophone_system(TopoEntry("left-to-right", 1), 1)


def arcs_of(fst, s):
    return [(a.ilabel, a.weight.value, a.nextstate) for a in kaldifst.ArcIterator(fst, s)]


def final_prob(fst, s) -> float:
    w = fst.final(s).value
    return math.exp(-w) if math.isfinite(w) else 0.0


def label_seq_probs(fst, length: int, labels) -> dict[tuple[int, ...], float]:
    """Total probability (sum over paths) of every label sequence of ``length``."""
    out = {}
    for seq in itertools.product(labels, repeat=length):
        alpha = {fst.start: 1.0}
        for lab in seq:
            nxt: dict[int, float] = {}
            for s, p in alpha.items():
                for i, w, d in arcs_of(fst, s):
                    if i == lab:
                        nxt[d] = nxt.get(d, 0.0) + p * math.exp(-w)
            alpha = nxt
        out[seq] = sum(p * final_prob(fst, s) for s, p in alpha.items())
    return out


def accepted(fst, length: int) -> set[tuple[int, ...]]:
    """The label sequences of exactly ``length`` arcs that reach a final state (depth-first)."""
    out: set[tuple[int, ...]] = set()

    def walk(state: int, labels: tuple[int, ...]) -> None:
        if len(labels) == length:
            if final_prob(fst, state) > 0:
                out.add(labels)
            return
        for i, _, d in arcs_of(fst, state):
            walk(d, labels + (i,))

    walk(fst.start, ())
    return out


# ---- chain-est-phone-lm --------------------------------------------------------------------


def test_phone_lm_normalized_and_pruned_to_target():
    rng = random.Random(0)
    seqs = [[rng.randint(1, 6) for _ in range(rng.randint(2, 12))] for _ in range(300)]
    full = chain_est_phone_lm(
        seqs, ngram_order=4, no_prune_ngram_order=3, num_extra_lm_states=10**6
    )
    pruned = chain_est_phone_lm(seqs, ngram_order=4, no_prune_ngram_order=3, num_extra_lm_states=20)
    assert pruned.num_states < full.num_states
    for fst in (full, pruned):
        for s in range(fst.num_states):
            tot = sum(math.exp(-w) for _, w, _ in arcs_of(fst, s)) + final_prob(fst, s)
            assert tot == pytest.approx(1.0, abs=1e-5)
        connected = fst.copy()
        kaldifst.connect(connected)
        assert connected.num_states == fst.num_states
    # histories of length < 3 are never pruned: (0,), (0, p) and all (p, q) seen as histories
    hist2 = {(0,)} | {tuple(([0] + s)[i : i + 2]) for s in seqs for i in range(len(s))}
    assert pruned.num_states <= len(hist2) + 20


def test_phone_lm_bigram_is_maximum_likelihood():
    seqs = [[1, 2, 1], [1, 1], [2]]
    fst = chain_est_phone_lm(seqs, ngram_order=2, no_prune_ngram_order=2)
    # states are histories (0,), (1,), (2,); counts: BOS->1 x2, BOS->2 x1; 1->2, 1->1, 1->EOS x2;
    # 2->1, 2->EOS x1
    s0 = fst.start
    probs = {i: math.exp(-w) for i, w, _ in arcs_of(fst, s0)}
    assert probs == pytest.approx({1: 2 / 3, 2: 1 / 3})
    s1 = next(d for i, _, d in arcs_of(fst, s0) if i == 1)
    probs1 = {i: math.exp(-w) for i, w, _ in arcs_of(fst, s1)}
    assert probs1 == pytest.approx({1: 0.25, 2: 0.25})
    assert final_prob(fst, s1) == pytest.approx(0.5)
    assert fst.num_states == 3


def test_phone_lm_rejects_bad_phones():
    with pytest.raises(DataError, match="sequence 1"):
        chain_est_phone_lm([[1, 2], [3, 0]])


# ---- chain-make-den-fst --------------------------------------------------------------------


@pytest.fixture(scope="module")
def den(system):
    ctx, tm = system
    lm = chain_est_phone_lm([[1, 2, 3], [1, 3, 3, 2], [2, 2, 1]], ngram_order=3)
    return lm, chain_make_den_fst(lm, ctx, tm)


def test_den_fst_is_the_same_weighted_language(system, den):
    ctx, tm = system
    lm, den_fst = den
    raw = transition_id_fst(lm, ctx, tm)
    map_fst_to_pdf_ids_plus_one(raw, tm)
    kaldifst.rmepsilon(raw)
    assert den_fst.num_states <= raw.num_states
    for length in (3, 5):
        a = label_seq_probs(raw, length, [1, 2, 3])
        b = label_seq_probs(den_fst, length, [1, 2, 3])
        # equal up to Kaldi's quantization in MinimizeAcceptorNoPush (costs rounded to
        # multiples of kDelta * 10, i.e. at most half of that per arc and final weight)
        assert {k for k in a if a[k] > 0} == {k for k in b if b[k] > 0}
        tol = (length + 1) * K_DELTA * 10 / 2
        assert max(abs(math.log(a[k] / b[k])) for k in a if a[k] > 0) < tol
        assert sum(a.values()) > 0
    g = DenGraph.from_fst(den_fst, tm.num_pdfs)
    assert g.initial_probs.sum().item() == pytest.approx(1.0)
    assert (g.initial_probs > 0).all()


def test_den_fst_round_trip(system, den, tmp_path):
    _, tm = system
    _, den_fst = den
    write_fst(den_fst, tmp_path / "den.fst")
    g = read_den_graph(tmp_path / "den.fst", tm.num_pdfs)
    want = DenGraph.from_fst(den_fst, tm.num_pdfs)
    assert torch.equal(g.src, want.src) and torch.equal(g.pdf, want.pdf)
    torch.testing.assert_close(g.initial_probs, want.initial_probs)
    assert [p.name for p in tmp_path.iterdir()] == ["den.fst"]


def test_normalization_fst_enters_through_initial_probs(system, den):
    _, tm = system
    _, den_fst = den
    g = DenGraph.from_fst(den_fst, tm.num_pdfs)
    norm = normalization_fst(den_fst, g.initial_probs)
    # length-1 sequences: P(label) = sum over destinations d of the most probable way in,
    # max_s init(s) * p(s -label-> d) (Kaldi's RmEpsilon is tropical), the old states all final
    got = label_seq_probs(norm, 1, [1, 2, 3])
    for lab in (1, 2, 3):
        best: dict[int, float] = {}
        for s in range(den_fst.num_states):
            for i, w, d in arcs_of(den_fst, s):
                if i == lab:
                    p = np.float32(g.initial_probs[s].item()) * math.exp(-w)
                    best[d] = max(best.get(d, 0.0), p)
        assert got[(lab,)] == pytest.approx(sum(best.values()), rel=1e-5)
    assert norm.num_states == den_fst.num_states + 1 - (
        den_fst.start
        not in {
            a.nextstate for s in range(den_fst.num_states) for a in kaldifst.ArcIterator(den_fst, s)
        }
    )


# ---- chain supervision ---------------------------------------------------------------------


def test_tolerance_accepts_exactly_the_expected_shifts(system):
    ctx, tm = system
    opts = SupervisionOptions(left_tolerance=1, right_tolerance=1)
    fst = chain_get_supervision([1, 2, 3], [3, 3, 3], ctx, tm, opts)
    # phone 1 may cover frames [0, 4), phone 2 [2, 7), phone 3 [5, 9): boundaries a, b with
    # 2 <= a <= 4 and 5 <= b <= 7
    want = {
        tuple([1] * a + [2] * (b - a) + [3] * (9 - b)) for a in range(2, 5) for b in range(5, 8)
    }
    assert accepted(fst, 9) == want
    assert accepted(fst, 8) == set()
    exact = chain_get_supervision([1, 2, 3], [3, 3, 3], ctx, tm, SupervisionOptions(0, 0))
    assert accepted(exact, 9) == {(1, 1, 1, 2, 2, 2, 3, 3, 3)}


def test_tolerance_with_frame_subsampling(system):
    ctx, tm = system
    opts = SupervisionOptions(left_tolerance=0, right_tolerance=0, frame_subsampling_factor=3)
    allowed = alignment_to_proto_supervision([1, 2], [4, 6], opts)
    # 10 input frames -> 4 output frames at input frames 0, 3, 6, 9
    assert allowed == [{1}, {1}, {2}, {2}]
    fst = chain_get_supervision([1, 2], [4, 6], ctx, tm, opts)
    assert accepted(fst, 4) == {(1, 1, 2, 2)}
    with pytest.raises(DataError, match="no HMM path"):
        chain_get_supervision([1, 2, 3], [1, 1, 1], ctx, tm, opts, utt="short")


def test_split_supervision_keeps_exactly_the_chunk_of_every_path(system):
    ctx, tm = system
    opts = SupervisionOptions(left_tolerance=1, right_tolerance=1)
    fst = chain_get_supervision([1, 2, 3, 1], [3, 2, 3, 3], ctx, tm, opts)
    full = accepted(fst, 11)
    assert len(full) > 10
    for begin, end in [(0, 11), (0, 4), (3, 8), (7, 11), (5, 6)]:
        part = split_supervision(fst, begin, end)
        assert accepted(part, end - begin) == {p[begin:end] for p in full}, (begin, end)
        assert all(d <= end - begin for d in state_depths(part))
    with pytest.raises(DataError, match="outside"):
        split_supervision(fst, 4, 12, utt="u1")
    e2e = e2e_supervision([[[1]], [[2]]], ctx, tm)  # cyclic: not splittable
    with pytest.raises(Exception, match="not layered"):
        split_supervision(e2e, 0, 2)


def test_e2e_supervision_follows_pronunciation_alternatives(system):
    ctx, tm = system
    fst = e2e_supervision([[[1, 2], [3]], [[2]]], ctx, tm)
    # self-loops: no frame per arc, every arc is visited on every frame
    assert (NumeratorGraphs.from_fsts([fst], tm.num_pdfs).arc_frame == -1).all()
    pattern = re.compile(r"^(1+2+|3+)2+$")
    for length in (2, 3, 4):
        want = {
            s for s in itertools.product([1, 2, 3], repeat=length)
            if pattern.match("".join(map(str, s)))
        }  # fmt: skip
        assert accepted(fst, length) == want


def test_weighted_numerator_is_bounded_by_denominator(system, den):
    ctx, tm = system
    _, den_fst = den
    g = DenGraph.from_fst(den_fst, tm.num_pdfs)
    norm = normalization_fst(den_fst, g.initial_probs)
    sups = [
        chain_get_supervision([1, 2, 3], [2, 3, 2], ctx, tm, SupervisionOptions(1, 1)),
        e2e_supervision([[[1, 3]], [[3, 2]]], ctx, tm),
    ]
    weighted = [add_weight_to_supervision(s, norm) for s in sups]
    nums = NumeratorGraphs.from_fsts(weighted, tm.num_pdfs)
    # a mixed batch: the first graph is layered (one frame per arc), the second is not
    assert (nums.arc_frame[nums.arc_seq == 0] >= 0).all()
    assert (nums.arc_frame[nums.arc_seq == 1] == -1).all()
    x = torch.randn(2, 7, tm.num_pdfs, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([7, 6])
    num_lp, _ = num_log_likelihood(x.double(), lengths, nums)
    for b, fst in enumerate(weighted):
        ref = num_log_likelihood_reference(
            x[b, : lengths[b]].double(), ChainGraph.from_fst(fst, tm.num_pdfs)
        )
        assert num_lp[b].item() == pytest.approx(ref.item(), abs=1e-9)
    den_lp = den_log_likelihood(x.double(), lengths, g, leaky_hmm_coefficient=0.0)
    assert torch.isfinite(num_lp).all()
    assert (num_lp < den_lp).all()
    # a numerator the den graph cannot produce (the phone bigram 3 -> 1 was never seen by the
    # phone LM) is rejected with a clear error
    bad = e2e_supervision([[[3, 1]]], ctx, tm)
    with pytest.raises(DataError, match="normalization FST"):
        add_weight_to_supervision(bad, norm, utt="bad")


def test_unconstrained_numerator_equals_denominator(system, den):
    """A numerator accepting every pdf sequence, weighted by the normalization FST, is den."""
    _, tm = system
    _, den_fst = den
    g = DenGraph.from_fst(den_fst, tm.num_pdfs)
    anything = kaldifst.StdVectorFst()
    anything.start = anything.add_state()
    anything.set_final(0, 0.0)
    for lab in (1, 2, 3):
        anything.add_arc(0, kaldifst.StdArc(lab, lab, 0.0, 0))
    num_fst = add_weight_to_supervision(anything, normalization_fst(den_fst, g.initial_probs))
    nums = NumeratorGraphs.from_fsts([num_fst, num_fst], tm.num_pdfs)
    x = torch.randn(2, 6, tm.num_pdfs, generator=torch.Generator().manual_seed(1)).double()
    lengths = torch.tensor([6, 4])
    num_lp, _ = num_log_likelihood(x, lengths, nums)
    den_lp = den_log_likelihood(x, lengths, g, leaky_hmm_coefficient=0.0)
    # Kaldi's normalization FST enters through the most probable of the start arcs that share a
    # label and destination, where the denominator sums them: the numerator is the
    # normalization FST with every state final, bounded by den and differing only at frame 0
    norm = ChainGraph.from_fst(normalization_fst(den_fst, g.initial_probs), tm.num_pdfs)
    for b in range(2):
        ref = num_log_likelihood_reference(x[b, : lengths[b]], norm)
        assert num_lp[b].item() == pytest.approx(ref.item(), abs=1e-9)
    assert (num_lp <= den_lp + 1e-9).all()
    assert (den_lp - num_lp < 0.5).all()


def test_chain_topology_end_to_end():
    """The real LF-MMI topology (forward and self-loop pdfs): LM, den, supervision, loss."""
    ctx, tm = monophone_system(TopoEntry("chain"), 2)
    assert tm.num_pdfs == 6
    alis = [[1, 2, 3, 1], [2, 3, 3], [3, 1, 2]]
    den_fst = chain_make_den_fst(chain_est_phone_lm(alis, ngram_order=3), ctx, tm)
    den_graph = DenGraph.from_fst(den_fst, tm.num_pdfs)
    norm = normalization_fst(den_fst, den_graph.initial_probs)
    durations = [[3, 2, 4, 3], [2, 2, 5], [3, 3, 3]]
    opts = SupervisionOptions(left_tolerance=1, right_tolerance=1)
    sups = [
        add_weight_to_supervision(chain_get_supervision(p, d, ctx, tm, opts), norm)
        for p, d in zip(alis, durations)
    ]
    nums = NumeratorGraphs.from_fsts(sups, tm.num_pdfs)
    assert (nums.arc_frame >= 0).all()  # alignment supervision: one frame per arc
    lengths = torch.tensor([12, 9, 9])
    x = torch.randn(3, 12, tm.num_pdfs, generator=torch.Generator().manual_seed(2))
    # visiting only each frame's arcs gives the same as visiting all arcs, and the reference
    num_lp, occ = num_log_likelihood(x.double(), lengths, nums)
    every, occ_every = num_log_likelihood(
        x.double(), lengths, NumeratorGraphs.from_fsts(sups, tm.num_pdfs, layered=False)
    )
    torch.testing.assert_close(num_lp, every)
    torch.testing.assert_close(occ, occ_every)
    for b, sup in enumerate(sups):
        ref = num_log_likelihood_reference(
            x[b, : lengths[b]].double(), ChainGraph.from_fst(sup, tm.num_pdfs)
        )
        assert num_lp[b].item() == pytest.approx(ref.item(), abs=1e-9)
    x.requires_grad_()
    res = chain_loss(x, lengths, den_graph, nums, ChainTrainingOptions(leaky_hmm_coefficient=0))
    assert (res.num_logprob < res.den_logprob).all()
    res.loss.backward()
    # gradient = -(num_occ - den_occ) / frames: sums to zero on every frame
    torch.testing.assert_close(x.grad.sum(-1), torch.zeros(3, 12), rtol=0, atol=1e-6)
    assert x.grad.abs().sum() > 0


def test_triphone_context_den_and_supervision():
    """Right context (triphone, central position 1): compose_context's subsequential loop."""
    from pykaldi2.hmm.event_map import (
        ConstantEventMap,
        SplitEventMap,
        TableEventMap,
    )
    from pykaldi2.hmm.kaldi_io import Tree

    # pdf of phone p: 2(p-1) if the right phone is 1 or the end of the utterance, else 2(p-1)+1
    leaves = [
        SplitEventMap(2, [0, 1], ConstantEventMap(2 * p - 2), ConstantEventMap(2 * p - 1))
        for p in (1, 2, 3)
    ]
    tree = TableEventMap(1, [None, *leaves])
    ctx = Tree(tree, 3, 1).khg()
    entry = TopoEntry("left-to-right", 1)
    topo = khg.HmmTopology()
    topo.read(make_topo([1, 2, 3], [], TopoConfig(entry, entry)))
    tm = khg.TransitionModel(ctx, topo)
    sup = chain_get_supervision([1, 2, 3, 1], [2, 1, 1, 2], ctx, tm, SupervisionOptions(0, 0))
    # 1(right 2) 1(right 2) 2(right 3) 3(right 1) 1(end) 1(end) -> pdfs 1 1 3 4 0 0, labels +1
    assert accepted(sup, 6) == {(2, 2, 4, 5, 1, 1)}
    den_fst = chain_make_den_fst(chain_est_phone_lm([[1, 2, 3, 1], [2, 1]], 3), ctx, tm)
    g = DenGraph.from_fst(den_fst, tm.num_pdfs)
    num = add_weight_to_supervision(sup, normalization_fst(den_fst, g.initial_probs))
    x = torch.randn(1, 6, tm.num_pdfs, generator=torch.Generator().manual_seed(3)).double()
    lengths = torch.tensor([6])
    num_lp, _ = num_log_likelihood(x, lengths, NumeratorGraphs.from_fsts([num], tm.num_pdfs))
    den_lp = den_log_likelihood(x, lengths, g, leaky_hmm_coefficient=0.0)
    assert torch.isfinite(num_lp).all() and (num_lp < den_lp).all()
