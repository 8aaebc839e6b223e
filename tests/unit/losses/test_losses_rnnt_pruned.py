"""Pruned RNN-T: the simple loss, the pruning bounds and the pruned loss against the full loss."""

from __future__ import annotations

import pytest
import torch

from pykaldi2.losses.rnnt import rnnt_loss
from pykaldi2.losses.rnnt_pruned import (
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    pruned_rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
)
from pykaldi2.nnet.transducer import Transducer, TransducerConfig
from pykaldi2.utils.errors import Pykaldi2Error

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _lengths(B, T, U, g):
    Tl = torch.randint(max(1, U // 2), T + 1, (B,), generator=g)
    Ul = torch.randint(0, U + 1, (B,), generator=g)
    Tl[0], Ul[0] = T, U
    return Tl, Ul


def test_simple_loss_equals_full_loss_of_additive_joiner():
    g = torch.Generator().manual_seed(0)
    B, T, U, V = 3, 6, 4, 7
    am = torch.randn(B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    lm = torch.randn(B, U + 1, V, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, V, (B, U), generator=g)
    Tl, Ul = _lengths(B, T, U, g)
    simple, g_blank, g_emit = rnnt_loss_simple(am, lm, targets, Tl, Ul, reduction="none")
    full = rnnt_loss(am[:, :, None] + lm[:, None], targets, Tl, Ul, reduction="none")
    torch.testing.assert_close(simple, full)
    ga = torch.autograd.grad(simple.sum(), (am, lm))
    gf = torch.autograd.grad(full.sum(), (am, lm))
    for a, b in zip(ga, gf):
        torch.testing.assert_close(a, b)
    assert g_blank.shape == (B, T, U + 1) and g_emit.shape == (B, T, U)
    assert not g_blank.requires_grad


def _smoothed_reference(am, lm, targets, Tl, Ul, lm_scale, am_scale):
    """k2's rnnt_loss_smoothed written out on the full (B, T, U+1, V) lattice: each arc's
    log-prob mixes the joint, the predictor-only and the encoder-only log-softmax."""
    from pykaldi2.losses.rnnt import rnnt_loss_from_lattice

    B, T, V = am.shape
    U = targets.shape[1]
    joint = torch.log_softmax(am[:, :, None] + lm[:, None], -1)  # (B, T, U+1, V)
    lm_only = torch.log_softmax(lm, -1)[:, None].expand(B, T, U + 1, V)
    am_only = torch.log_softmax(am, -1)[:, :, None].expand(B, T, U + 1, V)
    lp = (1 - lm_scale - am_scale) * joint + lm_scale * lm_only + am_scale * am_only
    y = targets[:, None, :, None].expand(B, T, U, 1)
    emit = lp[:, :, :U].gather(3, y).squeeze(-1)
    return rnnt_loss_from_lattice(lp[..., 0], emit, Tl, Ul, reduction="none")


@pytest.mark.parametrize("lm_scale, am_scale", [(0.25, 0.0), (0.1, 0.2)])
def test_smoothed_simple_loss_equals_its_full_lattice_reference(lm_scale, am_scale):
    g = torch.Generator().manual_seed(5)
    B, T, U, V = 3, 6, 4, 7
    am = torch.randn(B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    lm = torch.randn(B, U + 1, V, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, V, (B, U), generator=g)
    Tl, Ul = _lengths(B, T, U, g)
    ours, *_ = rnnt_loss_simple(am, lm, targets, Tl, Ul, reduction="none",
                                lm_only_scale=lm_scale, am_only_scale=am_scale)  # fmt: skip
    ref = _smoothed_reference(am, lm, targets, Tl, Ul, lm_scale, am_scale)
    torch.testing.assert_close(ours, ref)
    plain, *_ = rnnt_loss_simple(am, lm, targets, Tl, Ul, reduction="none")
    assert not torch.allclose(ours, plain)  # the smoothing changes the loss
    for a, b in zip(torch.autograd.grad(ours.sum(), (am, lm)),
                    torch.autograd.grad(ref.sum(), (am, lm))):  # fmt: skip
        torch.testing.assert_close(a, b)
    with pytest.raises(Pykaldi2Error, match="sum < 1"):
        rnnt_loss_simple(am, lm, targets, Tl, Ul, lm_only_scale=0.6, am_only_scale=0.4)


def _check_ranges(s, Tl, Ul, R):
    for b in range(s.shape[0]):
        T, U = int(Tl[b]), int(Ul[b])
        sb = s[b, :T]
        assert int(sb[0]) == 0
        assert torch.all(sb[1:] >= sb[:-1])
        assert torch.all(sb[1:] - sb[:-1] <= R - 1)
        assert int(sb[-1]) + R - 1 >= U
        assert torch.all(sb >= 0) and torch.all(sb <= max(U - R + 1, 0))


@pytest.mark.parametrize("R", [2, 3, 6])
def test_prune_ranges_are_valid_bands(R):
    g = torch.Generator().manual_seed(R)
    B, T, U = 4, 9, 10
    g_blank = torch.rand(B, T, U + 1, generator=g)
    g_emit = torch.rand(B, T, U, generator=g)
    Tl = torch.tensor([9, 7, 6, 9])
    Ul = torch.tensor([9, 6, 3, 0])  # U_b <= T_b (R - 1) even for R = 2
    s = get_rnnt_prune_ranges(g_blank, g_emit, Tl, Ul, R)
    assert s.shape == (B, T) and s.dtype == torch.long
    _check_ranges(s, Tl, Ul, R)


def test_prune_ranges_follow_the_occupancy():
    """A single path of occupancy 1: every band must contain the path's nodes."""
    T, U, R = 6, 5, 3
    g_blank = torch.zeros(1, T, U + 1)
    g_emit = torch.zeros(1, T, U)
    path_u = [0, 1, 1, 3, 4, 5]  # column of the path at each frame (emits in between)
    for t, u in enumerate(path_u):
        g_blank[0, t, u] = 1.0
        start = path_u[t - 1] if t else 0
        for k in range(start, u):
            g_emit[0, t, k] = 1.0
    s = get_rnnt_prune_ranges(g_blank, g_emit, torch.tensor([T]), torch.tensor([U]), R)
    for t, u in enumerate(path_u):
        assert int(s[0, t]) <= u < int(s[0, t]) + R


def test_prune_ranges_reject_impossible_lengths():
    with pytest.raises(Pykaldi2Error, match="raise s_range"):
        get_rnnt_prune_ranges(
            torch.rand(1, 2, 6), torch.rand(1, 2, 5), torch.tensor([2]), torch.tensor([5]), 2
        )


def _joiner_setup(seed, B=3, T=7, U=4, V=6, J=5):
    g = torch.Generator().manual_seed(seed)
    enc_p = torch.randn(B, T, J, generator=g, dtype=torch.float64, requires_grad=True)
    pred_p = torch.randn(B, U + 1, J, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(J, V, generator=g, dtype=torch.float64)
    targets = torch.randint(1, V, (B, U), generator=g)
    Tl, Ul = _lengths(B, T, U, g)
    return enc_p, pred_p, W, targets, Tl, Ul


def test_pruned_loss_with_a_full_band_equals_full_loss():
    enc_p, pred_p, W, targets, Tl, Ul = _joiner_setup(1)
    U = targets.shape[1]
    full_logits = torch.tanh(enc_p[:, :, None] + pred_p[:, None]) @ W
    full = rnnt_loss(full_logits, targets, Tl, Ul, reduction="none")
    R = U + 3  # wider than the lattice: columns past U are dropped
    ranges = torch.zeros(enc_p.shape[:2], dtype=torch.long)
    e, p = do_rnnt_pruning(enc_p, pred_p, ranges, R)
    pruned = rnnt_loss_pruned(torch.tanh(e + p) @ W, targets, ranges, Tl, Ul, reduction="none")
    torch.testing.assert_close(pruned, full)
    ga = torch.autograd.grad(pruned.sum(), (enc_p, pred_p))
    gf = torch.autograd.grad(full.sum(), (enc_p, pred_p))
    for a, b in zip(ga, gf):
        torch.testing.assert_close(a, b)


def test_pruned_loss_narrow_band_bounds_full_loss_and_gradcheck():
    enc_p, pred_p, W, targets, Tl, Ul = _joiner_setup(2)
    full_logits = torch.tanh(enc_p[:, :, None] + pred_p[:, None]) @ W
    full = rnnt_loss(full_logits, targets, Tl, Ul, reduction="none")
    lp = torch.log_softmax(full_logits.detach(), -1)
    _, g_blank, g_emit = rnnt_loss_simple(
        enc_p.detach() @ W, pred_p.detach() @ W, targets, Tl, Ul, reduction="none"
    )
    R = 2
    ranges = get_rnnt_prune_ranges(g_blank, g_emit, Tl, Ul, R)
    _check_ranges(ranges, Tl, Ul, R)
    e, p = do_rnnt_pruning(enc_p, pred_p, ranges, R)
    pruned = rnnt_loss_pruned(torch.tanh(e + p) @ W, targets, ranges, Tl, Ul, reduction="none")
    assert torch.all(torch.isfinite(pruned))
    assert torch.all(pruned >= full - 1e-9)  # fewer paths, less probability
    assert torch.any(pruned > full + 1e-6)  # and the band really removed some
    assert lp.shape[2] == targets.shape[1] + 1

    def f(ep, pp):
        e, p = do_rnnt_pruning(ep, pp, ranges, R)
        return rnnt_loss_pruned(torch.tanh(e + p) @ W, targets, ranges, Tl, Ul, reduction="none")

    assert torch.autograd.gradcheck(f, (enc_p, pred_p))


def test_pruned_rnnt_loss_trains_a_model():
    torch.manual_seed(0)
    cfg = TransducerConfig.preset("tiny", simple_proj=True, enc_n_hid=16, joint_n_hid=16)
    m = Transducer(cfg)
    feats = torch.randn(2, 12, cfg.in_feats)
    lengths = torch.tensor([12, 10])
    targets = torch.tensor([[1, 2, 3], [4, 5, 0]])
    target_lengths = torch.tensor([3, 2])
    opt = torch.optim.Adam(m.parameters(), lr=0.03)
    losses = []
    for _ in range(40):
        simple, pruned = pruned_rnnt_loss(m, feats, lengths, targets, target_lengths, s_range=3)
        loss = 0.5 * simple + pruned
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    with pytest.raises(Pykaldi2Error, match="simple_proj"):
        pruned_rnnt_loss(
            Transducer(TransducerConfig.preset("tiny")), feats, lengths, targets, target_lengths
        )
