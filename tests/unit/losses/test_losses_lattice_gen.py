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
from pykaldi2.utils.errors import DataError, Pykaldi2Error

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


def test_pool_generates_the_same_lattices_as_in_process(tiny_sys, graph_source):
    info, hclg, path, loglik, _ = tiny_sys
    cfg = LatticeGenConfig(beam=12.0, lattice_beam=6.0, num_workers=2)
    utts = [("u1", [1, 2, 3, 1]), ("u2", [2, 3, 3, 2]), ("u3", [1, 3, 2, 2, 3, 1])]
    xs = [loglik(ph)[0] for _, ph in utts]
    T = max(len(x) for x in xs)
    batch = np.zeros((len(xs), T, info.num_pdfs), np.float32)
    for i, x in enumerate(xs):
        batch[i, : len(x)] = x
    want = [generate_lattice(hclg, x, info, cfg, u) for (u, _), x in zip(utts, xs)]
    ids, lengths, words = [u for u, _ in utts], [len(x) for x in xs], [[1], [2, 1], [2, 1]]
    with LatticeGenerator(path, info, cfg, graph_source) as gen:
        got = gen.submit(ids, torch.from_numpy(batch), lengths).get()
        # on-the-fly numerators from the pool (graphs compiled in the workers)
        lats, alis = gen.submit(ids, torch.from_numpy(batch), lengths, words=words).get()
    with LatticeGenerator(path, info, LatticeGenConfig(num_workers=0), graph_source) as gen:
        _, want_alis = gen.generate(ids, batch, lengths, words=words)
    for a, b in zip(lats, got):
        _same(a, b)
    for a, w in zip(alis, want_alis):
        assert a is not None and w is not None
        np.testing.assert_array_equal(a, w)
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


def test_pool_workers_do_not_import_torch(tiny_sys, graph_source):
    """A lattice worker (search and on-the-fly numerators) never loads torch: ~200 MB a worker
    in train-se. The parent hands torch tensors; they are converted before pickling."""
    info, _, path, loglik, _ = tiny_sys
    x, _ = loglik([1, 2, 3, 1])
    with LatticeGenerator(path, info, LatticeGenConfig(num_workers=1), graph_source) as gen:
        lats, alis = gen.generate(["u1"], torch.from_numpy(x[None]), [len(x)], words=[[1]])
        assert lats[0].num_frames == len(x) and alis[0] is not None
        loaded = gen._pool.apply(
            eval, ("sorted(m for m in __import__('sys').modules if m.split('.')[0] == 'torch')",)
        )
    assert loaded == []


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


