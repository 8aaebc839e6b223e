"""PushSpecial and RemoveEpsLocal (Kaldi's fstpushspecial / fstrmepslocal), and mkgraph with
both against Kaldi's own HCLG.fst (kaldi_reference/an4/exp/{tri1,mono}/graph, an OpenFst
ConstFst read here from its on-disk layout)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from pykaldi2.kaldi import kaldifst
from pykaldi2.lang.push_special import (
    FstArrays,
    push_special,
    push_special_weights,
    push_special_weights_ref,
)
from pykaldi2.lang.rm_eps_local import remove_eps_local


def random_fst(rng, num_states: int, num_arcs: int, eps: float = 0.0, acyclic: bool = False):
    """A connected random StdVectorFst (labels 1..4, epsilons with probability ``eps``)."""
    f = kaldifst.StdVectorFst()
    for _ in range(num_states):
        f.add_state()
    f.start = 0

    def label() -> int:
        return 0 if rng.random() < eps else int(rng.integers(1, 5))

    for s in range(num_states - 1):  # a spine so every state is accessible and coaccessible
        f.add_arc(s, kaldifst.StdArc(label(), label(), float(rng.uniform(0, 2)), s + 1))
    f.set_final(num_states - 1, float(rng.uniform(0, 1)))
    for _ in range(num_arcs):
        s, t = (int(x) for x in rng.integers(0, num_states, 2))
        if acyclic and t <= s:
            s, t = min(s, t), max(s, t) + (1 if t == s and s < num_states - 1 else 0)
            if t <= s:
                continue
        f.add_arc(s, kaldifst.StdArc(label(), label(), float(rng.uniform(0, 3)), t))
        if rng.random() < 0.2:
            f.set_final(s, float(rng.uniform(0, 3)))
    return f


def _random_path_costs(a: FstArrays, weight, final, rng, n: int = 200) -> list[float]:
    """Costs of ``n`` random complete paths (same random choices for any weights)."""
    bounds = np.searchsorted(a.src, np.arange(a.num_states + 1))
    out = []
    for _ in range(n):
        s, cost = a.start, 0.0
        for _ in range(50):
            lo, hi = bounds[s], bounds[s + 1]
            choices = list(range(lo, hi)) + ([-1] if np.isfinite(a.final[s]) else [])
            k = choices[int(rng.integers(len(choices)))]
            if k == -1:
                break
            cost += float(weight[k])
            s = int(a.dst[k])
        if np.isfinite(a.final[s]):
            out.append(cost + float(final[s]))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_push_special_fast_equals_reference_and_keeps_paths(seed):
    rng = np.random.default_rng(seed)
    a = FstArrays.from_fst(random_fst(rng, 30, 80))
    w, f, lam = push_special_weights(a)
    w_ref, f_ref, lam_ref = push_special_weights_ref(a)
    # bit for bit: the vectorised version adds in Kaldi's order (den.fst depends on it, since
    # PushSpecial stops there before converging and minimization quantizes the weights)
    assert np.array_equal(w, w_ref) and np.array_equal(f, f_ref) and lam == lam_ref
    # every state now sums to lambda (within delta = 1/1024 in log terms)
    sums = np.bincount(a.src, weights=np.exp(-w.astype(np.float64)), minlength=a.num_states)
    sums += np.exp(-f.astype(np.float64))
    assert math.log(sums.max() / sums.min()) <= 1.0 / 1024 + 1e-6
    assert np.allclose(sums, lam, rtol=2e-3)  # the top eigenvalue of P
    # and the weighted language is unchanged: every complete path keeps its cost
    before = _random_path_costs(a, a.weight, a.final, np.random.default_rng(1))
    after = _random_path_costs(a, w, f, np.random.default_rng(1))
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-4)


def test_push_special_linear_fst_converges():
    """The FST in push-special.cc's closing note, whose eigenvalues share one magnitude (the
    reason for the 0.1 * v term): it converges, every state summing to the same."""
    text = "0 2 3 3 0\n1 3 1 4 0.5\n2 1 0 0 0.5\n3 0.25\n"
    f = kaldifst.compile(text)
    w_ref, f_ref, _ = push_special_weights_ref(FstArrays.from_fst(f))
    lam = push_special(f)
    a = FstArrays.from_fst(f)
    assert np.array_equal(a.weight, w_ref) and np.array_equal(a.final, f_ref)
    # one path of total cost 1.25, now spread evenly over its 4 steps (3 arcs + final), to
    # within delta (1/1024)
    np.testing.assert_allclose(a.weight, [1.25 / 4] * 3, atol=1.0 / 1024)
    assert abs(a.final[3] - 1.25 / 4) < 1.0 / 1024
    assert abs(float(a.weight.sum() + a.final[3]) - 1.25) < 1e-5
    sums = np.bincount(a.src, weights=np.exp(-a.weight.astype(float)), minlength=a.num_states)
    sums += np.exp(-a.final.astype(float))
    assert np.allclose(sums, lam, rtol=2e-3) and 0.5 < lam < 1.0


def _print(f) -> str:
    a = FstArrays.from_fst(f)
    rows = [
        f"{s} {t} {i} {o} {w:.4f}"
        for s, t, i, o, w in zip(a.src, a.dst, a.ilabel, a.olabel, a.weight)
    ]
    rows += [f"{s} {x:.4f}" for s, x in enumerate(a.final) if np.isfinite(x)]
    return "\n".join(rows)


def test_remove_eps_local_kaldis_examples():
    """The examples in fstrmepslocal.cc's comment."""
    f = kaldifst.compile("0 1 1 0\n1 2 0 2\n2 0\n")
    remove_eps_local(f)
    assert _print(f) == "0 1 1 2 0.0000\n1 0.0000"
    f = kaldifst.compile("0 1 0 0\n0 0\n1 0\n")
    remove_eps_local(f)
    assert _print(f) == "0 0.0000"  # tropical: min(0, 0)


