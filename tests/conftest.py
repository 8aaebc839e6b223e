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


@pytest.fixture
def one_thread():
    """torch.set_num_threads(1) for the test (tiny ops only contend on a loaded 2-core CI box)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def kaldi_ref() -> Path:
    """../shared/data/kaldi_reference (files written by real Kaldi; see its README.md)."""
    return _corpus("kaldi_reference")


@pytest.fixture(scope="session")
def kaldi_an4_train(kaldi_ref, tmp_path_factory) -> Path:
    """Kaldi's AN4 train data dir (its compressed MFCC feats.ark and per-speaker cmvn.ark) as a
    data dir our readers take: the tables copied, feats.scp/cmvn.scp pointing at Kaldi's arks."""
    src = kaldi_ref / "an4" / "data" / "train"
    out = tmp_path_factory.mktemp("kaldi_an4") / "train"
    out.mkdir()
    for name in ("text", "utt2spk", "spk2utt", "utt2num_frames"):
        (out / name).write_text((src / name).read_text())
    (out / "wav.scp").write_text((src / "wav_flac.scp").read_text())
    root = kaldi_ref / "an4"
    for name in ("feats.scp", "cmvn.scp"):
        lines = []
        for line in (src / name).read_text().splitlines():
            key, loc = line.split(maxsplit=1)
            lines.append(f"{key} {root / loc}\n")
        (out / name).write_text("".join(lines))
    return out
