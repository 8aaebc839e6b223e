"""chain-make-den-fst against real Kaldi: den.fst and normalization.fst of
../shared/data/kaldi_reference/an4/{chain,chain2000,chain_ctree}/ (Kaldi's tree, 0.trans_mdl and
phone_lm.fst in, Kaldi's den.fst and normalization.fst to compare with), and PushSpecial's fast
version against its reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pykaldi2.hmm import kaldi_io
from pykaldi2.kaldi import kaldifst
from pykaldi2.lang.den_fst import (
    ChainGraph,
    chain_make_den_fst,
    den_initial_probs,
    normalization_fst,
)
from pykaldi2.lang.push_special import (
    fst_arcs,
    push_special,
    push_special_reference,
)

#: (reference dir, den.fst states, arcs, normalization.fst arcs) from the reference README.
KALDI_DEN = [("chain", 3973, 11283, 15249), ("chain2000", 3973, 11233, 15201),
             ("chain_ctree", 1300, 4659, 7189)]  # fmt: skip


def num_arcs(fst) -> int:
    return sum(fst.num_arcs(s) for s in range(fst.num_states))


class Forward:
    """Sums over the paths of an acceptor over ``pdf + 1`` for given label sequences."""

    def __init__(self, fst, free: bool):
        a = fst_arcs(fst)
        self.n = a.num_states
        self.src, self.dst, self.lab = a.src, a.dst, a.ilabel
        self.p = np.exp(-a.cost.astype(np.float64))
        if free:  # as the LF-MMI denominator: enter through the initial probs, end anywhere
            g = ChainGraph.from_fst(fst, int(a.ilabel.max()))
            self.init = den_initial_probs(g).numpy()
            self.final = np.ones(self.n)
        else:
            self.init = np.zeros(self.n)
            self.init[a.start] = 1.0
            self.final = np.exp(-a.final.astype(np.float64))
        self.by_label = {int(k): np.flatnonzero(a.ilabel == k) for k in np.unique(a.ilabel)}

    def log_prob(self, labels) -> float:
        alpha, tot = self.init.copy(), 0.0
        for lab in labels:
            idx = self.by_label.get(int(lab), np.zeros(0, np.int64))
            alpha = np.bincount(self.dst[idx], alpha[self.src[idx]] * self.p[idx], self.n)
            z = alpha.sum()
            if z == 0:
                return -math.inf
            tot += math.log(z)
            alpha /= z
        end = float(alpha @ self.final)
        return tot + math.log(end) if end > 0 else -math.inf

    def sample(self, rng: np.random.Generator, length: int) -> list[int]:
        """A label sequence of a random walk (start from the initial probs, arcs by weight)."""
        s = rng.choice(self.n, p=self.init / self.init.sum())
        order = np.argsort(self.src, kind="stable")
        first = np.searchsorted(self.src[order], np.arange(self.n + 1))
        out = []
        for _ in range(length):
            arcs = order[first[s] : first[s + 1]]
            w = self.p[arcs] / self.p[arcs].sum()
            k = arcs[rng.choice(len(arcs), p=w)]
            out.append(int(self.lab[k]))
            s = self.dst[k]
        return out


@pytest.fixture(scope="module", params=KALDI_DEN, ids=[k[0] for k in KALDI_DEN])
def den_pair(request, kaldi_ref):
    name, states, arcs, norm_arcs = request.param
    d = kaldi_ref / "an4" / name
    tree = kaldi_io.read_tree(d / "tree")
    tm = kaldi_io.read_transition_model_file(d / "0.trans_mdl")
    lm = kaldifst.StdVectorFst.read(str(d / "phone_lm.fst"))
    ours = chain_make_den_fst(lm, tree, tm)
    theirs = kaldifst.StdVectorFst.read(str(d / "den.fst"))
    assert (theirs.num_states, num_arcs(theirs)) == (states, arcs)  # the README's counts
    kaldi_norm = kaldifst.StdVectorFst.read(str(d / "normalization.fst"))
    return ours, theirs, kaldi_norm, norm_arcs


def test_den_fst_has_kaldis_size_and_weights(den_pair):
    ours, theirs, _, _ = den_pair
    assert (ours.num_states, num_arcs(ours)) == (theirs.num_states, num_arcs(theirs))
    assert ours.start == theirs.start
    a, b = fst_arcs(ours), fst_arcs(theirs)
    # the same (label, cost) multiset up to float rounding: no tropical pushing, PushSpecial
    # with Kaldi's (unconverged) iteration count and the same quantization
    ka, kb = np.lexsort((a.cost, a.ilabel)), np.lexsort((b.cost, b.ilabel))
    assert np.array_equal(a.ilabel[ka], b.ilabel[kb])
    np.testing.assert_allclose(a.cost[ka], b.cost[kb], rtol=0, atol=2e-6)
    assert np.array_equal(np.sort(a.final), np.sort(b.final))
    # the same number of arcs into plus out of each state (SortOnTransitionCount)
    deg = [np.bincount(x.src, minlength=x.num_states) + np.bincount(x.dst, minlength=x.num_states)
           for x in (a, b)]  # fmt: skip
    assert np.array_equal(deg[0], deg[1])


def test_den_fst_is_kaldis_weighted_language_with_free_start_and_end(den_pair):
    """The LF-MMI denominator's view: sequences begin in the initial probs, end anywhere."""
    ours, theirs, _, _ = den_pair
    f_ours, f_theirs = Forward(ours, free=True), Forward(theirs, free=True)
    rng = np.random.default_rng(0)
    for length in (1, 7, 40):
        for _ in range(10):
            seq = f_theirs.sample(rng, length)
            want = f_theirs.log_prob(seq)
            assert math.isfinite(want)
            assert f_ours.log_prob(seq) == pytest.approx(want, abs=1e-4 * length)
    # and a sequence Kaldi's graph rejects is rejected
    seq = f_theirs.sample(rng, 12)
    bad = [seq[0]] * 12
    assert (f_ours.log_prob(bad) == -math.inf) == (f_theirs.log_prob(bad) == -math.inf)


