"""The real Trainer under torchrun and horovodrun with 2 ranks: ``pykaldi2 train-ce`` and
``pykaldi2 train-chain`` give the weights of 1 rank with twice the accumulation.

What "the same" means, and why it can be exact:

* The batches. :class:`~pykaldi2.data.samplers.BucketBatchSampler` makes an epoch's batches
  from (seed, epoch) alone, the same list for any number of ranks, and deals them round-robin:
  rank r of W takes batches r, r + W, r + 2W, ... With ``accum_grad`` A, optimizer step k of W
  ranks therefore consumes batches [k W A, (k + 1) W A) of the list: exactly the batches of
  step k of 1 rank with accumulation W A. So 2 ranks x accum 1 is compared with 1 rank x
  accum 2, and 2 ranks x accum 2 with 1 rank x accum 4 (a bigger per-rank batch would be
  other batches, cut from the lengths differently).
* The update. A task's loss is a sum over its count (frames); the trainer all-reduces the
  gradients and the counts, divides by the global count, clips after the all-reduce, then
  steps: the update depends on the summed gradient alone. SGD is used: Adam is nearly
  invariant to a gradient scale, so a wrong count normalization or a clip before the
  all-reduce would hide in its rounding; with SGD they change the weights. The clip
  threshold is low enough to clip.
* To the bit, with two micro-batches a step: 1 rank accumulates g0 + g1 and scales by 1/N;
  2 ranks all-reduce g0 + g1 (the same single IEEE addition), average (/2, exact) and scale by
  2/N (x2, exact): the same floats, so the 2 x 1 run must equal the 1 x 2 run exactly. With four
  micro-batches the sums are grouped differently (rank 0 adds g0 + g2, rank 1 g1 + g3, then the
  all-reduce, against ((g0 + g1) + g2) + g3): equal up to float rounding, compared with a
  tolerance.
* What must be off: dropout and chain's frame_shift (the trainer reseeds the RNGs from
  (seed, step, rank): rank 1's draws for batch 2k + 1 are not the ones 1 rank draws for its
  second micro-batch); learning-rate halving on the validation loss (each rank's validation
  shard is padded to equal length, so the loss differs). An epoch holds a multiple of W A
  batches: the sampler pads an epoch with repeats when the batches do not divide among the
  ranks, and a partial accumulation at an epoch end is a smaller step.
* BatchNorm (TDNN-F): in training mode it normalizes with the micro-batch's own statistics,
  the same batch either way, so the parameters are equal; its running statistics are not
  (each rank's follow its own batches, averaged over ranks at every checkpoint; 1 rank's
  follow all batches in order): they are not compared.

The 2-rank runs are the CLI itself: ``python -m torch.distributed.run --nproc_per_node 2 -m
pykaldi2 train-ce ...`` (and ``horovodrun -np 2 python -m pykaldi2 ...``); the accumulation
variants run in the same launch through tests/unit/training/dist_cli_worker.py (the CLI's
``main()`` once per command) to save a launch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import test_training_ce as ce_tests
import test_training_chain as chain_tests
import torch
from dist_launch import launch

from pykaldi2.cli.main import main

WORKER = Path(__file__).with_name("dist_cli_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
#: seconds for one launch (two train commands of the tests' tiny models at most; LAUNCH_S s
#: each on a loaded 2-core machine): past it the test fails with both ranks' stacks
LAUNCH_TIMEOUT = 240


def _horovodrun() -> list[str]:
    return [str(Path(sys.executable).with_name("horovodrun")), "-np", "2", "-H", "localhost:2",
            "--gloo", sys.executable]  # fmt: skip


def _launch(cmd: list[str], cwd: Path) -> None:
    launch(cmd, cwd, timeout=LAUNCH_TIMEOUT)


def _num_batches(loader) -> int:
    return len(loader.batch_sampler)


def _batch_size(count_batches, multiple: int = 4) -> int | None:
    """The first batch size whose epoch has a multiple of ``multiple`` batches (None: none)."""
    for b in range(2, 12):
        if count_batches(b) % multiple == 0:
            return b
    return None


@pytest.fixture(scope="module")
def ce_conf(tmp_path_factory) -> dict:
    """train-ce on the CE tests' corpus: BLSTM without dropout, SGD, clipping on."""
    from pykaldi2.training.ce import TrainCEConfig
    from pykaldi2.training.ce_egs import load_ce_data, make_loader

    root = tmp_path_factory.mktemp("dist_ce")
    data, ali, _ = ce_tests.make_corpus(root)
    over = {
        "model": {"num_layers": 2, "hidden": 12, "dropout": 0.0},
        "num_workers": 1,
        "trainer": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.5, "grad_clip": 0.2,
                    "max_epochs": 2, "checkpoint_every": 3, "log_every": 1},
    }  # fmt: skip
    conf = ce_tests.write_config(root, data, ali, **over)
    cfg = TrainCEConfig.load(conf)
    train = load_ce_data(cfg, root / "egs_probe").train

    def count(b: int) -> int:
        cfg.batch_size = b
        return _num_batches(make_loader(train, cfg, rank=0, world_size=1, shuffle=True))

    over["batch_size"] = _batch_size(count)
    assert over["batch_size"], "no batch size gives a multiple of 4 batches an epoch"
    return {"root": root, "conf": ce_tests.write_config(root, data, ali, **over)}


