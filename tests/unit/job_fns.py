"""Job functions for tests/unit/test_utils_jobs.py. Worker processes and SLURM tasks import
the module of the function they run; this one imports nothing of the test suite."""

from __future__ import annotations

import logging
import os
import signal

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.jobs import job_progress


def square(x):
    """x * x and the job's OMP_NUM_THREADS; -1 fails, 99 is bad input, -9 is killed."""
    logging.getLogger("pykaldi2.test").info("job %d", x)
    if x == -9:
        os.kill(os.getpid(), signal.SIGKILL)
    if x < 0:
        raise ValueError("negative")
    if x == 99:
        raise DataError("bad input", file="f.txt")
    job_progress(x)
    return x * x, os.environ.get("OMP_NUM_THREADS")


def hold_mb(mb):
    """Touch ``mb`` MB of memory, free it, and return the byte count touched."""
    buf = bytearray(mb << 20)
    buf[::4096] = b"\x01" * len(buf[::4096])
    n = len(buf)
    del buf
    return n
