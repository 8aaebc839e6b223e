"""Kaldi's yesno corpus: 60 files ``waves_yesno/<l1>_<l2>_..._<l8>.wav`` (0 = NO, 1 = YES).

The split follows Kaldi's ``egs/yesno/s5/local/create_yesno_waves_test_train.pl``: the wave
files in sorted order, first half -> ``train_yesno``, second half -> ``test_yesno`` (30 + 30).
There is one speaker, ``global`` (as in Kaldi's utt2spk); here it also prefixes the
utterance ids (``global-0_0_1_0_1_0_0_1``) so that the speaker is a prefix of every id.

    >>> prepare_yesno("/data/yesno", "data")      # data/train_yesno, data/test_yesno
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pykaldi2.data.corpora import speaker_prefixed, write_checked
from pykaldi2.data.datadir import DataDir
from pykaldi2.data.download import download, extract_tar
from pykaldi2.data.tables import c_sorted
from pykaldi2.utils.errors import DataError

YESNO_URL = "https://www.openslr.org/resources/1/waves_yesno.tar.gz"
SPEAKER = "global"
WORDS = {"0": "NO", "1": "YES"}
_NAME_RE = re.compile(r"^[01](_[01])*$")


def find_waves(corpus_dir: str | os.PathLike) -> Path:
    """``corpus_dir/waves_yesno`` or ``corpus_dir`` itself, whichever holds the wav files."""
    corpus_dir = Path(corpus_dir).resolve()
    for cand in (corpus_dir / "waves_yesno", corpus_dir):
        if any(cand.glob("*.wav")):
            return cand
    raise DataError(
        "no waves_yesno/*.wav", file=str(corpus_dir), fix="pass the folder holding waves_yesno/"
    )


def read_yesno(corpus_dir: str | os.PathLike) -> tuple[DataDir, DataDir]:
    """(train, test) data dirs: the first and second half of the sorted wave files."""
    waves = find_waves(corpus_dir)
    names = c_sorted(p.stem for p in waves.glob("*.wav"))
    for name in names:
        if not _NAME_RE.match(name):
            raise DataError(
                "file name is not a 0/1 label sequence like 0_1_1_0_0_1_0_1",
                file=str(waves / f"{name}.wav"),
                fix="remove foreign .wav files from waves_yesno/",
            )
    half = len(names) // 2

    def build(subset: list[str]) -> DataDir:
        d = DataDir(wav_scp={}, text={}, utt2spk={})
        for name in subset:
            utt = speaker_prefixed(SPEAKER, name)
            d.wav_scp[utt] = str(waves / f"{name}.wav")
            d.text[utt] = " ".join(WORDS[c] for c in name.split("_"))
            d.utt2spk[utt] = SPEAKER
        return d

    return build(names[:half]), build(names[half:])


def prepare_yesno(corpus_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, DataDir]:
    """Write ``<out_dir>/train_yesno`` and ``<out_dir>/test_yesno``."""
    train, test = read_yesno(corpus_dir)
    out = {"train_yesno": train, "test_yesno": test}
    for name, d in out.items():
        write_checked(d, Path(out_dir) / name)
    return out


def download_yesno(dest_dir: str | os.PathLike, url: str = YESNO_URL) -> Path:
    """Download and extract ``waves_yesno.tar.gz`` into ``dest_dir``; returns ``dest_dir``."""
    dest_dir = Path(dest_dir)
    if not (dest_dir / "waves_yesno").is_dir():
        extract_tar(download(url, dest_dir / Path(url).name), dest_dir)
    return dest_dir
