"""On-the-fly simulated training datasets: reproducibility across DataLoader workers and
epochs, targets under speed perturbation and reverberation, equality with the clean pipeline."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest
import torch

from pykaldi2.data.datasets import IGNORE, ChunkDataset, UtteranceDataset, collate_frames
from pykaldi2.features.compute import compute_cmvn, compute_feats
from pykaldi2.features.extractors import FbankConfig
from pykaldi2.features.pipeline import FeaturePipelineConfig, ProcessedFeatures
from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.simulation.dataset import (
    EpochBatchSampler,
    SimulatedChunkDataset,
    SimulatedUtteranceDataset,
)
from pykaldi2.simulation.perturb import rescale_ali
from pykaldi2.utils.errors import DataError

FBANK = FbankConfig(num_mel_bins=40)
FULL = {
    "speed": {"enable": True, "factors": [0.9, 1.1]},
    "reverb": {"enable": True, "t60": [0.2, 0.5], "max_rir_seconds": 0.5},
    "noise": {"enable": True, "snr_db": [5, 15]},
    "volume": {"enable": True},
    "specaug": {"enable": True, "max_freq_width": 8, "time_warp": 5},
}


@pytest.fixture(scope="module")
def an4_feats(an4_dir, tmp_path_factory, make_data_dir):
    """A 6-utterance AN4 data dir (2 speakers) with offline fbank features and cmvn.scp."""
    root = an4_dir / "flac" / "an4_clstk"
    tmp = tmp_path_factory.mktemp("an4sim")
    spks = sorted(p.name for p in root.iterdir())[:2]
    d = make_data_dir(tmp / "data", sorted((root / spks[0]).glob("*.flac"))[:3], spk=spks[0])
    other = make_data_dir(tmp / "d2", sorted((root / spks[1]).glob("*.flac"))[:3], spk=spks[1])
    for name in ("wav.scp", "utt2spk", "text"):  # merge the two speakers (sorted by utt id)
        lines = (d / name).read_text().splitlines() + (other / name).read_text().splitlines()
        (d / name).write_text("".join(x + "\n" for x in sorted(lines)))
    compute_feats(str(d), str(tmp / "feats"), FBANK, nj=1, fmt="hdf5")
    compute_cmvn(str(d))
    return d


def _targets(ds: SimulatedUtteranceDataset) -> dict[str, np.ndarray]:
    """Fake pdf_id alignments of the clean lengths: frame index mod 11."""
    return {u: np.arange(n) % 11 for u, n in zip(ds.utts, ds.lengths, strict=True)}


def _sim(**sections) -> SimulationConfig:
    return SimulationConfig.from_dict({"seed": 3, **sections})


@pytest.mark.parametrize(
    "pipe",
    [
        FeaturePipelineConfig(cmvn="utterance", delta_order=1),
        FeaturePipelineConfig(cmvn="speaker", norm_vars=True),
        FeaturePipelineConfig(cmvn="none", splice_left=1, splice_right=1),
    ],
    ids=["utterance+deltas", "speaker", "none+splice"],
)
def test_disabled_simulation_equals_offline_features(an4_feats, pipe):
    ds = SimulatedUtteranceDataset(an4_feats, pipeline=pipe)  # feature config from feats.json
    clean = UtteranceDataset(ProcessedFeatures(an4_feats, pipe))
    assert ds.utts == clean.utts and ds.lengths == clean.lengths
    assert ds.dim == clean.feats.dim
    for i in range(len(ds)):
        utt, x, y = ds[i]
        u2, x2, _ = clean[i]
        assert utt == u2 and y is None
        assert x.dtype == np.float32 and x.shape == x2.shape
        np.testing.assert_allclose(x, x2, rtol=0, atol=1e-5)


def test_disabled_chunks_equal_chunk_dataset(an4_feats):
    pipe = FeaturePipelineConfig(cmvn="utterance")
    ds = SimulatedUtteranceDataset(an4_feats, pipeline=pipe)
    targets = _targets(ds)
    ds.targets = targets
    sim_chunks = SimulatedChunkDataset(ds, chunk_size=30, left=3, right=2)
    chunks = ChunkDataset(ProcessedFeatures(an4_feats, pipe), targets, 30, 3, 2)
    assert len(sim_chunks) == len(chunks) > len(ds)
    got = sim_chunks.__getitems__(list(range(len(sim_chunks))))
    for i, (utt, x, y) in enumerate(got):
        u2, x2, y2 = chunks[i]
        assert utt == u2 and x.shape == (35, 40)
        np.testing.assert_allclose(x, x2, atol=1e-5)
        np.testing.assert_array_equal(y, y2)


def _loader(ds, num_workers: int, epochs: list[int]):
    """Features of every item for each epoch in ``epochs``, one (persistent) DataLoader."""
    batches = [[0, 1], [2, 3], [4, 5]]
    sampler = EpochBatchSampler(_ListSampler(batches))
    kw = {"persistent_workers": True} if num_workers else {}
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=sampler, collate_fn=collate_frames, num_workers=num_workers, **kw
    )
    out = []
    for e in epochs:
        sampler.set_epoch(e)
        out.append({u: f[:n].clone() for b in loader for u, f, n in zip(*_parts(b), strict=True)})
    return out


def _parts(batch):
    return batch["utts"], batch["feats"], batch["lengths"]


class _ListSampler:
    """A fixed list of batches with set_epoch (like BucketBatchSampler without shuffling)."""

    def __init__(self, batches):
        self.batches, self.epoch = batches, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def test_same_epoch_reproduces_across_worker_runs(an4_feats):
    ds = SimulatedUtteranceDataset(an4_feats, sim_config=_sim(**FULL))
    run1 = _loader(ds, 2, [0, 1])  # persistent workers see the epoch through the indices
    run2 = _loader(ds, 2, [0])
    ref = _loader(ds, 0, [1])  # in-process: same items regardless of workers
    assert set(run1[0]) == set(ds.utts)
    for utt in ds.utts:
        assert torch.equal(run1[0][utt], run2[0][utt])
        assert torch.equal(run1[1][utt], ref[0][utt])
        a, b = run1[0][utt], run1[1][utt]
        assert a.shape != b.shape or not torch.allclose(a, b, atol=1e-3)  # new epoch, new sim


def test_set_epoch_without_sampler(an4_feats):
    ds = SimulatedUtteranceDataset(an4_feats, sim_config=_sim(**FULL))
    x0 = ds[1][1]
    ds.set_epoch(1)
    x1 = ds[1][1]
    np.testing.assert_array_equal(ds[(0, 1)][1], x0)
    assert x0.shape != x1.shape or not np.allclose(x0, x1, atol=1e-3)
    ds2 = pickle.loads(pickle.dumps(ds))  # after use: the extractor is rebuilt
    np.testing.assert_array_equal(ds2[1][1], x1)


def test_targets_follow_speed_perturbation(an4_feats):
    base = SimulatedUtteranceDataset(an4_feats)
    targets = _targets(base)
    ds = SimulatedUtteranceDataset(
        an4_feats, sim_config=_sim(speed=FULL["speed"], reverb=FULL["reverb"]), targets=targets
    )
    speeds = set()
    for i, utt in enumerate(ds.utts):
        s = ds.simulate(i, epoch=2)
        speeds.add(s.info["speed"])
        assert s.info["reverb"] is not None
        assert len(s.targets) == len(s.feats) != len(targets[utt])
        np.testing.assert_array_equal(s.targets, rescale_ali(targets[utt], len(s.feats)))
        # frames ~ clean / speed factor
        assert abs(len(s.feats) - len(targets[utt]) / s.info["speed"]) <= 2
    assert speeds == {0.9, 1.1}
    batch = collate_frames([ds[i] for i in range(3)])
    assert batch["targets"].shape == batch["feats"].shape[:2]
    for i in range(3):  # padding frames carry IGNORE
        assert (batch["targets"][i, batch["lengths"][i] :] == IGNORE).all()


def test_label_targets_and_feats_transform(an4_feats):
    """Transducer use: token targets pass through speed perturbation unchanged; a picklable
    feats_transform (e.g. frame stacking) is applied last."""
    tokens = {u: np.array([3, 1, 4]) for u in SimulatedUtteranceDataset(an4_feats).utts}
    sim = _sim(speed=FULL["speed"])
    kw = {"targets": tokens, "target_type": "labels"}
    plain = SimulatedUtteranceDataset(an4_feats, sim_config=sim, **kw)
    ds = SimulatedUtteranceDataset(
        an4_feats, sim_config=sim, feats_transform=functools.partial(np.multiply, 2.0), **kw
    )
    ds = pickle.loads(pickle.dumps(ds))
    for i in range(len(ds)):
        _, x, y = ds[i]
        np.testing.assert_array_equal(y, [3, 1, 4])
        np.testing.assert_allclose(x, 2.0 * plain[i][1], rtol=1e-6)


def test_reverb_keeps_frame_alignment(an4_feats, tmp_path, make_data_dir):
    """A measured RIR with 60 ms before its direct path: the simulator cuts that delay, so the
    reverberant energy envelope starts where the clean one does (targets stay valid)."""
    import soundfile as sf

    rir = np.zeros(8000, np.float32)
    rir[960:] = 0.5 * np.exp(-np.arange(7040) / 800.0) * np.cos(np.arange(7040))
    rir[960] = 0.9  # the direct path, 6 frames in
    sf.write(tmp_path / "rir.wav", rir, 16000, subtype="PCM_16")
    rir_dir = make_data_dir(tmp_path / "rirs", [tmp_path / "rir.wav"], spk="room1")
    pipe = FeaturePipelineConfig(cmvn="none")
    clean = SimulatedUtteranceDataset(an4_feats, pipeline=pipe)
    rev = SimulatedUtteranceDataset(
        an4_feats,
        pipeline=pipe,
        sim_config=_sim(reverb={"enable": True, "rir_dir": str(rir_dir)}),
    )
    for i in range(len(clean)):
        a, b = clean[i][1].mean(1), rev[i][1].mean(1)
        assert len(a) == len(b)
        on_a = np.flatnonzero(a > a.min() + 0.5 * (a.max() - a.min()))[0]  # speech onset
        on_b = np.flatnonzero(b > b.min() + 0.5 * (b.max() - b.min()))[0]
        assert abs(int(on_a) - int(on_b)) <= 1


def test_chunks_of_simulated_utterances(an4_feats):
    base = SimulatedUtteranceDataset(an4_feats)
    ds = SimulatedUtteranceDataset(an4_feats, sim_config=_sim(**FULL), targets=_targets(base))
    chunks = SimulatedChunkDataset(ds, chunk_size=40, left=2, right=1)
    loader = torch.utils.data.DataLoader(
        chunks,
        batch_sampler=EpochBatchSampler(_ListSampler([list(range(len(chunks)))])),
        collate_fn=collate_frames,
    )
    (batch,) = list(loader)
    assert batch["feats"].shape == (len(chunks), 43, 40)
    assert batch["targets"].shape == (len(chunks), 40)
    valid = batch["targets"] != IGNORE
    assert valid.any(1).all() and int(valid.sum()) >= 0.9 * sum(min(n, 40) for n in ds.lengths)


def test_mismatched_targets_name_the_utterance(an4_feats):
    base = SimulatedUtteranceDataset(an4_feats)
    targets = _targets(base)
    ds = SimulatedUtteranceDataset(an4_feats, targets=targets, utts=base.utts)
    ds.targets = {**targets, base.utts[0]: targets[base.utts[0]][:-5]}
    with pytest.raises(DataError, match=base.utts[0]):
        ds[0]
    with pytest.raises(DataError, match="frame targets"):
        SimulatedChunkDataset(SimulatedUtteranceDataset(an4_feats), chunk_size=20)
