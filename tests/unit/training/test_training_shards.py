"""Training from WebDataset shards without unpacking (:mod:`pykaldi2.training.shards`): the
epoch length, coverage, exact resume with and without DataLoader workers, ranks; and
train-transducer / train-ce on AN4 shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from pykaldi2.cli.main import main
from pykaldi2.features.extractors import FbankConfig
from pykaldi2.training.shards import ShardLoader


class KeyItems:
    """One item per sample: (key, raw features, transcript)."""

    def __call__(self, key, raw, text):
        return [(key, raw, text)]


def keys_of(batch):
    return [it[0] for it in batch]


@pytest.fixture(scope="module")
def an4_shards(an4_train_utts, make_shards, tmp_path_factory):
    utts = an4_train_utts(22, stride=40)  # 22 speakers' utterances
    return make_shards(utts, tmp_path_factory.mktemp("shards"), per_shard=5), utts


def _loader(shards, **kw):
    return ShardLoader([str(s) for s in shards], KeyItems(), keys_of, batch_size=3,
                       frame_config=FbankConfig(num_mel_bins=23), shuffle_buffer=7, **kw)  # fmt: skip


def test_epochs_cover_the_shards_and_resume_exactly(an4_shards, one_thread):
    shards, utts = an4_shards
    L = _loader(shards)
    assert len(L) == -(-22 // 3) and L.counts[str(shards[0])] == 5
    L.set_epoch(0)
    e0 = list(L)
    assert len(e0) == len(L)
    seen = [k for b in e0 for k in b]
    assert sorted(seen) == sorted(k for k, _, _ in utts)  # one stream: every sample once
    L.set_epoch(1)
    e1 = list(L)
    assert e1 != e0 and sorted(k for b in e1 for k in b) == sorted(seen)  # reshuffled
    for workers in (0, 2):
        full = _loader(shards, num_workers=workers)
        full.set_epoch(3)
        ref = list(full)
        assert len(ref) == len(full)
        for skip in (1, 4):
            r = _loader(shards, num_workers=workers)
            r.set_epoch(3)
            r.load_state_dict({"epoch": 3, "batches_done": skip})
            assert list(r) == ref[skip:], (workers, skip)


def test_ranks_get_disjoint_shards_and_equal_epochs(an4_shards, one_thread):
    shards, _ = an4_shards
    parts = [_loader(shards, rank=r, world_size=2) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == -(-22 // 6)
    for p in parts:
        p.set_epoch(2)
    got = [[k for b in p for k in b] for p in parts]
    assert len(got[0]) >= 3 and not set(got[0]) & set(got[1])
    with pytest.raises(Exception, match="3 ranks"):
        _loader(shards[:2], rank=0, world_size=3)


def _transducer_config(tmp_path, shards, **extra):
    cfg = {
        "shards": {"train": [str(s) for s in shards[:4]], "valid": [str(shards[4])],
                   "features": {"feat_type": "fbank", "num_mel_bins": 23}, "shuffle_buffer": 6},
        "tokenizer": {"vocab_size": 34, "model_type": "bpe"},
        "frontend": {"cmvn": "sliding", "sliding": {"cmn_window": 100, "min_window": 50}},
        "model_size": "tiny",
        "model": {"in_feats": 69, "enc_n_hid": 16, "pred_n_hid": 8, "joint_n_hid": 16},
        "batch_size": 4, "num_workers": 0, "ema_decay": 0.9,
        "trainer": {"lr": 0.01, "max_epochs": 5, "max_steps": 6, "checkpoint_every": 0,
                    "log_every": 1},
        **extra,
    }  # fmt: skip
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize("workers", [0, 2])
def test_train_transducer_on_shards(an4_shards, tmp_path, one_thread, workers):
    """6 steps in one go = 3, then resumed to 6 (mid-epoch, DataLoader workers or not); the
    model dir holds the shards' feature config and decodes audio."""
    shards, utts = an4_shards
    conf = _transducer_config(tmp_path, shards, num_workers=workers)
    assert main(["train-transducer", "--config", conf, str(tmp_path / "a")]) == 0
    half = ["--override", "trainer.max_steps=3"]
    assert main(["train-transducer", "--config", conf, *half, str(tmp_path / "b")]) == 0
    assert main(["train-transducer", "--config", conf, str(tmp_path / "b")]) == 0
    from pykaldi2.export.model_dir import load_model_dir

    wa = load_model_dir(tmp_path / "a/final").load_state()
    wb = load_model_dir(tmp_path / "b/final").load_state()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    md = load_model_dir(tmp_path / "a/final")
    assert md.config("features")["num_mel_bins"] == 23
    assert (tmp_path / "a/log/valid.jsonl").is_file()
    # the tokenizer was trained on the shards' transcripts
    assert (tmp_path / "a/shard_text/text").read_text().count("\n") == 20
    flist = tmp_path / "files.lst"
    flist.write_text("".join(f"{f}\n" for _, f, _ in utts[:2]))
    assert main(["decode-transducer", str(tmp_path / "a/final"), str(flist),
                 str(tmp_path / "dec")]) == 0  # fmt: skip


