"""RNN-T loss: speed and peak memory of our fused loss vs a naive autograd loss vs the reference.

    .venv/bin/python bench/rnnt_loss.py            # default run, a few minutes on 2 cores
    .venv/bin/python bench/rnnt_loss.py --quick    # smaller shapes (smoke test)
    .venv/bin/python bench/rnnt_loss.py --an4      # full vs pruned training step, real batch

``--an4``: one training step (forward + backward of the whole model, the loss's share measured
apart) of the AN4 recipe's transducer (egs/an4/conf/transducer_dev.yaml: LSTM 2+2 x 320,
joiner 256, + 0.3 CTC) on a real AN4 batch: the 16 longest training utterances of
../shared/data/an4 (fbank 80, sliding CMN, 3x3 stacking, sentencepiece targets trained on the
AN4 training transcripts with V symbols), with the full loss (the (B, T', U+1, V) joiner output)
against ``loss: pruned`` (prune range 5, simple loss smoothed with lm_scale 0.25, fully warmed
up), for V = 32 (the recipe) and larger vocabularies.

Implementations (all forward + backward to the logits):

- ``ours``: :func:`pykaldi2.losses.rnnt.rnnt_loss` (chunked log-softmax, anti-diagonal
  forward-backward, one fused gradient pass);
- ``naive``: :func:`pykaldi2.losses.rnnt_reference.rnnt_loss_naive` (full (B, T, U+1, V)
  log-softmax, batched loop over t, autograd backward);
- ``reference``: :func:`pykaldi2.losses.rnnt_reference.rnnt_loss_reference` (Python loops over
  nodes, autograd), only at a small shape.

and, from the joiner's inputs (B, T, 256) and (B, U+1, 256) to the loss (gradients to the inputs
and the joiner weights): ``full-joiner`` (tanh joiner on the whole (B, T, U+1) grid + ``ours``)
against ``pruned-joiner`` (:mod:`pykaldi2.losses.rnnt_pruned`: simple loss, bands of 5 columns,
joiner on the bands; 0.5 * simple + pruned). "x logits" there relates to the size a float32
(B, T, U+1, V) tensor would have.

How memory is measured: every (implementation, shape) runs in a fresh Python process. On CPU the
process records ``ru_maxrss`` (peak resident memory, from ``resource.getrusage``) after building
the inputs (logits and targets) and again after the timed forward+backward runs; the difference is
the peak extra memory the loss needed, its (B, T, U+1, V) gradient included. torch's CPU
allocations are invisible to tracemalloc, and RSS is what the machine actually has to provide. On
CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated before the loss is used.
Times are the median of ``--repeat`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMPLS = ("ours", "naive", "reference")
JOINER_DIM = 256  # joiner hidden units in the joiner + loss comparison
PRUNE_RANGE = 5  # s_range of the pruned loss


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, CUDA device: {dev}, load average "
        f"{os.getloadavg()[0]:.1f}"
    )


def worker(
    impl: str, B: int, T: int, U: int, V: int, repeat: int, device: str, threads: int
) -> dict:
    """Run one configuration in this (fresh) process; returns the figures as a dict."""
    import torch

    torch.set_num_threads(threads)
    from pykaldi2.losses.rnnt import rnnt_loss
    from pykaldi2.losses.rnnt_pruned import (
        do_rnnt_pruning,
        get_rnnt_prune_ranges,
        rnnt_loss_pruned,
        rnnt_loss_simple,
    )
    from pykaldi2.losses.rnnt_reference import rnnt_loss_naive, rnnt_loss_reference

    g = torch.Generator().manual_seed(0)
    targets = torch.randint(1, V, (B, U), generator=g).to(device)
    Tl = torch.randint(T * 3 // 4, T + 1, (B,), generator=g)
    Ul = torch.randint(U * 3 // 4, U + 1, (B,), generator=g)
    Tl[0], Ul[0] = T, U
    Tl, Ul = Tl.to(device), Ul.to(device)
    cuda = device.startswith("cuda")

    def leaf(*shape):
        return torch.randn(*shape, generator=g).to(device).requires_grad_()

    if impl.endswith("joiner"):  # the joiner and the loss: (enc, pred) -> loss
        J = JOINER_DIM
        enc, pred = leaf(B, T, J), leaf(B, U + 1, J)
        w_out, w_am, w_lm = leaf(J, V), leaf(J, V), leaf(J, V)
        inputs = [enc, pred, w_out, w_am, w_lm]
    else:
        logits = leaf(B, T, U + 1, V)
        inputs = [logits]

    def loss_fn() -> torch.Tensor:
        if impl == "ours":
            return rnnt_loss(logits, targets, Tl, Ul, reduction="sum")
        if impl == "naive":
            return rnnt_loss_naive(logits, targets, Tl, Ul).sum()
        if impl == "reference":
            return rnnt_loss_reference(logits, targets, Tl, Ul).sum()
        if impl == "full-joiner":
            full = torch.tanh(enc[:, :, None] + pred[:, None]) @ w_out
            return rnnt_loss(full, targets, Tl, Ul, reduction="sum")
        # pruned-joiner: simple loss, bands of PRUNE_RANGE columns, joiner on the bands
        simple, g_blank, g_emit = rnnt_loss_simple(
            enc @ w_am, pred @ w_lm, targets, Tl, Ul, reduction="sum"
        )
        ranges = get_rnnt_prune_ranges(g_blank, g_emit, Tl, Ul, PRUNE_RANGE)
        e, p = do_rnnt_pruning(enc, pred, ranges, PRUNE_RANGE)
        pruned = rnnt_loss_pruned(
            torch.tanh(e + p) @ w_out, targets, ranges, Tl, Ul, reduction="sum"
        )
        return 0.5 * simple + pruned

    def run() -> tuple[float, float, float]:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = loss_fn()
        if cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        if cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        del grads
        return t1 - t0, t2 - t1, loss.item()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    run()  # warm-up
    runs = [run() for _ in range(repeat)]
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {
        "fwd_s": statistics.median(r[0] for r in runs),
        "bwd_s": statistics.median(r[1] for r in runs),
        "loss": runs[-1][2],
        "peak_mib": peak,
        "logits_mib": B * T * (U + 1) * V * 4 / 2**20,  # a float32 (B, T, U+1, V) tensor
    }


AN4 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "an4"
AN4_BATCH = 16


def an4_batch(vocab: int, tmp: Path):
    """The 16 longest AN4 training utterances through the recipe's front end, and their
    sentencepiece targets (a ``vocab``-symbol BPE trained on the training transcripts)."""
    import re

    import numpy as np
    import torch

    from pykaldi2.data.audio import read_audio
    from pykaldi2.data.datasets import collate_frames
    from pykaldi2.features.cmvn import SlidingCmnConfig
    from pykaldi2.features.extractors import FbankConfig, make_extractor
    from pykaldi2.features.transducer_frontend import TransducerFrontendConfig
    from pykaldi2.lang.tokenizer import TokenizerConfig, train_tokenizer

    lines = (AN4 / "etc/an4_train.transcription").read_text().splitlines()
    utts = [re.match(r"<s> (.*) </s> \((\S+)\)$", ln.strip()).groups() for ln in lines]
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    (tmp / "data/text").write_text("".join(f"{u} {t}\n" for t, u in utts))
    tok = train_tokenizer([tmp / "data"], tmp / f"tok{vocab}", TokenizerConfig(vocab_size=vocab))
    sizes = {u: (AN4 / "flac/an4_clstk" / u.split("-")[1] / f"{u}.flac").stat().st_size
             for _, u in utts}  # fmt: skip
    longest = sorted(utts, key=lambda x: -sizes[x[1]])[:AN4_BATCH]
    ext = make_extractor(FbankConfig(num_mel_bins=80))
    fe = TransducerFrontendConfig(sliding=SlidingCmnConfig(cmn_window=300, min_window=100))
    items = []
    for text, u in longest:
        x, sr = read_audio(str(AN4 / "flac/an4_clstk" / u.split("-")[1] / f"{u}.flac"))
        feats = fe.from_raw(ext.compute(x, sr))
        items.append((u, feats, np.asarray(tok.encode(text), np.int64)))
    batch = collate_frames(items)
    batch["targets"] = torch.where(batch["targets"] < 0, -1, batch["targets"])
    return batch, tok.vocab_size


def an4_worker(impl: str, vocab: int, repeat: int, threads: int) -> dict:
    """One AN4 training step (see the module doc) in this fresh process."""
    import tempfile

    import torch

    torch.set_num_threads(threads)
    from pykaldi2.nnet.transducer import Transducer, TransducerConfig
    from pykaldi2.training.transducer import PrunedLossConfig, TransducerTask

    with tempfile.TemporaryDirectory() as tmp:
        batch, V = an4_batch(vocab, Path(tmp))
    pruned = PrunedLossConfig(prune_range=PRUNE_RANGE, warm_step=0) if impl == "pruned" else None
    torch.manual_seed(0)
    mcfg = TransducerConfig.preset(
        "testing", in_feats=240, vocab_size=V, enc_n_hid=320, enc_pre_rnn_layers=2,
        enc_post_rnn_layers=2, enc_layer_norm=True, pred_n_hid=160, pred_rnn_layers=1,
        joint_n_hid=256, ctc_head=True, simple_proj=pruned is not None,
    )  # fmt: skip
    model = Transducer(mcfg).train()
    task = TransducerTask("cpu", ctc_weight=0.3, pruned=pruned)
    B = len(batch["lengths"])
    T = int(model.encoder.output_lengths(batch["lengths"]).max())
    U = int((batch["targets"] >= 0).sum(1).max())

    def step() -> tuple[float, float]:
        t0 = time.perf_counter()
        out = task.compute_loss(model, batch)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, out.stats["rnnt"]

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    runs = [step() for _ in range(repeat)]
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {
        "step_s": statistics.median(r[0] for r in runs),
        "rnnt": runs[-1][1],
        "peak_mib": peak,
        "B": B, "T": T, "U": U, "V": V,
        "logits_mib": B * T * (U + 1) * V * 4 / 2**20,
    }  # fmt: skip


def run_an4(args: argparse.Namespace) -> None:
    print("machine:", machine())
    print(f"AN4: the {AN4_BATCH} longest training utterances, one training step of the recipe's "
          "transducer (forward + backward, + 0.3 CTC), median of", args.repeat)  # fmt: skip
    for vocab in (32, 128, 256):
        res = {}
        for impl in ("full", "pruned"):
            cmd = [sys.executable, __file__, "--an4-worker", impl, str(vocab),
                   "--repeat", str(args.repeat), "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"AN4 worker {impl} V={vocab} failed:\n{out.stderr}")
            res[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        f, p = res["full"], res["pruned"]
        print(
            f"V={f['V']:<4d} B={f['B']} T'={f['T']} U={f['U']}: full {f['step_s'] * 1e3:7.0f} ms "
            f"peak +{f['peak_mib']:6.1f} MiB (logits {f['logits_mib']:.0f} MiB) | pruned "
            f"{p['step_s'] * 1e3:7.0f} ms peak +{p['peak_mib']:6.1f} MiB | time x"
            f"{p['step_s'] / f['step_s']:.2f}, peak x{p['peak_mib'] / max(f['peak_mib'], 1e-9):.2f}"
            f"; RNN-T loss full {f['rnnt']:.1f}, pruned {p['rnnt']:.1f} (random init)",
            flush=True,
        )


def measure(impl: str, shape: tuple[int, int, int, int], args: argparse.Namespace) -> dict:
    """Run :func:`worker` in a fresh process (so peak memory is this configuration's alone)."""
    cmd = [sys.executable, __file__, "--worker", impl, *map(str, shape)]
    cmd += ["--repeat", str(args.repeat), "--device", args.device, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {impl} {shape} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(impl: str, shape, r: dict, base: dict | None) -> str:
    B, T, U, V = shape
    total = r["fwd_s"] + r["bwd_s"]
    text = (
        f"{impl:13s} B={B:<3d} T={T:<4d} U={U:<3d} V={V:<5d} fwd {r['fwd_s'] * 1e3:8.1f} ms  "
        f"bwd {r['bwd_s'] * 1e3:8.1f} ms  total {total * 1e3:8.1f} ms  "
        f"peak +{r['peak_mib']:7.1f} MiB ({r['peak_mib'] / r['logits_mib']:.2f} x logits)"
    )
    if base is not None and impl not in ("ours", "full-joiner"):
        bt = base["fwd_s"] + base["bwd_s"]
        mem = r["peak_mib"] / max(base["peak_mib"], 1e-9)
        than = "full-joiner" if impl == "pruned-joiner" else "ours"
        text += f"  | vs {than}: time x{total / bt:.2f}, peak memory x{mem:.2f}"
        if impl != "pruned-joiner":  # the same loss: the values must agree
            text += f", loss rel. diff {abs(r['loss'] - base['loss']) / abs(base['loss']):.1e}"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes only")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in each worker (default 1: stable figures on a shared machine)",
    )
    ap.add_argument(
        "--worker", nargs=5, metavar=("IMPL", "B", "T", "U", "V"), help=argparse.SUPPRESS
    )
    ap.add_argument("--an4", action="store_true", help="full vs pruned on a real AN4 batch")
    ap.add_argument("--an4-worker", nargs=2, metavar=("IMPL", "V"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.an4_worker:
        impl, vocab = args.an4_worker
        print(json.dumps(an4_worker(impl, int(vocab), args.repeat, args.threads)))
        return
    if args.an4:
        run_an4(args)
        return
    if args.worker:
        impl, *dims = args.worker
        print(json.dumps(worker(impl, *map(int, dims), args.repeat, args.device, args.threads)))
        return

    import torch

    torch.set_num_threads(args.threads)
    print("machine:", machine())
    print(
        f"device: {args.device}; peak = extra peak memory of forward + backward, see the docstring"
    )
    small = (2, 20, 5, 50)
    main_shape = (4, 100, 20, 250) if args.quick else (8, 200, 40, 500)
    large = (4, 200, 40, 500) if args.quick else (8, 400, 80, 500)
    plan = [(small, IMPLS), (main_shape, ("ours", "naive")), (large, ("ours", "naive"))]
    B, T, U, _ = main_shape
    sweep = [(B, T, U, v) for v in ((125, 500) if args.quick else (250, 1000))]
    plan += [(s, ("ours", "naive")) for s in sweep]
    plan += [(large, ("full-joiner", "pruned-joiner"))]
    mem_by_v: dict[str, dict[int, float]] = {"ours": {}, "naive": {}}
    for shape, impls in plan:
        results = {impl: measure(impl, shape, args) for impl in impls}
        for impl in impls:
            print(row(impl, shape, results[impl], results[impls[0]]), flush=True)
            if shape[:3] == main_shape[:3] and impl in mem_by_v:
                mem_by_v[impl][shape[3]] = results[impl]["peak_mib"]
        print()
    print("peak memory against V at B, T, U =", main_shape[:3])
    for impl, by_v in mem_by_v.items():
        vs = sorted(by_v)
        per_v = (by_v[vs[-1]] - by_v[vs[0]]) / (vs[-1] - vs[0])
        figures = ", ".join(f"V={v}: {by_v[v]:.0f} MiB" for v in vs)
        print(f"  {impl:6s} {figures}; slope {per_v:.3f} MiB per unit of V")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
