#!/usr/bin/env python3
"""Classic PyKaldi2 entry point: same as `pykaldi2 train-se` (see `pykaldi2 train-se --help`)."""

from _run import run

run("train-se")
