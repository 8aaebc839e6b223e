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
