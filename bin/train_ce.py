#!/usr/bin/env python3
"""Classic PyKaldi2 entry point: same as `pykaldi2 train-ce` (see `pykaldi2 train-ce --help`)."""

from _run import run

run("train-ce")
