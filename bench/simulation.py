"""Simulation throughput: simulated audio seconds per CPU second, one process, one thread.

Chains on real LibriSpeech speech (16 kHz; ../shared/data/librispeech_sample, or synthetic
Gaussian noise when absent): noise only (coloured noise at an SNR), reverb only
(hybrid image-method room, T60 0.2-0.8 s), and the full chain (speed + reverb +
noise + volume). Also the image-source RIR kernel against its loop reference, side by side.

Loader section: the simulated training datasets (pykaldi2.simulation.dataset) on AN4 speech
(../shared/data/an4): utterances and frames per CPU second of one worker (audio read +
simulation + fbank 80 + CMN + SpecAugment), clean vs full chain, whole utterances vs 80-frame
chunks in random order (each chunk simulates its whole utterance); a real DataLoader with
``--workers`` processes (wall clock); and the ratio to the frames/s CE training of a BLSTM 3x512
consumes (bench/ce_throughput.py's step timing on this CPU, 1 thread, or ``--ce-frames-per-s``
measured elsewhere, e.g. on a GPU).

    python bench/simulation.py [--seconds 4] [--utts 4] [--section all|chains|loader]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from common import REPO, cpu_name  # noqa: E402  (bench/common.py)

from pykaldi2.simulation.config import SimulationConfig  # noqa: E402
from pykaldi2.simulation.rir import (  # noqa: E402
    Room,
    hybrid_rir,
    image_source_rir,
    image_source_rir_reference,
)
from pykaldi2.simulation.simulator import Simulator  # noqa: E402

LIBRI = REPO.parent / "shared" / "data" / "librispeech_sample" / "LibriSpeech"
AN4 = REPO.parent / "shared" / "data" / "an4"

REVERB = {"enable": True, "t60": [0.2, 0.8], "max_rir_seconds": 1.0}
CHAINS = {
    "noise only": {"noise": {"enable": True, "snr_db": [0, 20]}},
    "reverb only": {"reverb": REVERB},
    "full chain": {
        "speed": {"enable": True},
        "reverb": REVERB,
        "noise": {"enable": True, "snr_db": [0, 20]},
        "volume": {"enable": True},
    },
}


def load_speech(n_utts: int) -> tuple[list[np.ndarray], int, str]:
    files = sorted(LIBRI.rglob("*.flac"))[:n_utts] if LIBRI.is_dir() else []
    if files:
        from pykaldi2.data.audio import read_audio

        return [read_audio(str(f))[0] for f in files], 16000, f"{len(files)} LibriSpeech utts"
    rng = np.random.default_rng(0)
    return [rng.standard_normal(16000 * 10).astype(np.float32) * 1000], 16000, "synthetic 10 s"


def bench_chain(
    sim: Simulator, utts: list[np.ndarray], sr: int, min_seconds: float
) -> tuple[float, int]:
    """Audio seconds per CPU second over at least ``min_seconds`` of CPU time, and #utts run."""
    audio, n, start = 0.0, 0, time.process_time()
    while time.process_time() - start < min_seconds or n < len(utts):
        x = utts[n % len(utts)]
        sim(x, sr, sim.rng(0, n))
        audio += len(x) / sr
        n += 1
    return audio / (time.process_time() - start), n


ROOM = Room((5.0, 4.0, 3.0), 0.5, (1.2, 1.5, 1.4), (3.3, 2.2, 1.6))


def per_call(fn, reps: int) -> float:
    t = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t) / reps


def bench_rir() -> tuple[float, float, float, float]:
    """CPU seconds: reference and vectorised 0.08 s image-method RIRs; full-length pure image
    method and hybrid RIRs (T60 0.5 s)."""
    rng = np.random.default_rng(0)
    return (
        per_call(lambda: image_source_rir_reference(ROOM, 16000, 0.08), 1),
        per_call(lambda: image_source_rir(ROOM, 16000, 0.08), 20),
        per_call(lambda: image_source_rir(ROOM, 16000), 3),
        per_call(lambda: hybrid_rir(ROOM, 16000, rng), 20),
    )


def an4_data_dir(out: Path, n_utts: int) -> Path | None:
    """A data dir of the first ``n_utts`` AN4 training utterances (wav.scp, utt2spk, utt2dur)."""
    import soundfile as sf

    files = sorted((AN4 / "flac" / "an4_clstk").rglob("*.flac"))[:n_utts]
    if not files:
        return None
    utts = {f"{f.parent.name}-{f.stem}": f for f in files}
    out.mkdir(parents=True, exist_ok=True)
    (out / "wav.scp").write_text("".join(f"{u} {f}\n" for u, f in sorted(utts.items())))
    (out / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in sorted(utts)))
    dur = {u: sf.info(str(f)).frames / 16000 for u, f in utts.items()}
    (out / "utt2dur").write_text("".join(f"{u} {d:.4f}\n" for u, d in sorted(dur.items())))
    return out


def per_worker_rate(ds, keys: list, min_seconds: float) -> tuple[float, float, int]:
    """(items, target frames) per CPU second of one process calling ``ds[key]``, and #items."""
    items, frames, start = 0, 0, time.process_time()
    while time.process_time() - start < min_seconds or items < len(keys):
        _, feats, tgt = ds[keys[items % len(keys)]]
        frames += len(feats) if tgt is None else int((tgt >= 0).sum())
        items += 1
    cpu = time.process_time() - start
    return items / cpu, frames / cpu, items


