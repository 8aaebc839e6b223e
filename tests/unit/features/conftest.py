"""Fixtures of the feature tests: a small AN4 data dir (4 speakers x 5 utterances)."""

from __future__ import annotations

from pathlib import Path

import pytest


def make_an4_datadir(an4_dir: Path, out: Path, num_spk: int = 4, per_spk: int = 5) -> Path:
    root = an4_dir / "flac" / "an4_clstk"
    wav, utt2spk, text = [], [], []
    for spk in sorted(p.name for p in root.iterdir())[:num_spk]:
        for f in sorted((root / spk).glob("*.flac"))[:per_spk]:
            utt = f"{spk}-{f.stem}"
            wav.append(f"{utt} {f}")
            utt2spk.append(f"{utt} {spk}")
            text.append(f"{utt} HELLO")
    out.mkdir(parents=True)
    for name, lines in (("wav.scp", wav), ("utt2spk", utt2spk), ("text", text)):
        (out / name).write_text("".join(x + "\n" for x in sorted(lines)))
    return out


@pytest.fixture
def an4_small(an4_dir, tmp_path) -> Path:
    """A data dir of 20 AN4 train utterances (4 speakers) in tmp_path/data/train."""
    return make_an4_datadir(an4_dir, tmp_path / "data" / "train")
