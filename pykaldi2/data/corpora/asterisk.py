"""The Asterisk PBX English prompts: a real speech corpus installed from Debian, no download.

``apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en`` (``make demo-deps``)
gives 568 prompts by one female speaker (Allison Smith), about 25 minutes of 8 kHz 16-bit mono
speech, in ``/usr/share/asterisk/sounds/en/`` (``<name>.wav`` and ``<subdir>/<name>.wav``), and
their transcripts in ``/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz``; the
upstream tarball has ``core-sounds-en.txt`` beside the wav files::

    ; Core Asterisk Sounds in English
    agent-loginok: Agent logged in.
    digits/7: seven
    beep: [this is a simple beep tone]

Text normalisation (:func:`normalize_text`): notes in ``[...]``, ``<...>`` and ``(...)`` are
dropped (a prompt with nothing else, a beep or silence, is skipped); ``*`` and ``#`` become
STAR and POUND (what the prompts say); numbers up to 99 are spelled out (``28.8`` -> TWENTY
EIGHT POINT EIGHT, ``3D`` -> THREE D); hyphens split words; other punctuation is dropped and
words are upper-cased (apostrophes inside words stay: DON'T). A prompt with a longer number
(``1234``, read as digits or as a number?) is skipped as ambiguous; a dot between letters is
DOT (``asterisk.org``).

Split: prompt names are sorted and hashed (CRC-32); ``crc % 100 < test_percent`` goes to
``test``, the rest to ``train`` — stable when prompts are added or removed. With
``test_in_vocab`` (the default) a test prompt with a word that no train prompt has is moved to
train, so that a demo needs no lexicon or LM beyond the train transcripts.

Speaker ``allison``; utterance ids ``allison-<name>`` with ``/`` as ``-``
(``allison-digits-7``). The audio is 8 kHz: use ``sample_frequency=8000`` features.

    >>> dirs = prepare_asterisk("/usr/share/asterisk/sounds/en", "data")   # data/{train,test}
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from pathlib import Path

from pykaldi2.data.corpora import speaker_prefixed, write_checked
from pykaldi2.data.datadir import DataDir
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

SPEAKER = "allison"
#: The sample rate of the ``-wav`` package's prompts.
SAMPLE_RATE = 8000
DEFAULT_SOUNDS_DIR = "/usr/share/asterisk/sounds/en"
TRANSCRIPT_NAME = "core-sounds-en.txt"
#: Where Debian's ``asterisk-core-sounds-en`` puts the transcript file.
DEBIAN_DOC = Path("/usr/share/doc/asterisk-core-sounds-en")

_ONES = "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN FOURTEEN \
FIFTEEN SIXTEEN SEVENTEEN EIGHTEEN NINETEEN".split()
_TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()
_SYMBOLS = {"*": "STAR", "#": "POUND", "&": "AND", "%": "PERCENT", "+": "PLUS"}
_NOTE_RE = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


def number_to_words(n: int) -> str:
    """0..99 as upper-case English words (``42`` -> ``FORTY TWO``)."""
    if not 0 <= n < 100:
        raise ValueError(f"{n} is outside 0..99")
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")


def _spell_number(m: re.Match) -> str:
    whole, _, frac = m.group(0).partition(".")
    if len(whole) > 2:
        raise ValueError(m.group(0))
    words = number_to_words(int(whole))
    if frac:
        words += " POINT " + " ".join(_ONES[int(d)] for d in frac)
    return f" {words} "


def normalize_text(raw: str) -> str | None:
    """Upper-case words without punctuation, or None for a prompt with no usable speech.

    >>> normalize_text("Press 1 to mute, or * for help.")
    'PRESS ONE TO MUTE OR STAR FOR HELP'
    >>> normalize_text("[this is a simple beep tone]") is None
    True
    """
    text = _NOTE_RE.sub(" ", raw)
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, f" {word} ")
    try:
        text = _NUMBER_RE.sub(_spell_number, text)
    except ValueError:
        return None  # a number of 3+ digits: spoken as digits or as a number?
    text = re.sub(r"(?<=[A-Za-z])\.(?=[A-Za-z])", " DOT ", text)  # www.asterisk.org
    text = re.sub(r"[-/]", " ", text)
    words = []
    for w in re.sub(r"[^A-Za-z' ]", " ", text).split():
        w = w.strip("'").upper()
        if w:
            words.append(w)
    return " ".join(words) or None


def find_transcripts(sounds_dir: Path) -> Path:
    """``core-sounds-en.txt`` (or ``.txt.gz``) beside or above the prompts, or Debian's copy."""
    for folder in (sounds_dir, sounds_dir.parent, DEBIAN_DOC):
        for name in (TRANSCRIPT_NAME, TRANSCRIPT_NAME + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise DataError(
        f"no {TRANSCRIPT_NAME}[.gz] in {sounds_dir}, its parent, or {DEBIAN_DOC}",
        file=str(sounds_dir),
        fix="apt-get install asterisk-core-sounds-en (the transcripts), or pass --transcripts",
    )


def read_transcripts(path: str | os.PathLike) -> dict[str, str]:
    """Prompt name (``digits/7``) -> raw transcript, from ``core-sounds-en.txt[.gz]``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    out: dict[str, str] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        name, sep, text = line.partition(":")
        name = name.strip()
        if not sep or not name or " " in name:
            raise DataError("expected '<prompt name>: <transcript>'", file=str(path), line=n)
        if name in out:
            raise DataError(f"prompt {name!r} listed twice", file=str(path), line=n)
        out[name] = text.strip()
    return out


def _utt_id(name: str) -> str:
    return speaker_prefixed(SPEAKER, name.replace("/", "-"))


def split_prompts(
    texts: dict[str, str], test_percent: int = 10, test_in_vocab: bool = True
) -> tuple[list[str], list[str]]:
    """(train, test) prompt names, by the deterministic rule of the module docstring."""
    if not 0 <= test_percent <= 100:
        raise ValueError(f"test_percent must be in 0..100, not {test_percent}")
    names = sorted(texts)
    is_test = {n: zlib.crc32(n.encode()) % 100 < test_percent for n in names}
    if test_in_vocab:
        vocab = {w for n in names if not is_test[n] for w in texts[n].split()}
        for n in names:
            if is_test[n] and not set(texts[n].split()) <= vocab:
                is_test[n] = False
    return [n for n in names if not is_test[n]], [n for n in names if is_test[n]]


def read_asterisk(
    sounds_dir: str | os.PathLike,
    transcripts: str | os.PathLike | None = None,
    test_percent: int = 10,
    test_in_vocab: bool = True,
) -> dict[str, DataDir]:
    """``{"train": DataDir, "test": DataDir}`` of the prompts in ``sounds_dir`` that have a
    transcript with speech (see the module docstring)."""
    sounds_dir = Path(sounds_dir).resolve()
    if not sounds_dir.is_dir():
        raise DataError(
            "Asterisk sounds folder not found",
            file=str(sounds_dir),
            fix="apt-get install asterisk-core-sounds-en-wav (make demo-deps), or pass the "
            "folder holding the prompt .wav files",
        )
    trans_file = Path(transcripts) if transcripts else find_transcripts(sounds_dir)
    raw = read_transcripts(trans_file)
    texts: dict[str, str] = {}
    skipped = []
    for name, line in raw.items():
        if not (sounds_dir / f"{name}.wav").is_file():
            skipped.append(name)
            continue
        text = normalize_text(line)
        if text is None:
            skipped.append(name)
        else:
            texts[name] = text
    if not texts:
        raise DataError(
            f"none of the {len(raw)} prompts of {trans_file} has a .wav file in {sounds_dir}",
            file=str(sounds_dir),
            fix="install asterisk-core-sounds-en-wav (the -gsm/-g722 packages have no .wav)",
        )
    log.info(
        "%s: %d prompts with speech, %d skipped (no .wav, no speech, or an ambiguous number)",
        trans_file,
        len(texts),
        len(skipped),
    )
    seen: dict[str, str] = {}
    for name in texts:
        other = seen.setdefault(_utt_id(name), name)
        if other != name:
            raise DataError(f"prompts {other!r} and {name!r} map to one utterance id")

    def build(names: list[str]) -> DataDir:
        d = DataDir(wav_scp={}, text={}, utt2spk={})
        for name in names:
            utt = _utt_id(name)
            d.wav_scp[utt] = str(sounds_dir / f"{name}.wav")
            d.text[utt] = texts[name]
            d.utt2spk[utt] = SPEAKER
        return d

    train, test = split_prompts(texts, test_percent, test_in_vocab)
    return {"train": build(train), "test": build(test)}


def prepare_asterisk(
    sounds_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    transcripts: str | os.PathLike | None = None,
    test_percent: int = 10,
    test_in_vocab: bool = True,
) -> dict[str, DataDir]:
    """Write ``<out_dir>/train`` and ``<out_dir>/test`` (8 kHz audio) from the Asterisk prompts.

    Args:
        sounds_dir: the folder of prompt wav files (``/usr/share/asterisk/sounds/en``).
        out_dir: where the data dirs go.
        transcripts: ``core-sounds-en.txt[.gz]``; default: found by :func:`find_transcripts`.
        test_percent: about this percentage of prompts goes to ``test``.
        test_in_vocab: move test prompts with words unseen in train to train.
    """
    dirs = read_asterisk(sounds_dir, transcripts, test_percent, test_in_vocab)
    for name, d in dirs.items():
        write_checked(d, Path(out_dir) / name)
        log.info("wrote %s/%s: %d utterances (%d Hz audio)", out_dir, name, len(d), SAMPLE_RATE)
    return dirs
