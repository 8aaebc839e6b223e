"""Corpus-specific dictionary dirs (Kaldi's local/prepare_dict.sh) and LM texts.

- AN4: CMU-style ``etc/an4.dic`` (alternatives as ``WORD(2)``), ``etc/an4.phone`` (with SIL),
  ``etc/an4.filler`` (``<s>``/``</s>``/``<sil>`` -> SIL).
- LibriSpeech: the official ``librispeech-lexicon.txt`` (``WORD<TAB>AH0 B ...``, stress-marked
  CMU phones) and, when present, ``librispeech-vocab.txt`` (the LM vocabulary) from
  openslr.org/11 (the "resources" download, with the ARPA LMs ``3-gram.pruned.1e-7.arpa.gz``...).

Both add a noise phone ``SPN`` for the OOV word, and ``SIL`` as the optional silence.

    >>> prepare_an4_dict("/data/an4", "data/local/dict")
    >>> prepare_librispeech_dict("/data/librispeech_lm", "data/local/dict")
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from pykaldi2.lang.lexicon import DictDir, LexiconEntry, read_lexicon, write_dict_dir
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

SIL = "SIL"
SPN = "SPN"  # spoken noise: the pronunciation of the OOV word
_ALT_RE = re.compile(r"^(?P<word>.+)\(\d+\)$")


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{what} not found", file=str(path), fix="check the corpus / LM dir")
    return path


def _unique(entries: list[LexiconEntry]) -> list[LexiconEntry]:
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out = []
    for e in entries:
        if (e.word, e.phones) not in seen:
            seen.add((e.word, e.phones))
            out.append(e)
    return out


def _log_dict(name: str, dict_dir, d: DictDir) -> None:
    log.info(
        "%s dict -> %s: %d pronunciations of %d words, %d nonsilence + %d silence phones",
        name,
        dict_dir,
        len(d.lexicon),
        len({e.word for e in d.lexicon}),
        sum(len(s) for s in d.nonsilence_phones),
        sum(len(s) for s in d.silence_phones),
    )


def prepare_an4_dict(
    corpus_dir: str | os.PathLike, dict_dir: str | os.PathLike, oov_word: str = "<UNK>"
) -> DictDir:
    """Write an AN4 dictionary dir from ``corpus_dir/etc`` and return it."""
    etc = Path(corpus_dir) / "etc"
    phones = (_require(etc / "an4.phone", "AN4 phone list").read_text(encoding="utf-8")).split()
    if SIL not in phones:
        raise DataError(f"no {SIL} phone", file=str(etc / "an4.phone"))
    nonsil = [p for p in phones if p != SIL]
    lexicon = []
    for e in read_lexicon(_require(etc / "an4.dic", "AN4 dictionary"), with_probs=False):
        m = _ALT_RE.match(e.word)  # WORD(2) -> WORD
        lexicon.append(LexiconEntry(m["word"], e.phones) if m else e)
    filler = _require(etc / "an4.filler", "AN4 filler dictionary")
    for line in filler.read_text(encoding="utf-8").splitlines():  # <s>/</s> are not words
        fields = line.split()
        if len(fields) >= 2 and fields[0] not in ("<s>", "</s>"):
            lexicon.append(LexiconEntry(fields[0], tuple(fields[1:])))
    if oov_word not in {e.word for e in lexicon}:
        lexicon.append(LexiconEntry(oov_word, (SPN,)))
    d = DictDir(
        lexicon=_unique(lexicon),
        nonsilence_phones=[[p] for p in nonsil],
        silence_phones=[[SIL], [SPN]],
        optional_silence=SIL,
        extra_questions=[[SIL, SPN]],
    )
    write_dict_dir(dict_dir, d)
    _log_dict("AN4", dict_dir, d)
    return d


def an4_lm_text(corpus_dir: str | os.PathLike, list_name: str = "an4_train") -> list[list[str]]:
    """The sentences of an AN4 list (``<s>``, ``</s>`` and ``(uttid)`` stripped), for train-lm."""
    from pykaldi2.data.corpora.an4 import read_an4_set

    d = read_an4_set(corpus_dir, list_name)
    return [d.text[u].split() for u in d.utt_ids if d.text[u].strip()]


def _split_stress(phone: str) -> tuple[str, str]:
    """``AH0`` -> (``AH``, ``0``); ``B`` -> (``B``, ``""``)."""
    m = re.match(r"^(\D+)(\d*)$", phone)
    if m is None:
        raise DataError(f"bad phone {phone!r} (expected letters then an optional stress digit)")
    return m[1], m[2]


def prepare_librispeech_dict(
    lm_dir: str | os.PathLike, dict_dir: str | os.PathLike, oov_word: str = "<UNK>"
) -> DictDir:
    """Write a LibriSpeech dictionary dir from the official lexicon in ``lm_dir``.

    Stress variants of a phone share one line of nonsilence_phones.txt (one tree root); the
    extra questions are the silence phones and one set per stress mark, as Kaldi's recipe.
    Words of ``librispeech-vocab.txt`` missing from the lexicon are counted and logged.
    """
    lm_dir = Path(lm_dir)
    lex_path = _require(lm_dir / "librispeech-lexicon.txt", "LibriSpeech lexicon")
    entries = read_lexicon(lex_path, with_probs=False, on_duplicate="skip")
    for e in entries:
        for p in e.phones:
            if p in (SIL, SPN):
                raise DataError(f"word {e.word!r} uses reserved phone {p!r}", file=str(lex_path))
    by_base: dict[str, set[str]] = defaultdict(set)
    by_stress: dict[str, set[str]] = defaultdict(set)
    for e in entries:
        for p in e.phones:
            base, stress = _split_stress(p)
            by_base[base].add(p)
            by_stress[stress].add(p)
    vocab_path = lm_dir / "librispeech-vocab.txt"
    if vocab_path.is_file():
        words = {e.word for e in entries}
        vocab = vocab_path.read_text(encoding="utf-8").split()
        missing = [w for w in vocab if w not in words]
        log.info(
            "%d of %d vocabulary words have no pronunciation%s",
            len(missing),
            len(vocab),
            f" (e.g. {missing[:5]})" if missing else "",
        )
    specials = [LexiconEntry("!SIL", (SIL,)), LexiconEntry("<SPOKEN_NOISE>", (SPN,))]
    if oov_word not in ("!SIL", "<SPOKEN_NOISE>"):
        specials.append(LexiconEntry(oov_word, (SPN,)))
    d = DictDir(
        lexicon=specials + [e for e in entries if e.word not in {s.word for s in specials}],
        nonsilence_phones=[sorted(by_base[b]) for b in sorted(by_base)],
        silence_phones=[[SIL], [SPN]],
        optional_silence=SIL,
        extra_questions=[[SIL, SPN]] + [sorted(by_stress[s]) for s in sorted(by_stress)],
    )
    write_dict_dir(dict_dir, d)
    _log_dict("LibriSpeech", dict_dir, d)
    return d
