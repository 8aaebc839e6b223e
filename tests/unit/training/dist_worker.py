"""Run under torchrun/horovodrun by test_training_distributed.py: K SGD steps of a tiny model.

argv: OUT_DIR GLOBAL_BATCH STEPS [COMMANDS [FAIL_RANK]]. Each rank takes its slice of every
global batch, so N ranks x batch B/N must give the same weights as 1 rank x batch B.
COMMANDS (default 1): train COMMANDS times in this process, each as a pykaldi2 command does
(``Dist.from_env()`` ... ``dist.shutdown()`` in a ``finally``: a new process group each time),
each from the same start, so every time to the same weights. FAIL_RANK: that rank raises after
its first step of the last command.
"""

import os
import sys
import time
from pathlib import Path

import torch

from pykaldi2.training.distributed import Dist


def train(out: Path, global_batch: int, steps: int, fail_rank: int | None) -> None:
    dist = Dist.from_env(use_cuda=False)
    try:
        torch.manual_seed(1234 + dist.rank)  # different init per rank: broadcast must fix it
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        dist.broadcast_parameters(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(7)
        per_rank = global_batch // dist.world_size
        for step in range(steps):
            if step == 1 and dist.rank == fail_rank:
                raise RuntimeError(f"dist_worker: rank {fail_rank} fails on purpose")
            x = torch.randn(global_batch, 6, generator=gen)
            y = torch.randint(0, 3, (global_batch,), generator=gen)
            sl = slice(dist.rank * per_rank, (dist.rank + 1) * per_rank)
            loss = torch.nn.functional.cross_entropy(model(x[sl]), y[sl])
            opt.zero_grad()
            loss.backward()
            dist.allreduce_grads(model.parameters())
            opt.step()
        path = out / f"rank{dist.rank}.pt"
        if path.exists():  # an earlier command of this process: the same weights again
            ref = torch.load(path)
            assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
        torch.save(model.state_dict(), path)
    finally:
        dist.shutdown()


def main() -> None:
    out, global_batch, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    commands = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    fail_rank = int(sys.argv[5]) if len(sys.argv) > 5 else None
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", os.environ.get("HOROVOD_RANK", 0)))
    for i in range(commands):
        if i > 0:
            time.sleep(0.5 * rank)  # the ranks reach each new group at different times
        train(out, global_batch, steps, fail_rank if i == commands - 1 else None)


if __name__ == "__main__":
    main()
