"""Fixtures of the simulation tests: real yesno speech and tiny Kaldi data dirs built from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def yesno_waves(yesno_dir) -> list[Path]:
    return sorted((yesno_dir / "waves_yesno").glob("*.wav"))


@pytest.fixture(scope="session")
def speech(yesno_waves) -> tuple[np.ndarray, int]:
    """One real 8 kHz yesno utterance: ((n,) float32 int16-scaled, sr)."""
    from pykaldi2.data.audio import read_audio

    return read_audio(str(yesno_waves[0]))


def _make_data_dir(path: Path, waves: list[Path], spk: str = "s1") -> Path:
    """A minimal data dir (wav.scp, utt2spk, text) of whole-file utterances."""
    path.mkdir(parents=True)
    utts = {f"{spk}-{w.stem}": w for w in waves}
    (path / "wav.scp").write_text("".join(f"{u} {w}\n" for u, w in sorted(utts.items())))
    (path / "utt2spk").write_text("".join(f"{u} {spk}\n" for u in sorted(utts)))
    (path / "text").write_text(
        "".join(f"{u} {w.stem.replace('_', ' ')}\n" for u, w in sorted(utts.items()))
    )
    return path


@pytest.fixture(scope="session")
def make_data_dir():
    """``make_data_dir(path, waves, spk="s1")``: write a minimal data dir of whole files."""
    return _make_data_dir


@pytest.fixture()
def yesno_data(tmp_path, yesno_waves) -> Path:
    """A 3-utterance data dir of real yesno recordings."""
    return _make_data_dir(tmp_path / "yesno3", yesno_waves[:3])
