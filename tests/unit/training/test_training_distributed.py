import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pykaldi2.training.distributed import launcher_from_env

WORKER = Path(__file__).with_name("dist_worker.py")


def _run(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for _attempt in range(2):
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path
        )
        # Under heavy load gloo's threads are sometimes torn down at interpreter exit while
        # still joinable (std::terminate after the work is done and saved). That is a teardown
        # race in torch, not a wrong result: run once more, and fail on anything else.
        if (
            proc.returncode == 0
            or "terminate called without an active exception" not in proc.stderr
        ):
            break
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_launcher_from_env():
    assert launcher_from_env({}) == "single"
    assert launcher_from_env({"RANK": "0", "WORLD_SIZE": "2"}) == "torch"
    assert launcher_from_env({"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2"}) == "horovod"


def _two_ranks_match_one_rank(launcher: list[str], tmp_path: Path) -> None:
    """1 rank x batch 8 vs 2 ranks x batch 4 under ``launcher``: identical weights."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    _run([sys.executable, str(WORKER), str(one), "8", "5"], tmp_path)
    _run([*launcher, str(WORKER), str(two), "8", "5"], tmp_path)
    ref = torch.load(one / "rank0.pt")
    r0, r1 = torch.load(two / "rank0.pt"), torch.load(two / "rank1.pt")
    for k in ref:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
        torch.testing.assert_close(r0[k], ref[k], rtol=1e-5, atol=1e-6)


def test_torchrun_two_ranks_match_one_rank_double_batch(tmp_path):
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    _two_ranks_match_one_rank(torchrun, tmp_path)


def test_horovodrun_two_ranks_match_one_rank_double_batch(tmp_path):
    pytest.importorskip("horovod.torch", reason="horovod not built here (make horovod)")
    horovodrun = str(Path(sys.executable).with_name("horovodrun"))
    _two_ranks_match_one_rank(
        [horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable], tmp_path
    )
