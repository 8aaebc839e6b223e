"""``simulation:`` in train-ce / train-transducer on real AN4 audio: the simulated chunks are
used (weights differ from clean training), runs are reproducible, a resumed run (mid-epoch, other
DataLoader worker count) equals an uninterrupted one, the resolved simulation config is saved."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from pykaldi2.cli.main import main

NUM_UTTS = 8
SIM = {
    "seed": 5,
    "speed": {"enable": True, "factors": [0.9, 1.0, 1.1]},
    "reverb": {"enable": True, "t60": [0.2, 0.8], "max_rir_seconds": 0.3},
    "noise": {"enable": True, "snr_db": [0, 20]},
    "specaug": {"enable": True, "max_freq_width": 4, "num_time_masks": 2, "time_warp": 0},
}


@pytest.fixture(scope="module")
def an4_small(an4_dir, tmp_path_factory):
    """8 AN4 training utterances with 23-dim fbank (HDF5), cmvn.scp and conf/feats.json."""
    from pykaldi2.data.corpora.an4 import read_an4_set
    from pykaldi2.data.datadir import write_data_dir
    from pykaldi2.data.subset import subset_data_dir
    from pykaldi2.features.compute import compute_cmvn, compute_feats
    from pykaldi2.features.extractors import FbankConfig

    root = tmp_path_factory.mktemp("simtrain")
    data = root / "data"
    write_data_dir(subset_data_dir(read_an4_set(an4_dir, "an4_train"), first=NUM_UTTS), data)
    compute_feats(str(data), str(root / "fbank"), FbankConfig(num_mel_bins=23), nj=1)
    compute_cmvn(str(data))
    (root / "sim.yaml").write_text(yaml.safe_dump(SIM))
    return root, data


@pytest.fixture(scope="module")
def an4_ali(an4_small):
    """A monophone model and 'alignments' of the clean features: three energy classes
    (quiet / middle / loud thirds of each utterance's frames) as pdf_ids 0, 1, 2."""
    from pykaldi2.features.pipeline import FeaturePipelineConfig, ProcessedFeatures
    from pykaldi2.hmm.ali import write_ali
    from pykaldi2.hmm.mono import gmm_init_mono
    from pykaldi2.lang.topo import TopoConfig, make_topo

    root, data = an4_small
    feats = ProcessedFeatures(data, FeaturePipelineConfig(cmvn="none"))
    model = gmm_init_mono(make_topo([2, 3], [1], TopoConfig()), (feats[u] for u in feats))
    first_tid = {int(p): t for t, p in reversed(list(enumerate(model.tid2pdf))) if t > 0}
    alis = {}
    for utt in feats:
        energy = feats[utt].mean(axis=1)
        pdfs = np.searchsorted(np.quantile(energy, [1 / 3, 2 / 3]), energy)
        alis[utt] = np.array([first_tid[int(p)] for p in pdfs], dtype=np.int32)
    ali = root / "ali"
    ali.mkdir()
    model.save(ali / "final.mdl")
    write_ali(ali / "ali.ark", alis)
    return ali


#: Tiny train-ce / train-transducer configs (train_data etc. added per test).
CE = {
    "valid_fraction": 0.15,
    "features": {"cmvn": "utterance"},
    "model_type": "blstm",
    "model": {"num_layers": 1, "hidden": 8, "dropout": 0.1},
    "chunk_size": 40,
    "left_context": 2,
    "right_context": 2,
    "batch_size": 12,
    "num_workers": 0,
    "trainer": {"lr": 0.01, "max_epochs": 10, "max_steps": 7, "checkpoint_every": 0},
}
RNNT = {
    "valid_fraction": 0.0,
    "tokenizer": {"vocab_size": 30, "model_type": "bpe", "hard_vocab_limit": False},
    "frontend": {"cmvn": "sliding", "frame_stack": 3, "frame_subsample": 3},
    "model_size": "tiny",
    "model": {"enc_n_hid": 12, "pred_n_hid": 8, "joint_n_hid": 12},
    "batch_size": 4,
    "num_buckets": 1,
    "num_workers": 0,
    "ema_decay": 0.0,
    "trainer": {"lr": 0.01, "max_epochs": 10, "max_steps": 3, "checkpoint_every": 0},
}


def _write_config(path, base: dict, **over) -> str:
    path.write_text(yaml.safe_dump({**base, **over}))
    return str(path)


def _ce_config(root, data, ali, **over) -> str:
    return _write_config(root / "ce.yaml", CE, train_data=[str(data)], ali_dir=[str(ali)], **over)


def _transducer_config(root, data, **over) -> str:
    return _write_config(root / "rnnt.yaml", RNNT, train_data=[str(data)], **over)


def _ce_weights(exp) -> dict[str, torch.Tensor]:
    return torch.load(exp / "final" / "final.pt", weights_only=False)["model"]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_train_ce_with_simulation(an4_small, an4_ali, tmp_path, one_thread):
    root, data = an4_small
    sim = str(root / "sim.yaml")
    conf = _ce_config(tmp_path, data, an4_ali, simulation=sim)
    full, parts, clean = tmp_path / "full", tmp_path / "parts", tmp_path / "clean"
    assert main(["train-ce", "--config", conf, str(full)]) == 0
    # Interrupted mid-epoch 0 at step 3, resumed with a DataLoader worker: the same weights
    # (the simulation of an item depends only on (seed, epoch, index)); 7 steps span 2 epochs.
    assert (
        main(["train-ce", "--config", conf, "--override", "trainer.max_steps=3", str(parts)]) == 0
    )
    state = torch.load(parts / "checkpoints" / "ckpt-3.pt", weights_only=False)
    assert state["epoch"] == 0 and state["batches_done"] == 3  # interrupted mid-epoch
    assert main(["train-ce", "--config", conf, "--override", "num_workers=1", str(parts)]) == 0
    _assert_same(_ce_weights(full), _ce_weights(parts))
    # Without simulation (the default) the same seed trains on the stored features: different.
    assert main(["train-ce", "--config", conf, "--override", "simulation=null", str(clean)]) == 0
    a, c = _ce_weights(full), _ce_weights(clean)
    assert any(not torch.equal(a[k], c[k]) for k in a)

    # The exp dir's config.yaml holds the resolved simulation config and loads again.
    from pykaldi2.simulation.config import SimulationConfig
    from pykaldi2.training.ce import TrainCEConfig

    saved = yaml.safe_load((full / "config.yaml").read_text())["config"]["simulation"]
    assert saved["noise"]["snr_db"] == [0.0, 20.0] and saved["reverb"]["t60"] == [0.2, 0.8]
    assert saved["reverb"]["room_length"] == [3.0, 10.0]  # defaults filled in
    again = TrainCEConfig.load(full / "config.yaml")
    assert again.simulation == SimulationConfig.from_yaml(sim)
    assert TrainCEConfig.load(clean / "config.yaml").simulation is None
    valid = (full / "log" / "valid.jsonl").read_text().splitlines()
    assert len(valid) == 1  # one epoch finished; validation (clean) ran


def test_ce_loader_simulates_each_epoch_afresh(an4_small, an4_ali, tmp_path):
    """The training loader's batches carry the epoch: the same chunks differ between epochs,
    and an epoch replayed gives the same batch; validation stays clean (stored features)."""
    from pykaldi2.data.datasets import ChunkDataset
    from pykaldi2.simulation.dataset import EpochBatchSampler, SimulatedChunkDataset
    from pykaldi2.training.ce import TrainCEConfig
    from pykaldi2.training.ce_egs import load_ce_data, make_loader

    root, data = an4_small
    cfg = TrainCEConfig.load(_ce_config(tmp_path, data, an4_ali, simulation=str(root / "sim.yaml")))
    ce = load_ce_data(cfg)
    assert isinstance(ce.train, SimulatedChunkDataset) and isinstance(ce.valid, ChunkDataset)
    loader = make_loader(ce.train, cfg, rank=0, world_size=1, shuffle=False)
    assert isinstance(loader.batch_sampler, EpochBatchSampler)

    def first_batch(epoch):
        loader.batch_sampler.set_epoch(epoch)
        return next(iter(loader))

    b0, b1, again = first_batch(0), first_batch(1), first_batch(0)
    assert b0["utts"] == b1["utts"]
    assert not torch.equal(b0["feats"], b1["feats"])
    torch.testing.assert_close(b0["feats"], again["feats"], rtol=0, atol=0)
    clean = make_loader(ce.valid, cfg, rank=0, world_size=1, shuffle=False)
    assert not isinstance(clean.batch_sampler, EpochBatchSampler)


def test_simulation_option_errors(an4_small, an4_ali, tmp_path, capsys):
    root, data = an4_small
    conf = _ce_config(tmp_path, data, an4_ali)
    out = str(tmp_path / "x")
    assert main(["train-ce", "--config", conf, "--override", "simulation=nope.yaml", out]) == 1
    err = capsys.readouterr().err
    assert "no such simulation config file" in err and "nope.yaml" in err
    bad = tmp_path / "bad_sim.yaml"
    bad.write_text("noise: {enable: true, snr: [0, 20]}\n")
    assert main(["train-ce", "--config", conf, "--override", f"simulation={bad}", out]) == 1
    err = capsys.readouterr().err
    assert "bad_sim.yaml" in err and "snr" in err
    bad.write_text("noise: {enable: true, snr_db: [20, 0]}\n")
    rnnt = _transducer_config(tmp_path, data)
    assert main(["train-transducer", "--config", rnnt, "--override", f"simulation={bad}", out]) == 1
    assert "noise.snr_db: min 20.0 > max 0.0" in capsys.readouterr().err
    # Two training data dirs cannot be simulated together (one wav.scp and feats.json); the
    # simulated features must have the stored features' dimension.
    from pykaldi2.simulation.config import SimulationConfig
    from pykaldi2.training.data import simulated_utterances
    from pykaldi2.utils.errors import DataError

    sim = SimulationConfig.from_yaml(root / "sim.yaml")
    with pytest.raises(DataError, match="exactly one training data dir"):
        simulated_utterances([str(data), str(data)], sim, None, None, 23)
    with pytest.raises(DataError, match="simulated features have dim 23, the stored features 40"):
        simulated_utterances([str(data)], sim, None, None, 40)


def test_train_transducer_with_simulation(an4_small, tmp_path, one_thread):
    from pykaldi2.export.model_dir import load_model_dir

    root, data = an4_small
    conf = _transducer_config(tmp_path, data, simulation=str(root / "sim.yaml"))
    a, b, clean = tmp_path / "a", tmp_path / "b", tmp_path / "clean"
    assert main(["train-transducer", "--config", conf, str(a)]) == 0
    # interrupted after 1 step (mid-epoch), resumed with a DataLoader worker: the same weights
    assert (
        main(["train-transducer", "--config", conf, "--override", "trainer.max_steps=1", str(b)])
        == 0
    )
    assert main(["train-transducer", "--config", conf, "--override", "num_workers=1", str(b)]) == 0
    wa, wb = load_model_dir(a / "final").load_state(), load_model_dir(b / "final").load_state()
    _assert_same(wa, wb)
    assert (
        main(["train-transducer", "--config", conf, "--override", "simulation=null", str(clean)])
        == 0
    )
    wc = load_model_dir(clean / "final").load_state()
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    saved = yaml.safe_load((a / "config.yaml").read_text())["config"]["simulation"]
    assert saved["speed"]["factors"] == [0.9, 1.0, 1.1] and saved["seed"] == 5
