#!/usr/bin/env python3
"""Classic PyKaldi2 entry point: same as `pykaldi2 align` (see `pykaldi2 align --help`)."""

from _run import run

run("align")
