#!/usr/bin/env python3
"""LF-MMI vs CE: training time per hour of audio, same TDNN-F and the same batches.

The data are AN4's (egs/an4: data/train_fbank + exp/tri2_ali, as in conf/chain_tdnnf.yaml):
:func:`pykaldi2.training.chain.load_chain_data` builds the den graph (tri2 tree on the chain
topology, 4-gram phone LM) and the numerator supervision of each utterance. The same batches
of whole utterances are then trained, one after the other with a fresh copy of the same
initial TDNN-F, with

* CE: frame cross-entropy against the tri2 pdf alignment at the output frame rate (every 3rd
  frame: the chain tree is tri2's tree, so the pdf ids are the same);
* LF-MMI: :class:`pykaldi2.training.chain.ChainTask` (numerator + denominator forward-backward,
  l2 and xent regularization, as trained by ``train-chain``);

and, for reference, CE on the usual frame-rate network (subsampling 1, every frame a target).
Each line: seconds per hour of audio (100 input frames per second) for forward + backward +
Adam step, and the ratio to CE on the same network (target: LF-MMI <= 1.5x CE).

    python bench/sequence_cost.py [--egs egs/an4] [--batches 12] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _timed_steps(model, task_fn, batches, device) -> float:
    """Seconds for forward + backward + Adam step over ``batches`` (after one warm-up batch)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step(b):
        loss = task_fn(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(batches[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _ce_task(targets, factor: int, device):
    """Frame CE of the model's chain output against pdf alignments taken every ``factor``-th
    frame; returns the summed loss."""

    def fn(model, batch):
        out = model(batch["feats"].to(device), batch["lengths"].to(device))  # (N, T', P)
        tgt = torch.full(out.shape[:2], -100, dtype=torch.int64)
        for i, utt in enumerate(batch["utts"]):
            y = torch.from_numpy(targets[utt][::factor].astype(np.int64))[: out.shape[1]]
            tgt[i, : len(y)] = y
        return torch.nn.functional.cross_entropy(
            out.reshape(-1, out.shape[-1]), tgt.reshape(-1).to(device), reduction="sum"
        )

    return fn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--egs", default=str(REPO / "egs" / "an4"), help="recipe dir (its cwd)")
    ap.add_argument("--config", default="conf/chain_tdnnf.yaml", help="relative to --egs")
    ap.add_argument("--batches", type=int, default=12, help="timed batches per objective")
    ap.add_argument("--batch-size", type=int, default=16, help="utterances per batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("PYKALDI2_NO_PROGRESS", "1")
    egs = Path(args.egs)
    if not (egs / "exp" / "tri2_ali" / "final.mdl").is_file():
        sys.exit(f"{egs}/exp/tri2_ali/final.mdl missing: run the AN4 GMM recipe (egs/an4/run.sh)")
    os.chdir(egs)

    from pykaldi2.hmm.ali import ali_to_pdf
    from pykaldi2.training.chain import (
        ChainTask,
        TrainChainConfig,
        build_chain_model,
        chain_model_config,
        collate_chain,
        load_alignments,
        load_chain_data,
    )

    cfg = TrainChainConfig.load(args.config, overrides=[f"batch_size={args.batch_size}"])
    device = torch.device(args.device)
    t0 = time.perf_counter()
    data = load_chain_data(cfg)
    prep = time.perf_counter() - t0
    alis, ali_model = load_alignments(cfg.ali_dir)
    targets = {u: ali_to_pdf(ali_model, a) for u, a in alis.items()}

    ds = data.train
    order = np.argsort(ds.lengths)[::-1]  # longest first: realistic, full batches
    rng = np.random.default_rng(0)
    picks = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    picks = [picks[i] for i in sorted(rng.choice(len(picks), args.batches + 1, replace=False))]
    batches = [collate_chain([ds[int(i)] for i in p]) for p in picks]
    frames = sum(int(b["lengths"].sum()) for b in batches[1:])  # the warm-up batch is not timed
    hours = frames / 100 / 3600

    mcfg, sub = chain_model_config(cfg, data.feats.dim, data.num_pdfs)
    torch.manual_seed(0)
    chain_model = build_chain_model(cfg.model_type, mcfg, sub, cfg.chain.xent_regularize > 0)
    chain_model.to(device)
    ce_model = copy.deepcopy(chain_model)
    ce_model.xent = None  # CE trains the chain output only
    ce_frame_cfg, _ = chain_model_config(cfg, data.feats.dim, data.num_pdfs)
    frame_model = build_chain_model(
        cfg.model_type, dataclasses.replace(ce_frame_cfg, subsampling=1), 1, False
    ).to(device)
    task = ChainTask(data.den_graph, cfg.chain, cfg.frame_subsampling_factor, device)

    def lfmmi(model, b):
        return task.compute_loss(model, b).loss

    f = cfg.frame_subsampling_factor
    t_ce = _timed_steps(ce_model, _ce_task(targets, f, device), batches, device)
    t_mmi = _timed_steps(chain_model, lfmmi, batches, device)
    t_frame = _timed_steps(frame_model, _ce_task(targets, 1, device), batches, device)

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"device {device}, {torch.get_num_threads()} thread(s)")  # fmt: skip
    print(f"data: AN4 train, {len(ds)} utterances; graphs built in {prep:.1f}s; den.fst "
          f"{data.den_graph.num_states} states / {data.den_graph.num_arcs} arcs, "
          f"{data.num_pdfs} pdfs")  # fmt: skip
    print(f"timed: {args.batches} batches x {args.batch_size} utterances = {frames} frames "
          f"({hours * 60:.2f} min of audio); TDNN-F {mcfg.num_layers} layers x {mcfg.hidden}, "
          f"output at 1/{f} frame rate")  # fmt: skip
    print(f"{'objective':42s} {'s / hour of audio':>18s} {'x CE':>6s}")
    rows = [
        ("CE (same net, targets every 3rd frame)", t_ce),
        ("LF-MMI (num + den + l2 + xent)", t_mmi),
        ("CE, frame-rate net (subsampling 1)", t_frame),
    ]
    for name, t in rows:
        print(f"{name:42s} {t / hours:18.1f} {t / t_ce:6.2f}")
    verdict = "meets" if t_mmi / t_ce <= 1.5 else "misses"
    print(f"LF-MMI / CE = {t_mmi / t_ce:.2f} ({verdict} the <= 1.5x target)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
