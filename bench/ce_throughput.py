#!/usr/bin/env python3
"""CE training throughput of a BLSTM 3x512 on 64 chunks x 80 frames of 80-dim features.

Prints, side by side:

* the machine (CPU/GPU, torch threads);
* matmul FLOP/s measured with torch on the same device and threads;
* training speed: steps/s, frames/s, iRTF (hours of audio per hour of compute at 100 frames/s)
  and the fraction of the measured matmul FLOP/s that training reaches, with the BLSTM's FLOPs
  counted analytically (forward: 3 layers x 2 directions x 4 gates x 2 x H x (I + H) per frame
  plus the output layer; training = forward + backward ~ 3 x forward);
* the real DataLoader (ChunkDataset over HDF5 features of a data dir, BucketBatchSampler,
  worker processes) in frames/s, and its ratio to what training consumes (want >= 10x).

    python bench/ce_throughput.py                       # ~1-2 min on 1 CPU thread
    python bench/ce_throughput.py --data egs/an4/data/train --threads 4 --steps 5
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import REPO, clock, cpu_name, sync, train_steps  # bench/common.py

DEFAULT_DATA = [REPO / "egs" / "an4" / "data" / "train", Path("/tmp/ce_an4/data/train")]


def _best_rate(device: torch.device, fn, flops: float, trials: int = 8) -> float:
    for _ in range(2):
        fn()
    sync(device)
    best = 0.0
    for _ in range(trials):
        t0 = clock(device)
        fn()
        sync(device)
        best = max(best, flops / (clock(device) - t0))
    return best


def matmul_flops_per_s(device: torch.device, n: int = 1024) -> dict[str, float]:
    """Best-of-8 FLOP/s of an (n x n) @ (n x n) fp32 product through torch: ``torch.matmul``
    (MKL on CPU: on AMD CPUs it takes an AVX2 path) and, on CPU, oneDNN's linear (the library
    behind torch's CPU LSTM, AVX-512 where the CPU has it). A shared machine only slows runs
    down, so the best window is the closest to the hardware's rate."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    rates = {"torch.matmul": _best_rate(device, lambda: [a @ b for _ in range(4)], 8 * n**3)}
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        from torch.utils import mkldnn

        lin = torch.nn.Linear(n, n, bias=False)
        lin.weight.data = b.t().contiguous()
        dnn, am = mkldnn.to_mkldnn(lin), a.to_mkldnn()
        rates["oneDNN linear"] = _best_rate(device, lambda: [dnn(am) for _ in range(4)], 8 * n**3)
    return rates


def loader_frames_per_s(args, data_dir: Path) -> tuple[float, int]:
    """Target frames/s the real CE DataLoader delivers from ``data_dir`` (and batches read)."""
    from pykaldi2.data.datasets import ChunkDataset
    from pykaldi2.features.pipeline import FeaturePipelineConfig
    from pykaldi2.training.ce import TrainCEConfig, make_loader
    from pykaldi2.training.data import DataDirFeatures

    feats = DataDirFeatures([data_dir], FeaturePipelineConfig(cmvn="utterance"))
    targets = {u: np.zeros(feats.shape(u)[0], np.int32) for u in feats}
    ds = ChunkDataset(feats, targets, chunk_size=args.chunk_size, utts=sorted(feats))
    cfg = TrainCEConfig(
        train_data=[str(data_dir)],
        ali_dir=["unused"],
        batch_size=args.chunks,
        chunk_size=args.chunk_size,
        num_workers=args.workers,
    )
    loader = make_loader(ds, cfg, rank=0, world_size=1, shuffle=True)
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    frames, n, t0 = 0, 0, time.perf_counter()
    for batch in it:
        frames += int((batch["targets"] >= 0).sum())
        n += 1
        if n >= args.loader_batches:
            break
    return frames / (time.perf_counter() - t0), n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps (default: 3)")
    p.add_argument("--chunks", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=80)
    p.add_argument("--dim", type=int, default=80)
    p.add_argument("--num-pdfs", type=int, default=3000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", type=Path, help="data dir with HDF5 feats.scp (default: AN4 train)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default: 2)")
    p.add_argument("--loader-batches", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("PYKALDI2_NO_PROGRESS", "1")
    device = torch.device(args.device)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    print(
        f"machine: {platform.machine()} {cpu_name()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device} {gpu}"
    )
    rates = matmul_flops_per_s(device, n=4096 if device.type == "cuda" else 1024)
    unit = "CPU" if device.type == "cpu" else "wall"
    print(
        f"matmul fp32 (best of 8, per {unit} second): "
        + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in rates.items())
    )
    mm = max(rates.values())

    sec, wall, share, fwd = train_steps(args, device)
    frames = args.chunks * args.chunk_size
    fps = frames / sec
    train_flops = 3 * fwd * frames / sec
    print(
        f"BLSTM 3x512, {args.chunks}x{args.chunk_size} chunks, dim {args.dim}, "
        f"{args.num_pdfs} pdfs ({3 * fwd / 1e6:.1f} MFLOP per trained frame): best step "
        f"{sec:.3f} s {unit} time (mean wall {wall:.3f} s: this process got {share:.0%} "
        "of the time)"
    )
    print(
        f"  {fps:,.0f} frames/s, iRTF {fps / 100:.1f} (hours of audio per {unit} hour), "
        f"{train_flops / 1e9:.1f} GFLOP/s = {train_flops / mm:.2f} of the best matmul FLOP/s"
    )

    data = args.data or next((d for d in DEFAULT_DATA if (d / "feats.scp").is_file()), None)
    if data is None or not (data / "feats.scp").is_file():
        print(
            "loader: skipped (no data dir with feats.scp; pass --data, e.g. AN4 train after "
            "`pykaldi2 compute-feats --format hdf5 --num-mel-bins 80`)"
        )
        return 0
    lfps, n = loader_frames_per_s(args, data)
    print(
        f"loader ({data}, {args.workers} workers, {n} batches): {lfps:,.0f} frames/s = "
        f"{lfps / fps:.1f}x what training consumes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
