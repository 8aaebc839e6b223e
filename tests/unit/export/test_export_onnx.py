"""ONNX export of a transducer: onnxruntime greedy transcripts equal PyTorch's (AN4 audio)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="pip install onnx onnxruntime")

from pykaldi2.cli.main import main  # noqa: E402
from pykaldi2.decoding.streaming import load_transducer, transcribe_features  # noqa: E402
from pykaldi2.features.cmvn import apply_cmvn_sliding  # noqa: E402
from pykaldi2.features.transducer_frontend import stack_frames


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import torch

    from pykaldi2.features.cmvn import SlidingCmnConfig
    from pykaldi2.features.extractors import FbankConfig
    from pykaldi2.features.transducer_frontend import TransducerFrontendConfig
    from pykaldi2.lang.tokenizer import TokenizerConfig, train_tokenizer
    from pykaldi2.nnet.transducer import Transducer, TransducerConfig
    from pykaldi2.training.model_dir import save_transducer_dir

    root = tmp_path_factory.mktemp("onnx")
    (root / "data").mkdir()
    (root / "data/text").write_text("a GO FORWARD TEN\nb STOP ENTER NO\nc RUBOUT YES\n")
    tok = train_tokenizer([root / "data"], root / "tok", TokenizerConfig(vocab_size=18))
    torch.manual_seed(1)
    mcfg = TransducerConfig.preset(
        "tiny", in_feats=24, vocab_size=tok.vocab_size, enc_n_hid=12, enc_pre_rnn_layers=2
    )
    model = Transducer(mcfg)
    with torch.no_grad():
        model.joiner.out.bias[0] -= 1.0
    fe = TransducerFrontendConfig(sliding=SlidingCmnConfig(cmn_window=50, min_window=20))
    fbank = FbankConfig(num_mel_bins=8).to_dict()
    save_transducer_dir(root / "final", model.state_dict(), mcfg, tok.model_file, fe, fbank)
    return root


def test_onnx_greedy_equals_pytorch(tiny_dir, an4_dir, one_thread):
    from pykaldi2.data.audio import read_audio
    from pykaldi2.export.onnx import OnnxTransducer
    from pykaldi2.features.extractors import config_from_dict, make_extractor

    out = tiny_dir / "onnx"
    assert main(["export-onnx", str(tiny_dir / "final"), str(out)]) == 0
    ort_model = OnnxTransducer(out)
    bundle = load_transducer(tiny_dir / "final")
    fe = bundle.frontend
    extractor = make_extractor(config_from_dict(bundle.features))
    files = sorted((an4_dir / "flac/an4test_clstk/fjlp").glob("*.flac"))[:4]
    feats = {}
    for f in files:
        x, sr = read_audio(str(f), target_sr=16000)
        raw = apply_cmvn_sliding(extractor.compute(x, sr), fe.sliding)
        feats[f.name] = stack_frames(raw, fe.frame_stack, fe.frame_subsample)
    torch_ids = transcribe_features(bundle, feats)
    for name, x in feats.items():
        ids = ort_model.greedy(ort_model.encode(x))
        assert len(ids) > 2 and ids == torch_ids[name], name
    # streaming with the ONNX encoder: chunks of a multiple of k frames, states carried
    x = next(iter(feats.values()))
    k = bundle.model.cfg.enc_stack_time_factor
    state, parts = None, []
    for i in range(0, len(x), 4 * k):
        enc, state = ort_model.encode(x[i : i + 4 * k], state, return_state=True)
        parts.append(enc)
    np.testing.assert_allclose(np.concatenate(parts), ort_model.encode(x), atol=1e-5)
    # the export dir's checksums.sha256 names a damaged file (issue 18 item 9)
    import shutil

    from pykaldi2.utils.errors import DataError

    bad = tiny_dir / "onnx_bad"
    shutil.copytree(out, bad)
    data = bytearray((bad / "joiner.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    (bad / "joiner.onnx").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"joiner\.onnx fails its sha256 check"):
        OnnxTransducer(bad)


def test_not_an_onnx_dir(tmp_path):
    from pykaldi2.export.onnx import OnnxTransducer
    from pykaldi2.utils.errors import DataError

    with pytest.raises(DataError, match="export-onnx"):
        OnnxTransducer(tmp_path)
