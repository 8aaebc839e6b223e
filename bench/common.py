"""What the benchmarks share: the machine's CPU name and the timed BLSTM CE training step
(bench/ce_throughput.py reports it; bench/simulation.py compares the simulated loader's rate
with it). The scripts run as ``python bench/NAME.py``, which puts bench/ on ``sys.path``."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def blstm_forward_flops(input_dim: int, hidden: int, layers: int, num_pdfs: int) -> float:
    """Multiply-add FLOPs (x2) of one frame through the BLSTM forward pass."""
    flops, i = 0.0, input_dim
    for _ in range(layers):
        flops += 2 * 4 * 2 * hidden * (i + hidden)  # 2 directions x 4 gates x (W_ih x + W_hh h)
        i = 2 * hidden
    return flops + 2 * i * num_pdfs  # output layer


def clock(device: torch.device) -> float:
    """CPU time of this process on CPU (robust to other jobs sharing the cores; with T threads
    it counts T x wall when all run), wall time on GPU."""
    return time.process_time() if device.type == "cpu" else time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_steps(args, device: torch.device) -> tuple[float, float, float, float]:
    """(best step time by :func:`clock`, mean wall time per step, clock/wall ratio, forward
    FLOPs per frame) of the BLSTM on synthetic chunks."""
    from pykaldi2.losses.ce import FrameCETask
    from pykaldi2.nnet.blstm import Blstm, BlstmConfig
    from pykaldi2.training.trainer import TrainerConfig, make_optimizer

    cfg = BlstmConfig(
        input_dim=args.dim, num_classes=args.num_pdfs, num_layers=3, hidden=512, dropout=0.1
    )
    model = Blstm(cfg).to(device)
    opt = make_optimizer(TrainerConfig(), model.parameters())
    task = FrameCETask(device)
    g = torch.Generator().manual_seed(0)
    batch = {
        "feats": torch.randn(args.chunks, args.chunk_size, args.dim, generator=g),
        "lengths": torch.full((args.chunks,), args.chunk_size, dtype=torch.int64),
        "targets": torch.randint(0, args.num_pdfs, (args.chunks, args.chunk_size), generator=g),
    }

    def step():
        out = task.compute_loss(model, batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    times, walls = [], []
    for _ in range(args.steps):
        sync(device)
        t0, w0 = clock(device), time.perf_counter()
        step()
        sync(device)
        times.append(clock(device) - t0)
        walls.append(time.perf_counter() - w0)
    fwd = blstm_forward_flops(args.dim, 512, 3, args.num_pdfs)
    return min(times), float(np.mean(walls)), sum(times) / sum(walls), fwd
