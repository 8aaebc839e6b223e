#!/usr/bin/env python3
"""Classic PyKaldi2 entry point: same as `pykaldi2 train-chain` (see `pykaldi2 train-chain --help`)."""

from _run import run

run("train-chain")
