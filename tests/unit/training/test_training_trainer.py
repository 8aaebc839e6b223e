import math

import pytest
import torch
from torch.utils.data import DataLoader

from pykaldi2.data.samplers import BucketBatchSampler
from pykaldi2.training.schedule import LrSchedule, ScheduleConfig
from pykaldi2.training.trainer import LossOutput, Trainer, TrainerConfig
from pykaldi2.utils.errors import Pykaldi2Error


class Frames(torch.utils.data.Dataset):
    """Variable-length sequences of 4-dim frames, each frame labelled with one of 3 classes."""

    def __init__(self, n=24, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            t = int(torch.randint(3, 12, (1,), generator=g))
            y = torch.randint(0, 3, (t,), generator=g)
            x = torch.nn.functional.one_hot(y, 4).float() + 0.3 * torch.randn(t, 4, generator=g)
            self.items.append((x, y))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def collate(items):
    x = torch.cat([i[0] for i in items])
    y = torch.cat([i[1] for i in items])
    return x, y


class FrameCE:
    def __init__(self, nan_every=0):
        self.calls, self.nan_every = 0, nan_every

    def compute_loss(self, model, batch):
        self.calls += 1
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
        if self.nan_every and self.calls % self.nan_every == 0:
            loss = loss * float("nan")
        return LossOutput(loss, float(len(y)))


def make(tmp_path, max_steps, nan_every=0, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3)
    )
    ds = Frames()
    sampler = BucketBatchSampler([len(x) for x, _ in ds.items], batch_size=4, seed=3)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate)
    cfg = TrainerConfig(
        lr=0.01, max_epochs=3, max_steps=max_steps, checkpoint_every=5, log_every=1, **kw
    )
    return Trainer(model, FrameCE(nan_every), cfg, tmp_path, model_config={"hidden": 16}), loader


def test_resume_is_exact(tmp_path):
    a, loader = make(tmp_path / "a", max_steps=13)
    a.fit(loader)
    b, loader = make(tmp_path / "b", max_steps=7)
    b.fit(loader)
    c, loader = make(tmp_path / "b", max_steps=13)
    assert c.resume()
    assert c.step == 7
    c.fit(loader)
    for (k, va), vc in zip(a.model.state_dict().items(), c.model.state_dict().values()):
        assert torch.equal(va, vc), k


def test_training_reduces_loss(tmp_path):
    t, loader = make(tmp_path, max_steps=0)
    first = t.fit(loader)["loss"]
    t.cfg.max_epochs = 12
    last = t.fit(loader)["loss"]
    assert last < 0.6 * first


def test_nan_batches_are_skipped_then_stop(tmp_path):
    t, loader = make(tmp_path, max_steps=6, nan_every=3)
    t.fit(loader)
    assert t.bad_batches == 2
    t2, loader = make(tmp_path / "x", max_steps=20, nan_every=1, max_bad_batches=3)
    with pytest.raises(Pykaldi2Error, match="NaN/inf"):
        t2.fit(loader)


def test_resume_with_other_model_config_fails(tmp_path):
    t, loader = make(tmp_path, max_steps=5)
    t.fit(loader)
    t2, _ = make(tmp_path, max_steps=5)
    t2.model_config = {"hidden": 32}
    with pytest.raises(Pykaldi2Error, match="different model config"):
        t2.resume()


def test_sampler_shards_are_disjoint_and_even():
    lengths = list(range(1, 30))
    shards = [
        list(BucketBatchSampler(lengths, max_frames=40, rank=r, world_size=2, seed=1))
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1])
    seen = [i for s in shards for b in s for i in b]
    assert set(seen) == set(range(len(lengths)))
    for s in shards:
        for b in s:
            assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 40


def test_schedule_warmup_hold_decay_and_halving():
    s = LrSchedule(
        ScheduleConfig(
            warmup_steps=10, hold_steps=5, decay="exp", decay_rate=0.5, decay_steps=10, halving=True
        )
    )
    assert s.factor(0) == pytest.approx(0.1) and s.factor(9) == pytest.approx(1.0)
    assert s.factor(14) == 1.0 and s.factor(25) == pytest.approx(0.5)
    assert not s.on_validation(2.0) and not s.on_validation(1.5) and s.on_validation(1.4999)
    assert math.isclose(s.factor(12), 0.5)


def test_whole_run_decay_only_in_train_chain():
    """``decay_steps: 0`` (decay over the whole run) is filled in by train-chain; a schedule
    that gets it unfilled refuses it instead of decaying at every step."""
    from pykaldi2.utils.errors import DataError

    cfg = ScheduleConfig(decay="exp", decay_steps=0)
    with pytest.raises(DataError, match="whole run"):
        LrSchedule(cfg)
    assert LrSchedule(ScheduleConfig(decay="none", decay_steps=0)).factor(5) == 1.0
