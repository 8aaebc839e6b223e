#!/usr/bin/env python3
"""Classic PyKaldi2 entry point: same as `pykaldi2 decode` (see `pykaldi2 decode --help`)."""

from _run import run

run("decode")
