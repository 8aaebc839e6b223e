"""Simulation throughput: simulated audio seconds per CPU second, one process, one thread.

Chains on real LibriSpeech speech (16 kHz; ../shared/data/librispeech_sample, or synthetic
Gaussian noise when absent): noise only (coloured noise at an SNR), reverb only
(hybrid image-method room, T60 0.2-0.8 s), and the full chain (speed + reverb +
noise + volume). Also the image-source RIR kernel against its loop reference, side by side.

    python bench/simulation.py [--seconds 4] [--utts 4]
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

from pykaldi2.simulation.config import SimulationConfig  # noqa: E402
from pykaldi2.simulation.rir import (  # noqa: E402
    Room,
    hybrid_rir,
    image_source_rir,
    image_source_rir_reference,
)
from pykaldi2.simulation.simulator import Simulator  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LIBRI = REPO.parent / "shared" / "data" / "librispeech_sample" / "LibriSpeech"

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


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=4.0, help="CPU seconds per chain (default 4)")
    ap.add_argument("--utts", type=int, default=4, help="number of input utterances")
    args = ap.parse_args()
    utts, sr, what = load_speech(args.utts)
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores visible; python {platform.python_version()}, numpy {np.__version__}"
    )
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
