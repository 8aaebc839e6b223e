"""The Kaldi-structured TDNN-F: its context against a brute-force receptive field, chunks with
exactly that context against whole utterances, padding kept out of the outputs and of the
batchnorm statistics, and the orthonormal constraint against a literal copy of Kaldi's update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pykaldi2.nnet.tdnn import MaskedBatchNorm1d, Tdnnf, TdnnfConfig, constrain_orthonormal


def small(**kw) -> Tdnnf:
    torch.manual_seed(0)
    cfg = dict(input_dim=5, num_classes=7, hidden=16, bottleneck=4, prefinal_dim=6,
               subsampling=3, xent_branch=True)  # fmt: skip
    return Tdnnf(TdnnfConfig(**{**cfg, **kw})).eval()


def receptive_field(m: Tdnnf, t_out: int, length: int = 90) -> tuple[int, int]:
    """Input frames (relative to output t_out's own frame) with a nonzero derivative of that
    output: the receptive field, by autograd."""
    x = torch.randn(1, length, m.cfg.input_dim, requires_grad=True)
    m(x, torch.tensor([length]), context_included=True)[0, t_out].sum().backward()
    touched = torch.nonzero(x.grad[0].abs().sum(1) > 0).flatten()
    center = m.left_context + m.cfg.subsampling * t_out
    return center - int(touched.min()), int(touched.max()) - center


@pytest.mark.parametrize("kw", [{}, {"input_deltas": False, "first_context": [-1, 0, 1]},
                                {"time_strides": [1, 1, 0, 3, 3], "subsampling": 3},
                                {"time_strides": [1, 2, 3], "subsampling": 1}])  # fmt: skip
def test_context_is_the_receptive_field(kw):
    m = small(**kw)
    assert receptive_field(m, 2) == (m.left_context, m.right_context)


def test_1j_context_and_size():
    m = Tdnnf(TdnnfConfig(input_dim=40, num_classes=2336, subsampling=3, xent_branch=True))
    # delta 4 + tdnnf2..4 (stride 1) 3 + tdnnf6..13 (stride 3) 24, each side
    assert (m.left_context, m.right_context) == (31, 31)
    # Kaldi's 1j has 5,210,944 parameters with its 100-dim i-vector input (+76,800)
    assert sum(p.numel() for p in m.parameters()) == 5210944 - 76800


def test_chunks_with_their_context_equal_the_whole_utterance():
    m = small()
    t = 50
    x = torch.randn(1, t, 5)
    whole = m(x, torch.tensor([t]))
    assert whole.shape == (1, -(-t // 3), 7)
    padded = m.pad_edges(x, torch.tensor([t]))
    left, right = m.left_context, m.right_context
    for first in (0, 4, 9):
        n = 5
        chunk = padded[:, 3 * first : 3 * first + left + 3 * (n - 1) + 1 + right]
        out = m(chunk, torch.tensor([chunk.shape[1]]), context_included=True)
        assert out.shape[1] == n
        torch.testing.assert_close(out, whole[:, first : first + n], rtol=1e-5, atol=1e-6)


def test_padding_never_leaks_into_outputs_or_batchnorm():
    m = small()
    x = torch.randn(2, 50, 5)
    lengths = torch.tensor([50, 31])
    out = m(x, lengths)
    y = x.clone()
    y[1, 31:] = 100.0
    torch.testing.assert_close(m(y, lengths)[1, :11], out[1, :11])
    torch.testing.assert_close(m(x[1:2, :31], torch.tensor([31]))[0], out[1, :11],
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    # training mode: batch statistics over the valid frames only
    m.train()
    a = m(x, lengths)
    b = m(y, lengths)
    torch.testing.assert_close(a[:, :11], b[:, :11])


def test_masked_batchnorm_equals_batchnorm_of_the_valid_frames():
    bn = MaskedBatchNorm1d(3).train()
    ref = torch.nn.BatchNorm1d(3, eps=1e-3, affine=False).train()
    x = torch.randn(2, 3, 10)
    mask = torch.tensor([[True] * 10, [True] * 6 + [False] * 4])
    out = bn(x, mask)
    valid = torch.cat([x[0], x[1, :, :6]], 1)[None]  # (1, 3, 16)
    want = ref(valid)[0]
    torch.testing.assert_close(torch.cat([out[0], out[1, :, :6]], 1), want)
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)


def kaldi_constrain(m: np.ndarray) -> np.ndarray:
    """ConstrainOrthonormalInternal with a floating scale, line by line (rows <= cols)."""
    p = m @ m.T
    tr_p, tr_pp = np.trace(p), np.trace(p @ p.T)
    scale = np.sqrt(tr_pp / tr_p)
    speed = 0.125
    ratio = tr_pp * p.shape[0] / (tr_p * tr_p)
    if ratio > 1.02:
        speed *= 0.5
        if ratio > 1.1:
            speed *= 0.5
    p = p - scale * scale * np.eye(p.shape[0])
    alpha = speed / (scale * scale)
    return m + (-4.0 * alpha) * (p @ m)


def test_orthonormal_constraint_is_kaldis():
    rng = np.random.default_rng(0)
    for shape in [(4, 12), (12, 4)]:  # the tall one is done on its transpose, as Kaldi
        m = rng.normal(size=shape)
        w = torch.tensor(m)
        constrain_orthonormal(w)
        want = kaldi_constrain(m) if shape[0] <= shape[1] else kaldi_constrain(m.T).T
        np.testing.assert_allclose(w.numpy(), want, rtol=1e-10)
    w = torch.tensor(rng.normal(size=(6, 20)) * 3.0)
    for _ in range(200):
        constrain_orthonormal(w)
    p = (w @ w.T).numpy()
    # semi-orthogonal up to a free scale: P = scale^2 I
    np.testing.assert_allclose(p / p[0, 0], np.eye(6), atol=1e-3)


def test_l2_penalty_counts_each_weight_with_its_constant():
    m = small(l2=0.5, output_l2=0.25)
    want = 0.0
    for name, p in m.named_parameters():
        if p.dim() >= 2:
            want += (0.25 if name.startswith("output") else 0.5) * float((p * p).sum().detach())
    assert float(m.l2_penalty()) == pytest.approx(want, rel=1e-6)
