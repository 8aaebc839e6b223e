#!/usr/bin/env python3
"""Classic Kaldi utils/fix_data_dir.sh: same as `pykaldi2 fix-data-dir` (see `pykaldi2 fix-data-dir --help`)."""

from _run import run

run("fix-data-dir")
