"""``base:`` in training configs: a variant config is its base plus what it changes."""

from __future__ import annotations

import pytest

from pykaldi2.training.config import merge_configs, read_config
from pykaldi2.training.transducer import TrainTransducerConfig
from pykaldi2.utils.errors import DataError


def test_merge_configs_merges_sections_and_replaces_the_rest():
    base = {"a": 1, "trainer": {"lr": 1e-3, "schedule": {"warmup_steps": 10, "decay": "exp"}},
            "data": ["x", "y"], "keep": {"k": 1}}  # fmt: skip
    child = {"trainer": {"schedule": {"warmup_steps": 50}}, "data": ["z"], "a": None}
    out = merge_configs(base, child)
    assert out == {"a": None, "trainer": {"lr": 1e-3, "schedule": {"warmup_steps": 50,
                   "decay": "exp"}}, "data": ["z"], "keep": {"k": 1}}  # fmt: skip
    assert base["trainer"]["schedule"]["warmup_steps"] == 10  # not changed in place


def test_base_chain_relative_to_each_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text("train_data: [data/a]\nbatch_size: 8\n"
                                        "trainer: {lr: 0.002, max_epochs: 56}\n")  # fmt: skip
    (tmp_path / "sub" / "mid.yaml").write_text("base: ../root.yaml\ntrainer: {max_epochs: 40}\n")
    (tmp_path / "sub" / "leaf.yaml").write_text("base: mid.yaml\nbatch_size: 4\n")
    d = read_config(tmp_path / "sub" / "leaf.yaml")
    assert d == {"train_data": ["data/a"], "batch_size": 4,
                 "trainer": {"lr": 0.002, "max_epochs": 40}}  # fmt: skip
    cfg = TrainTransducerConfig.load(tmp_path / "sub" / "leaf.yaml", ["trainer.lr=1e-3"])
    assert cfg.batch_size == 4 and cfg.trainer.max_epochs == 40 and cfg.trainer.lr == 1e-3


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "cycle"),
        ({"a.yaml": "base: a.yaml\n"}, "cycle"),
        ({"a.yaml": "base: missing.yaml\n"}, "no such config file"),
        ({"a.yaml": "base: [x]\n"}, "expected the path"),
    ],
)
def test_base_errors_name_the_file(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message) as e:
        read_config(tmp_path / "a.yaml")
    assert "a.yaml" in str(e.value)
