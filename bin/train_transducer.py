#!/usr/bin/env python3
"""Classic PyKaldi2 entry point: same as `pykaldi2 train-transducer` (see `pykaldi2 train-transducer --help`)."""

from _run import run

run("train-transducer")
