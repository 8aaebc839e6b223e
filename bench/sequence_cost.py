#!/usr/bin/env python3
"""LF-MMI vs CE: training time per hour of audio, same TDNN-F and the same batches.

The data are AN4's (egs/an4: data/train_fbank + exp/tri2_ali, as in conf/chain_tdnnf.yaml):
:func:`pykaldi2.training.chain_egs.load_chain_data` builds the den graph (tri2 tree on the
chain topology, 4-gram phone LM) and the numerator supervision of each utterance. The same
batches of whole utterances are then trained, one after the other with a fresh copy of the
same initial TDNN-F, with

* CE: frame cross-entropy against the tri2 pdf alignment at the output frame rate (every 3rd
  frame: the chain tree is tri2's tree, so the pdf ids are the same);
* LF-MMI: :class:`pykaldi2.training.chain.ChainTask` (numerator + denominator forward-backward,
  l2 and xent regularization, as trained by ``train-chain``);

and, for reference, CE on the usual frame-rate network (subsampling 1, every frame a target).
Each line: seconds per hour of audio (100 input frames per second) for forward + backward +
Adam step, and the ratio to CE on the same network (target: LF-MMI <= 1.5x CE).

Lattice MMI vs CE (``--part lattice``): the CE model of conf/se_blstm.yaml (exp/blstm_ce/final,
BLSTM 3x320), whole training utterances with their tri2 alignments, the same batches trained
with frame CE and with lattice MMI as ``train-se`` runs it: denominator lattices through
exp/tri2/graph/HCLG.fst generated from the model's (eval-mode) log-likelihoods by a pool of
``--lattice-workers`` processes one batch ahead of the trainer (the extra no-grad forward
included), then MMI forward-backward over the lattices (target: <= 4x CE with 2 workers).

    python bench/sequence_cost.py [--egs egs/an4] [--batches 12] [--threads 1] [--device cpu]
                                  [--part all|chain|lattice] [--lattice-workers 2] [--rounds 3]
                                  [--config conf/chain_tdnnf.yaml | conf/chain_blstm.yaml]

``--config conf/chain_blstm.yaml`` times the chunked BLSTM chain system instead (chunks of 150
frames with 15 frames of context each side; CE on the same chunks' supervised output frames).
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


def _timed_steps(model, task_fn, batches, device, stream=list) -> float:
    """Seconds for forward + backward + Adam step over ``batches[1:]`` after the warm-up batch
    ``batches[0]``; ``stream(batches)`` is what the loop iterates (e.g. a lattice prefetcher)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step(b):
        loss = task_fn(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in stream(batches[:1]):
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in stream(batches[1:]):
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _ce_task(targets, factor: int, device, offset: int = 0):
    """Frame CE of the model's chain output against pdf alignments taken every ``factor``-th
    frame; returns the summed loss. Chunked examples (keys ``utt:begin``, ``offset`` output
    frames of left context) are scored on their supervised output frames."""

    def fn(model, batch):
        out = model(batch["feats"].to(device), batch["lengths"].to(device))  # (N, T', P)
        n_out = batch.get("out_lengths")
        width = int(n_out.max()) if n_out is not None else out.shape[1]
        out = out[:, offset : offset + width]
        tgt = torch.full(out.shape[:2], -100, dtype=torch.int64)
        for i, key in enumerate(batch["utts"]):
            utt, _, begin = key.partition(":")
            y = targets[utt][factor * int(begin or 0) :: factor].astype(np.int64)
            y = torch.from_numpy(y)[: out.shape[1] if n_out is None else int(n_out[i])]
            tgt[i, : len(y)] = y
        return torch.nn.functional.cross_entropy(
            out.reshape(-1, out.shape[-1]), tgt.reshape(-1).to(device), reduction="sum"
        )

    return fn


def _pick_batches(lengths, batches: int, batch_size: int) -> list:
    """``batches`` + 1 random batches of ``batch_size`` similar-length items (indices)."""
    order = np.argsort(lengths)[::-1]  # longest first: realistic, full batches
    rng = np.random.default_rng(0)
    picks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [picks[i] for i in sorted(rng.choice(len(picks), batches + 1, replace=False))]


def _header(device) -> None:
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"device {device}, {torch.get_num_threads()} thread(s)")  # fmt: skip


