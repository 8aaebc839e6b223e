"""pykaldi2.load_model on a ``chain`` model dir: a tiny TDNN-F trained with ``train-chain`` on
the yesno data of test_api_hybrid (fbank, per-utterance CMVN, its monophone alignments), packed
with its own HCLG (mkgraph --self-loop-scale 1.0) by ``export-chain-model``.

The transcriber must give exactly what ``decode-chain`` gives on the same files (best path at
acoustic scale 1.0 through the same graph); the loaded models are callable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from test_api_hybrid import _run, hybrid  # noqa: F401  (the yesno hybrid fixture)

import pykaldi2
from pykaldi2.api import save_chain_model
from pykaldi2.data.datadir import read_data_dir
from pykaldi2.decoding.scoring import compute_wer
from pykaldi2.utils.errors import DataError

CHAIN_CONFIG = {
    "valid_fraction": 0.0,
    "features": {"cmvn": "utterance"},
    "model_type": "tdnnf",
    "model": {
        "hidden": 32,
        "bottleneck": 8,
        "prefinal_dim": 8,
        "time_strides": [1, 1, 0],
        "dropout": 0.0,
    },
    "frame_subsampling_factor": 3,
    "phone_lm": {"ngram_order": 2, "no_prune_ngram_order": 1, "num_extra_lm_states": 10},
    "batch_size": 8,
    "trainer": {"lr": 0.01, "max_epochs": 15, "checkpoint_every": 1000, "log_every": 10},
}


@pytest.fixture(scope="module")
def chain(hybrid) -> tuple[Path, Path, Path]:  # noqa: F811
    """(chain final dir, its graph dir, test data dir)."""
    torch.set_num_threads(1)
    exp, _, test = hybrid
    root = exp.parent
    data = root / "data"
    conf = root / "chain.yaml"
    conf.write_text(yaml.safe_dump({**CHAIN_CONFIG, "train_data": [str(data / "train_fbank")],
                                    "ali_dir": [str(root / "mono")]}))  # fmt: skip
    _run("train-chain", "--config", conf, root / "chain")
    final, graph = root / "chain" / "final", root / "chain" / "graph"
    _run("mkgraph", "--self-loop-scale", 1.0, data / "lang_test", final / "final.mdl", graph)
    return final, graph, test


def test_chain_transcriber_matches_decode_chain(chain, tmp_path: Path) -> None:
    final, graph, test = chain
    _run("decode-chain", "--mode", "utterance", final, graph, test, tmp_path / "decode")
    ref = {}
    for line in (tmp_path / "decode" / "hyp.txt").read_text().splitlines():
        utt, *words = line.split()
        ref[utt] = words
    _run("export-chain-model", final, graph, tmp_path / "export")
    model = pykaldi2.load_model(tmp_path / "export")
    assert model.model_dir.kind == "chain" and model.model_dir.file("nnet").is_dir()
    d = read_data_dir(test)
    wavs = [d.wav_scp[u] for u in d.utt_ids]
    texts = model.transcribe(wavs)
    assert {u: t.split() for u, t in zip(d.utt_ids, texts)} == ref
    stats = compute_wer({u: t.split() for u, t in d.text.items()}, ref)
    assert stats.wer < 60.0, stats.format()  # 16.7-44.6% seen (a tiny net); chance ~100%
    # callable, as DeepSpeech-Keras' model(files); one path gives one transcript
    assert model(wavs[:3]) == texts[:3] and model(wavs[0]) == texts[0]
    # outputs at 1/3 of the frame rate
    ll = model.loglikes(wavs[0])
    assert ll.shape[1] == model.nnet.num_pdfs
    assert ll.shape[0] == -(-len(model.features(wavs[0])) // 3)


def test_final_dirs_are_not_model_dirs(chain, hybrid) -> None:  # noqa: F811
    final, graph, _ = chain
    with pytest.raises(DataError, match="export-chain-model"):
        pykaldi2.load_model(final)
    with pytest.raises(DataError, match="export-hybrid-model"):
        pykaldi2.load_model(hybrid[0] / "final")
    with pytest.raises(DataError, match="not a complete chain model dir"):
        save_chain_model("unused", final.parent, graph)


def test_hybrid_and_gmm_models_are_callable(hybrid, tmp_path: Path) -> None:  # noqa: F811
    exp, graph, test = hybrid
    _run("export-hybrid-model", exp / "final", graph, tmp_path / "hybrid")
    d = read_data_dir(test)
    wavs = [d.wav_scp[u] for u in d.utt_ids[:4]]
    model = pykaldi2.load_model(tmp_path / "hybrid")
    assert model(wavs) == model.transcribe(wavs)
    mono = exp.parent / "mono"
    _run("export-gmm-model", mono / "final.mdl", graph, exp.parent / "data" / "train_yesno",
         tmp_path / "gmm")  # fmt: skip
    gmm = pykaldi2.load_model(tmp_path / "gmm")
    assert gmm(wavs) == gmm.transcribe(wavs) and gmm(wavs[1]) == gmm.transcribe(wavs[1:2])[0]
