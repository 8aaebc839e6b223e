"""The RNN-T loss with the joiner run on groups of utterances (losses/rnnt_chunked.py): the
same loss and gradients as the whole-batch loss, dropout replayed in the recomputation, and a
peak memory bounded by the node budget instead of the batch's padded lattice."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pykaldi2.losses import rnnt_chunked
from pykaldi2.losses.rnnt import rnnt_loss
from pykaldi2.losses.rnnt_chunked import lattice_groups, rnnt_loss_chunked
from pykaldi2.nnet.transducer import TransducerConfig
from pykaldi2.nnet.transducer.joiner import TransducerJoiner


def _joiner(hid=16, vocab=7, dropout=0.0, dtype=torch.float64):
    torch.manual_seed(3)
    cfg = TransducerConfig.preset("tiny", joint_n_hid=hid, vocab_size=vocab, joint_dropout=dropout)
    return TransducerJoiner(cfg, 8, 4).to(dtype)


def _batch(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    B, T, U = 6, 12, 6
    enc = torch.randn(B, T, 8, generator=g, dtype=dtype)
    pred = torch.randn(B, U + 1, 4, generator=g, dtype=dtype)
    targets = torch.randint(1, 7, (B, U), generator=g)
    tl = torch.tensor([12, 7, 9, 3, 12, 1])
    ul = torch.tensor([6, 2, 0, 3, 5, 1])
    return enc, pred, targets, tl, ul


def test_lattice_groups_cover_the_batch_within_the_budget():
    tl = torch.tensor([12, 7, 9, 3, 12, 1, 40])
    ul = torch.tensor([6, 2, 0, 3, 5, 1, 30])
    for budget in (1, 30, 100, 200, 10_000):
        groups = lattice_groups(tl, ul, budget)
        assert sorted(b for g in groups for b in g) == list(range(7))
        for g in groups:
            nodes = len(g) * max(int(tl[b]) for b in g) * max(int(ul[b]) + 1 for b in g)
            assert nodes <= budget or len(g) == 1
    assert lattice_groups(tl, ul, 10_000) == [[6, 0, 4, 2, 1, 3, 5]]  # by decreasing frames


@pytest.mark.parametrize("budget", [10_000, 200, 60, 1])
def test_chunked_loss_and_gradients_equal_the_whole_batch(budget):
    joiner = _joiner()
    enc, pred, targets, tl, ul = _batch()

    def run(chunked: bool):
        joiner.zero_grad()
        e, p = enc.clone().requires_grad_(), pred.clone().requires_grad_()
        if chunked:
            loss = rnnt_loss_chunked(joiner, e, p, targets, tl, ul, 0, budget)
        else:
            loss = rnnt_loss(joiner(e, p), targets, tl, ul, 0, "sum")
        loss.backward()
        return [loss.detach(), e.grad, p.grad] + [q.grad.clone() for q in joiner.parameters()]

    for a, b in zip(run(False), run(True)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # evaluation: groups without checkpointing, the same value
        loss = rnnt_loss_chunked(joiner, enc, pred, targets, tl, ul, 0, budget)
    torch.testing.assert_close(loss, run(False)[0], rtol=1e-12, atol=1e-12)


def test_joiner_dropout_is_replayed_in_the_recomputation(monkeypatch):
    """The checkpointed backward recomputes each group's joiner: its dropout masks must be the
    forward's, i.e. the gradients equal those of the same groups run without checkpointing."""
    joiner = _joiner(dropout=0.3).train()
    enc, pred, targets, tl, ul = _batch()

    def run():
        torch.manual_seed(11)
        joiner.zero_grad()
        e, p = enc.clone().requires_grad_(), pred.clone().requires_grad_()
        loss = rnnt_loss_chunked(joiner, e, p, targets, tl, ul, 0, 60)
        loss.backward()
        return [loss.detach(), e.grad, p.grad] + [q.grad.clone() for q in joiner.parameters()]

    checkpointed = run()
    monkeypatch.setattr(rnnt_chunked, "group_loss_recomputed", rnnt_chunked._group_loss)
    plain = run()
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


_PEAK = r"""
import json, sys, tracemalloc, torch
from torch.profiler import ProfilerActivity, profile
from pykaldi2.losses.rnnt import rnnt_loss
from pykaldi2.losses.rnnt_chunked import rnnt_loss_chunked
from pykaldi2.nnet.transducer import TransducerConfig
from pykaldi2.nnet.transducer.joiner import TransducerJoiner
torch.set_num_threads(1)
torch.manual_seed(0)
cfg = TransducerConfig.preset("tiny", joint_n_hid=192, vocab_size=32, joint_dropout=0.0)
joiner = TransducerJoiner(cfg, 64, 32)
B, T, U = 4, 120, 50
enc = torch.randn(B, T, 64, requires_grad=True)
pred = torch.randn(B, U + 1, 32, requires_grad=True)
targets = torch.randint(1, 32, (B, U))
tl, ul = torch.full((B,), T), torch.full((B,), U)
def full(b=B):
    rnnt_loss(joiner(enc[:b], pred[:b]), targets[:b], tl[:b], ul[:b], 0, "sum").backward()
def chunked():  # groups of one utterance (2 x 120 x 51 > 10,000)
    rnnt_loss_chunked(joiner, enc, pred, targets, tl, ul, 0, 10_000).backward()
def tensor_peak(fn):  # the high-water mark of live tensor bytes: every CPU allocation and free
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak
full(1)  # warm up the kernels, not the recomputation: its first call is measured below
modules = set(sys.modules)
tracemalloc.start()
chunked()
py_heap = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"nodes": B * T * (U + 1), "py_heap": py_heap,
                  "imported": sorted(set(sys.modules) - modules)[:20],
                  "group": tensor_peak(lambda: full(1)), "full": tensor_peak(full),
                  "chunked": tensor_peak(chunked)}))
"""


def test_chunked_loss_peak_memory_is_a_group_not_the_batch():
    """4 utterances of 120 x 51 nodes (J = 192, V = 32), budget 10,000 nodes (one utterance a
    group). Counted, not sampled: tensor bytes are the live sum of every allocation and free
    the profiler reports (no RSS, so neither page reclaim nor malloc's caching can move it),
    Python's heap is tracemalloc's peak. The whole batch's backward holds ~2.3 KB a node
    (56 MB); the chunked loss must hold one group's lattice (the whole-batch loss of one
    utterance, 14 MB) plus the inputs' gradients, and its first recomputation must not grow
    the Python heap (torch.autograd.grad with grad_outputs imported sympy: 33 MB, 1.7 s)."""
    out = subprocess.run([sys.executable, "-c", _PEAK], capture_output=True, text=True,
                         timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": ""})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["full"] > 1500 * m["nodes"], m  # the measurement sees the batch's lattice
    assert m["group"] > 1500 * m["nodes"] / 4, m
    assert m["chunked"] < 1.1 * m["group"], m  # one group (+ 0.4 MB of input gradients)
    assert m["py_heap"] < 1 << 20, m
