"""Do two one-thread jobs run at full speed side by side on this machine? (#19's nj=2 speedups)

Each kernel runs for --seconds in one process alone, then in two processes at once (one BLAS
thread each); the figure is (sum of the two rates) / (rate alone), 2.0 when the two cores are
really two. Kernels: ``matmul`` (float32 256 x 256, FMA-bound), ``fft`` (numpy rfft of 1,000 x
512 frames, what feature extraction does), ``pyloop`` (scalar Python), ``chase`` (random pointer
chasing over 64 MB: memory latency, what a decoder's graph walk is like). A machine whose two
vCPUs are SMT siblings of one core, or share a power budget, shows it here first::

    python bench/side_by_side.py [--seconds 8] [matmul fft ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

KERNELS = {
    "matmul": "import numpy as np\na = np.random.rand(256, 256).astype(np.float32)\n"
    "def step():\n    for _ in range(50):\n        a @ a\n",
    "fft": "import numpy as np\nx = np.random.rand(1000, 512).astype(np.float32)\n"
    "def step():\n    np.fft.rfft(x, axis=1)\n",
    "pyloop": "def step():\n    s = 0\n    for i in range(200000):\n        s += i * i\n",
    "chase": "import numpy as np\np = np.random.permutation(8 * 1024 * 1024).astype(np.int64)\n"
    "def step():\n    i = 0\n    for _ in range(20000):\n        i = p[i]\n",
}


def _child(kernel: str, seconds: float) -> None:
    ns: dict = {}
    exec(KERNELS[kernel], ns)  # noqa: S102 -- our own kernel source above
    step = ns["step"]
    step()  # warm-up
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    print(n / (time.perf_counter() - t0))


def _rates(kernel: str, copies: int, seconds: float) -> list[float]:
    env = {**os.environ, **ONE_THREAD}
    cmd = [sys.executable, __file__, "--child", kernel, "--seconds", str(seconds)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(copies)
    ]
    return [float(p.communicate()[0]) for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kernels", nargs="*", help=f"some of {', '.join(KERNELS)} (default all)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.seconds)
        return
    bad = [k for k in args.kernels if k not in KERNELS]
    if bad:
        ap.error(f"unknown kernel(s) {', '.join(bad)}; choose from {', '.join(KERNELS)}")
    kernels = args.kernels or list(KERNELS)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import cpu_name

    print(f"{cpu_name()}, {os.cpu_count()} CPUs; {args.seconds:g} s per run, one thread each")
    worst = None
    for k in kernels:
        (alone,) = _rates(k, 1, args.seconds)
        both = _rates(k, 2, args.seconds)
        s = sum(both) / alone
        worst = s if worst is None else min(worst, s)
        print(
            f"{k:7s} alone {alone:8.1f}/s, side by side {both[0]:8.1f} + {both[1]:8.1f}/s: x{s:.2f}"
        )
    print(f"side_by_side: worst x{worst:.2f} (2.00 = two full cores)")


if __name__ == "__main__":
    main()
