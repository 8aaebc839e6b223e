#!/usr/bin/env python3
"""BLSTM training step on whole utterances: the padded run (nnet/lstm.py's
``bidirectional_padded``, what nnet/blstm.py and the transducer encoder use) against the packed
sequence (``bidirectional_packed``, the reference), side by side in one process.

PyTorch's CPU LSTM runs a packed batch step by step on ``narrow`` slices of the packed input,
and the backward of every slice allocates and adds a zero tensor of the whole packed input, so a
step costs about T x (frames in the batch): quadratic in the utterance length. Sequence training
(train-se) runs whole utterances, where that dominated. Prints, per utterance length T (batch of
8 utterances of lengths T, 0.93 T, ..., 0.53 T), CPU seconds of one forward + backward (best of
--repeat) of each path and their ratio, after the machine line.

    .venv/bin/python bench/lstm_padding.py              # 3x320 BLSTM, T = 80, 300, 600, 1000
    .venv/bin/python bench/lstm_padding.py --quick      # T = 80, 200; a few seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from common import cpu_name  # bench/common.py


def step_seconds(model, run, x, lengths, repeat: int) -> float:
    model.bidirectional_run = run
    best = float("inf")
    for _ in range(repeat):
        model.zero_grad(set_to_none=True)
        t0 = time.process_time()
        model(x, lengths).logsumexp(-1).sum().backward()
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    from pykaldi2.nnet.blstm import Blstm, BlstmConfig
    from pykaldi2.nnet.lstm import bidirectional_packed, bidirectional_padded

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[80, 300, 600, 1000])
    ap.add_argument("--hidden", type=int, default=320)
    ap.add_argument("--num-pdfs", type=int, default=1800)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="T = 80, 200, hidden 128")
    args = ap.parse_args()
    if args.quick:
        args.lengths, args.hidden, args.repeat = [80, 200], 128, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"machine: {platform.machine()} {cpu_name()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {args.threads} thread(s); CPU seconds (process time)"
    )
    cfg = BlstmConfig(
        input_dim=80, num_classes=args.num_pdfs, num_layers=3, hidden=args.hidden, dropout=0.0
    )
    model = Blstm(cfg)
    print(f"model: BLSTM 3 x {args.hidden} per direction, {args.num_pdfs} outputs, batch 8")
    worst = 0.0
    for T in args.lengths:
        lengths = torch.tensor([max(1, round(T * (1 - 0.067 * i))) for i in range(8)])
        x = torch.randn(8, T, 80)
        padded = step_seconds(model, bidirectional_padded, x, lengths, args.repeat)
        packed = step_seconds(model, bidirectional_packed, x, lengths, args.repeat)
        worst = max(worst, packed / padded)
        print(
            f"T {T:5d} ({int(lengths.sum()):5d} frames): padded {padded:7.2f} s, "
            f"packed {packed:7.2f} s, packed / padded {packed / padded:5.2f}x"
        )
    print(
        f"lstm_padding: packed / padded at the longest T {packed / padded:.2f}x (max {worst:.2f}x)"
    )


if __name__ == "__main__":
    main()
