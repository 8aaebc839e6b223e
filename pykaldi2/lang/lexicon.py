"""Lexicons and Kaldi dictionary directories (the input of ``prepare_lang``).

A dictionary dir (Kaldi's ``data/local/dict``) holds:

==========================  ==================================================================
``lexicon.txt``             ``WORD P1 P2 ...`` (or ``lexiconp.txt``: ``WORD PROB P1 P2 ...``)
``nonsilence_phones.txt``   one line per base phone; phones on one line share a tree root
                            (e.g. stress variants ``AA AA0 AA1 AA2``)
``silence_phones.txt``      same format, e.g. ``SIL`` and ``SPN``
``optional_silence.txt``    the single phone inserted optionally between words (``SIL``)
``extra_questions.txt``     optional; extra phone sets for tree building
==========================  ==================================================================

    >>> d = read_dict_dir("data/local/dict")
    >>> lex = add_word_position(d.lexicon)          # AH -> AH_S, "AE N D" -> "AE_B N_I D_E"
    >>> lex_disambig, max_disambig = add_lex_disambig(lex)
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write_text

#: Word-position suffixes of position-dependent phones (begin, end, internal, singleton).
POSITIONS = ("_B", "_E", "_I", "_S")
#: Words reserved by words.txt and G.fst; a lexicon may not define them.
RESERVED_WORDS = ("<eps>", "<s>", "</s>", "#0")


@dataclass(frozen=True)
class LexiconEntry:
    """One pronunciation: ``word`` -> ``phones`` with probability ``prob`` in (0, 1]."""

    word: str
    phones: tuple[str, ...]
    prob: float = 1.0


def read_lexicon(
    path: str | os.PathLike, with_probs: bool | None = None, on_duplicate: str = "error"
) -> list[LexiconEntry]:
    """Read ``lexicon.txt`` (``WORD P1 P2 ...``) or ``lexiconp.txt`` (``WORD PROB P1 ...``).

    ``with_probs=None`` decides from the file name (``lexiconp*`` has probabilities).
    Malformed lines (no pronunciation, a bad probability) raise :class:`DataError` with file:line.
    Duplicate (word, pronunciation) pairs are an error (Kaldi rejects them), or are dropped
    with ``on_duplicate="skip"`` (for third-party lexicons).
    """
    if on_duplicate not in ("error", "skip"):
        raise ValueError(f"on_duplicate must be 'error' or 'skip', got {on_duplicate!r}")
    path = Path(path)
    if with_probs is None:
        with_probs = path.name.startswith("lexiconp")
    if not path.is_file():
        raise DataError("lexicon not found", file=str(path))
    entries: list[LexiconEntry] = []
    seen: dict[tuple[str, tuple[str, ...]], int] = {}
    probs_fix = "lexiconp.txt lines are 'WORD PROB P1 P2 ...'"
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue

            def bad(msg: str, fix: str | None = None, lineno: int = lineno) -> DataError:
                return DataError(msg, file=str(path), line=lineno, fix=fix)

            word, rest = fields[0], fields[1:]
            prob = 1.0
            if with_probs:
                if not rest:
                    raise bad(f"word {word!r} has no probability and no pronunciation", probs_fix)
                try:
                    prob = float(rest[0])
                except ValueError:
                    raise bad(
                        f"bad pronunciation probability {rest[0]!r} for {word!r}",
                        probs_fix + "; use lexicon.txt for a lexicon without probabilities",
                    ) from None
                if not 0.0 < prob <= 1.0:
                    raise bad(f"pronunciation probability {prob} of {word!r} is not in (0, 1]")
                rest = rest[1:]
            if not rest:
                raise bad(
                    f"word {word!r} has an empty pronunciation",
                    "give it phones, or map it to a noise phone (e.g. SPN)",
                )
            if word in RESERVED_WORDS or word.startswith("#"):
                raise bad(
                    f"word {word!r} is reserved and may not be in the lexicon",
                    "remove the line (<s>, </s>, <eps> and #N are added by prepare-lang)",
                )
            key = (word, tuple(rest))
            if key in seen and on_duplicate == "skip":
                continue
            if key in seen:
                raise bad(
                    f"duplicate pronunciation of {word!r} (also on line {seen[key]})",
                    "remove the duplicate line",
                )
            seen[key] = lineno
            entries.append(LexiconEntry(word, tuple(rest), prob))
    if not entries:
        raise DataError("lexicon is empty", file=str(path))
    return entries


def write_lexicon(
    path: str | os.PathLike, entries: list[LexiconEntry], with_probs: bool = False
) -> None:
    """Write ``lexicon.txt`` (or ``lexiconp.txt`` with ``with_probs``) atomically."""
    lines = []
    for e in entries:
        prob = f" {e.prob:g}" if with_probs else ""
        lines.append(f"{e.word}{prob} {' '.join(e.phones)}\n")
    atomic_write_text(path, "".join(lines))


def read_phone_sets(path: str | os.PathLike, required: bool = True) -> list[list[str]]:
    """Read a file of phone sets, one set per line (``nonsilence_phones.txt`` etc.)."""
    path = Path(path)
    if not path.is_file():
        if required:
            raise DataError("file not found", file=str(path), fix="see pykaldi2.lang.lexicon docs")
        return []
    sets = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            phones = line.split()
            if not phones:
                if required:
                    raise DataError("empty line", file=str(path), line=lineno)
                continue
            for p in phones:
                if p.startswith("#") or p == "<eps>":
                    raise DataError(
                        f"phone {p!r} is reserved (#N and <eps> are added by prepare-lang)",
                        file=str(path),
                        line=lineno,
                    )
            sets.append(phones)
    return sets


@dataclass
class DictDir:
    """The contents of a dictionary dir, validated (see :func:`read_dict_dir`)."""

    lexicon: list[LexiconEntry]
    nonsilence_phones: list[list[str]]
    silence_phones: list[list[str]]
    optional_silence: str
    extra_questions: list[list[str]] = field(default_factory=list)
    has_probs: bool = False

    @property
    def all_phones(self) -> list[str]:
        """Base phones in phones.txt order: silence phones first, then nonsilence."""
        return [p for s in self.silence_phones + self.nonsilence_phones for p in s]


def write_dict_dir(dict_dir: str | os.PathLike, d: DictDir) -> None:
    """Write a dictionary dir (files written atomically one by one)."""
    dict_dir = Path(dict_dir)
    dict_dir.mkdir(parents=True, exist_ok=True)
    name = "lexiconp.txt" if d.has_probs else "lexicon.txt"
    write_lexicon(dict_dir / name, d.lexicon, with_probs=d.has_probs)

    def sets_text(sets: list[list[str]]) -> str:
        return "".join(" ".join(s) + "\n" for s in sets)

    atomic_write_text(dict_dir / "nonsilence_phones.txt", sets_text(d.nonsilence_phones))
    atomic_write_text(dict_dir / "silence_phones.txt", sets_text(d.silence_phones))
    atomic_write_text(dict_dir / "optional_silence.txt", d.optional_silence + "\n")
    atomic_write_text(dict_dir / "extra_questions.txt", sets_text(d.extra_questions))


def read_dict_dir(dict_dir: str | os.PathLike) -> DictDir:
    """Read and validate a dictionary dir (Kaldi's validate_dict_dir.pl checks).

    Uses ``lexiconp.txt`` when present, else ``lexicon.txt``. Checks: every phone is declared
    once, silence and nonsilence sets are disjoint, the optional silence is a silence phone,
    every phone of the lexicon and extra questions is declared, no phone ends in a word-position
    suffix (``_B`` ...), which would clash with position-dependent phones.
    """
    dict_dir = Path(dict_dir)
    if not dict_dir.is_dir():
        raise DataError("dictionary dir not found", file=str(dict_dir))
    lexp = dict_dir / "lexiconp.txt"
    lex_path = lexp if lexp.is_file() else dict_dir / "lexicon.txt"
    lexicon = read_lexicon(lex_path)
    nonsil = read_phone_sets(dict_dir / "nonsilence_phones.txt")
    sil = read_phone_sets(dict_dir / "silence_phones.txt")
    opt = read_phone_sets(dict_dir / "optional_silence.txt")
    extra = read_phone_sets(dict_dir / "extra_questions.txt", required=False)
    if len(opt) != 1 or len(opt[0]) != 1:
        raise DataError("must hold exactly one phone", file=str(dict_dir / "optional_silence.txt"))
    where: dict[str, str] = {}
    for fname, sets in (("silence_phones.txt", sil), ("nonsilence_phones.txt", nonsil)):
        for s in sets:
            for p in s:
                if p in where:
                    raise DataError(
                        f"phone {p!r} is declared twice (also in {where[p]})",
                        file=str(dict_dir / fname),
                    )
                if len(p) > 2 and p[-2:] in POSITIONS:
                    raise DataError(
                        f"phone {p!r} ends in a word-position suffix",
                        file=str(dict_dir / fname),
                        fix="rename it; _B/_E/_I/_S are added for position-dependent phones",
                    )
                where[p] = fname
    if not nonsil:
        raise DataError("no nonsilence phones", file=str(dict_dir / "nonsilence_phones.txt"))
    if where.get(opt[0][0]) != "silence_phones.txt":
        raise DataError(
            f"optional silence {opt[0][0]!r} is not in silence_phones.txt",
            file=str(dict_dir / "optional_silence.txt"),
        )
    for e in lexicon:
        for p in e.phones:
            if p not in where:
                raise DataError(
                    f"word {e.word!r} uses undeclared phone {p!r}",
                    file=str(lex_path),
                    fix="add the phone to nonsilence_phones.txt or silence_phones.txt",
                )
    for q in extra:
        for p in q:
            if p not in where:
                raise DataError(
                    f"undeclared phone {p!r}", file=str(dict_dir / "extra_questions.txt")
                )
    return DictDir(lexicon, nonsil, sil, opt[0][0], extra, has_probs=lex_path == lexp)


def position_phone(phone: str, i: int, n: int) -> str:
    """The position-dependent form of the ``i``-th of ``n`` phones of a word (Kaldi's _B/_I/_E/_S)."""
    if n == 1:
        return phone + "_S"
    if i == 0:
        return phone + "_B"
    if i == n - 1:
        return phone + "_E"
    return phone + "_I"


def add_word_position(lexicon: list[LexiconEntry]) -> list[LexiconEntry]:
    """Make every pronunciation position-dependent: ``AE N D`` -> ``AE_B N_I D_E``."""
    return [
        LexiconEntry(
            e.word,
            tuple(position_phone(p, i, len(e.phones)) for i, p in enumerate(e.phones)),
            e.prob,
        )
        for e in lexicon
    ]


def add_lex_disambig(lexicon: list[LexiconEntry]) -> tuple[list[LexiconEntry], int]:
    """Append disambiguation symbols ``#1``, ``#2``... (Kaldi's add_lex_disambig.pl).

    A pronunciation gets one when it is shared by several words (homophones: the n-th of them
    gets ``#n``) or when it is a proper prefix of another pronunciation (it gets ``#1``, or the
    next free number when it is also a homophone). Returns the new lexicon and the largest
    ``#n`` used (0 when none was needed).

        >>> lex = [LexiconEntry("RED", ("R", "EH", "D")), LexiconEntry("READ", ("R", "EH", "D")),
        ...        LexiconEntry("RE", ("R", "EH"))]
        >>> [e.phones for e in add_lex_disambig(lex)[0]]
        [('R', 'EH', 'D', '#1'), ('R', 'EH', 'D', '#2'), ('R', 'EH', '#1')]
    """
    count = Counter(e.phones for e in lexicon)
    prefixes: set[tuple[str, ...]] = set()
    for e in lexicon:
        for k in range(1, len(e.phones)):
            prefixes.add(e.phones[:k])
    next_id: dict[tuple[str, ...], int] = {}
    max_disambig = 0
    out = []
    for e in lexicon:
        if count[e.phones] > 1 or e.phones in prefixes:
            n = next_id.get(e.phones, 1)
            next_id[e.phones] = n + 1
            max_disambig = max(max_disambig, n)
            out.append(LexiconEntry(e.word, e.phones + (f"#{n}",), e.prob))
        else:
            out.append(e)
    return out, max_disambig
