#!/usr/bin/env python3
"""Classic Kaldi utils/combine_data.sh: same as `pykaldi2 combine-data` (see `pykaldi2 combine-data --help`)."""

from _run import run

run("combine-data")
