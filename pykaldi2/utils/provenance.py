"""What produced an exp dir: the resolved config, the git sha and package versions."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from pykaldi2 import __version__
from pykaldi2.utils.io import atomic_write_text

_PACKAGES = (
    "torch",
    "numpy",
    "kaldi-hmm-gmm",
    "kaldifst",
    "kaldi-decoder",
    "kaldilm",
    "kaldi-native-fbank",
    "kaldiio",
    "h5py",
    "sentencepiece",
)


def git_sha(repo: str | os.PathLike | None = None) -> str:
    """The checkout's HEAD sha (with ``-dirty`` when modified), or ``unknown``."""
    repo = Path(repo or Path(__file__).resolve().parents[2])
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "-uno"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def package_versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def provenance() -> dict[str, Any]:
    return {
        "pykaldi2": __version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
    }


def save_config(path: str | os.PathLike, config: dict[str, Any]) -> None:
    """Write ``config`` (resolved) plus provenance as YAML, atomically."""
    doc = {"config": config, "provenance": provenance()}
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
