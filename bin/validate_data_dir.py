#!/usr/bin/env python3
"""Classic Kaldi utils/validate_data_dir.sh: same as `pykaldi2 validate-data-dir` (see `pykaldi2 validate-data-dir --help`)."""

from _run import run

run("validate-data-dir")
