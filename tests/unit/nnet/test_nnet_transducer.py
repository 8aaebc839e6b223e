"""The LSTM transducer: shapes, presets, padding, streaming equivalence, configs."""

from __future__ import annotations

import pytest
import torch

from pykaldi2.nnet.transducer import Transducer, TransducerConfig
from pykaldi2.nnet.transducer.config import PRESETS
from pykaldi2.utils.errors import Pykaldi2Error

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(**kw) -> Transducer:
    torch.manual_seed(0)
    return Transducer(TransducerConfig.preset("tiny", **kw)).eval()


@pytest.mark.parametrize("k,post", [(1, 1), (2, 1), (3, 2), (2, 0)])
def test_shapes_and_lengths(k, post):
    m = _model(enc_stack_time_factor=k, enc_post_rnn_layers=post, enc_layer_norm=True)
    feats = torch.randn(3, 11, 8)
    lengths = torch.tensor([11, 7, 1])
    targets = torch.tensor([[1, 2, 3, 4], [5, -1, -1, -1], [2, 2, 0, 0]])
    logits, logit_lengths = m(feats, lengths, targets)
    Tp = -(-11 // k)
    assert logits.shape == (3, Tp, 5, 6)
    assert logit_lengths.tolist() == [-(-n // k) for n in (11, 7, 1)]


def test_padding_never_leaks_into_valid_frames():
    m = _model(enc_stack_time_factor=2)
    feats = torch.randn(2, 10, 8)
    lengths = torch.tensor([10, 6])
    enc, enc_len, _ = m.encoder(feats, lengths)
    feats2 = feats.clone()
    feats2[1, 6:] = 50.0
    enc2, _, _ = m.encoder(feats2, lengths)
    torch.testing.assert_close(enc[1, : enc_len[1]], enc2[1, : enc_len[1]])
    alone, _, _ = m.encoder(feats[1:, :6], lengths[1:])
    torch.testing.assert_close(alone[0], enc[1, :3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunks", [[3, 4, 5, 4], [1] * 16, [7, 9], [16]])
def test_streaming_chunks_equal_offline(chunks):
    m = _model(enc_stack_time_factor=3, enc_post_rnn_layers=2, enc_layer_norm=True)
    feats = torch.randn(2, 16, 8)
    full, full_len, _ = m.encoder(feats, torch.tensor([16, 16]))
    outs, state, start = [], None, 0
    for i, n in enumerate(chunks):
        last = i == len(chunks) - 1
        x = feats[:, start : start + n]
        out, out_len, state = m.encoder(x, torch.tensor([n, n]), state, final=last)
        assert out.shape[1] == int(out_len[0])
        outs.append(out)
        start += n
    got = torch.cat(outs, dim=1)
    assert got.shape == full.shape and int(full_len[0]) == 6
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-6)


def test_predictor_sos_and_step_match_forward():
    m = _model()
    targets = torch.tensor([[3, 1, 4], [5, 2, 0]])
    pred, _ = m.predictor(targets)
    assert pred.shape == (2, 4, 6)
    assert torch.all(m.predictor.embed.weight[m.blank] == 0)
    tok = torch.full((2,), m.blank)
    out, st = m.predictor.step(tok)
    torch.testing.assert_close(out, pred[:, 0])
    for u in range(3):
        out, st = m.predictor.step(targets[:, u], st)
        torch.testing.assert_close(out, pred[:, u + 1])


def test_forget_gate_bias_and_param_counts():
    m = Transducer(TransducerConfig.preset("tiny", forget_gate_bias=1.0))
    H = m.cfg.enc_n_hid
    b = m.encoder.pre_rnn.bias_ih_l0
    assert torch.all(b[H : 2 * H] == 1.0)
    assert torch.all(m.encoder.pre_rnn.bias_hh_l0[H : 2 * H] == 0.0)
    n = m.num_params()
    assert n["total"] == sum(p.numel() for p in m.parameters())
    assert n["total"] == n["encoder"] + n["predictor"] + n["joiner"]
    assert "total" in m.summary()
    with torch.device("meta"):
        testing = Transducer(PRESETS["testing"]).num_params()["total"]
    assert 40e6 < testing < 55e6  # Myrtle's testing model is 49M


def test_config_roundtrip_and_validation():
    cfg = TransducerConfig.preset("base", enc_layer_norm=True)
    assert TransducerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(Pykaldi2Error, match="unknown keys"):
        TransducerConfig.from_dict({"enc_n_hidden": 3})
    with pytest.raises(Pykaldi2Error, match="blank"):
        TransducerConfig(vocab_size=4, blank=4)
    with pytest.raises(Pykaldi2Error, match="joint_activation"):
        TransducerConfig(joint_activation="gelu2")
    with pytest.raises(Pykaldi2Error, match="unknown transducer size"):
        TransducerConfig.preset("huge")
    assert TransducerConfig(joint_activation="tanh").joint_activation == "tanh"


def test_ctc_head():
    cfg = TransducerConfig.preset("tiny", ctc_head=True)
    m = Transducer(cfg)
    enc, _, _ = m.encode_and_predict(torch.randn(2, 6, 8), torch.tensor([6, 4]), torch.ones(2, 3))
    lp = m.ctc_log_probs(enc)
    assert lp.shape == (2, 3, cfg.vocab_size)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 3))
    assert m.num_params()["ctc_head"] == (m.encoder.output_dim + 1) * cfg.vocab_size
    with pytest.raises(ValueError, match="no CTC head"):
        Transducer(TransducerConfig.preset("tiny")).ctc_log_probs(enc)


@pytest.mark.parametrize("k,post", [(2, 1), (3, 2), (2, 0)])
def test_bidirectional_encoder_is_exact_per_utterance(k, post):
    """Bidirectional LSTMs on a padded batch: each utterance's outputs equal those of the
    utterance alone, whatever the padding holds (the backward pass starts at its own last
    frame)."""
    m = _model(enc_bidirectional=True, enc_stack_time_factor=k, enc_post_rnn_layers=post,
               enc_layer_norm=True)  # fmt: skip
    with torch.no_grad():  # LayerNorm biases that are not zero, as after training
        for n in (m.encoder.pre_norm, m.encoder.post_norm):
            if isinstance(n, torch.nn.LayerNorm):
                n.bias.normal_()
    assert m.encoder.output_dim == 16 * (1 if post else k)
    feats = torch.randn(3, 13, 8)
    lengths = torch.tensor([13, 7, 2])
    feats[1, 7:] = 50.0
    enc, enc_len, _ = m.encoder(feats, lengths)
    assert enc_len.tolist() == [-(-n // k) for n in (13, 7, 2)]
    for b in range(3):
        n = int(lengths[b])
        alone, alone_len, _ = m.encoder(feats[b : b + 1, :n], lengths[b : b + 1])
        assert int(alone_len[0]) == int(enc_len[b])
        torch.testing.assert_close(alone[0], enc[b, : enc_len[b]], rtol=1e-5, atol=1e-5)
    logits, _ = m(feats, lengths, torch.tensor([[1, 2], [3, 0], [4, 0]]))
    assert logits.shape == (3, enc.shape[1], 3, 6)
    with pytest.raises(ValueError, match="cannot stream"):
        m.encoder(feats, lengths, final=False)


@pytest.mark.parametrize("layers,dropout", [(1, 0.0), (2, 0.0), (3, 0.3)])
def test_bidirectional_padded_equals_packed(layers, dropout):
    """bidirectional_padded (padded tensors, one direction at a time) against the packed
    sequence through the same nn.LSTM: outputs, zeros past each length, and the gradients of
    inputs and weights; in training mode with dropout between layers the same RNG draws give
    the same masks only on the padded path, so there it is compared with itself across seeds
    (the dropout acts) and in eval mode with the reference."""
    from pykaldi2.nnet.lstm import bidirectional_packed, bidirectional_padded, reverse_padded
    from pykaldi2.nnet.transducer.lstm import lstm_stack

    torch.manual_seed(0)
    rnn = lstm_stack(5, 4, layers, dropout, 1.0, bidirectional=True)
    x = torch.randn(3, 9, 5)
    lengths = torch.tensor([9, 4, 1])
    x[1, 4:] = 50.0
    rev = reverse_padded(x, lengths)
    assert torch.equal(rev[1, :4], x[1, :4].flip(0)) and torch.equal(rev[1, 4:], x[1, 4:])
    assert torch.equal(reverse_padded(rev, lengths), x)
    rnn.train(dropout == 0.0)  # without dropout training mode is deterministic: compare it too
    outs = []
    for run in (bidirectional_padded, bidirectional_packed):
        xi = x.clone().requires_grad_()
        rnn.zero_grad()
        y = run(rnn, xi, lengths)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        outs.append([y.detach(), xi.grad] + [p.grad.clone() for p in rnn.parameters()])
    assert outs[0][0].shape == (3, 9, 8) and not outs[0][0][1, 4:].any()
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if dropout:
        rnn.train()
        torch.manual_seed(1)
        y1 = bidirectional_padded(rnn, x, lengths)
        torch.manual_seed(2)
        y2 = bidirectional_padded(rnn, x, lengths)
        assert not torch.allclose(y1, y2)
