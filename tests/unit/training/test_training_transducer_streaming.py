"""Streaming transducer decoding equals offline decoding: the streaming front end (sliding CMN,
frame stacking) against the offline functions, and `pykaldi2 stream` on an AN4 file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pykaldi2.decoding.streaming import (
    FrameStackStream,
    SlidingCmnStream,
    TransducerStream,
    load_transducer,
    stream_file,
    transcribe_features,
)
from pykaldi2.features.cmvn import SlidingCmnConfig, apply_cmvn_sliding
from pykaldi2.training.transducer import stack_frames


def _chunks(x, rng, max_len=7):
    i = 0
    while i < len(x):
        n = int(rng.integers(0, max_len + 1))  # empty chunks included
        yield x[i : i + n]
        i += n


@pytest.mark.parametrize("norm_vars", [False, True])
@pytest.mark.parametrize("num", [3, 10, 57])
def test_sliding_cmn_stream_equals_offline(norm_vars, num):
    cfg = SlidingCmnConfig(cmn_window=12, min_window=5, norm_vars=norm_vars)
    rng = np.random.default_rng(num)
    x = rng.normal(size=(num, 4)).astype(np.float32) + 3.0
    s = SlidingCmnStream(cfg)
    parts = [s.accept(c) for c in _chunks(x, rng)] + [s.accept(np.zeros((0, 4)), final=True)]
    got = np.concatenate([p for p in parts if p.size])
    np.testing.assert_allclose(got, apply_cmvn_sliding(x, cfg), rtol=1e-5, atol=1e-5)
    assert len(s.buf) <= cfg.cmn_window + 8  # bounded memory


@pytest.mark.parametrize("stack,sub", [(1, 1), (3, 3), (2, 3), (4, 2)])
def test_frame_stack_stream_equals_offline(stack, sub):
    rng = np.random.default_rng(stack * 10 + sub)
    x = rng.normal(size=(23, 3)).astype(np.float32)
    s = FrameStackStream(stack, sub)
    parts = [s.accept(c) for c in _chunks(x, rng)] + [s.accept(np.zeros((0, 3)), final=True)]
    got = np.concatenate([p for p in parts if p.size])
    np.testing.assert_array_equal(got, stack_frames(x, stack, sub))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A random tiny transducer model dir with an fbank front end (16 kHz, 10 mel bins)."""
    from pykaldi2.features.extractors import FbankConfig
    from pykaldi2.lang.tokenizer import TokenizerConfig, train_tokenizer
    from pykaldi2.nnet.transducer import Transducer, TransducerConfig
    from pykaldi2.training.transducer import TransducerFrontendConfig, save_transducer_dir

    root = tmp_path_factory.mktemp("rnnt")
    (root / "data").mkdir()
    (root / "data/text").write_text("u1 ONE TWO THREE\nu2 FOUR FIVE SIX\nu3 SEVEN EIGHT NINE\n")
    tok = train_tokenizer([root / "data"], root / "tok", TokenizerConfig(vocab_size=20))
    fe = TransducerFrontendConfig(
        cmvn="sliding", sliding=SlidingCmnConfig(cmn_window=40, min_window=20), frame_stack=3
    )
    torch.manual_seed(0)
    mcfg = TransducerConfig.preset(
        "tiny", in_feats=30, vocab_size=tok.vocab_size, enc_n_hid=24, pred_n_hid=8
    )
    model = Transducer(mcfg)
    with torch.no_grad():
        model.joiner.out.bias[0] -= 1.0  # fewer blanks: non-trivial transcripts
    fbank = FbankConfig(num_mel_bins=10).to_dict()
    save_transducer_dir(root / "final", model.state_dict(), mcfg, tok.model_file, fe, fbank)
    return root / "final"


def test_stream_equals_offline_on_an4(tiny_model_dir, an4_dir, one_thread, capsys):
    from pykaldi2.cli.main import main
    from pykaldi2.data.audio import read_audio
    from pykaldi2.features.extractors import config_from_dict, make_extractor

    bundle = load_transducer(tiny_model_dir)
    fe = bundle.frontend
    extractor = make_extractor(config_from_dict(bundle.features))
    files = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[:3]
    for f in files:
        x, sr = read_audio(str(f), target_sr=16000)
        raw = extractor.compute(x, sr)
        feats = stack_frames(apply_cmvn_sliding(raw, fe.sliding), fe.frame_stack, 3)
        offline = transcribe_features(bundle, {"u": feats})["u"]
        assert len(offline) > 3  # the random model says something
        text = bundle.tokenizer.decode(offline)
        # audio in 0.1 s and 0.37 s chunks, and raw features in uneven chunks
        for chunk in (0.1, 0.37):
            assert list(stream_file(bundle, f, chunk_seconds=chunk))[-1] == text
        s = TransducerStream(bundle)
        rng = np.random.default_rng(0)
        for c in _chunks(raw, rng, max_len=13):
            s.accept_features(c)
        assert s.finish() == text and s.token_ids == offline
    assert main(["stream", "--quiet", str(tiny_model_dir), str(files[-1])]) == 0
    assert capsys.readouterr().out.strip() == text


def test_load_model_api(tiny_model_dir, an4_dir, one_thread):
    import pykaldi2.api as api

    f = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[0]
    bundle = load_transducer(tiny_model_dir)
    expected = list(stream_file(bundle, f))[-1]
    assert api.load_model(tiny_model_dir).transcribe([f]) == [expected]
