#!/usr/bin/env python3
"""Classic Kaldi utils/subset_data_dir.sh: same as `pykaldi2 subset-data-dir` (see `pykaldi2 subset-data-dir --help`)."""

from _run import run

run("subset-data-dir")
