"""CMU AN4 (census, close-talking mic): ``etc/an4_{train,test}.{fileids,transcription}``.

Layout (the official ``an4_sphere.tar.gz`` has ``wav/<set>/<spk>/<id>.sph``; a FLAC copy with
``flac/<set>/<spk>/<id>.flac`` works too)::

    an4/etc/an4_train.fileids         an4_clstk/fash/an251-fash-b
    an4/etc/an4_train.transcription   <s> YES </s> (an251-fash-b)
    an4/etc/an4_test.transcription    RUBOUT G M E F THREE NINE (an406-fcaw-b)

Output: ``<out>/train`` (948 utterances, 74 speakers) and ``<out>/test`` (130, 10). The
speaker is the folder name; utterance ids are ``<spk>-<AN4 id>`` (``fash-an251-fash-b``) so
that the speaker is a prefix. Transcripts lose ``<s>``, ``</s>`` and the ``(id)`` suffix.

    >>> dirs = prepare_an4("/data/an4", "data")     # data/train, data/test
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pykaldi2.data.corpora import speaker_prefixed, write_checked
from pykaldi2.data.datadir import DataDir
from pykaldi2.data.download import download, extract_tar
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

#: The official tarball (NIST SPHERE audio, 64 MB). CMU publishes no checksum for it.
AN4_URL = "http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz"
#: Output data dir name -> the AN4 list name in etc/.
SETS = {"train": "an4_train", "test": "an4_test"}
#: Where audio may live under the corpus dir, and its possible extensions.
AUDIO_DIRS = ("wav", "flac")
AUDIO_EXTS = (".sph", ".flac", ".wav")
#: Sentence markers in the transcription files, dropped from ``text``.
MARKERS = {"<s>", "</s>"}

_TRANS_RE = re.compile(r"^(?P<words>.*?)\s*\((?P<id>[^()\s]+)\)\s*$")


def find_audio(corpus_dir: Path, fileid: str) -> Path:
    """The audio file of an AN4 file id (``an4_clstk/fash/an251-fash-b``)."""
    for sub in AUDIO_DIRS:
        for ext in AUDIO_EXTS:
            p = corpus_dir / sub / (fileid + ext)
            if p.is_file():
                return p
    raise DataError(
        f"no audio for {fileid} under {corpus_dir}/{{{','.join(AUDIO_DIRS)}}}/ "
        f"(tried {', '.join(AUDIO_EXTS)})",
        fix="is --corpus-dir the extracted an4/ folder (with etc/ and wav/)?",
    )


def read_an4_set(corpus_dir: str | os.PathLike, list_name: str) -> DataDir:
    """The data dir of one AN4 list (``an4_train`` or ``an4_test``) of ``corpus_dir``."""
    corpus_dir = Path(corpus_dir).resolve()
    ids_file = corpus_dir / "etc" / f"{list_name}.fileids"
    trans_file = corpus_dir / "etc" / f"{list_name}.transcription"
    for f in (ids_file, trans_file):
        if not f.is_file():
            raise DataError(
                "AN4 list file not found",
                file=str(f),
                fix="is --corpus-dir the extracted an4/ folder (with etc/ and wav/)?",
            )
    fileids = [x.strip() for x in ids_file.read_text().splitlines() if x.strip()]
    trans = [x.strip() for x in trans_file.read_text().splitlines() if x.strip()]
    if len(fileids) != len(trans):
        raise DataError(
            f"{len(fileids)} file ids but {len(trans)} transcriptions in {trans_file.name}",
            file=str(ids_file),
        )
    d = DataDir(wav_scp={}, text={}, utt2spk={})
    for n, (fileid, line) in enumerate(zip(fileids, trans), start=1):
        m = _TRANS_RE.match(line)
        if m is None:
            raise DataError("expected '<s> WORDS </s> (uttid)'", file=str(trans_file), line=n)
        parts = fileid.split("/")
        if len(parts) < 2 or parts[-1] != m["id"]:
            raise DataError(
                f"transcription id {m['id']!r} does not match file id {fileid!r}",
                file=str(trans_file),
                line=n,
            )
        spk = parts[-2]
        utt = speaker_prefixed(spk, m["id"])
        if utt in d.utt2spk:
            raise DataError(f"duplicate utterance id {m['id']!r}", file=str(trans_file), line=n)
        d.wav_scp[utt] = str(find_audio(corpus_dir, fileid))
        d.text[utt] = " ".join(w for w in m["words"].split() if w not in MARKERS)
        d.utt2spk[utt] = spk
    return d


def prepare_an4(corpus_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, DataDir]:
    """Write ``<out_dir>/train`` and ``<out_dir>/test`` from an AN4 corpus dir."""
    out: dict[str, DataDir] = {}
    for name, list_name in SETS.items():
        d = read_an4_set(corpus_dir, list_name)
        write_checked(d, Path(out_dir) / name)
        log.info("wrote %s/%s: %d utterances, %d speakers", out_dir, name, len(d), len(d.spk_ids))
        out[name] = d
    return out


def download_an4(dest_dir: str | os.PathLike, url: str = AN4_URL) -> Path:
    """Download and extract AN4 into ``dest_dir``; returns the corpus dir (``dest_dir/an4``)."""
    dest_dir = Path(dest_dir)
    corpus = dest_dir / "an4"
    if (corpus / "etc" / "an4_train.transcription").is_file():
        log.info("%s already extracted", corpus)
        return corpus
    archive = download(url, dest_dir / Path(url).name)
    extract_tar(archive, dest_dir)
    return corpus
