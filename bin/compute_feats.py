#!/usr/bin/env python3
"""Classic PyKaldi2 entry point: same as `pykaldi2 compute-feats` (see `pykaldi2 compute-feats --help`)."""

from _run import run

run("compute-feats")