def loader_rate(ds, workers: int, batch: int, epochs: int) -> float:
    """Frames/s (wall) a DataLoader with ``workers`` processes delivers (first batch excluded)."""
    import torch

    from pykaldi2.data.datasets import collate_frames
    from pykaldi2.data.samplers import BucketBatchSampler
    from pykaldi2.simulation.dataset import EpochBatchSampler

    sampler = EpochBatchSampler(BucketBatchSampler([1] * len(ds), batch_size=batch, seed=0))
    loader = torch.utils.data.DataLoader(
        ds,
        batch_sampler=sampler,
        collate_fn=collate_frames,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    frames, t0 = 0, None
    for e in range(epochs):
        sampler.set_epoch(e)
        for b in loader:
            if t0 is None:
                t0 = time.perf_counter()  # worker start-up is not throughput
                continue
            frames += int(b["lengths"].sum())
    return frames / (time.perf_counter() - t0)


def ce_frames_per_s() -> float:
    """Frames/s of a BLSTM 3x512 CE step (64 x 80 frames, 80-dim, 3000 pdfs) on this CPU with
    one thread, timed by bench/common.py's ``train_steps`` (best step, CPU time)."""
    import torch
    from common import train_steps

    torch.set_num_threads(1)
    ns = argparse.Namespace(chunks=64, chunk_size=80, dim=80, num_pdfs=3000, steps=2)
    best_step = train_steps(ns, torch.device("cpu"))[0]
    return 64 * 80 / best_step


def bench_loader(args) -> None:
    import tempfile

    from pykaldi2.features.extractors import FbankConfig
    from pykaldi2.simulation.dataset import SimulatedChunkDataset, SimulatedUtteranceDataset

    os.environ.setdefault("PYKALDI2_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        d = an4_data_dir(Path(tmp) / "an4", args.loader_utts)
        if d is None:
            print(f"loader: skipped ({AN4} not present)")
            return
        fbank = FbankConfig(num_mel_bins=80)
        clean = SimulatedUtteranceDataset(d, fbank)
        targets = {u: np.zeros(n, np.int64) for u, n in zip(clean.utts, clean.lengths)}
        full = {**CHAINS["full chain"], "specaug": {"enable": True}}
        sim = SimulatedUtteranceDataset(d, fbank, SimulationConfig.from_dict(full), targets)
        audio = sum(clean.lengths) / 100.0
        print(
            f"loader input: {len(clean)} AN4 utts, {audio:.0f} s, fbank 80, per-utterance CMN; "
            "full chain = speed + reverb + noise + volume + SpecAugment"
        )
        keys = list(range(len(clean)))
        rates = {}
        for name, ds in (("clean features", clean), ("full chain", sim)):
            ups, fps, n = per_worker_rate(ds, keys, args.seconds)
            rates[name] = fps
            print(
                f"  {name:28s}: {ups:6.1f} utts/s, {fps:8,.0f} frames/s per worker "
                f"(CPU time, {n} utts)"
            )
        chunks = SimulatedChunkDataset(sim, chunk_size=80)
        order = np.random.default_rng(0).permutation(len(chunks)).tolist()
        ups, fps, n = per_worker_rate(chunks, order, args.seconds)
        rates["full chain, 80-frame chunks"] = fps
        print(
            f"  {'full chain, chunks shuffled':28s}: {ups:6.1f} chunks/s, {fps:8,.0f} target "
            f"frames/s per worker ({len(chunks) / len(sim):.1f} chunks per utt)"
        )
        wall = loader_rate(sim, args.workers, 8, 2)
        print(
            f"  DataLoader, {args.workers} workers, full chain: {wall:,.0f} frames/s (wall; "
            "the machine's other load included)"
        )
    ce = args.ce_frames_per_s or ce_frames_per_s()
    src = "given" if args.ce_frames_per_s else "BLSTM 3x512 CE step on this CPU, 1 thread"
    print(f"CE consumption: {ce:,.0f} frames/s ({src})")
    for name, fps in rates.items():
        print(
            f"  {name:28s}: one worker = {fps / ce:5.1f}x the consumption; "
            f"{int(np.ceil(ce / fps))} worker(s) keep up"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=4.0, help="CPU seconds per chain (default 4)")
    ap.add_argument("--utts", type=int, default=4, help="number of input utterances")
    ap.add_argument("--section", choices=("all", "chains", "loader"), default="all")
    ap.add_argument("--loader-utts", type=int, default=48, help="AN4 utterances (default 48)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    ap.add_argument(
        "--ce-frames-per-s",
        type=float,
        default=0.0,
        help="CE consumption rate to compare with (default: time a BLSTM step here)",
    )
    args = ap.parse_args()
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores visible; python {platform.python_version()}, numpy {np.__version__}"
    )
    if args.section in ("all", "chains"):
        bench_chains(args)
    if args.section in ("all", "loader"):
        bench_loader(args)


def bench_chains(args) -> None:
    utts, sr, what = load_speech(args.utts)
    print(
        f"input: {what}, {sum(len(u) for u in utts) / sr:.1f} s at {sr} Hz; single process, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    for name, cfg in CHAINS.items():
        rate, n = bench_chain(Simulator(SimulationConfig.from_dict(cfg)), utts, sr, args.seconds)
        print(f"{name:12s}: {rate:8.1f} audio s / CPU s per worker ({n} utterances)")
    ref, fast, full, hybrid = bench_rir()
    print(
        f"image-method RIR, 5x4x3 m room, T60 0.5 s, first 0.08 s: reference {ref * 1e3:.0f} ms, "
        f"vectorised {fast * 1e3:.2f} ms ({ref / fast:.0f}x)"
    )
    print(
        f"full 0.5 s RIR: pure image method {full * 1e3:.1f} ms, hybrid (image method + "
        f"diffuse tail) {hybrid * 1e3:.2f} ms ({full / hybrid:.0f}x)"
    )


if __name__ == "__main__":
    main()
