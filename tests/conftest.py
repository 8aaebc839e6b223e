"""Shared pytest fixtures: the real corpora in ../shared/data, quiet progress bars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PYKALDI2_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PYKALDI2_SHARED_DATA", REPO.parent / "shared" / "data"))


def _corpus(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f"shared corpus {path} not present (set PYKALDI2_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def an4_dir() -> Path:
    """../shared/data/an4 (CMU AN4: etc/, flac/)."""
    return _corpus("an4")


@pytest.fixture(scope="session")
def yesno_dir() -> Path:
    """../shared/data/yesno (waves_yesno/*.wav, 8 kHz)."""
    return _corpus("yesno")


@pytest.fixture(scope="session")
def librispeech_sample_dir() -> Path:
    """../shared/data/librispeech_sample (LibriSpeech/test-clean/...)."""
    return _corpus("librispeech_sample")


@pytest.fixture(scope="session")
def kaldi_reference_dir() -> Path:
    """../shared/data/kaldi_reference (files written by real Kaldi binaries; see its README)."""
    return _corpus("kaldi_reference")


@pytest.fixture
def one_thread():
    """torch.set_num_threads(1) for the test (tiny ops only contend on a loaded 2-core CI box)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