def test_normalization_fst_is_kaldis(den_pair):
    ours, _, kaldi_norm, norm_arcs = den_pair
    norm = normalization_fst(ours)
    assert (norm.num_states, num_arcs(norm)) == (kaldi_norm.num_states, norm_arcs)
    assert num_arcs(kaldi_norm) == norm_arcs
    f_ours, f_theirs = Forward(norm, free=False), Forward(kaldi_norm, free=False)
    rng = np.random.default_rng(1)
    for length in (1, 5, 30):
        for _ in range(10):
            seq = f_theirs.sample(rng, length)
            assert f_ours.log_prob(seq) == pytest.approx(f_theirs.log_prob(seq), abs=1e-4 * length)


# ---- PushSpecial -----------------------------------------------------------------------------


def random_fst(rng: np.random.Generator, n: int, arcs_per_state: int):
    fst = kaldifst.StdVectorFst()
    for _ in range(n):
        fst.add_state()
    fst.start = 0
    for s in range(n):
        for _ in range(rng.integers(1, arcs_per_state + 1)):
            lab = int(rng.integers(1, 5))
            cost = float(rng.uniform(0, 4))
            fst.add_arc(s, kaldifst.StdArc(lab, lab, cost, int(rng.integers(0, n))))
        if rng.random() < 0.3:
            fst.set_final(s, float(rng.uniform(0, 3)))
    fst.set_final(n - 1, 0.5)
    return fst


def path_costs(fst, seqs) -> list[float]:
    f = Forward(fst, free=False)
    return [f.log_prob(s) for s in seqs]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_push_special_fast_equals_reference_and_keeps_path_weights(seed):
    rng = np.random.default_rng(seed)
    fst = random_fst(rng, 30, 4)
    fast, slow = fst.copy(), fst.copy()
    converged = push_special(fast)
    assert push_special_reference(slow) == converged
    a, b = fst_arcs(fast), fst_arcs(slow)
    assert np.array_equal(a.cost, b.cost) and np.array_equal(a.final, b.final)  # bit for bit
    walk = Forward(fst, free=False)
    seqs = [walk.sample(rng, n) for n in range(1, 8) for _ in range(20)]
    before = path_costs(fst, seqs)
    assert sum(math.isfinite(c) for c in before) >= 5  # sequences that end in a final state
    np.testing.assert_allclose(path_costs(fast, seqs), before, atol=1e-4)
    if converged:  # every state now "sums to" the same lambda
        p = np.exp(-a.cost.astype(np.float64))
        out = np.bincount(a.src, p, a.num_states) + np.exp(-a.final.astype(np.float64))
        assert out.max() / out.min() < 1.001


def test_push_special_on_a_periodic_linear_fst():
    """push-special.cc's own example (all eigenvalues of the same magnitude): the 0.1 v term
    makes the iteration converge."""
    fst = kaldifst.StdVectorFst()
    for _ in range(4):
        fst.add_state()
    fst.start = 0
    for s, d, lab, cost in [(0, 2, 3, 0.0), (1, 3, 1, 0.5), (2, 1, 0, 0.5)]:
        fst.add_arc(s, kaldifst.StdArc(lab, lab, cost, d))
    fst.set_final(3, 0.25)
    slow = fst.copy()
    assert push_special(fst) and push_special_reference(slow)
    a = fst_arcs(fst)
    assert np.array_equal(a.cost, fst_arcs(slow).cost)
    # one path of total cost 1.25, now spread evenly over its 4 steps (3 arcs + final)
    np.testing.assert_allclose(a.cost, [1.25 / 4] * 3, atol=1e-4)
    assert a.final[3] == pytest.approx(1.25 / 4, abs=1e-4)