@pytest.fixture(scope="module")
def chain_conf(tmp_path_factory) -> dict:
    """train-chain (TDNN-F with BatchNorm, xent head) on the chain tests' corpus, SGD,
    clipping on, no dropout and no frame_shift."""
    from pykaldi2.hmm.ali import write_ali
    from pykaldi2.training.chain import TrainChainConfig
    from pykaldi2.training.chain_egs import load_chain_data, make_chain_loader

    root = tmp_path_factory.mktemp("dist_chain")
    model = chain_tests._gmm_model()
    over = {
        "frame_shift": False,
        "trainer": {"optimizer": "sgd", "lr": 0.02, "momentum": 0.5, "grad_clip": 0.5,
                    "max_epochs": 2, "checkpoint_every": 0, "log_every": 1},
    }  # fmt: skip
    # the sampler's 10 length buckets cut the batches: find a corpus size and batch size that
    # give a multiple of 4 batches an epoch
    for reps in (5, 4, 6, 3):
        rng = np.random.default_rng(0)
        d = root / f"x{reps}"
        d.mkdir()
        data, alis = chain_tests._write_set(model, d, "train", chain_tests.SENTENCES * reps, rng)
        ali = d / "ali"
        ali.mkdir()
        model.save(ali / "final.mdl")
        write_ali(ali / "ali.ark", alis)
        cfg = TrainChainConfig.load(chain_tests._config(d, data, ali, **over))
        train = load_chain_data(cfg).train

        def count(b: int, cfg=cfg, train=train) -> int:
            cfg.batch_size = b
            return _num_batches(make_chain_loader(train, cfg, rank=0, world_size=1, shuffle=True))

        over["batch_size"] = _batch_size(count)
        if over["batch_size"]:
            return {"root": d, "conf": chain_tests._config(d, data, ali, **over)}
    raise AssertionError("no corpus size gives a multiple of 4 batches an epoch")


def _argv(command: str, conf: str, exp: Path, accum: int) -> list[str]:
    return [command, "--config", conf, "--override", f"trainer.accum_grad={accum}", str(exp)]


@pytest.fixture(scope="module")
def one_rank(ce_conf, chain_conf) -> dict:
    """The 1-rank references, in this process (one thread, as each rank): accum 2 and 4 of
    both trainers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for name, command, conf in (("ce", "train-ce", ce_conf),
                                    ("chain", "train-chain", chain_conf)):  # fmt: skip
            for accum in (2, 4):
                exp = conf["root"] / f"one_rank_accum{accum}"
                assert main(_argv(command, conf["conf"], exp, accum)) == 0
                out[(name, accum)] = exp
    finally:
        torch.set_num_threads(threads)
    return out


def _params(exp: Path) -> dict[str, torch.Tensor]:
    """The final model's parameters (BatchNorm running statistics left out)."""
    state = torch.load(exp / "final" / "final.pt", weights_only=False)["model"]
    return {k: v for k, v in state.items() if not k.endswith(("running_mean", "running_var",
                                                                "num_batches_tracked"))}  # fmt: skip


def _compare(one_rank, two_rank: dict) -> None:
    for (name, accum), exp in two_rank.items():
        ref = one_rank[(name, 2 * accum)]
        a, b = _params(ref), _params(exp)
        assert a.keys() == b.keys() and len(a) > 4
        for k in a:
            if accum == 1:  # two micro-batches a step: bit for bit
                assert torch.equal(a[k], b[k]), f"{name} 2 ranks x accum 1 != 1 x 2 in {k}"
            else:  # four: other summation order
                torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=f"{name} {k}")


def _two_rank_runs(launcher: list[str], module_cli: bool, ce_conf, chain_conf, tmp_path) -> dict:
    """2-rank runs of both trainers, accum 1 and 2. With ``module_cli`` the accum-1 runs are
    separate ``-m pykaldi2`` launches (the CLI as a user runs it)."""
    runs, worker_cmds = {}, []
    for name, command, conf in (("ce", "train-ce", ce_conf), ("chain", "train-chain", chain_conf)):
        for accum in (1, 2):
            exp = tmp_path / f"{name}_two_ranks_accum{accum}"
            argv = _argv(command, conf["conf"], exp, accum)
            if module_cli and accum == 1:
                _launch([*launcher, "-m", "pykaldi2", *argv], tmp_path)
            else:
                worker_cmds.append(argv)
            runs[(name, accum)] = exp
    if worker_cmds:
        job = tmp_path / "commands.json"
        job.write_text(json.dumps(worker_cmds))
        _launch([*launcher, str(WORKER), str(job)], tmp_path)
    return runs


def test_torchrun_two_ranks_equal_one_rank_with_twice_the_accumulation(
    ce_conf, chain_conf, one_rank, tmp_path
):
    runs = _two_rank_runs(TORCHRUN, True, ce_conf, chain_conf, tmp_path)
    _compare(one_rank, runs)


def test_horovodrun_two_ranks_equal_one_rank_with_twice_the_accumulation(
    ce_conf, chain_conf, one_rank, tmp_path
):
    pytest.importorskip("horovod.torch", reason="horovod not built here (make horovod)")
    runs = _two_rank_runs(_horovodrun(), False, ce_conf, chain_conf, tmp_path)
    _compare(one_rank, runs)