YESNO_DICT = {"lexicon.txt": "<SIL> SIL\nYES Y\nNO N\n", "nonsilence_phones.txt": "Y\nN\n",
              "silence_phones.txt": "SIL\n", "optional_silence.txt": "SIL\n"}  # fmt: skip


def _run(*argv):
    assert main([str(a) for a in argv]) == 0, argv


def test_train_ce_on_shards(yesno_dir, make_shards, tmp_path, one_thread):
    """train-ce from yesno shards (keys = utterance ids) with monophone alignments: exact
    resume, a final dir whose features.yaml records the shards' feature config, decodable."""
    from pathlib import Path

    from pykaldi2.data.datadir import read_data_dir

    data, mono = tmp_path / "data", tmp_path / "mono"
    _run("prepare", "yesno", "--corpus-dir", yesno_dir, data)
    train = data / "train_yesno"
    _run(
        "compute-feats", "--feat-type", "mfcc", "--sample-frequency", 8000, train, tmp_path / "mfcc"
    )
    _run("compute-cmvn", train)
    (data / "dict").mkdir()
    for name, text in YESNO_DICT.items():
        (data / "dict" / name).write_text(text)
    _run("prepare-lang", "--position-independent", data / "dict", "<SIL>", data / "lang")
    _run("train-mono", "--num-iters", 5, "--totgauss", 30, "--max-iter-inc", 4, train,
         data / "lang", mono)  # fmt: skip
    d = read_data_dir(train)
    samples = [(u, Path(d.wav_scp[u]), d.text[u]) for u in d.utt_ids]
    shards = make_shards(samples, tmp_path / "shards", per_shard=6)
    cfg = {
        "ali_dir": [str(mono)],
        "shards": {"train": [str(s) for s in shards[:4]], "valid": [str(shards[4])],
                   "features": {"feat_type": "fbank", "sample_frequency": 8000,
                                "num_mel_bins": 23}},
        "features": {"cmvn": "utterance"},
        "model": {"num_layers": 1, "hidden": 16, "dropout": 0.0},
        "chunk_size": 40, "batch_size": 8, "num_workers": 0,
        "trainer": {"lr": 0.01, "max_epochs": 10, "max_steps": 8, "log_every": 2,
                    "checkpoint_every": 0},
    }  # fmt: skip
    conf = tmp_path / "ce.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    _run("train-ce", "--config", conf, tmp_path / "a")
    _run("train-ce", "--config", conf, "--override", "trainer.max_steps=3", tmp_path / "b")
    _run("train-ce", "--config", conf, tmp_path / "b")
    wa = torch.load(tmp_path / "a/final/final.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b/final/final.pt", weights_only=False)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    feat_doc = yaml.safe_load((tmp_path / "a/final/features.yaml").read_text())
    assert feat_doc["raw_feature_config"]["num_mel_bins"] == 23 and feat_doc["dim"] == 23
    assert np.isclose(np.load(tmp_path / "a/final/priors.npy").sum(), 1.0)
    assert (tmp_path / "a/log/valid.jsonl").is_file()
    # the final dir decodes audio (export-hybrid-model reads the shards' feature config)
    (tmp_path / "lm.txt").write_text("".join(t + "\n" for t in d.text.values()))
    _run("train-lm", "--order", 1, tmp_path / "lm.txt", tmp_path / "lm.arpa")
    _run("make-g", data / "lang", tmp_path / "lm.arpa", data / "lang_test")
    _run("mkgraph", data / "lang_test", mono / "final.mdl", mono / "graph")
    _run("export-hybrid-model", tmp_path / "a/final", mono / "graph", tmp_path / "export")
    import pykaldi2

    texts = pykaldi2.load_model(tmp_path / "export")([d.wav_scp[u] for u in d.utt_ids[:2]])
    assert len(texts) == 2
