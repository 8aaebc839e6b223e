"""Run under torchrun/horovodrun by test_training_distributed.py: K SGD steps of a tiny model.

argv: OUT_DIR GLOBAL_BATCH STEPS. Each rank takes its slice of every global batch, so N ranks
x batch B/N must give the same weights as 1 rank x batch B.
"""

import sys
from pathlib import Path

import torch

from pykaldi2.training.distributed import Dist


def main() -> None:
    out, global_batch, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    dist = Dist.from_env(use_cuda=False)
    torch.manual_seed(1234 + dist.rank)  # different init per rank: broadcast must fix it
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    dist.broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(7)
    per_rank = global_batch // dist.world_size
    for _ in range(steps):
        x = torch.randn(global_batch, 6, generator=gen)
        y = torch.randint(0, 3, (global_batch,), generator=gen)
        sl = slice(dist.rank * per_rank, (dist.rank + 1) * per_rank)
        loss = torch.nn.functional.cross_entropy(model(x[sl]), y[sl])
        opt.zero_grad()
        loss.backward()
        dist.allreduce_grads(model.parameters())
        opt.step()
    torch.save(model.state_dict(), out / f"rank{dist.rank}.pt")
    dist.shutdown()


if __name__ == "__main__":
    main()
