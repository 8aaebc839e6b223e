"""The fast RNN-T loss against brute force, the loop reference, the naive version, gradcheck."""

from __future__ import annotations

import math

import pytest
import torch

from pykaldi2.losses.rnnt import (
    _skew,
    _unskew,
    rnnt_forward_backward,
    rnnt_lattice_log_probs,
    rnnt_loss,
    rnnt_loss_from_lattice,
)
from pykaldi2.losses.rnnt_reference import (
    rnnt_alignments,
    rnnt_loss_brute_force,
    rnnt_loss_naive,
    rnnt_loss_reference,
)
from pykaldi2.utils.errors import Pykaldi2Error

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _batch(B, T, U, V, seed, dtype=torch.float64, blank=0, scale=1.0):
    """Random logits (B, T, U+1, V), targets without blank, lengths with the maximum reached."""
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(B, T, U + 1, V, generator=g, dtype=dtype)).requires_grad_()
    targets = torch.randint(0, V - 1, (B, U), generator=g)
    targets = targets + (targets >= blank).long()  # skip the blank id
    Tl = torch.randint(1, T + 1, (B,), generator=g)
    Ul = torch.randint(0, U + 1, (B,), generator=g)
    Tl[0], Ul[-1] = T, U
    return logits, targets, Tl, Ul


def _assert_close_with_grads(got, want, logits, tol=(None, None), grad_tol=(None, None)):
    """``got`` == ``want`` (losses) and so are their summed gradients w.r.t. ``logits``;
    tolerances as ``(rtol, atol)`` (``None``: assert_close's defaults)."""
    torch.testing.assert_close(got, want, rtol=tol[0], atol=tol[1])
    (g,) = torch.autograd.grad(got.sum(), logits)
    (gw,) = torch.autograd.grad(want.sum(), logits)
    torch.testing.assert_close(g, gw, rtol=grad_tol[0], atol=grad_tol[1])


def test_skew_roundtrip():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    s = _skew(x, -1.0)
    assert s.shape == (2, 3 + 4 - 1, 4)
    for n in range(s.shape[1]):
        for u in range(4):
            t = n - u
            want = x[:, t, u] if 0 <= t < 3 else torch.full((2,), -1.0)
            assert torch.equal(s[:, n, u], want)
    assert torch.equal(_unskew(s, 3), x)


def test_alignment_count():
    for T, U in [(1, 0), (1, 3), (3, 2), (4, 4)]:
        paths = rnnt_alignments(T, U)
        assert len(paths) == math.comb(T - 1 + U, U)
        assert len({tuple(p) for p in paths}) == len(paths)
        assert all(sum(1 for a in p if a[2]) == T for p in paths)


@pytest.mark.parametrize(
    "B,T,U,V,blank", [(1, 1, 0, 2, 0), (1, 1, 3, 4, 0), (3, 4, 3, 5, 0), (2, 5, 2, 3, 2)]
)
def test_loss_equals_brute_force(B, T, U, V, blank):
    logits, targets, Tl, Ul = _batch(B, T, U, V, seed=B * 100 + T * 10 + U, blank=blank)
    got = rnnt_loss(logits, targets, Tl, Ul, blank=blank, reduction="none")
    want = rnnt_loss_brute_force(logits, targets, Tl, Ul, blank=blank)
    _assert_close_with_grads(got, want, logits, (1e-10, 1e-10), (1e-9, 1e-10))


def test_gradcheck_float64():
    logits, targets, Tl, Ul = _batch(2, 4, 3, 5, seed=7)
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x, targets, Tl, Ul, reduction="none"), (logits,)
    )


def test_lattice_gradcheck_float64():
    logits, targets, Tl, Ul = _batch(2, 4, 3, 5, seed=8)
    lp = torch.log_softmax(logits.detach(), -1)
    blank_lp = lp[..., 0].clone().requires_grad_()
    emit_lp = lp[:, :, :-1].gather(-1, targets[:, None, :, None].expand(2, 4, 3, 1))
    emit_lp = emit_lp.squeeze(-1).clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda b, e: rnnt_loss_from_lattice(b, e, Tl, Ul, reduction="none"), (blank_lp, emit_lp)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_random_batches(seed):
    logits, targets, Tl, Ul = _batch(4, 7, 5, 6, seed=seed, dtype=torch.float32, scale=3.0)
    got = rnnt_loss(logits, targets, Tl, Ul, reduction="none")
    want = rnnt_loss_reference(logits, targets, Tl, Ul)
    _assert_close_with_grads(got, want, logits, (1e-5, 1e-4), (1e-4, 1e-5))


def test_matches_naive_larger_batch():
    logits, targets, Tl, Ul = _batch(5, 30, 12, 20, seed=3)
    got = rnnt_loss(logits, targets, Tl, Ul, reduction="none")
    want = rnnt_loss_naive(logits, targets, Tl, Ul)
    _assert_close_with_grads(got, want, logits, (1e-10, 1e-9), (1e-8, 1e-10))


def test_lattice_loss_matches_logits_loss():
    logits, targets, Tl, Ul = _batch(3, 6, 4, 7, seed=11)
    blank_lp, emit_lp, lse = rnnt_lattice_log_probs(logits.detach(), targets, 0)
    torch.testing.assert_close(lse, torch.logsumexp(logits.detach(), -1))
    a = rnnt_loss_from_lattice(blank_lp, emit_lp, Tl, Ul, reduction="none")
    b = rnnt_loss(logits, targets, Tl, Ul, reduction="none")
    torch.testing.assert_close(a, b.detach())


