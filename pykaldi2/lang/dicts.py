"""Corpus-specific dictionary dirs (Kaldi's local/prepare_dict.sh) and LM texts.

- AN4: CMU-style ``etc/an4.dic`` (alternatives as ``WORD(2)``), ``etc/an4.phone`` (with SIL),
  ``etc/an4.filler`` (``<s>``/``</s>``/``<sil>`` -> SIL).
- LibriSpeech: the official ``librispeech-lexicon.txt`` (``WORD<TAB>AH0 B ...``, stress-marked
  CMU phones) and, when present, ``librispeech-vocab.txt`` (the LM vocabulary) from
  openslr.org/11 (the "resources" download, with the ARPA LMs ``3-gram.pruned.1e-7.arpa.gz``...).
- Graphemes (any corpus without a lexicon, e.g. the Asterisk demo): the words of data dirs'
  ``text`` spelled with their letters as phones.
- Any Kaldi-style lexicon file (``WORD P1 P2 ...``, e.g. speechocean762's
  ``resource/lexicon.txt``): :func:`prepare_lexicon_dict`, stress marks kept or stripped.

All add a noise phone ``SPN`` for the OOV word, and ``SIL`` as the optional silence.

    >>> prepare_an4_dict("/data/an4", "data/local/dict")
    >>> prepare_librispeech_dict("/data/librispeech_lm", "data/local/dict")
    >>> prepare_grapheme_dict(["data/train"], "data/local/dict")
    >>> prepare_lexicon_dict("speechocean762/resource/lexicon.txt", "data/local/dict")
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
    return _write_flat_dict("AN4", dict_dir, _unique(lexicon), nonsil)


def _write_flat_dict(
    name: str, dict_dir: str | os.PathLike, lexicon: list[LexiconEntry], nonsil: list[str]
) -> DictDir:
    """Write (and log) a dict dir whose nonsilence phones are each their own tree root, with
    the silence phones SIL (optional silence) and SPN."""
    d = DictDir(
        lexicon=lexicon,
        nonsilence_phones=[[p] for p in nonsil],
        silence_phones=[[SIL], [SPN]],
        optional_silence=SIL,
        extra_questions=[[SIL, SPN]],
    )
    write_dict_dir(dict_dir, d)
    _log_dict(name, dict_dir, d)
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


#: How ``prepare_lexicon_dict`` treats CMU-style stress digits (``AH0``, ``AH1``).
STRESS_MODES = ("keep", "strip")


def prepare_lexicon_dict(
    lexicon: str | os.PathLike,
    dict_dir: str | os.PathLike,
    oov_word: str = "<UNK>",
    stress: str = "keep",
    name: str = "lexicon",
) -> DictDir:
    """Write a dictionary dir from any Kaldi-style lexicon file and return it.

    ``lexicon`` has ``WORD P1 P2 ...`` lines (space or tab after the word; CMUdict's
    alternative markers ``WORD(2)`` are dropped; repeated pronunciations are merged). As
    Kaldi's LibriSpeech and speechocean762 ``local/prepare_dict.sh``: the silence phones are
    ``SIL`` (the optional silence) and ``SPN``, the words ``!SIL`` -> SIL and
    ``<SPOKEN_NOISE>``, ``oov_word`` -> SPN are added, and with ``stress="keep"`` the stress
    variants of a phone share one line of nonsilence_phones.txt (one tree root) while the extra
    questions are the silence phones and one set per stress mark. ``stress="strip"`` removes
    the stress digits (``AH0`` -> ``AH``) instead. The lexicon may not use SIL or SPN.
    """
    if stress not in STRESS_MODES:
        raise ValueError(f"stress must be one of {STRESS_MODES}, got {stress!r}")
    lex_path = _require(Path(lexicon), "lexicon")
    entries = []
    for e in read_lexicon(lex_path, with_probs=False, on_duplicate="skip"):
        m = _ALT_RE.match(e.word)  # WORD(2) -> WORD
        for p in e.phones:
            if p in (SIL, SPN):
                raise DataError(
                    f"word {e.word!r} uses reserved phone {p!r}",
                    file=str(lex_path),
                    fix="SIL and SPN are added as silence phones; rename the lexicon's phone",
                )
        phones = e.phones if stress == "keep" else tuple(_split_stress(p)[0] for p in e.phones)
        entries.append(LexiconEntry(m["word"] if m else e.word, phones))
    entries = _unique(entries)
    by_base: dict[str, set[str]] = defaultdict(set)
    by_stress: dict[str, set[str]] = defaultdict(set)
    for e in entries:
        for p in e.phones:
            base, mark = _split_stress(p)
            by_base[base].add(p)
            by_stress[mark].add(p)
    specials = [LexiconEntry("!SIL", (SIL,)), LexiconEntry("<SPOKEN_NOISE>", (SPN,))]
    if oov_word not in ("!SIL", "<SPOKEN_NOISE>"):
        specials.append(LexiconEntry(oov_word, (SPN,)))
    special_words = {s.word for s in specials}
    questions = [[SIL, SPN]]
    if stress == "keep":
        questions += [sorted(by_stress[m]) for m in sorted(by_stress)]
    d = DictDir(
        lexicon=specials + [e for e in entries if e.word not in special_words],
        nonsilence_phones=[sorted(by_base[b]) for b in sorted(by_base)],
        silence_phones=[[SIL], [SPN]],
        optional_silence=SIL,
        extra_questions=questions,
    )
    write_dict_dir(dict_dir, d)
    _log_dict(name, dict_dir, d)
    return d


def prepare_librispeech_dict(
    lm_dir: str | os.PathLike, dict_dir: str | os.PathLike, oov_word: str = "<UNK>"
) -> DictDir:
    """Write a LibriSpeech dictionary dir from the official lexicon in ``lm_dir``
    (:func:`prepare_lexicon_dict` with the stress marks kept, as Kaldi's recipe).

    Words of ``librispeech-vocab.txt`` missing from the lexicon are counted and logged.
    """
    lm_dir = Path(lm_dir)
    lex_path = _require(lm_dir / "librispeech-lexicon.txt", "LibriSpeech lexicon")
    d = prepare_lexicon_dict(lex_path, dict_dir, oov_word, stress="keep", name="LibriSpeech")
    vocab_path = lm_dir / "librispeech-vocab.txt"
    if vocab_path.is_file():
        words = {e.word for e in d.lexicon}
        vocab = vocab_path.read_text(encoding="utf-8").split()
        missing = [w for w in vocab if w not in words]
        log.info(
            "%d of %d vocabulary words have no pronunciation%s",
            len(missing),
            len(vocab),
            f" (e.g. {missing[:5]})" if missing else "",
        )
    return d


#: The phone of an apostrophe with ``apostrophe="phone"`` (``DON'T`` -> ``D O N APOS T``).
APOSTROPHE_PHONE = "APOS"


def grapheme_pronunciation(word: str, apostrophe: str = "drop") -> tuple[str, ...]:
    """A word's letters as its phones: ``DON'T`` -> ``D O N T`` (``apostrophe="drop"``) or
    ``D O N APOS T`` (``apostrophe="phone"``).

    >>> grapheme_pronunciation("DON'T")
    ('D', 'O', 'N', 'T')
    """
    if apostrophe not in ("drop", "phone"):
        raise ValueError(f"apostrophe must be 'drop' or 'phone', got {apostrophe!r}")
    phones = tuple(
        APOSTROPHE_PHONE if c == "'" else c for c in word if c != "'" or apostrophe == "phone"
    )
    return phones


def prepare_grapheme_dict(
    data_dirs: list[str | os.PathLike] | str | os.PathLike,
    dict_dir: str | os.PathLike,
    oov_word: str = "<UNK>",
    apostrophe: str = "drop",
) -> DictDir:
    """Write a grapheme dictionary dir for the words of ``data_dirs/*/text`` and return it.

    Every character of a word is a phone (``HELLO`` -> ``H E L L O``), for corpora without a
    pronunciation lexicon (the Asterisk demo). The apostrophe is dropped (``apostrophe="drop"``)
    or is its own phone ``APOS`` (``"phone"``). Letters are their own tree roots; SIL is the
    optional silence and SPN the pronunciation of ``oov_word``. A word with no letter (``'``)
    or a character that cannot be a phone symbol is a :class:`DataError` naming the utterance.
    """
    from pykaldi2.data.datadir import read_data_dir

    if isinstance(data_dirs, (str, os.PathLike)):
        data_dirs = [data_dirs]
    words: set[str] = set()
    for data_dir in data_dirs:
        d = read_data_dir(data_dir)
        if not d.text:
            raise DataError("no transcripts", file=str(Path(data_dir) / "text"))
        for utt, line in d.text.items():
            for w in line.split():
                if w == oov_word:
                    continue
                phones = grapheme_pronunciation(w, apostrophe)
                if not phones or "#" in phones:
                    raise DataError(
                        f"word {w!r} of utterance {utt} cannot be spelled with graphemes "
                        "(no letters, or a '#', which Kaldi reserves for disambiguation)",
                        file=str(Path(data_dir) / "text"),
                        fix="normalize the transcript (drop or spell out the token)",
                    )
                words.add(w)
    lexicon = [LexiconEntry(w, grapheme_pronunciation(w, apostrophe)) for w in sorted(words)]
    lexicon.append(LexiconEntry(oov_word, (SPN,)))
    letters = sorted({p for e in lexicon[:-1] for p in e.phones})  # one character: never SIL
    return _write_flat_dict("grapheme", dict_dir, lexicon, letters)
