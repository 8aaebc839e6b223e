"""Shared body of the bin/ scripts: run one ``pykaldi2`` subcommand with this script's args."""

import sys
from pathlib import Path

# Runnable from a checkout without installing: put the repo root first on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pykaldi2.cli.main import main  # noqa: E402


def run(subcommand: str) -> None:
    sys.exit(main([subcommand, *sys.argv[1:]]))
