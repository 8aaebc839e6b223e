"""Helpers of the recipe tests: a temporary copy of egs/ and running its scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

EGS = Path(__file__).resolve().parents[2] / "egs"
ENTRY_POINTS = ("run_ce.sh", "run_se.sh", "run_chain.sh")


def copy_egs(root: Path, *recipes: str) -> Path:
    """``root/egs`` with the shared scripts and copies of the recipe dirs (no data/, exp/)."""
    egs = root / "egs"
    egs.mkdir(parents=True)
    for f in ("stages.sh", "functions.sh", "entry.sh"):
        shutil.copy(EGS / f, egs / f)
    for r in recipes:
        if r == "an4":  # only the entry points and configs: egs/an4 holds a recipe run's outputs
            (egs / r).mkdir()
            shutil.copytree(EGS / r / "conf", egs / r / "conf")
            for f in ENTRY_POINTS:
                shutil.copy(EGS / r / f, egs / r / f)
        else:
            shutil.copytree(
                EGS / r,
                egs / r,
                ignore=shutil.ignore_patterns(*"data exp mfcc fbank downloads".split()),
            )
    return egs


def sh(cmd: list[str], cwd: Path, path_first: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` with the venv's bin (or ``path_first``) first on PATH; capture the output."""
    env = dict(os.environ)
    env["PATH"] = f"{path_first or Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def fake_pykaldi2(root: Path) -> tuple[Path, Path]:
    """A ``pykaldi2`` stand-in that appends its arguments to a log: (its bin dir, the log)."""
    bin_dir, log = root / "fakebin", root / "pykaldi2.log"
    bin_dir.mkdir()
    (bin_dir / "pykaldi2").write_text(f'#!/bin/sh\necho "pykaldi2 $*" >> {log}\n')
    (bin_dir / "pykaldi2").chmod(0o755)
    return bin_dir, log


def touch(recipe: Path, *paths: str) -> None:
    for p in paths:
        (recipe / p).parent.mkdir(parents=True, exist_ok=True)
        (recipe / p).touch()