def _best_costs(f, max_len: int = 5) -> dict:
    """Tropical cost of every (input, output) label sequence of an acyclic FST (epsilons out)."""
    a = FstArrays.from_fst(f)
    bounds = np.searchsorted(a.src, np.arange(a.num_states + 1))
    best: dict = {}
    stack = [(a.start, (), (), 0.0)]
    while stack:
        s, ins, outs, cost = stack.pop()
        if np.isfinite(a.final[s]):
            key = (ins, outs)
            best[key] = min(best.get(key, math.inf), cost + float(a.final[s]))
        for k in range(bounds[s], bounds[s + 1]):
            i, o = int(a.ilabel[k]), int(a.olabel[k])
            ni, no = ins + ((i,) if i else ()), outs + ((o,) if o else ())
            if len(ni) <= max_len and len(no) <= max_len:
                stack.append((int(a.dst[k]), ni, no, cost + float(a.weight[k])))
    return best


def test_remove_eps_local_keeps_the_language_and_never_grows():
    shrunk = 0
    for seed in range(12):
        f = random_fst(np.random.default_rng(seed), 9, 12, eps=0.5, acyclic=True)
        before = _best_costs(f)
        size = f.num_states + sum(f.num_arcs(s) for s in range(f.num_states))
        remove_eps_local(f)
        after = _best_costs(f)
        new_size = f.num_states + sum(f.num_arcs(s) for s in range(f.num_states))
        assert new_size <= size
        shrunk += new_size < size
        assert before.keys() == after.keys()
        for k in before:
            assert math.isclose(before[k], after[k], abs_tol=1e-4), (seed, k)
    assert shrunk >= 6  # the patterns did apply


def read_const_fst(path):
    """An OpenFst ConstFst file (fst/const-fst.h, version 2, unaligned as Kaldi's fstconvert
    writes it): ``(start, finals (S,), src (A,), ilabel, olabel, weight, nextstate)``."""
    b = path.read_bytes()
    pos = 4  # magic
    types = []
    for _ in range(2):
        (n,) = struct.unpack_from("<i", b, pos)
        types.append(b[pos + 4 : pos + 4 + n].decode())
        pos += 4 + n
    version, flags = struct.unpack_from("<ii", b, pos)
    _, start, ns, na = struct.unpack_from("<Qqqq", b, pos + 8)
    pos += 40
    assert types == ["const", "standard"] and version == 2 and flags == 0, (types, version, flags)
    st = np.frombuffer(b, "<f4,<u4,<u4,<u4,<u4", count=ns, offset=pos)
    arcs = np.frombuffer(b, "<i4,<i4,<f4,<i4", count=na, offset=pos + 20 * ns)
    src = np.repeat(np.arange(ns), st["f2"].astype(np.int64))
    return start, st["f0"], src, arcs["f0"], arcs["f1"], arcs["f2"], arcs["f3"]


@pytest.mark.parametrize("system,states,arcs", [("tri1", 37294, 91717), ("mono", 31554, 77365)])
def test_mkgraph_gives_kaldis_hclg(kaldi_ref, tmp_path, system, states, arcs):
    """mkgraph on Kaldi's lang_test (lang + G.fst) with Kaldi's final.mdl and tree: Kaldi's
    HCLG, state for state: the same numbers of states and arcs, the same arcs out of every
    state (labels, destinations) and weights equal up to minimize_encoded's 1/1024 quantum."""
    from pykaldi2.cli.main import main

    exp = kaldi_ref / "an4" / "exp" / system
    graph = tmp_path / "graph"
    assert main(["mkgraph", str(kaldi_ref / "an4/lang"), str(exp / "final.mdl"), str(graph)]) == 0
    k_start, k_final, k_src, k_il, k_ol, k_w, k_ns = read_const_fst(exp / "graph" / "HCLG.fst")
    assert (len(k_final), len(k_src)) == (states, arcs)
    ours = FstArrays.from_fst(kaldifst.StdVectorFst.read(str(graph / "HCLG.fst")))
    assert (ours.num_states, len(ours.src), ours.start) == (states, arcs, k_start)
    assert np.array_equal(np.isfinite(ours.final), np.isfinite(k_final))
    fin = np.isfinite(k_final)
    assert np.abs(ours.final[fin] - k_final[fin]).max() <= 1.0 / 1024
    ko = np.lexsort((k_w, k_ns, k_ol, k_il, k_src))
    oo = np.lexsort((ours.weight, ours.dst, ours.olabel, ours.ilabel, ours.src))
    for ka, oa in ((k_src, ours.src), (k_il, ours.ilabel), (k_ol, ours.olabel), (k_ns, ours.dst)):
        assert np.array_equal(ka[ko], oa[oo])
    dw = np.abs(k_w[ko] - ours.weight[oo])
    assert dw.max() <= 1.0 / 1024 + 1e-6 and (dw == 0).mean() > 0.999