def bench_lattice(args, device) -> None:
    """Lattice MMI (train-se's pipeline) vs frame CE, same BLSTM and whole-utterance batches."""
    from pykaldi2.losses.lattice import SequenceConfig, TransitionInfo
    from pykaldi2.losses.lattice_gen import LatticeGenConfig, LatticeGenerator, LatticePrefetcher
    from pykaldi2.training.model_dir import load_final_dir
    from pykaldi2.training.se import SETask, TrainSEConfig
    from pykaldi2.training.se_egs import collate_se, load_se_data

    cfg = TrainSEConfig.load(args.se_config, overrides=["valid_fraction=0"])
    md = load_final_dir(cfg.init_model, device=str(device))
    data = load_se_data(cfg, md)
    ds = data.train
    bs = args.lattice_batch_size
    batches = [
        collate_se([ds[int(i)] for i in p]) for p in _pick_batches(ds.lengths, args.batches, bs)
    ]
    frames = sum(int(b["lengths"].sum()) for b in batches[1:])  # the warm-up batch is not timed
    hours = frames / 100 / 3600
    info = TransitionInfo.from_trans_model(md.ali_model.tm)
    tid2pdf = torch.as_tensor(info.tid2pdf, device=device)

    def ce(model, b):
        logits = model(b["feats"].to(device), b["lengths"].to(device))  # (N, T, C)
        ali = b["ali"].to(device)
        tgt = torch.where(ali > 0, tid2pdf[ali], -100)
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="sum"
        )

    seq = SequenceConfig(criterion="mmi", acoustic_scale=cfg.sequence.acoustic_scale)
    gen_cfg = LatticeGenConfig.from_dict(
        {**cfg.lattice.to_dict(), "num_workers": args.lattice_workers}
    )
    generator = LatticeGenerator(cfg.hclg_path, info, gen_cfg)  # started by the warm-up batch
    mmi_model = copy.deepcopy(md.model)
    task = SETask(seq, info, log_priors=md.log_priors, device=device)
    lat_stats = []

    def mmi(model, b):
        lat_stats.append(sum(lat.num_arcs for lat in b["lattices"]))
        return task.compute_loss(model, b).loss

    def stream(bs_):
        return LatticePrefetcher(bs_, task.loglik_fn(mmi_model), generator)

    try:
        t_ce = _timed_steps(md.model, ce, batches, device)
        t_mmi = _timed_steps(mmi_model, mmi, batches, device, stream)
    finally:
        generator.close()
    _header(device)
    print(f"data: AN4 train, {len(ds)} utterances; model {cfg.init_model} "
          f"({sum(p.numel() for p in md.model.parameters()) / 1e6:.2f}M parameters, "
          f"{md.num_pdfs} pdfs); denominator {cfg.hclg_path}")  # fmt: skip
    print(f"timed: {args.batches} batches x {bs} whole utterances = {frames} frames "
          f"({hours * 60:.2f} min of audio); lattices: {gen_cfg.num_workers} worker processes "
          f"(started in the warm-up batch), beam {gen_cfg.beam}, lattice beam "
          f"{gen_cfg.lattice_beam}, {np.mean(lat_stats[1:]) / (frames / args.batches):.1f} "
          "arcs per frame")  # fmt: skip
    print(f"{'objective':42s} {'s / hour of audio':>18s} {'x CE':>6s}")
    for name, t in (
        ("CE (frame CE, whole utterances)", t_ce),
        ("lattice MMI (lattices on the fly)", t_mmi),
    ):
        print(f"{name:42s} {t / hours:18.1f} {t / t_ce:6.2f}")
    verdict = "meets" if t_mmi / t_ce <= 4 else "misses"
    print(f"lattice MMI / CE = {t_mmi / t_ce:.2f} ({verdict} the <= 4x target)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--egs", default=str(REPO / "egs" / "an4"), help="recipe dir (its cwd)")
    ap.add_argument("--config", default="conf/chain_tdnnf.yaml", help="relative to --egs")
    ap.add_argument("--se-config", default="conf/se_blstm.yaml", help="relative to --egs")
    ap.add_argument("--part", choices=["all", "chain", "lattice"], default="all")
    ap.add_argument("--batches", type=int, default=12, help="timed batches per objective")
    ap.add_argument("--batch-size", type=int, default=16, help="utterances per batch")
    ap.add_argument("--lattice-batch-size", type=int, default=8, help="utterances per batch")
    ap.add_argument("--lattice-workers", type=int, default=2, help="lattice processes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--rounds", type=int, default=3, help="LF-MMI part: alternating timing rounds (median)"
    )
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("PYKALDI2_NO_PROGRESS", "1")
    egs = Path(args.egs)
    if not (egs / "exp" / "tri2_ali" / "final.mdl").is_file():
        sys.exit(f"{egs}/exp/tri2_ali/final.mdl missing: run the AN4 GMM recipe (egs/an4/run.sh)")
    os.chdir(egs)
    if args.part in ("all", "lattice"):
        bench_lattice(args, torch.device(args.device))
        if args.part == "lattice":
            return 0

    from pykaldi2.hmm.ali import ali_to_pdf
    from pykaldi2.training.chain import ChainTask, TrainChainConfig, chain_model_config
    from pykaldi2.training.chain_egs import collate_chain, load_chain_data
    from pykaldi2.training.data import load_alignments
    from pykaldi2.training.model_dir import build_chain_model

    cfg = TrainChainConfig.load(args.config, overrides=[f"batch_size={args.batch_size}"])
    device = torch.device(args.device)
    t0 = time.perf_counter()
    data = load_chain_data(cfg)
    prep = time.perf_counter() - t0
    alis, ali_model = load_alignments(cfg.ali_dir)
    targets = {u: ali_to_pdf(ali_model, a) for u, a in alis.items()}

    ds = data.train
    picks = _pick_batches(ds.lengths, args.batches, args.batch_size)
    batches = [collate_chain([ds[int(i)] for i in p]) for p in picks]
    frames = sum(int(b["lengths"].sum()) for b in batches[1:])  # the warm-up batch is not timed
    hours = frames / 100 / 3600

    mcfg, sub = chain_model_config(cfg, data.feats.dim, data.num_pdfs)
    torch.manual_seed(0)
    chain_model = build_chain_model(cfg.model_type, mcfg, sub, cfg.chain.xent_regularize > 0)
    chain_model.to(device)
    ce_model = copy.deepcopy(chain_model)
    ce_model.xent = None  # CE trains the chain output only
    frame_model = None  # a TDNN-F without subsampling (a BLSTM always runs at the frame rate)
    if cfg.model_type == "tdnnf":
        ce_frame_cfg, _ = chain_model_config(cfg, data.feats.dim, data.num_pdfs)
        frame_model = build_chain_model(
            cfg.model_type, dataclasses.replace(ce_frame_cfg, subsampling=1), 1, False
        ).to(device)
    offset = ds.left // cfg.frame_subsampling_factor
    task = ChainTask(
        data.den_graph, cfg.chain, cfg.frame_subsampling_factor, device,
        left_context=ds.left, frame_shift=cfg.frame_shift,
    )  # fmt: skip

    def lfmmi(model, b):
        return task.compute_loss(model, b).loss

    f = cfg.frame_subsampling_factor
    # Rounds alternate the objectives, so a load change on a shared machine hits all of them;
    # the medians over rounds are reported (each round: warm-up batch + timed batches).
    rounds = {"ce": [], "mmi": [], "frame": []}
    for _ in range(args.rounds):
        rounds["ce"].append(
            _timed_steps(ce_model, _ce_task(targets, f, device, offset), batches, device)
        )
        rounds["mmi"].append(_timed_steps(chain_model, lfmmi, batches, device))
        if frame_model is not None:
            rounds["frame"].append(
                _timed_steps(frame_model, _ce_task(targets, 1, device), batches, device)
            )
    t_ce, t_mmi = float(np.median(rounds["ce"])), float(np.median(rounds["mmi"]))
    t_frame = float(np.median(rounds["frame"])) if rounds["frame"] else None

    _header(device)
    print(f"data: AN4 train, {len(ds)} examples of {len(ds.utts)} utterances; graphs built in {prep:.1f}s; den.fst "
          f"{data.den_graph.num_states} states / {data.den_graph.num_arcs} arcs, "
          f"{data.num_pdfs} pdfs")  # fmt: skip
    unit = f"chunks of {cfg.chunk_size}+{ds.left}+{ds.right}" if cfg.chunk_size else "utterances"
    print(f"timed: {args.batches} batches x {args.batch_size} {unit} = {frames} input frames "
          f"({hours * 60:.2f} min of audio, context included); {cfg.model_type} "
          f"{mcfg.num_layers} layers x {mcfg.hidden}, output at 1/{f} frame rate "
          f"({args.config})")  # fmt: skip
    print(f"{'objective':42s} {'s / hour of audio':>18s} {'x CE':>6s}")
    rows = [
        ("CE (same net, targets every 3rd frame)", t_ce),
        ("LF-MMI (num + den + l2 + xent)", t_mmi),
    ]
    if t_frame is not None:
        rows.append(("CE, frame-rate net (subsampling 1)", t_frame))
    for name, t in rows:
        print(f"{name:42s} {t / hours:18.1f} {t / t_ce:6.2f}")
    per_round = [m / c for c, m in zip(rounds["ce"], rounds["mmi"], strict=True)]
    print(f"LF-MMI / CE per round ({args.rounds} rounds, objectives alternating): "
          + ", ".join(f"{r:.2f}" for r in per_round))  # fmt: skip
    verdict = "meets" if t_mmi / t_ce <= 1.5 else "misses"
    print(f"LF-MMI / CE = {t_mmi / t_ce:.2f} (medians; {verdict} the <= 1.5x target)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
