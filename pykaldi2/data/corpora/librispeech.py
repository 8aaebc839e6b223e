"""LibriSpeech (openslr.org/12) in its official layout.

Layout::

    LibriSpeech/<part>/<reader>/<chapter>/<reader>-<chapter>-<nnnn>.flac
    LibriSpeech/<part>/<reader>/<chapter>/<reader>-<chapter>.trans.txt   # "<utt> WORDS"
    LibriSpeech/SPEAKERS.TXT                                             # optional: genders

One data dir per part, named with ``-`` replaced by ``_`` (``test-clean`` -> ``test_clean``).
As in Kaldi's ``egs/librispeech/s5/local/data_prep.sh`` the "speaker" is the reader-chapter
pair ``<reader>-<chapter>`` (a prefix of the utterance id), and ``spk2gender`` is written when
SPEAKERS.TXT is present.

    >>> prepare_librispeech("/data/LibriSpeech", "data")            # every part found
    >>> prepare_librispeech("/data", "data", parts=["dev-clean"])
"""

from __future__ import annotations

import os
from pathlib import Path

from pykaldi2.data.corpora import write_checked
from pykaldi2.data.datadir import DataDir
from pykaldi2.data.download import download, extract_tar, fetch_md5sums
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)

BASE_URL = "https://www.openslr.org/resources/12"
#: openslr's checksum file for the resource (``<md5>  <part>.tar.gz`` lines).
MD5SUM_URL = f"{BASE_URL}/md5sum.txt"
PARTS = (
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
)


def find_root(corpus_dir: str | os.PathLike) -> Path:
    """The ``LibriSpeech`` folder: ``corpus_dir`` itself or ``corpus_dir/LibriSpeech``."""
    corpus_dir = Path(corpus_dir).resolve()
    for cand in (corpus_dir / "LibriSpeech", corpus_dir):
        if any((cand / p).is_dir() for p in PARTS):
            return cand
    raise DataError(
        f"no LibriSpeech part ({', '.join(PARTS)}) found",
        file=str(corpus_dir),
        fix="pass the folder holding LibriSpeech/ (or LibriSpeech/ itself) as --corpus-dir",
    )


def read_genders(root: Path) -> dict[str, str]:
    """reader id -> ``m``/``f`` from SPEAKERS.TXT (``ID | SEX | SUBSET | MINUTES | NAME``)."""
    path = root / "SPEAKERS.TXT"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(";") or "|" not in line:
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) >= 2 and fields[1].upper() in ("M", "F"):
            out[fields[0]] = fields[1].lower()
    return out


def read_part(root: Path, part: str) -> DataDir:
    """The data dir of one LibriSpeech part (``root/part``)."""
    part_dir = root / part
    genders = read_genders(root)
    d = DataDir(wav_scp={}, text={}, utt2spk={})
    trans_files = sorted(part_dir.glob("*/*/*.trans.txt"))
    if not trans_files:
        raise DataError("no <reader>/<chapter>/*.trans.txt files", file=str(part_dir))
    for tf in progress(trans_files, desc=part, unit="chapter"):
        spk = f"{tf.parent.parent.name}-{tf.parent.name}"
        for n, line in enumerate(tf.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utt, _, words = line.strip().partition(" ")
            if not utt.startswith(spk + "-"):
                raise DataError(
                    f"utterance id {utt!r} is not in chapter {spk}", file=str(tf), line=n
                )
            audio = tf.parent / f"{utt}.flac"
            if not audio.is_file():
                raise DataError(
                    "audio file not found", file=str(audio), utt=utt, fix="re-extract the part"
                )
            if utt in d.utt2spk:
                raise DataError(f"duplicate utterance id {utt!r}", file=str(tf), line=n)
            d.wav_scp[utt] = str(audio)
            d.text[utt] = " ".join(words.split())
            d.utt2spk[utt] = spk
    if genders:
        reader = {s: s.split("-")[0] for s in d.spk_ids}
        d.spk_tables["spk2gender"] = {s: genders[r] for s, r in reader.items() if r in genders}
    return d


def prepare_librispeech(
    corpus_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    parts: list[str] | None = None,
) -> dict[str, DataDir]:
    """Write ``<out_dir>/<part with _>`` for each part (default: all parts present)."""
    root = find_root(corpus_dir)
    parts = parts or [p for p in PARTS if (root / p).is_dir()]
    out: dict[str, DataDir] = {}
    for part in parts:
        if not (root / part).is_dir():
            raise DataError(f"part {part} not found", file=str(root / part))
        d = read_part(root, part)
        name = part.replace("-", "_")
        write_checked(d, Path(out_dir) / name)
        log.info("wrote %s/%s: %d utterances, %d speakers", out_dir, name, len(d), len(d.spk_ids))
        out[name] = d
    return out


def download_librispeech(
    dest_dir: str | os.PathLike, parts: list[str], base_url: str = BASE_URL
) -> Path:
    """Download (resumable, md5-checked against openslr's md5sum.txt) and extract ``parts``.

    Returns ``dest_dir`` (which then holds ``LibriSpeech/<part>``).
    """
    dest_dir = Path(dest_dir)
    for p in parts:
        if p not in PARTS:
            raise DataError(f"unknown LibriSpeech part {p!r}", fix=f"use one of {PARTS}")
    todo = [p for p in parts if not (dest_dir / "LibriSpeech" / p).is_dir()]
    if not todo:
        return dest_dir
    md5s = fetch_md5sums(f"{base_url}/md5sum.txt")
    for part in todo:
        name = f"{part}.tar.gz"
        if name not in md5s:
            raise DataError(f"{name} is not listed in {base_url}/md5sum.txt")
        archive = download(f"{base_url}/{name}", dest_dir / name, md5=md5s[name])
        extract_tar(archive, dest_dir)
    return dest_dir
