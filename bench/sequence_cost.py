#!/usr/bin/env python3
"""LF-MMI vs CE: training time per hour of audio, same TDNN-F and the same batches.

The data are AN4's LF-MMI egs (egs/an4 stage 11: exp/chain_tdnnf/egs, conf/chain_tdnnf.yaml):
chunks of the principal width with the TDNN-F's exact context, as train-chain reads them. The
same batches are trained, one after the other with a fresh copy of the same initial TDNN-F,
with

* CE: frame cross-entropy against the chain tree's pdf alignment (exp/chain/tree_sp/ali.ark,
  at the output frame rate) on the chain output;
* LF-MMI: :class:`pykaldi2.training.chain.ChainTask` (numerator + denominator
  forward-backward, leaky HMM, per-layer l2, out-of-range and xent regularization, frame
  shift, as ``train-chain`` runs it; on CPU the denominator runs in the compiled kernel);
* on CPU, the same LF-MMI with the denominator recursion in torch ops (the kernel's
  reference, what ran before the kernel);

and, for reference, CE on the same network at the full frame rate (subsampling 1).
``--den-fst`` times the LF-MMI part on another den graph (e.g. speechocean762's, a realistic
size): the network then has that graph's pdf count and the AN4 numerators' pdfs are mapped into
its range. Each line: seconds per hour of audio (100 input frames per second) for forward +
backward + Adam step, and the ratio to CE on the same network (target: LF-MMI <= 1.3x CE).

Lattice MMI vs CE (``--part lattice``): the CE model of conf/se_blstm.yaml (exp/blstm_ce/final,
BLSTM 3x320), whole training utterances with their tri2 alignments, the same batches trained
with frame CE and with lattice MMI as ``train-se`` runs it: denominator lattices through
exp/tri2/graph/HCLG.fst generated from the model's (eval-mode) log-likelihoods by a pool of
``--lattice-workers`` processes one batch ahead of the trainer (the extra no-grad forward
included), then MMI forward-backward over the lattices (target: <= 4x CE with 2 workers).

    python bench/sequence_cost.py [--egs egs/an4] [--batches 12] [--threads 1] [--device cpu]
                                  [--part all|chain|lattice] [--lattice-workers 2] [--rounds 3]
                                  [--config conf/chain_tdnnf.yaml] [--den-fst DEN.FST]
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
    from pykaldi2.hmm.latgen import LatticeGenConfig, LatticeGenerator
    from pykaldi2.hmm.lattice_arrays import TransitionInfo
    from pykaldi2.losses.lattice import SequenceConfig
    from pykaldi2.losses.lattice_gen import LatticePrefetcher
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
    ap.add_argument("--batch-size", type=int, default=64, help="chunks per LF-MMI batch")
    ap.add_argument("--exp", default="exp/chain_tdnnf", help="the chain exp dir (its egs)")
    ap.add_argument(
        "--den-fst", help="time the LF-MMI part with this den.fst instead of the egs dir's "
        "(e.g. speechocean762's): numerator pdfs are mapped into its pdf range",
    )  # fmt: skip
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
    os.chdir(egs)
    if args.part in ("all", "lattice"):
        bench_lattice(args, torch.device(args.device))
        if args.part == "lattice":
            return 0

    bench_chain(args, torch.device(args.device))
    return 0


def _egs_batches(info, batch_size: int, batches: int) -> list:
    """``batches`` + 1 batches of ``batch_size`` chunks of the principal width, from the
    first archive of the egs dir (as training reads them)."""
    from pykaldi2.training.chain_egs import EgsDataset, archive_num_out, collate_chain

    ds = EgsDataset(info)
    num_out = archive_num_out(info.archive(0))
    width = info.chunk_widths[0] // info.frame_subsampling_factor
    idx = np.flatnonzero(num_out == width)
    need = (batches + 1) * batch_size
    if len(idx) < need:
        sys.exit(f"{info.archive(0)} has {len(idx)} chunks of {width} frames, need {need}")
    idx = np.random.default_rng(0).permutation(idx)[:need]
    return [
        collate_chain([ds[(0, int(i))] for i in idx[k * batch_size : (k + 1) * batch_size]])
        for k in range(batches + 1)
    ]


def _remap(batches, targets_fn, num_pdfs: int):
    """Numerator pdfs (and CE targets) taken modulo ``num_pdfs``: another den graph's pdf set
    for the AN4 chunks (the timing is that of the shapes, not of the values)."""
    for b in batches:
        b["num_graphs"].pdf = b["num_graphs"].pdf % num_pdfs
    return lambda key, n: targets_fn(key, n) % num_pdfs


def bench_chain(args, device) -> None:
    """LF-MMI (train-chain on egs) vs frame CE on the same TDNN-F and the same chunks."""
    from pykaldi2.hmm.ali import read_ali
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import kaldifst
    from pykaldi2.lang.den_fst import DenGraph
    from pykaldi2.training.chain import ChainTask, TrainChainConfig, chain_model_config
    from pykaldi2.training.chain_get_egs import egs_dir_of, read_egs_info
    from pykaldi2.training.model_dir import build_chain_model

    cfg = TrainChainConfig.load(args.config)
    egs_dir = egs_dir_of(cfg, args.exp)
    info = read_egs_info(egs_dir)
    if info is None:
        sys.exit(f"no finished egs dir {egs_dir}: run egs/an4/run.sh --stage 11 (or "
                 f"pykaldi2 chain-get-egs --config {args.config} {args.exp})")  # fmt: skip
    f = info.frame_subsampling_factor
    den_path = Path(args.den_fst) if args.den_fst else egs_dir / "den.fst"
    den_fst = kaldifst.StdVectorFst.read(str(den_path))
    labels = [a.ilabel for s in range(den_fst.num_states) for a in kaldifst.ArcIterator(den_fst, s)]
    num_pdfs = max(labels) if args.den_fst else info.num_pdfs
    den = DenGraph.from_fst(den_fst, num_pdfs)
    tree_alis = read_ali(Path(cfg.tree_dir) / "ali.ark")
    tree_model = GmmModel.load(Path(cfg.tree_dir) / "final.mdl")

    def targets(key: str, n: int) -> np.ndarray:
        utt, _, b = key.rpartition(":")
        y = tree_model.tid2pdf[tree_alis[utt]][int(b) : int(b) + n]
        return np.pad(y, (0, n - len(y)), mode="edge")

    batches = _egs_batches(info, args.batch_size, args.batches)
    if args.den_fst:
        targets = _remap(batches, targets, num_pdfs)
    e = info.extra_context
    frames = sum(int(b["lengths"].sum()) - 2 * e * len(b["lengths"]) for b in batches[1:])
    hours = frames / 100 / 3600
    mcfg, sub = chain_model_config(cfg, info.feat_dim, num_pdfs)
    torch.manual_seed(0)
    chain_model = build_chain_model(cfg.model_type, mcfg, sub, True).to(device)
    ce_model = copy.deepcopy(chain_model)
    ref_model = copy.deepcopy(chain_model)
    frame_cfg = dataclasses.replace(mcfg, subsampling=1, xent_branch=False)
    frame_model = build_chain_model(cfg.model_type, frame_cfg, 1, False).to(device)
    task = ChainTask(den, cfg.chain, f, device, frame_shift=cfg.frame_shift, extra_context=e)
    # the same objective with the den recursion in torch ops (the kernel's reference; on CPU
    # the default is the compiled kernel of losses/csrc/den.cc)
    task_ref = ChainTask(den, cfg.chain, f, device, frame_shift=cfg.frame_shift, extra_context=e,
                         den_kernel="torch")  # fmt: skip

    def lfmmi(model, b):
        return task.compute_loss(model, b).loss

    def lfmmi_ref(model, b):
        return task_ref.compute_loss(model, b).loss

    def ce(rate: int):
        def fn(model, b):
            x = b["feats"][:, e : b["feats"].shape[1] - e].to(device)
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
            out, _ = model.forward_train(x, lengths, context_included=True)
            n = int(b["out_lengths"][0])
            y = [np.repeat(targets(k, n), rate)[: out.shape[1]] for k in b["utts"]]
            y = torch.from_numpy(np.stack(y).astype(np.int64)).to(device)
            return torch.nn.functional.cross_entropy(
                out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum"
            )

        return fn

    rounds = {"ce": [], "mmi": [], "mmi_ref": [], "frame": []}
    for _ in range(args.rounds):  # alternating, so a load change hits every objective
        rounds["ce"].append(_timed_steps(ce_model, ce(1), batches, device))
        rounds["mmi"].append(_timed_steps(chain_model, lfmmi, batches, device))
        if device.type == "cpu":
            rounds["mmi_ref"].append(_timed_steps(ref_model, lfmmi_ref, batches, device))
        rounds["frame"].append(_timed_steps(frame_model, ce(f), batches, device))
    t_ce, t_mmi, t_frame = (float(np.median(rounds[k])) for k in ("ce", "mmi", "frame"))
    _header(device)
    print(f"data: {info.num_chunks} chunks in {egs_dir}; den.fst {den_path}: {den.num_states} "
          f"states / {den.num_arcs} arcs, {num_pdfs} pdfs")  # fmt: skip
    print(
        f"timed: {args.batches} batches x {args.batch_size} chunks of {info.chunk_widths[0]} "
        f"frames + context {info.left_context}/{info.right_context} = {frames} input frames "
        f"({hours * 60:.2f} min of audio); {cfg.model_type} {len(mcfg.time_strides)} tdnnf "
        f"layers x {mcfg.hidden}/{mcfg.bottleneck}, output at 1/{f} rate ({args.config})"
    )
    print(f"{'objective':42s} {'s / hour of audio':>18s} {'x CE':>6s}")
    rows = [("CE (same net and chunks, chain-tree pdfs)", t_ce),
            ("LF-MMI (num + den + l2 + xent)", t_mmi)]  # fmt: skip
    if rounds["mmi_ref"]:
        rows.append(("LF-MMI, den in torch ops (reference)", float(np.median(rounds["mmi_ref"]))))
    rows.append(("CE, frame-rate net (subsampling 1)", t_frame))
    for name, t in rows:
        print(f"{name:42s} {t / hours:18.1f} {t / t_ce:6.2f}")
    per_round = [m / c for c, m in zip(rounds["ce"], rounds["mmi"], strict=True)]
    print(f"LF-MMI / CE per round ({args.rounds} rounds, objectives alternating): "
          + ", ".join(f"{r:.2f}" for r in per_round))  # fmt: skip
    verdict = "meets" if t_mmi / t_ce <= 1.3 else "misses"
    print(f"LF-MMI / CE = {t_mmi / t_ce:.2f} (medians; {verdict} the <= 1.3x target)")


if __name__ == "__main__":
    raise SystemExit(main())
