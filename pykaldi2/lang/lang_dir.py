"""Reading a lang dir (the output of prepare-lang / make-g) into a :class:`Lang`.

>>> lang = load_lang("data/lang")
>>> lang.phones.id("SIL"), lang.words.sym(lang.oov_id)
(1, '<UNK>')
>>> topo = lang.read_topo()                  # khg.HmmTopology
>>> L = lang.read_L_disambig()               # kaldifst.StdVectorFst
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pykaldi2.lang.lexicon import POSITIONS
from pykaldi2.lang.symbols import SymbolTable
from pykaldi2.utils.errors import DataError


@dataclass
class Lang:
    """A lang dir: symbol tables, phone classes (as phones.txt ids) and file paths."""

    dir: Path
    phones: SymbolTable
    words: SymbolTable
    silence_phones: list[int]
    nonsilence_phones: list[int]
    optional_silence: int
    disambig_phones: list[int]
    word_disambig: int  # the id of #0 in words.txt
    oov_word: str
    oov_id: int
    position_dependent: bool

    # --- paths ----------------------------------------------------------------------------
    @property
    def topo_path(self) -> Path:
        return self.dir / "topo"

    @property
    def L_path(self) -> Path:
        return self.dir / "L.fst"

    @property
    def L_disambig_path(self) -> Path:
        return self.dir / "L_disambig.fst"

    @property
    def G_path(self) -> Path:
        return self.dir / "G.fst"

    # --- derived --------------------------------------------------------------------------
    @property
    def phone_ids(self) -> list[int]:
        """All real phones (no <eps>, no #N), sorted."""
        return sorted(self.silence_phones + self.nonsilence_phones)

    @property
    def bos_id(self) -> int:
        return self.words.id("<s>")

    @property
    def eos_id(self) -> int:
        return self.words.id("</s>")

    def base_phone(self, phone_id: int) -> str:
        """The phone without its word-position suffix (``AH_B`` -> ``AH``)."""
        p = self.phones.sym(phone_id)
        if self.position_dependent and len(p) > 2 and p[-2:] in POSITIONS:
            return p[:-2]
        return p

    def read_int_sets(self, name: str) -> list[list[int]]:
        """phones/<name>.int as lists of ids (``sets``, ``extra_questions``; for ``roots``
        the leading ``shared split`` words are dropped)."""
        path = self.dir / "phones" / f"{name}.int"
        if not path.is_file():
            raise DataError("file not found", file=str(path), fix="re-run prepare-lang")
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split()
            if fields:
                out.append([int(x) for x in fields if x.lstrip("-").isdigit()])
        return out

    def roots(self) -> list[tuple[bool, bool, list[int]]]:
        """phones/roots.int as ``(shared, split, phone_ids)`` rows (Kaldi's roots file)."""
        path = self.dir / "phones" / "roots.int"
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            f = line.split()
            if not f:
                continue
            if (
                len(f) < 3
                or f[0] not in ("shared", "not-shared")
                or f[1]
                not in (
                    "split",
                    "not-split",
                )
            ):
                raise DataError(
                    "expected '[not-]shared [not-]split ids...'", file=str(path), line=lineno
                )
            rows.append((f[0] == "shared", f[1] == "split", [int(x) for x in f[2:]]))
        return rows

    def word_boundary(self) -> dict[int, str]:
        """phones/word_boundary.int: phone id -> begin/end/internal/singleton/nonword."""
        path = self.dir / "phones" / "word_boundary.int"
        if not path.is_file():
            raise DataError(
                "no word_boundary.int (the lang dir has position-independent phones)",
                file=str(path),
                fix="re-run prepare-lang with position-dependent phones",
            )
        out = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                i, kind = line.split()
                out[int(i)] = kind
        return out

    def topo_text(self) -> str:
        return self.topo_path.read_text(encoding="utf-8")

    # --- Kaldi objects (imported lazily) ----------------------------------------------------
    def read_topo(self):
        """The topology as a ``khg.HmmTopology``."""
        from pykaldi2.kaldi import khg

        topo = khg.HmmTopology()
        topo.read(self.topo_text())
        return topo

    def _read_fst(self, path: Path):
        from pykaldi2.kaldi import kaldifst

        if not path.is_file():
            raise DataError("FST not found", file=str(path), fix="run prepare-lang / make-g")
        return kaldifst.StdVectorFst.read(str(path))

    def read_L(self):
        return self._read_fst(self.L_path)

    def read_L_disambig(self):
        return self._read_fst(self.L_disambig_path)

    def read_G(self):
        return self._read_fst(self.G_path)

    def config(self) -> dict:
        """The saved prepare-lang options (``prepare_lang.json``), or {} when absent."""
        path = self.dir / "prepare_lang.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _read_ints(path: Path) -> list[int]:
    if not path.is_file():
        raise DataError("file not found", file=str(path), fix="re-run prepare-lang")
    return [int(x) for x in path.read_text(encoding="utf-8").split()]


def load_lang(lang_dir: str | os.PathLike) -> Lang:
    """Read a lang dir written by :func:`pykaldi2.lang.prepare_lang.prepare_lang` (or Kaldi)."""
    d = Path(lang_dir)
    if not d.is_dir():
        raise DataError("lang dir not found", file=str(d), fix="run `pykaldi2 prepare-lang`")
    phones = SymbolTable.read(d / "phones.txt")
    words = SymbolTable.read(d / "words.txt")
    ph = d / "phones"
    if not (d / "oov.txt").is_file():
        raise DataError("missing", file=str(d / "oov.txt"), fix="write the OOV word (e.g. <UNK>)")
    oov_word = (d / "oov.txt").read_text(encoding="utf-8").strip()
    if oov_word not in words:
        raise DataError(f"OOV word {oov_word!r} not in words.txt", file=str(d / "oov.txt"))
    opt = _read_ints(ph / "optional_silence.int")
    if len(opt) != 1:
        raise DataError("must hold one phone id", file=str(ph / "optional_silence.int"))
    return Lang(
        dir=d,
        phones=phones,
        words=words,
        silence_phones=_read_ints(ph / "silence.int"),
        nonsilence_phones=_read_ints(ph / "nonsilence.int"),
        optional_silence=opt[0],
        disambig_phones=_read_ints(ph / "disambig.int"),
        word_disambig=words.id("#0"),
        oov_word=oov_word,
        oov_id=words.id(oov_word),
        position_dependent=(ph / "word_boundary.int").is_file(),
    )
