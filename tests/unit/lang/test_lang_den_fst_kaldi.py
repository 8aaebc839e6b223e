"""chain-make-den-fst against real Kaldi: den.fst and normalization.fst of
../shared/data/kaldi_reference/an4/{chain,chain2000,chain_ctree}/ (Kaldi's tree, 0.trans_mdl and
phone_lm.fst in, Kaldi's den.fst and normalization.fst to compare with). PushSpecial itself is
tested in test_lang_push_special.py."""

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
from pykaldi2.lang.push_special import FstArrays

#: (reference dir, den.fst states, arcs, normalization.fst arcs) from the reference README.
KALDI_DEN = [("chain", 3973, 11283, 15249), ("chain2000", 3973, 11233, 15201),
             ("chain_ctree", 1300, 4659, 7189)]  # fmt: skip


def num_arcs(fst) -> int:
    return sum(fst.num_arcs(s) for s in range(fst.num_states))


class Forward:
    """Sums over the paths of an acceptor over ``pdf + 1`` for given label sequences."""

    def __init__(self, fst, free: bool):
        a = FstArrays.from_fst(fst)
        self.n = a.num_states
        self.src, self.dst, self.lab = a.src, a.dst, a.ilabel
        self.p = np.exp(-a.weight.astype(np.float64))
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
    a, b = FstArrays.from_fst(ours), FstArrays.from_fst(theirs)
    # the same (label, cost) multiset up to float rounding: no tropical pushing, PushSpecial
    # with Kaldi's (unconverged) iteration count and the same quantization
    ka, kb = np.lexsort((a.weight, a.ilabel)), np.lexsort((b.weight, b.ilabel))
    assert np.array_equal(a.ilabel[ka], b.ilabel[kb])
    np.testing.assert_allclose(a.weight[ka], b.weight[kb], rtol=0, atol=2e-6)
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
