"""Job functions for the job-runner tests. Spawned workers import the module of the function
they run; this one imports nothing of the test suite (a test module importing ``conftest``
would get another directory's conftest.py in the worker)."""

from __future__ import annotations

import logging
import os

from pykaldi2.utils.errors import DataError


def square(x):
    logging.getLogger("pykaldi2.test").info("job %d", x)
    if x < 0:
        raise ValueError("negative")
    if x == 99:
        raise DataError("bad input", file="f.txt")
    return x * x, os.environ.get("OMP_NUM_THREADS")
