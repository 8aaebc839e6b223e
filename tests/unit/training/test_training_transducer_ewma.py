"""Myrtle's EWMA feature normalization: the vectorized recursion against the per-frame loop,
the stream (chunks) against the offline computation, the warm start and the front end option."""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.features.ewma_norm import (
    EwmaNormConfig,
    EwmaNormStream,
    apply_ewma_norm,
    apply_ewma_norm_reference,
    ewma_warm_start,
)
from pykaldi2.utils.errors import DataError, Pykaldi2Error


def _feats(seed: int, num: int = 200, dim: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    drift = np.linspace(0.0, 3.0, num)[:, None]  # a level change the EWMA has to follow
    return (rng.normal(size=(num, dim)) * 2.0 + 10.0 + drift).astype(np.float32)


def _state(dim: int = 6):
    return np.full(dim, 9.0), np.linspace(1.0, 5.0, dim)


@pytest.mark.parametrize("alpha", [0.0, 0.001, 0.05, 0.5])
def test_ewma_vectorized_equals_reference(alpha):
    x = _feats(1)
    got, (m, v) = apply_ewma_norm(x, alpha, _state())
    ref, (rm, rv) = apply_ewma_norm_reference(x, alpha, _state())
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m, rm, rtol=1e-10)
    np.testing.assert_allclose(v, rv, rtol=1e-10)
    if alpha == 0.0:  # the warm start alone: plain global CMVN
        np.testing.assert_allclose(got, (x - 9.0) / np.sqrt(_state()[1]), rtol=1e-5, atol=1e-5)
    else:  # the statistics moved towards the data (mean about 11.5 at the end)
        assert np.all(m > 9.0)


def test_ewma_stream_equals_offline_chunkwise():
    x = _feats(2, num=301)
    cfg = EwmaNormConfig(alpha=0.01, mean=_state()[0], var=_state()[1])
    offline, _ = apply_ewma_norm(x, cfg.alpha, cfg.initial_state())
    rng = np.random.default_rng(0)
    s = EwmaNormStream(cfg)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(0, 9))  # empty chunks and single frames included
        out = s.accept(x[i : i + n])
        assert out.shape == (len(x[i : i + n]), 6)  # no delay: every frame out at once
        parts.append(out)
        i += n
    parts.append(s.accept(np.zeros((0, 6)), final=True))
    np.testing.assert_allclose(np.concatenate(parts), offline, rtol=1e-5, atol=1e-5)
    # and the reference loop run chunk by chunk with the carried state agrees too
    state, ref = cfg.initial_state(), []
    for a in range(0, len(x), 50):
        y, state = apply_ewma_norm_reference(x[a : a + 50], cfg.alpha, state)
        ref.append(y)
    np.testing.assert_allclose(np.concatenate(ref), offline, rtol=1e-5, atol=1e-5)


def test_ewma_warm_start_is_global_stats():
    parts = [_feats(3, 50), _feats(4, 70)]
    mean, var = ewma_warm_start(parts)
    allx = np.concatenate(parts).astype(np.float64)
    np.testing.assert_allclose(mean, allx.mean(0), rtol=1e-10)
    np.testing.assert_allclose(var, allx.var(0), rtol=1e-8)


def test_ewma_config_errors():
    with pytest.raises(Pykaldi2Error, match="alpha"):
        EwmaNormConfig(alpha=1.0)
    with pytest.raises(Pykaldi2Error, match="var must be > 0"):
        EwmaNormConfig(mean=[0.0], var=[0.0])
    with pytest.raises(Pykaldi2Error, match="no warm-start"):
        EwmaNormConfig().initial_state()
    with pytest.raises(DataError, match=r"expected \(T, 6\)"):
        apply_ewma_norm(np.zeros((4, 5)), 0.1, _state())


