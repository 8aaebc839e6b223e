"""LF-MMI forward-backward: frames per second, fast kernels vs the loop reference.

Builds a realistic den graph with the real pipeline (chain_est_phone_lm on synthetic phone
sequences with 4-gram order and 2000 extra LM states, a 2-state monophone HMM, chain-make-den-fst),
then times the batched forward + backward of :func:`pykaldi2.losses.lfmmi.den_log_likelihood`
(on CPU both the compiled kernel, losses/csrc/den.cc, and the torch recursion it replaced, side
by side) against :func:`pykaldi2.losses.lfmmi_reference.den_log_likelihood_reference` (one sequence, a few
frames: it is a Python loop per arc), one thread, side by side. Then the numerator on alignment
supervision of the same batch size, visiting each frame's arcs only vs every arc on every frame.

    python bench/lfmmi_kernel.py [--phones 40] [--batch 16] [--frames 50] [--device cpu]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from pykaldi2.kaldi import khg  # noqa: E402
from pykaldi2.lang.chain_supervision import (  # noqa: E402
    NumeratorGraphs,
    SupervisionOptions,
    add_weight_to_supervision,
    chain_get_supervision,
)
from pykaldi2.lang.den_fst import DenGraph, chain_make_den_fst, normalization_fst  # noqa: E402
from pykaldi2.lang.phone_lm import chain_est_phone_lm  # noqa: E402
from pykaldi2.lang.topo import TopoConfig, TopoEntry, make_topo  # noqa: E402
from pykaldi2.losses.lfmmi import den_log_likelihood, num_log_likelihood  # noqa: E402
from pykaldi2.losses.lfmmi_reference import den_log_likelihood_reference  # noqa: E402


def build_system(num_phones: int):
    """A 2-state left-to-right monophone system over phones 1..num_phones."""
    phones = list(range(1, num_phones + 1))
    entry = TopoEntry("left-to-right", 2)
    topo = khg.HmmTopology()
    topo.read(make_topo(phones, [], TopoConfig(entry, entry)))
    ctx = khg.monophone_context_dependency(phones, [0] + [2] * num_phones)
    return ctx, khg.TransitionModel(ctx, topo)


def synthetic_phone_seqs(num_phones: int, num_seqs: int, seed: int = 0) -> list[list[int]]:
    """Phone sequences from a random sparse bigram, so that the 4-gram has structure."""
    rng = random.Random(seed)
    succ = {p: rng.sample(range(1, num_phones + 1), 6) for p in range(num_phones + 1)}
    seqs = []
    for _ in range(num_seqs):
        p, seq = 0, []
        for _ in range(rng.randint(10, 40)):
            p = rng.choice(succ[p])
            seq.append(p)
        seqs.append(seq)
    return seqs


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phones", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=50, help="output frames per sequence")
    ap.add_argument("--ref-frames", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")

    ctx, tm = build_system(args.phones)
    t = time.perf_counter()
    lm = chain_est_phone_lm(synthetic_phone_seqs(args.phones, 3000), 4, 3, 2000)
    t_lm = time.perf_counter() - t
    t = time.perf_counter()
    den_fst = chain_make_den_fst(lm, ctx, tm)
    graph = DenGraph.from_fst(den_fst, tm.num_pdfs)
    t_den = time.perf_counter() - t
    print(
        f"phone LM: {lm.num_states} states ({t_lm:.1f} s); den graph: {graph.num_states} "
        f"states, {graph.num_arcs} arcs, {tm.num_pdfs} pdfs ({t_den:.1f} s incl. initial probs)"
    )

    dev = torch.device(args.device)
    g = graph.to(dev)
    n, frames = args.batch, args.frames
    x = torch.randn(n, frames, tm.num_pdfs, device=dev, requires_grad=True)
    lengths = torch.full((n,), frames, dtype=torch.int64, device=dev)

    def fast(kernel="auto"):
        lp = den_log_likelihood(x, lengths, g, kernel=kernel)
        lp.sum().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    fast()  # warm-up
    t_fast = timed(fast, repeat=3)
    fps_fast = n * frames / t_fast
    fps_torch = None
    if dev.type == "cpu":
        fast("torch")
        fps_torch = n * frames / timed(lambda: fast("torch"), repeat=3)

    xr = torch.randn(args.ref_frames, tm.num_pdfs, dtype=torch.float64, requires_grad=True)

    def ref():
        den_log_likelihood_reference(xr, graph, 1e-5).backward()

    t_ref = timed(ref)
    fps_ref = args.ref_frames / t_ref
    print(f"{'den kernel':<40}{'frames/s':>12}")
    print(f"{'fast (batch %d, %d frames, fwd+bwd)' % (n, frames):<40}{fps_fast:>12.1f}")
    if fps_torch is not None:
        print(f"{'  the same, torch recursion':<40}{fps_torch:>12.1f}")
        print(f"compiled kernel / torch recursion: {fps_fast / fps_torch:.2f}x")
    print(f"{'reference (1 seq, %d frames)' % args.ref_frames:<40}{fps_ref:>12.2f}")
    print(f"speed-up fast / reference: {fps_fast / fps_ref:.0f}x")
    bench_numerator(args, ctx, tm, den_fst, graph, dev)


def bench_numerator(args, ctx, tm, den_fst, graph, dev) -> None:
    """Alignment supervision (3 output frames per phone, factor 3, tolerance 5) for a batch."""
    n, frames = args.batch, args.frames
    per_utt = frames // 3
    seqs = [s[:per_utt] for s in synthetic_phone_seqs(args.phones, 10 * n)]  # LM training data
    seqs = [s for s in seqs if len(s) == per_utt][:n]
    opts = SupervisionOptions(5, 5, frame_subsampling_factor=3)
    norm = normalization_fst(den_fst, graph.initial_probs)
    t = time.perf_counter()
    sups = [
        add_weight_to_supervision(chain_get_supervision(s, [9] * len(s), ctx, tm, opts), norm)
        for s in seqs
    ]
    t_sup = (time.perf_counter() - t) / len(sups)
    layered = NumeratorGraphs.from_fsts(sups, tm.num_pdfs).to(dev)
    every = NumeratorGraphs.from_fsts(sups, tm.num_pdfs, layered=False).to(dev)
    x = torch.randn(len(sups), per_utt * 3, tm.num_pdfs, device=dev)
    lengths = torch.full((len(sups),), per_utt * 3, dtype=torch.int64, device=dev)
    print(
        f"numerator: {len(sups)} utterances, {layered.num_states} states and "
        f"{layered.src.numel()} arcs in all; {1000 * t_sup:.0f} ms per utterance to build"
    )
    print(f"{'num kernel (fwd+bwd)':<40}{'frames/s':>12}")
    for name, g in (("each frame's arcs only", layered), ("every arc on every frame", every)):
        sec = timed(lambda g=g: num_log_likelihood(x, lengths, g), repeat=3)
        print(f"{name:<40}{x.shape[0] * x.shape[1] / sec:>12.1f}")


if __name__ == "__main__":
    main()
