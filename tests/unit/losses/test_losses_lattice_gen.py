"""On-the-fly lattices: a spawn worker pool equals in-process generation; prefetching; alignment.

A tiny monophone system built here: phones sil=1, a=2, b=3 (2-state left-to-right HMMs);
words X = a b, Y = b a, with optional silence; a unigram G.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pykaldi2.losses.lattice import LatticeBatch, SequenceConfig, TransitionInfo, sequence_objective
from pykaldi2.losses.lattice_gen import (
    LatticeGenConfig,
    LatticeGenerator,
    LatticePrefetcher,
    generate_lattice,
    nnet_align_compiled,
)
from pykaldi2.utils.errors import DataError

TOPO = """<Topology>
<TopologyEntry>
<ForPhones>
1 2 3
</ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.6 <Transition> 1 0.4 </State>
<State> 1 <PdfClass> 1 <Transition> 1 0.6 <Transition> 2 0.4 </State>
<State> 2 </State>
</TopologyEntry>
</Topology>
"""
# src dst phone word; #0 (phone 4) loops for the disambiguation of G's (absent) backoff.
L_TEXT = "0 0 1 0\n0 1 2 1\n1 0 3 0\n0 2 3 2\n2 0 2 0\n0 0 4 3\n0\n"
G_TEXT = "0 0 1 1 0.9\n0 0 2 2 0.5\n0 0.1\n"


@pytest.fixture(scope="module")
def tiny_sys(tmp_path_factory):
    from pykaldi2.kaldi import kaldifst, khg
    from pykaldi2.lang.hclg import make_hclg

    topo = khg.HmmTopology()
    topo.read(TOPO)
    ctx = khg.monophone_context_dependency([1, 2, 3], topo.get_phone_to_num_pdf_classes())
    tm = khg.TransitionModel(ctx, topo)
    hclg = make_hclg(kaldifst.compile(L_TEXT), kaldifst.compile(G_TEXT), [4], ctx, tm).fst
    path = tmp_path_factory.mktemp("lat_gen") / "HCLG.fst"
    hclg.write(str(path))
    info = TransitionInfo.from_trans_model(tm)

    def pdfs(phones, frames=2):
        return [ctx.compute([p], k)[1] for p in phones for k in range(2) for _ in range(frames)]

    rng = np.random.default_rng(0)

    def loglik(phones, noise=1.0):
        seq = pdfs(phones)
        ll = rng.normal(scale=noise, size=(len(seq), tm.num_pdfs)) - 4.0
        ll[np.arange(len(seq)), seq] += 4.0
        return ll.astype(np.float32), seq

    return info, hclg, path, loglik, tm


def _same(a, b):
    assert a.num_states == b.num_states and a.start == b.start
    for name in ("src", "dst", "tid", "word"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_allclose(a.graph_cost, b.graph_cost, rtol=1e-6)
    np.testing.assert_allclose(a.ac_cost, b.ac_cost, rtol=1e-5)
    np.testing.assert_array_equal(a.final_cost, b.final_cost)


def test_pool_generates_the_same_lattices_as_in_process(tiny_sys):
    info, hclg, path, loglik, _ = tiny_sys
    cfg = LatticeGenConfig(beam=12.0, lattice_beam=6.0, num_workers=2)
    utts = [("u1", [1, 2, 3, 1]), ("u2", [2, 3, 3, 2]), ("u3", [1, 3, 2, 2, 3, 1])]
    xs = [loglik(ph)[0] for _, ph in utts]
    T = max(len(x) for x in xs)
    batch = np.zeros((len(xs), T, info.num_pdfs), np.float32)
    for i, x in enumerate(xs):
        batch[i, : len(x)] = x
    want = [generate_lattice(hclg, x, info, cfg, u) for (u, _), x in zip(utts, xs)]
    with LatticeGenerator(path, info, cfg) as gen:
        got = gen.submit([u for u, _ in utts], torch.from_numpy(batch), [len(x) for x in xs]).get()
    assert [lat.utt for lat in got] == ["u1", "u2", "u3"]
    for a, b, x in zip(got, want, xs):
        _same(a, b)
        assert a.num_frames == len(x) and a.num_arcs > len(x)  # real lattices, not best paths
    # The lattice scores rescored with the same log-likelihoods are the decoder's own costs.
    lb = LatticeBatch(got, info)
    e = lb.emitting
    x = torch.from_numpy(batch).double()[lb.seq[e], lb.frame[e], lb.pdf[e]]
    ac = np.concatenate([lat.ac_cost for lat in got])[e.numpy()]
    np.testing.assert_allclose(-x.numpy(), ac, atol=1e-4)


def test_prefetcher_fills_lattices_and_feeds_smbr(tiny_sys):
    info, _, path, loglik, _ = tiny_sys
    data = [loglik(ph) for ph in ([1, 2, 3, 1], [1, 3, 2, 1], [2, 3, 1])]
    batches = [
        {
            "utt_ids": [f"b{i}"],
            "lengths": torch.tensor([len(x)]),
            "loglik": torch.from_numpy(x)[None],
            "ali": torch.from_numpy(
                np.array([[int(np.flatnonzero(info.tid2pdf == p)[0]) for p in seq]])
            ),
        }
        for i, (x, seq) in enumerate(data)
    ]
    calls = []

    def loglik_fn(b):
        calls.append(b["utt_ids"][0])
        return b["loglik"]

    gen = LatticeGenerator(path, info, LatticeGenConfig(num_workers=0))
    pre = LatticePrefetcher(batches, loglik_fn, gen)
    seen = []
    for b in pre:
        seen.append(b["utt_ids"][0])
        # when batch k is handed out, batch k+1 was already submitted
        assert calls == [f"b{i}" for i in range(min(len(seen) + 1, 3))]
        lb = LatticeBatch(b["lattices"], info)
        cfg = SequenceConfig(criterion="smbr", acoustic_scale=0.5, silence_phones=[1])
        acc, _ = sequence_objective(b["loglik"].double(), lb, b["ali"], b["lengths"], info, cfg)
        # sharp log-likelihoods: the expected accuracy is close to all frames right
        assert 0.8 * b["lengths"].item() < acc.item() <= b["lengths"].item() + 1e-9
    assert seen == ["b0", "b1", "b2"]


def test_nnet_align_follows_the_log_likelihoods(tiny_sys):
    info, hclg, _, loglik, tm = tiny_sys
    from pykaldi2.kaldi import khg

    x, seq = loglik([1, 2, 3, 3, 2, 1], noise=0.1)
    graph = hclg.copy()
    khg.add_transition_probs(trans_model=tm, transition_scale=1.0, self_loop_scale=0.1, fst=graph)
    ali = nnet_align_compiled(graph, x, info, acoustic_scale=1.0)
    assert ali is not None and len(ali) == len(seq)
    np.testing.assert_array_equal(info.tid2pdf[ali], seq)


def test_bad_inputs_name_the_problem(tiny_sys, tmp_path):
    info, hclg, _, loglik, _ = tiny_sys
    with pytest.raises(DataError, match="not found"):
        LatticeGenerator(tmp_path / "missing.fst", info, LatticeGenConfig(num_workers=0))
    x, _ = loglik([1, 2, 3, 1])
    with pytest.raises(DataError, match="uttX.*pdfs"):
        generate_lattice(hclg, x[:, :-1], info, LatticeGenConfig(), "uttX")