def test_grad_output_and_reductions():
    logits, targets, Tl, Ul = _batch(3, 5, 3, 4, seed=5)
    w = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    (g,) = torch.autograd.grad(rnnt_loss(logits, targets, Tl, Ul, reduction="none"), logits, w)
    gs = [
        torch.autograd.grad(rnnt_loss(logits, targets, Tl, Ul, reduction="none")[b], logits)[0]
        for b in range(3)
    ]
    torch.testing.assert_close(g, sum(wb * gb for wb, gb in zip(w, gs)))
    none = rnnt_loss(logits, targets, Tl, Ul, reduction="none")
    torch.testing.assert_close(rnnt_loss(logits, targets, Tl, Ul, reduction="sum"), none.sum())
    torch.testing.assert_close(rnnt_loss(logits, targets, Tl, Ul, reduction="mean"), none.mean())
    (gm,) = torch.autograd.grad(rnnt_loss(logits, targets, Tl, Ul) * 6.0, logits)
    torch.testing.assert_close(gm, 2.0 * sum(gs))


def test_padding_gets_zero_gradient_and_is_ignored():
    logits, targets, Tl, Ul = _batch(3, 6, 4, 5, seed=9)
    loss = rnnt_loss(logits, targets, Tl, Ul, reduction="none")
    (g,) = torch.autograd.grad(loss.sum(), logits)
    t = torch.arange(6)[None, :, None]
    u = torch.arange(5)[None, None, :]
    inside = (t < Tl[:, None, None]) & (u <= Ul[:, None, None])
    assert g[~inside].abs().max() == 0
    assert g[inside].abs().max() > 0
    # each inside node's gradient sums to zero over V (softmax minus posteriors)
    torch.testing.assert_close(g.sum(-1), torch.zeros_like(g.sum(-1)), atol=1e-12, rtol=0)
    # changing padding (logits and targets beyond the lengths) changes nothing
    x2 = logits.detach().clone()
    x2[~inside] = 100.0 * torch.randn_like(x2[~inside])
    t2 = targets.clone()
    t2[torch.arange(4)[None, :] >= Ul[:, None]] = 0  # blank in the padding is fine
    torch.testing.assert_close(rnnt_loss(x2, t2, Tl, Ul, reduction="none"), loss.detach())


def test_occupancy_is_a_distribution():
    """The posteriors: one blank per frame and each symbol emitted once, on every path."""
    logits, targets, Tl, Ul = _batch(2, 5, 3, 4, seed=4)
    blank_lp, emit_lp, _ = rnnt_lattice_log_probs(logits.detach(), targets, 0)
    st = rnnt_forward_backward(blank_lp, emit_lp, Tl, Ul)
    # every path takes exactly one blank per frame and emits each symbol exactly once
    for b in range(2):
        T, U = int(Tl[b]), int(Ul[b])
        torch.testing.assert_close(st.g_blank[b, :T].sum(-1), torch.ones(T, dtype=torch.float64))
        torch.testing.assert_close(st.g_emit[b, :, :U].sum(0), torch.ones(U, dtype=torch.float64))
        torch.testing.assert_close(st.alpha[b, 0, 0] + st.beta[b, 0, 0], st.log_prob[b])


def test_low_precision_inputs():
    logits, targets, Tl, Ul = _batch(2, 6, 3, 8, seed=12, dtype=torch.float32)
    want = rnnt_loss(logits, targets, Tl, Ul, reduction="none")
    (gw,) = torch.autograd.grad(want.sum(), logits)
    x = logits.detach().to(torch.bfloat16).requires_grad_()
    got = rnnt_loss(x, targets, Tl, Ul, reduction="none")
    assert got.dtype == torch.bfloat16
    (g,) = torch.autograd.grad(got.sum(), x)
    assert g.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.detach(), rtol=2e-2, atol=0.1)
    torch.testing.assert_close(g.float(), gw, rtol=0.05, atol=0.02)


def test_chunked_passes(monkeypatch):
    """Many small chunks give the same loss and gradient as one big chunk."""
    import pykaldi2.losses.rnnt as R

    logits, targets, Tl, Ul = _batch(3, 7, 4, 6, seed=13)
    loss = rnnt_loss(logits, targets, Tl, Ul, reduction="sum")
    (g,) = torch.autograd.grad(loss, logits)
    monkeypatch.setattr(R, "CHUNK_ELEMS_CPU", 7)
    loss2 = rnnt_loss(logits, targets, Tl, Ul, reduction="sum")
    (g2,) = torch.autograd.grad(loss2, logits)
    torch.testing.assert_close(loss, loss2)
    torch.testing.assert_close(g, g2)


def test_bad_inputs_give_clear_errors():
    logits, targets, Tl, Ul = _batch(2, 4, 3, 5, seed=1)
    with pytest.raises(Pykaldi2Error, match="not a non-blank symbol"):
        bad = targets.clone()
        bad[1, 0] = 0
        rnnt_loss(logits, bad, Tl, torch.tensor([3, 2]))
    with pytest.raises(Pykaldi2Error, match="logit_lengths"):
        rnnt_loss(logits, targets, torch.tensor([5, 1]), Ul)
    with pytest.raises(Pykaldi2Error, match="logit_lengths"):
        rnnt_loss(logits, targets, torch.tensor([0, 1]), Ul)
    with pytest.raises(Pykaldi2Error, match="target_lengths"):
        rnnt_loss(logits, targets, Tl, torch.tensor([4, 1]))
    with pytest.raises(Pykaldi2Error, match="targets must be"):
        rnnt_loss(logits, targets[:, :2], Tl, Ul)
    with pytest.raises(Pykaldi2Error, match="reduction"):
        rnnt_loss(logits, targets, Tl, Ul, reduction="avg")
    with pytest.raises(Pykaldi2Error, match="blank"):
        rnnt_loss(logits, targets, Tl, Ul, blank=5)
