"""speechocean762 (OpenSLR 101): 5,000 read English sentences by 250 Mandarin-L1 speakers.

The corpus ships Kaldi data dirs and a CMUdict-style lexicon (Kaldi's
``egs/gop_speechocean762/s5`` uses them as they are)::

    speechocean762/train/{wav.scp,text,utt2spk,spk2utt,spk2gender,spk2age}   2,500 utts, 125 spk
    speechocean762/test/...                                                  2,500 utts, 125 spk
    speechocean762/WAVE/SPEAKER0001/000010011.WAV                            16 kHz, 16-bit
    speechocean762/resource/lexicon.txt                                      WORD<TAB>AH0 B ...

Utterance ids (``000010011``) do not start with the speaker id (``0001``); Kaldi accepts that
because utt2spk sorted by utterance is also sorted by speaker. ``text`` has a tab after the id
and wav.scp paths are relative to the corpus folder (``WAVE/SPEAKER0001/...``): they are made
absolute here, as Kaldi's ``local/data_prep.sh`` does. WAVs without a transcript (the 245
under ``SPEAKER96xx``) are in no data dir and are ignored.

Output (``prepare_speechocean762(corpus, "data")``):

- ``data/train``: the official train set (2,500 utterances, 125 speakers).
- ``data/dev`` and ``data/test``: the 125 official test speakers sorted by id, alternately
  dev (1st, 3rd, 5th, ...: 63 speakers) and test (2nd, 4th, ...: 62 speakers), so that every
  setting is chosen on dev and reported on test (Kaldi's score.sh picks on the test set).
- ``data/test_full``: the whole official test set, for comparison with published numbers.

    >>> dirs = prepare_speechocean762("/corpora/speechocean762", "data")
    >>> sorted(dirs)                                 # ['dev', 'test', 'test_full', 'train']
"""

from __future__ import annotations

import os
from pathlib import Path

from pykaldi2.data.corpora import write_checked
from pykaldi2.data.datadir import DataDir, read_data_dir
from pykaldi2.data.download import download, extract_tar
from pykaldi2.data.validate import validate_data_dir
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

#: The OpenSLR 101 tarball. OpenSLR publishes no md5 for it; its size in bytes is the check
#: Kaldi's egs/gop_speechocean762/s5/local/download_and_untar.sh makes.
SPEECHOCEAN762_URL = "https://www.openslr.org/resources/101/speechocean762.tar.gz"
SPEECHOCEAN762_BYTES = 520810923
#: The official parts (Kaldi data dirs in the corpus folder).
PARTS = ("train", "test")


def _check_corpus(corpus_dir: Path) -> None:
    missing = [f"{p}/" for p in (*PARTS, "WAVE") if not (corpus_dir / p).is_dir()]
    if missing:
        raise DataError(
            f"not a speechocean762 folder: no {', '.join(missing)}",
            file=str(corpus_dir),
            fix="pass the extracted speechocean762/ folder (with train/, test/, WAVE/), or "
            "--download",
        )


def read_speechocean762_part(corpus_dir: str | os.PathLike, part: str) -> DataDir:
    """One official part (``train`` or ``test``) with absolute audio paths, validated."""
    corpus_dir = Path(corpus_dir).resolve()
    _check_corpus(corpus_dir)
    src = corpus_dir / part
    problems = validate_data_dir(src, check_audio=True, wav_root=corpus_dir)
    if problems:
        shown = "\n  ".join(str(p) for p in problems[:10])
        raise DataError(
            f"the corpus's {part}/ data dir is not valid ({len(problems)} problem(s)):\n  {shown}",
            file=str(src),
            fix="re-extract the corpus",
        )
    return read_data_dir(src, wav_root=corpus_dir)


def split_dev_test(d: DataDir) -> tuple[DataDir, DataDir]:
    """The speakers of ``d`` sorted by id, alternately into dev (1st, 3rd, ...) and test."""
    spks = d.spk_ids
    dev = set(spks[0::2])
    spk2utt = d.spk2utt
    dev_utts = [u for s in spks if s in dev for u in spk2utt[s]]
    test_utts = [u for s in spks if s not in dev for u in spk2utt[s]]
    return d.select(dev_utts), d.select(test_utts)


def prepare_speechocean762(
    corpus_dir: str | os.PathLike, out_dir: str | os.PathLike
) -> dict[str, DataDir]:
    """Write ``train``, ``dev``, ``test`` and ``test_full`` under ``out_dir`` (module doc)."""
    train = read_speechocean762_part(corpus_dir, "train")
    test_full = read_speechocean762_part(corpus_dir, "test")
    dev, test = split_dev_test(test_full)
    out = {"train": train, "dev": dev, "test": test, "test_full": test_full}
    for name, d in out.items():
        write_checked(d, Path(out_dir) / name)
        log.info("wrote %s/%s: %d utterances, %d speakers", out_dir, name, len(d), len(d.spk_ids))
    return out


def download_speechocean762(
    dest_dir: str | os.PathLike,
    url: str = SPEECHOCEAN762_URL,
    size: int | None = SPEECHOCEAN762_BYTES,
) -> Path:
    """Download (resumable, checked against ``size`` bytes) and extract the corpus into
    ``dest_dir``; returns the corpus dir ``dest_dir/speechocean762`` (a ``.complete`` marker
    skips a finished one)."""
    dest_dir = Path(dest_dir)
    corpus = dest_dir / "speechocean762"
    if (corpus / ".complete").is_file():
        log.info("%s already extracted", corpus)
        return corpus
    archive = download(url, dest_dir / Path(url).name, size=size)
    extract_tar(archive, dest_dir)
    _check_corpus(corpus)
    (corpus / ".complete").touch()
    return corpus
