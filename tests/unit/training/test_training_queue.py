"""`pykaldi2 queue FILE`: experiments run in order, finished ones skipped on a rerun, a WER
summary table; configs checked before anything runs."""

from __future__ import annotations

import pytest
from test_training_transducer import make_corpus, write_config

from pykaldi2.cli.main import main
from pykaldi2.cli.queue import parse_queue, run_queue
from pykaldi2.utils.errors import DataError


def test_queue_runs_skips_and_summarizes(tmp_path, one_thread, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = make_corpus(tmp_path)
    conf = write_config(tmp_path, data, trainer={"max_steps": 3, "max_epochs": 1, "lr": 0.01,
                                                 "checkpoint_every": 0, "log_every": 1})  # fmt: skip
    q = tmp_path / "queue.txt"
    q.write_text(
        "# two learning rates, decoded on the training data\n"
        f"{conf}|trainer.lr=0.02|exp_dir=exp/a|decode={data}\n"
        "\n"
        f"{conf}|trainer.lr=0.005|exp_dir=exp/b|decode={data}|beam=2|command=train-transducer\n"
    )
    assert main(["queue", str(q)]) == 0
    out = capsys.readouterr().out
    summary = (tmp_path / "queue.txt.summary").read_text()
    assert summary in out
    rows = [ln.split() for ln in summary.splitlines()[1:]]
    assert [r[:3] for r in rows] == [["2", "exp/a", "done"], ["4", "exp/b", "done"]]
    for exp in ("a", "b"):
        wer = (tmp_path / f"exp/{exp}/decode_data/wer").read_text().split()[1]
        assert f"decode_data: {wer}" in summary
        assert (tmp_path / f"exp/{exp}/queue.done").is_file()
    # a rerun skips both (no training: the final dirs are not rewritten)
    mtime = (tmp_path / "exp/a/final/model.yaml").stat().st_mtime_ns
    rows, failed = run_queue(q)
    assert failed == 0 and [r[2] for r in rows] == ["skipped (done)"] * 2
    assert (tmp_path / "exp/a/final/model.yaml").stat().st_mtime_ns == mtime
    # another line on a finished exp dir is refused
    q.write_text(f"{conf}|trainer.lr=0.03|exp_dir=exp/a\n")
    with pytest.raises(DataError, match="holds another queue line"):
        run_queue(q)


def test_queue_checks_every_line_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = make_corpus(tmp_path)
    conf = write_config(tmp_path, data)
    q = tmp_path / "q.txt"
    q.write_text(f"{conf}|exp_dir=exp/ok\n{conf}|trainer.lrr=1|exp_dir=exp/typo\n")
    with pytest.raises(DataError, match="line 2.*lrr"):
        run_queue(q)
    assert not (tmp_path / "exp").exists()  # nothing ran
    for text, msg in [
        (f"{conf}|trainer.lr=1\n", "no exp_dir"),
        (f"{conf}|exp_dir=x\n{conf}|exp_dir=x\n", "also the exp dir of line 1"),
        (f"{conf}|exp_dir=x|command=train-gmm\n", "not one of"),
        (f"{conf}|lr\n", "not KEY=VALUE"),
        ("# nothing\n", "no experiments"),
    ]:
        q.write_text(text)
        with pytest.raises(DataError, match=msg):
            parse_queue(q)
    q.write_text(f"{conf}|exp_dir=x|decode={data}|command=train-ce\n")
    with pytest.raises(DataError, match="line 1"):  # not a train-ce config
        run_queue(q)


def test_recipe_transducer_confs_and_queue_load(monkeypatch):
    """Every recipe's transducer config, and every line of AN4's tuning queue, is a valid
    train-transducer config (a typo fails here, not hours into a run)."""
    from pathlib import Path

    from pykaldi2.cli.queue import resolve
    from pykaldi2.training.transducer import TrainTransducerConfig

    egs = Path(__file__).resolve().parents[3] / "egs"
    confs = sorted(egs.glob("*/conf/transducer*.yaml"))
    assert len(confs) >= 5
    for conf in confs:
        monkeypatch.chdir(conf.parents[1])  # paths in the configs are relative to the recipe
        TrainTransducerConfig.load(conf.relative_to(conf.parents[1]))
    monkeypatch.chdir(egs / "an4")
    lines = parse_queue("conf/rnnt_queue.txt")
    assert [resolve(q, "conf/rnnt_queue.txt")[0] for q in lines] == ["train-transducer"] * len(
        lines
    )


def test_queue_decode_line_passes_the_lm_options(tmp_path, monkeypatch):
    """beam, lm, lm_unit, lm_weight and symbol_bonus of a line reach decode-transducer."""
    from pykaldi2.cli.queue import _decode_commands, resolve

    monkeypatch.chdir(tmp_path)
    data = make_corpus(tmp_path)
    conf = write_config(tmp_path, data)
    q = tmp_path / "q.txt"
    q.write_text(f"{conf}|exp_dir=exp/w|decode={data}|beam=4|lm=lm/words3.arpa|lm_unit=words"
                 "|lm_weight=0.6|symbol_bonus=1.0\n")  # fmt: skip
    (line,) = parse_queue(q)
    command, cfg = resolve(line, str(q))
    ((dest, argv),) = _decode_commands(line, command, cfg, str(q))
    assert argv == ["decode-transducer", "--beam", "4", "--lm", "lm/words3.arpa", "--lm-weight",
                    "0.6", "--lm-unit", "words", "--symbol-bonus", "1.0", "exp/w/final", str(data),
                    dest]  # fmt: skip
