#!/usr/bin/env python3
"""Classic PyKaldi2 entry point: same as `pykaldi2 prepare-lang` (see `pykaldi2 prepare-lang --help`)."""

from _run import run

run("prepare-lang")
