import pytest
import torch

from pykaldi2.nnet.blstm import Blstm, BlstmConfig
from pykaldi2.nnet.tdnn_v0 import TdnnfV0 as Tdnnf
from pykaldi2.nnet.tdnn_v0 import TdnnfV0Config as TdnnfConfig


def test_blstm_padding_never_leaks():
    torch.manual_seed(0)
    m = Blstm(BlstmConfig(input_dim=5, num_classes=7, num_layers=2, hidden=8, dropout=0.0)).eval()
    x = torch.randn(2, 12, 5)
    lengths = torch.tensor([12, 7])
    out = m(x, lengths)
    x2 = x.clone()
    x2[1, 7:] = 100.0  # garbage in the padding
    out2 = m(x2, lengths)
    assert out.shape == (2, 12, 7)
    torch.testing.assert_close(out[1, :7], out2[1, :7])
    alone = m(x[1:2, :7], torch.tensor([7]))
    torch.testing.assert_close(alone[0], out[1, :7], rtol=1e-5, atol=1e-6)


def test_blstm_padded_run_equals_packed_reference():
    """The BLSTM's padded run (one layer and direction at a time) against its packed-sequence
    reference on the same weights: logits, zeros past each length, and the gradients of the
    input and every weight, in training mode (no dropout, so both paths are deterministic)."""
    from pykaldi2.nnet.lstm import bidirectional_packed, bidirectional_padded

    torch.manual_seed(0)
    m = Blstm(BlstmConfig(input_dim=5, num_classes=7, num_layers=3, hidden=8, dropout=0.0))
    assert m.bidirectional_run is bidirectional_padded
    x = torch.randn(3, 40, 5)
    lengths = torch.tensor([40, 23, 2])
    x[1, 23:] = 30.0
    outs = []
    for run in (bidirectional_padded, bidirectional_packed):
        m.bidirectional_run = run
        xi = x.clone().requires_grad_()
        m.zero_grad()
        y = m(xi, lengths)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        outs.append([y.detach(), xi.grad] + [p.grad.clone() for p in m.parameters()])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not outs[0][1][1, 23:].any()  # no gradient reaches the padding
    # an empty utterance is refused, as the packed path refuses it (not silently given logits)
    for run in (bidirectional_padded, bidirectional_packed):
        m.bidirectional_run = run
        with pytest.raises((ValueError, RuntimeError), match=">= 1|greater than 0"):
            m(x, torch.tensor([40, 0, 2]))


def test_blstm_projection_shapes():
    from pykaldi2.nnet.lstm import bidirectional_packed

    m = Blstm(BlstmConfig(input_dim=4, num_classes=3, num_layers=2, hidden=16, proj=8))
    assert m.bidirectional_run is bidirectional_packed  # LSTMP: torch.lstm has no projection here
    assert m(torch.randn(3, 5, 4), torch.tensor([5, 4, 2])).shape == (3, 5, 3)


def test_tdnnf_v0_subsampling_and_orthonormal():
    torch.manual_seed(0)
    cfg = TdnnfConfig(
        input_dim=6,
        num_classes=9,
        hidden=32,
        bottleneck=8,
        num_layers=4,
        subsampling=3,
        subsample_at=1,
    )
    m = Tdnnf(cfg)
    out = m(torch.randn(2, 31, 6), torch.tensor([31, 20]))
    assert out.shape == (2, 11, 9)
    assert m.output_lengths(torch.tensor([31, 20])).tolist() == [11, 7]
    layer = m.layers[0]
    w = layer.linear.weight.reshape(layer.linear.weight.shape[0], -1)

    def dev(w):
        p = w @ w.T
        return (p / (p.trace() / p.shape[0]) - torch.eye(p.shape[0])).norm().item()

    before = dev(w)
    for _ in range(30):
        m.constrain_orthonormal()
    w = layer.linear.weight.reshape(layer.linear.weight.shape[0], -1)
    assert dev(w) < 0.1 * before
