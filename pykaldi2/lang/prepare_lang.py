"""prepare-lang: a dictionary dir -> a lang dir (Kaldi's utils/prepare_lang.sh).

The lang dir written (atomically)::

    phones.txt words.txt oov.txt oov.int topo L.fst L_disambig.fst prepare_lang.json
    phones/{silence,nonsilence,optional_silence,disambig,context_indep}.{txt,int,csl}
    phones/{sets,roots,extra_questions}.{txt,int}  phones/word_boundary.{txt,int}
    phones/align_lexicon.{txt,int}  phones/wdisambig{.txt,_phones.int,_words.int}

Conventions followed from Kaldi: phones.txt is ``<eps>``, then silence phones (with the plain
form and ``_B _E _I _S`` forms when position-dependent), then nonsilence phones (``_B _E _I _S``
only), then ``#0..#N``; words.txt is ``<eps>``, the sorted words, ``#0``, ``<s>``, ``</s>``.
``#N`` (the highest) is the disambiguation symbol after optional silence in L_disambig.

    >>> prepare_lang("data/local/dict", "<UNK>", "data/lang")
    >>> lang = load_lang("data/lang")            # pykaldi2.lang.lang_dir
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pykaldi2.lang.lexicon import (
    POSITIONS,
    LexiconEntry,
    add_lex_disambig,
    add_word_position,
    read_dict_dir,
)
from pykaldi2.lang.lexicon_fst import make_lexicon_fst
from pykaldi2.lang.symbols import SymbolTable
from pykaldi2.lang.topo import TopoConfig, make_topo
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_dir
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)


@dataclass
class PrepareLangConfig(ConfigMixin):
    """Options of prepare-lang (saved to ``lang/prepare_lang.json``)."""

    oov_word: str = "<UNK>"
    position_dependent: bool = True
    sil_prob: float = 0.5
    #: One tree root for all silence phones (Kaldi's --share-silence-phones).
    share_silence_phones: bool = False
    #: Extra phone disambiguation symbols beyond those the lexicon needs (Kaldi: 1, used
    #: after optional silence in L_disambig).
    num_extra_phone_disambig: int = 1
    topo: TopoConfig = field(default_factory=TopoConfig)

    def __post_init__(self) -> None:
        self.build_sections()
        if not 0.0 <= self.sil_prob < 1.0:
            raise ValueError(f"sil_prob must be in [0, 1), got {self.sil_prob}")
        if self.num_extra_phone_disambig < 1:
            raise ValueError("num_extra_phone_disambig must be >= 1")


def _phone_variants(phone: str, silence: bool, position_dependent: bool) -> list[str]:
    """The phones.txt entries of one base phone (Kaldi's phone_map)."""
    if not position_dependent:
        return [phone]
    return ([phone] if silence else []) + [phone + s for s in POSITIONS]


def _write_list(d: Path, name: str, items: list[str], table: SymbolTable, csl: bool = True) -> None:
    """Write phones/<name>.txt, .int and (optionally) .csl."""
    (d / f"{name}.txt").write_text("".join(f"{x}\n" for x in items), encoding="utf-8")
    ids = [str(table.id(x)) for x in items]
    (d / f"{name}.int").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    if csl:
        (d / f"{name}.csl").write_text(":".join(ids) + "\n", encoding="utf-8")


def _write_sets(
    d: Path,
    name: str,
    lines: list[list[str]],
    table: SymbolTable,
    prefix=None,
    trailing_space_from: int | None = None,
):
    """Write phones/<name>.txt and .int, one set per line (``prefix`` words kept as text).

    ``trailing_space_from``: .txt lines from this index on end in a space, as the ones
    prepare_lang.sh writes with ``echo -n "$x$suffix "`` (extra_questions' position sets).
    """
    txt, ints = [], []
    for i, s in enumerate(lines):
        pre = prefix[i] + " " if prefix else ""
        tail = " " if trailing_space_from is not None and i >= trailing_space_from else ""
        txt.append(pre + " ".join(s) + tail + "\n")
        ints.append(pre + " ".join(str(table.id(p)) for p in s) + "\n")
    (d / f"{name}.txt").write_text("".join(txt), encoding="utf-8")
    (d / f"{name}.int").write_text("".join(ints), encoding="utf-8")


def prepare_lang(
    dict_dir: str | os.PathLike,
    oov_word: str,
    lang_dir: str | os.PathLike,
    position_dependent: bool = True,
    sil_prob: float = 0.5,
    *,
    config: PrepareLangConfig | None = None,
) -> None:
    """Build ``lang_dir`` from ``dict_dir`` (see the module docstring for the files).

    ``config``, when given, overrides ``oov_word``, ``position_dependent`` and ``sil_prob``.
    """
    if config is None:
        config = PrepareLangConfig(oov_word, position_dependent, sil_prob)
    d = read_dict_dir(dict_dir)
    words_in_lex = {e.word for e in d.lexicon}
    if config.oov_word not in words_in_lex:
        raise DataError(
            f"OOV word {config.oov_word!r} is not in the lexicon",
            file=str(dict_dir),
            fix=f"add a line like '{config.oov_word} SPN' to lexicon.txt",
        )
    pd = config.position_dependent
    sil_bases = [p for s in d.silence_phones for p in s]
    nonsil_bases = [p for s in d.nonsilence_phones for p in s]
    phone_map = {p: _phone_variants(p, True, pd) for p in sil_bases}
    phone_map.update({p: _phone_variants(p, False, pd) for p in nonsil_bases})

    lexicon = add_word_position(d.lexicon) if pd else list(d.lexicon)
    lex_disambig, max_disambig = add_lex_disambig(lexicon)
    ndisambig = max_disambig + config.num_extra_phone_disambig
    disambig = [f"#{i}" for i in range(ndisambig + 1)]

    phones = SymbolTable(["<eps>"], name="phones.txt")
    for p in sil_bases + nonsil_bases:
        for v in phone_map[p]:
            phones.add(v)
    for s in disambig:
        phones.add(s)
    words = SymbolTable(["<eps>"], name="words.txt")
    for w in sorted(words_in_lex):
        words.add(w)
    for w in ("#0", "<s>", "</s>"):
        words.add(w)

    silence = [v for p in sil_bases for v in phone_map[p]]
    nonsilence = [v for p in nonsil_bases for v in phone_map[p]]
    opt_sil = d.optional_silence

    def mapped(sets: list[list[str]]) -> list[list[str]]:
        return [[v for p in s for v in phone_map[p]] for s in sets]

    if config.share_silence_phones:
        sets = [[v for v in silence]] + mapped(d.nonsilence_phones)
        roots_prefix = ["not-shared not-split"] + ["shared split"] * len(d.nonsilence_phones)
    else:
        sets = mapped(d.silence_phones + d.nonsilence_phones)
        roots_prefix = ["shared split"] * len(sets)
    extra_questions = mapped(d.extra_questions)
    num_dict_questions = len(extra_questions)
    if pd:
        for suf in POSITIONS:
            extra_questions.append([p + suf for p in nonsil_bases])
        for suf in ("",) + POSITIONS:
            extra_questions.append([p + suf for p in sil_bases])

    L = make_lexicon_fst(lexicon, phones, words, sil_prob=config.sil_prob, sil_phone=opt_sil)
    L_disambig = make_lexicon_fst(
        lex_disambig,
        phones,
        words,
        sil_prob=config.sil_prob,
        sil_phone=opt_sil,
        sil_disambig=disambig[-1],
        word_disambig_loop=("#0", "#0"),
    )
    topo = make_topo(phones.ids(nonsilence), phones.ids(silence), config.topo)

    with atomic_dir(lang_dir) as tmp:
        ph = tmp / "phones"
        ph.mkdir()
        phones.write(tmp / "phones.txt")
        words.write(tmp / "words.txt")
        (tmp / "oov.txt").write_text(config.oov_word + "\n", encoding="utf-8")
        (tmp / "oov.int").write_text(f"{words.id(config.oov_word)}\n", encoding="utf-8")
        (tmp / "topo").write_text(topo, encoding="utf-8")
        _write_list(ph, "silence", silence, phones)
        _write_list(ph, "nonsilence", nonsilence, phones)
        _write_list(ph, "context_indep", silence, phones)
        _write_list(ph, "optional_silence", [opt_sil], phones)
        _write_list(ph, "disambig", disambig, phones)
        (ph / "wdisambig.txt").write_text("#0\n", encoding="utf-8")  # Kaldi: no .int of it
        (ph / "wdisambig_phones.int").write_text(f"{phones.id('#0')}\n", encoding="utf-8")
        (ph / "wdisambig_words.int").write_text(f"{words.id('#0')}\n", encoding="utf-8")
        _write_sets(ph, "sets", sets, phones)
        _write_sets(ph, "roots", sets, phones, prefix=roots_prefix)
        _write_sets(
            ph, "extra_questions", extra_questions, phones, trailing_space_from=num_dict_questions
        )
        _write_word_boundary(ph, phones, silence, nonsilence, pd)
        _write_align_lexicon(ph, lexicon, opt_sil, phones, words)
        L.write(str(tmp / "L.fst"))
        L_disambig.write(str(tmp / "L_disambig.fst"))
        (tmp / "prepare_lang.json").write_text(
            json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8"
        )
    log.info(
        "prepare-lang: %s -> %s: %d words, %d phones, %d disambiguation symbols",
        dict_dir,
        lang_dir,
        len(words_in_lex),
        len(silence) + len(nonsilence),
        len(disambig),
    )


def _write_word_boundary(
    ph: Path, phones: SymbolTable, silence: list[str], nonsilence: list[str], pd: bool
) -> None:
    """phones/word_boundary.{txt,int}: as prepare_lang.sh's awk, every phone (silence ones too)
    by its suffix: ``_I`` internal, ``_B`` begin, ``_S`` singleton, ``_E`` end, else nonword
    (SIL_B is begin, SIL and SPN nonword)."""
    if not pd:
        return
    kind = {"_I": "internal", "_B": "begin", "_S": "singleton", "_E": "end"}
    lines = [(p, kind.get(p[-2:], "nonword")) for p in silence + nonsilence]
    (ph / "word_boundary.txt").write_text("".join(f"{p} {k}\n" for p, k in lines), "utf-8")
    (ph / "word_boundary.int").write_text(
        "".join(f"{phones.id(p)} {k}\n" for p, k in lines), "utf-8"
    )


def _write_align_lexicon(
    ph: Path, lexicon: list[LexiconEntry], opt_sil: str, phones: SymbolTable, words: SymbolTable
) -> None:
    """phones/align_lexicon.{txt,int}: ``word word phones...`` for every lexicon entry plus
    ``<eps> <eps> SIL``, sorted bytewise and unique (prepare_lang.sh's ``LC_ALL=C sort | uniq``)."""
    rows = {
        (w, tuple(p)) for w, p in [("<eps>", (opt_sil,))] + [(e.word, e.phones) for e in lexicon]
    }
    text = {f"{w} {w} {' '.join(p)}": (w, p) for w, p in rows}
    order = sorted(text, key=lambda line: line.encode("utf-8"))
    (ph / "align_lexicon.txt").write_text("".join(line + "\n" for line in order), "utf-8")
    (ph / "align_lexicon.int").write_text(
        "".join(
            f"{words.id(w)} {words.id(w)} {' '.join(map(str, phones.ids(p)))}\n"
            for w, p in (text[line] for line in order)
        ),
        "utf-8",
    )


__all__ = ["PrepareLangConfig", "prepare_lang"]