def test_frontend_ewma_option_and_warm_start(tmp_path):
    """``frontend.cmvn: ewma`` in a train-transducer config: the warm start is filled from the
    training data (and saved resolved), and transform = EWMA then stacking."""
    import kaldiio

    from pykaldi2.features.transducer_frontend import TransducerFrontendConfig, stack_frames
    from pykaldi2.training.transducer import TrainTransducerConfig
    from pykaldi2.training.transducer_egs import warm_start_ewma

    utts = {f"spk1-u{i}": _feats(10 + i, 40 + i) for i in range(3)}
    data = tmp_path / "data"
    data.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{data}/feats.ark,{data}/feats.scp") as w:
        for u, x in utts.items():
            w(u, x)
    cfg = TrainTransducerConfig.from_dict(
        {"train_data": [str(data)], "frontend": {"cmvn": "ewma", "ewma": {"alpha": 0.01}}}
    )
    warm_start_ewma(cfg)
    mean, var = ewma_warm_start(utts.values())
    np.testing.assert_allclose(cfg.frontend.ewma.mean, mean)
    cfg.save(tmp_path / "config.yaml")
    again = TrainTransducerConfig.load(tmp_path / "config.yaml")
    assert again.frontend.ewma.var == pytest.approx(var.tolist())
    fe: TransducerFrontendConfig = again.frontend
    assert fe.pipeline().cmvn == "none"
    x = utts["spk1-u1"]
    normed, _ = apply_ewma_norm_reference(x, 0.01, (mean, var))
    np.testing.assert_allclose(fe.transform(x), stack_frames(normed, 3, 3), rtol=1e-5, atol=1e-5)


def test_decode_onnx_equals_pytorch_with_ewma(tmp_path, one_thread, capsys):
    """A random tiny model with the EWMA front end: decode-transducer (PyTorch), export-onnx,
    decode-onnx --compare: every transcript equal."""
    import kaldiio
    import torch

    from pykaldi2.cli.main import main
    from pykaldi2.features.transducer_frontend import TransducerFrontendConfig
    from pykaldi2.lang.tokenizer import TokenizerConfig, train_tokenizer
    from pykaldi2.nnet.transducer import Transducer, TransducerConfig
    from pykaldi2.training.model_dir import save_transducer_dir

    pytest.importorskip("onnxruntime")
    data = tmp_path / "data"
    data.mkdir()
    words = ["ONE TWO", "THREE FOUR FIVE", "SIX", "SEVEN EIGHT", "NINE TEN ONE", "TWO"]
    (data / "text").write_text("".join(f"s-u{i} {w}\n" for i, w in enumerate(words)))
    with kaldiio.WriteHelper(f"ark,scp:{data}/feats.ark,{data}/feats.scp") as w:
        for i in range(len(words)):
            w(f"s-u{i}", _feats(20 + i, 30 + 17 * i))
    tok = train_tokenizer([data], tmp_path / "tok", TokenizerConfig(vocab_size=24))
    mean, var = ewma_warm_start([_feats(99, 100)])
    ewma = EwmaNormConfig(alpha=0.01, mean=mean, var=var)
    fe = TransducerFrontendConfig(cmvn="ewma", ewma=ewma, frame_stack=3, frame_subsample=3)
    torch.manual_seed(0)
    mcfg = TransducerConfig.preset(
        "tiny", in_feats=18, vocab_size=tok.vocab_size, enc_n_hid=16, pred_n_hid=8
    )
    model = Transducer(mcfg)
    with torch.no_grad():
        model.joiner.out.bias[0] -= 2.0  # fewer blanks: non-empty transcripts
    final = tmp_path / "final"
    save_transducer_dir(final, model.state_dict(), mcfg, tok.model_file, fe, {})
    assert main(["decode-transducer", str(final), str(data), str(tmp_path / "dec")]) == 0
    assert main(["export-onnx", str(final), str(tmp_path / "onnx")]) == 0
    capsys.readouterr()
    hyp = tmp_path / "dec/hyp.txt"
    args = ["decode-onnx", "--compare", str(hyp), str(tmp_path / "onnx"), str(data)]
    assert main([*args, str(tmp_path / "dec_onnx")]) == 0
    assert "6/6 transcripts equal, 0 word differences" in capsys.readouterr().out
    assert (tmp_path / "dec_onnx/hyp.txt").read_text() == hyp.read_text()
    texts = [line.partition(" ")[2] for line in hyp.read_text().splitlines()]
    assert sum(map(len, texts)) > 30 and len(set(texts)) > 1  # non-trivial transcripts
    assert (tmp_path / "dec_onnx/wer").read_text().startswith("%WER")
