"""pykaldi2.load_model on a ``hybrid`` model dir: a tiny BLSTM trained with ``train-ce`` on
yesno fbank features and monophone alignments, packed with its HCLG by ``export-hybrid-model``.

The transcriber must give exactly what ``decode-nnet`` gives on the same files (the same
features, chunking, priors and graph); with per-utterance CMVN in training the two pipelines
see identical features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import pykaldi2
from pykaldi2.api import save_hybrid_model
from pykaldi2.cli.main import main
from pykaldi2.data.datadir import read_data_dir
from pykaldi2.decoding.scoring import compute_wer
from pykaldi2.utils.errors import DataError

LEXICON = "<SIL> SIL\nYES Y\nNO N\n"
CE_CONFIG = {
    "valid_fraction": 0.0,
    "features": {"cmvn": "utterance"},
    "model": {"num_layers": 1, "hidden": 32, "dropout": 0.0},
    "chunk_size": 40,
    "batch_size": 16,
    "num_workers": 0,
    "trainer": {"lr": 0.01, "max_epochs": 8, "log_every": 10, "checkpoint_every": 1000},
}


def _run(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def hybrid(yesno_dir, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(exp dir, graph dir, test data dir): yesno fbank -> mono alignments -> train-ce."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("yesno_hybrid")
    data, mono, exp = root / "data", root / "mono", root / "blstm"
    _run("prepare", "yesno", "--corpus-dir", yesno_dir, data)
    train, test = data / "train_yesno", data / "test_yesno"
    fbank = data / "train_fbank"  # MFCC for the GMM alignments, 8 kHz fbank (HDF5) for the net
    _run("combine-data", fbank, train)
    for d, kind in ((train, "mfcc"), (fbank, "fbank"), (test, "fbank")):
        _run("compute-feats", "--feat-type", kind, "--sample-frequency", 8000,
             "--num-mel-bins", 23, d, root / kind)  # fmt: skip
        _run("compute-cmvn", d)
    dict_dir = data / "local" / "dict"
    dict_dir.mkdir(parents=True)
    files = {"lexicon.txt": LEXICON, "nonsilence_phones.txt": "Y\nN\n"}
    for name, text in {
        **files,
        "silence_phones.txt": "SIL\n",
        "optional_silence.txt": "SIL\n",
    }.items():
        (dict_dir / name).write_text(text)
    _run("prepare-lang", "--position-independent", dict_dir, "<SIL>", data / "lang")
    lm_text = root / "lm.txt"
    lm_text.write_text("".join(t + "\n" for t in read_data_dir(train).text.values()))
    _run("train-lm", "--order", 1, lm_text, root / "lm.arpa")
    _run("make-g", data / "lang", root / "lm.arpa", data / "lang_test")
    _run("train-mono", "--num-iters", 8, "--totgauss", 40, "--max-iter-inc", 6,
         train, data / "lang", mono)  # fmt: skip
    _run("mkgraph", data / "lang_test", mono / "final.mdl", mono / "graph")
    conf = root / "ce.yaml"
    conf.write_text(
        yaml.safe_dump({**CE_CONFIG, "train_data": [str(fbank)], "ali_dir": [str(mono)]})
    )
    _run("train-ce", "--config", conf, exp)
    return exp, mono / "graph", test


def test_hybrid_transcriber_matches_decode_nnet(hybrid, tmp_path: Path) -> None:
    exp, graph, test = hybrid
    _run("decode-nnet", exp / "final", graph, test, tmp_path / "decode")
    ref_hyp = dict(
        (line + " ").split(" ", 1)
        for line in (tmp_path / "decode" / "hyp.txt").read_text().splitlines()
    )
    _run("export-hybrid-model", exp / "final", graph, tmp_path / "export")
    model = pykaldi2.load_model(tmp_path / "export")
    assert model.model_dir.kind == "hybrid"
    assert model.model_dir.file("nnet").is_dir()  # self-contained: the net dir is copied in
    d = read_data_dir(test)
    hyp = dict(zip(d.utt_ids, model.transcribe([d.wav_scp[u] for u in d.utt_ids])))
    assert {u: t.split() for u, t in hyp.items()} == {u: t.split() for u, t in ref_hyp.items()}
    stats = compute_wer(
        {u: t.split() for u, t in d.text.items()}, {u: t.split() for u, t in hyp.items()}
    )
    assert stats.num_words == 240
    assert stats.wer < 5.0, stats.format()  # measured: 2.08% (5 insertions)

    # The log-likelihoods are log-posteriors minus log-priors: a prior_scale of 0 changes them
    # by exactly the log-priors.
    wav = d.wav_scp[d.utt_ids[0]]
    ll = model.loglikes(wav)
    model.compute.prior_scale = 0.0
    diff = ll - model.loglikes(wav)
    assert diff.shape[1] == model.nnet.num_pdfs
    torch.testing.assert_close(
        torch.from_numpy(diff),
        torch.from_numpy(-model.nnet.log_priors).float().expand_as(torch.from_numpy(diff)),
    )


def test_export_hybrid_errors(hybrid, tmp_path: Path) -> None:
    exp, graph, _ = hybrid
    bad_graph = tmp_path / "graph"
    bad_graph.mkdir()
    for f in ("HCLG.fst", "words.txt"):
        (bad_graph / f).write_bytes((graph / f).read_bytes())
    (bad_graph / "num_pdfs").write_text("999\n")
    with pytest.raises(DataError, match="was built for a model with 999 pdfs"):
        save_hybrid_model(tmp_path / "x", exp / "final", bad_graph)
    with pytest.raises(DataError, match="not a complete CE model dir"):
        save_hybrid_model(tmp_path / "x", exp, graph)
    with pytest.raises(DataError, match="unknown keys beem"):
        save_hybrid_model(tmp_path / "x", exp / "final", graph, decoder={"beem": 1})