def test_pool_parent_checks_the_header_and_workers_report_what_they_cannot_read(tiny_sys, tmp_path):
    """With workers, the parent reads only the graph's header (it would keep a loaded graph:
    load_graph caches it), refusing what the header shows; a graph whose header is fine but
    whose body is cut off fails the first job with the worker's reason, instead of a pool that
    restarts its workers forever."""
    from pykaldi2.hmm import decoder

    info, _, path, loglik, _ = tiny_sys
    x, _ = loglik([1, 2, 3, 1])
    before = decoder._cached_graph.cache_info().currsize
    with LatticeGenerator(path, info, LatticeGenConfig(num_workers=1)) as gen:
        assert gen.generate(["u1"], x[None])[0].num_frames == len(x)
    assert decoder._cached_graph.cache_info().currsize == before  # not loaded in the parent
    not_fst = tmp_path / "text.fst"
    not_fst.write_text("0 1 1 1\n")
    with pytest.raises(DataError, match="text.fst.*not a readable OpenFst graph: bad magic"):
        LatticeGenerator(not_fst, info, LatticeGenConfig(num_workers=1))
    cut = tmp_path / "cut.fst"
    data = open(path, "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    with LatticeGenerator(cut, info, LatticeGenConfig(num_workers=1)) as gen:
        handle = gen.submit(["u1"], x[None])
        with pytest.raises(Pykaldi2Error, match="lattice worker could not start.*cut.fst"):
            handle.get(timeout=60)


@pytest.fixture(scope="module")
def graph_source(tiny_sys, tmp_path_factory):
    """A TrainGraphSource of the tiny system: its final.mdl and L.fst (#0 = phone 4)."""
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import kaldifst, khg
    from pykaldi2.losses.lattice_gen import TrainGraphSource

    info, hclg, path, loglik, tm = tiny_sys
    d = tmp_path_factory.mktemp("num_src")
    GmmModel(tm=tm, tree=_tree(), am=khg.AmDiagGmm()).save(d / "final.mdl")
    kaldifst.compile(L_TEXT).write(str(d / "L.fst"))
    return TrainGraphSource(str(d / "final.mdl"), str(d / "L.fst"), (4,))


def _tree():
    from pykaldi2.kaldi import khg

    topo = khg.HmmTopology()
    topo.read(TOPO)
    return khg.monophone_context_dependency([1, 2, 3], topo.get_phone_to_num_pdf_classes())


def _reference_ali(model_path, phones, frames=2):
    """The transition_ids of ``phones`` with ``frames`` frames per state: the forward
    transition, then self-loops (Kaldi's order with reordered self-loops: the path that sharp
    log-likelihoods of these pdfs give)."""
    from pykaldi2.hmm.model import GmmModel

    m = GmmModel.load(model_path)
    tids = {}
    for t in range(1, len(m.tid2pdf)):
        key = (int(m.tid2phone[t]), int(m.tid2hmm_state[t]), bool(m.tid_is_self_loop[t]))
        tids[key] = t
    return [tids[(p, k, i > 0)] for p in phones for k in range(2) for i in range(frames)]


def test_online_numerators_equal_the_oracle_alignment(tiny_sys, graph_source):
    info, hclg, path, loglik, _ = tiny_sys
    # sil X Y sil, Y sil X (X = a b, Y = b a), and X aligned to too few frames
    utts = [("u1", [1, 2, 3, 3, 2, 1], [1, 2]), ("u2", [3, 2, 1, 2, 3], [2, 1])]
    # u3: 3 frames, too few for the 4 HMM states of X: no alignment
    xs = [loglik(ph, noise=0.1)[0] for _, ph, _ in utts] + [loglik([2], noise=0.1)[0][:3]]
    words = [w for *_, w in utts] + [[1]]
    T = max(len(x) for x in xs)
    batch = np.zeros((len(xs), T, info.num_pdfs), np.float32)
    for i, x in enumerate(xs):
        batch[i, : len(x)] = x
    cfg = LatticeGenConfig(beam=12.0, lattice_beam=6.0, num_workers=0)
    lengths = [len(x) for x in xs]
    with LatticeGenerator(path, info, cfg, graph_source) as gen:
        lats, alis = gen.submit(["u1", "u2", "u3"], batch, lengths, words=words).get()
        plain = gen.submit(["u1", "u2", "u3"], batch, lengths).get()
    for a, b in zip(lats, plain):  # the same lattices, with or without numerators
        _same(a, b)
    for (_, phones, _), ali in zip(utts, alis):
        assert ali is not None
        np.testing.assert_array_equal(ali, _reference_ali(graph_source.model, phones))
    assert alis[2] is None


def test_online_numerator_cache_and_fallback(tiny_sys, graph_source):
    from pykaldi2.losses.lattice_gen import attach_lattices

    info, hclg, path, loglik, _ = tiny_sys
    cfg = LatticeGenConfig(num_workers=0, graph_cache=1)
    gen = LatticeGenerator(path, info, cfg, graph_source)
    x, _ = loglik([1, 2, 3, 1], noise=0.1)
    for utt, words in (("a", [1]), ("b", [1]), ("a", [1])):
        lats, alis = gen.generate([utt], x[None], words=[words])
        assert alis[0] is not None
    assert list(gen._state.graphs) == ["a"]  # LRU of size 1
    # no transcript, or a word L has no path for (id 9): the stored alignment stays
    lats, alis = gen.generate(["c", "d"], np.stack([x, x]), words=[[], [9]])
    assert alis == [None, None]
    stored = torch.full((2, len(x)), 7)
    b = attach_lattices({"ali": stored, "utt_ids": ["c", "d"]}, (lats, [alis[0], np.ones(10)]))
    assert b["ali_failed"] == 1 and b["lattices"] is lats and b["ali"][0].eq(7).all()
    assert b["ali"][1].tolist() == [1] * 10 + [0] * (len(x) - 10)  # padding: 0
    assert stored.eq(7).all()  # the batch's tensor is not modified in place
    with pytest.raises(Pykaldi2Error, match="without a TrainGraphSource"):
        LatticeGenerator(path, info, cfg).generate(["a"], x[None], words=[[1]])
