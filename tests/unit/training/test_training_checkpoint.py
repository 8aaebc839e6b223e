import random

import numpy as np
import pytest
import torch

from pykaldi2.training import checkpoint as ck
from pykaldi2.utils.errors import Pykaldi2Error


def test_step_checkpoints_keep_last_and_latest(tmp_path):
    for step in (10, 20, 30):
        ck.save_step_checkpoint(tmp_path, step, {"step": step}, keep_last=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt-20.pt", "ckpt-30.pt"]
    assert ck.load_checkpoint(ck.latest_checkpoint(tmp_path))["step"] == 30


def test_rng_state_round_trip():
    state = ck.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    p = tmp_path / "ckpt-1.pt"
    p.write_bytes(b"garbage")
    with pytest.raises(Pykaldi2Error, match="cannot read checkpoint"):
        ck.load_checkpoint(p)


def test_model_config_mismatch(tmp_path):
    with pytest.raises(Pykaldi2Error, match="hidden: checkpoint 512 vs config 256"):
        ck.check_model_config({"hidden": 512}, {"hidden": 256}, tmp_path / "x.pt")


def test_model_config_option_added_after_the_checkpoint(tmp_path):
    """An option the checkpoint predates matches at its default (the behaviour the checkpoint
    was trained with), and differs at any other value."""
    from pykaldi2.nnet.tdnn import TdnnfConfig

    defaults = TdnnfConfig.field_defaults()
    assert defaults["spec_augment"] is False and defaults["time_strides"][-1] == 3
    old = {"hidden": 16}
    ck.check_model_config(old, {"hidden": 16, "spec_augment": False}, tmp_path / "x.pt", defaults)
    with pytest.raises(Pykaldi2Error, match="spec_augment: checkpoint False vs config True"):
        ck.check_model_config(old, {"hidden": 16, "spec_augment": True}, tmp_path / "x.pt",
                              defaults)  # fmt: skip
    with pytest.raises(Pykaldi2Error, match="spec_augment"):  # without defaults: a difference
        ck.check_model_config(old, {"hidden": 16, "spec_augment": False}, tmp_path / "x.pt")


def test_average_checkpoints(tmp_path):
    paths = []
    for i in range(3):
        paths.append(
            ck.save_checkpoint(
                tmp_path / f"c{i}.pt",
                {"model": {"w": torch.full((2,), float(i)), "n": torch.tensor(i)}},
            )
        )
    avg = ck.average_checkpoints(paths)
    assert torch.equal(avg["w"], torch.ones(2)) and avg["n"].item() == 2


def test_model_config_check_fills_newer_fields_with_defaults():
    """A checkpoint written before a config field existed was trained with its default."""
    import pytest

    from pykaldi2.training.checkpoint import check_model_config
    from pykaldi2.utils.errors import Pykaldi2Error

    old = {"hidden": 8}
    check_model_config(old, {"hidden": 8, "bidir": False}, "c.pt", defaults={"bidir": False})
    with pytest.raises(Pykaldi2Error, match="bidir: checkpoint False vs config True"):
        check_model_config(old, {"hidden": 8, "bidir": True}, "c.pt", defaults={"bidir": False})
    with pytest.raises(Pykaldi2Error, match="bidir"):
        check_model_config(old, {"hidden": 8, "bidir": False}, "c.pt")


def _kept(best):
    return [(e["epoch"], e["loss"]) for e in best.entries]


def test_best_snapshots_keep_the_n_lowest_losses_and_resume(tmp_path):
    d = tmp_path / "best"
    best = ck.BestSnapshots(d, 2)
    state = {}
    for epoch, loss in [(1, 5.0), (2, 3.0), (3, float("nan")), (4, 4.0), (5, 1.0), (6, 3.0)]:
        state[epoch] = {"w": torch.full((3,), float(epoch))}
        best.update(epoch, loss, lambda e=epoch: state[e])
    # the two lowest; the tie at 3.0 keeps the earlier epoch; nan ranks last
    assert _kept(best) == [(5, 1.0), (2, 3.0)]
    assert sorted(p.name for p in d.glob("*.pt")) == ["epoch-2.pt", "epoch-5.pt"]
    assert torch.equal(best.average()["w"], torch.full((3,), 3.5))
    # a resumed run reads the same list; epoch 2 validated again (after a kill) replaces
    # its own entry, and drops out when it no longer ranks
    again = ck.BestSnapshots(d, 2)
    assert _kept(again) == [(5, 1.0), (2, 3.0)]
    assert again.update(2, 2.0, lambda: state[2]) and _kept(again) == [(5, 1.0), (2, 2.0)]
    assert again.update(7, 1.5, lambda: {"w": torch.zeros(3)})
    assert not again.update(2, 9.0, lambda: state[2])
    assert _kept(again) == [(5, 1.0), (7, 1.5)] and not (d / "epoch-2.pt").exists()
    assert _kept(ck.BestSnapshots(d, 2)) == [(5, 1.0), (7, 1.5)]


def test_best_snapshots_errors(tmp_path):
    with pytest.raises(Pykaldi2Error, match="no epoch snapshots"):
        ck.BestSnapshots(tmp_path / "b", 3).average()
    (tmp_path / "b").mkdir(exist_ok=True)
    (tmp_path / "b/best.json").write_text("{not json")
    with pytest.raises(Pykaldi2Error, match="best.json: not a best-epochs index.*Fix"):
        ck.BestSnapshots(tmp_path / "b", 3)
