"""validate-lang: every inconsistency of a lang dir (Kaldi's utils/validate_lang.pl, shortened).

Reports all problems, each naming its file, instead of stopping at the first::

    >>> for p in validate_lang("data/lang_test"): print(p)
    data/lang/phones/sets.int: phone 'AH_B' (12) is in no set
"""

from __future__ import annotations

import os
from pathlib import Path

from pykaldi2.lang.lang_dir import Lang, load_lang
from pykaldi2.utils.errors import Pykaldi2Error


def _check_cover(lang: Lang, name: str, sets: list[list[int]], out: list[str]) -> None:
    """Every real phone in exactly one of ``sets`` (phones/sets.int, roots.int)."""
    f = str(lang.dir / "phones" / f"{name}.int")
    seen: dict[int, int] = {}
    for row in sets:
        for p in row:
            seen[p] = seen.get(p, 0) + 1
    for p in lang.phone_ids:
        if seen.get(p, 0) != 1:
            out.append(f"{f}: phone {lang.phones.sym(p)!r} ({p}) is in {seen.get(p, 0)} sets")
    for p in sorted(set(seen) - set(lang.phone_ids)):
        out.append(f"{f}: id {p} is not a real phone")


def _check_fst(lang: Lang, path: Path, max_ilabel: int, out: list[str], self_loop: bool = False):
    from pykaldi2.kaldi import kaldifst

    if not path.is_file():
        out.append(f"{path}: missing")
        return
    fst = kaldifst.StdVectorFst.read(str(path))
    max_olabel = lang.words.max_id()
    has_loop = False
    for s in kaldifst.StateIterator(fst):
        for a in kaldifst.ArcIterator(fst, s):
            if not (0 <= a.ilabel <= max_ilabel and 0 <= a.olabel <= max_olabel):
                out.append(f"{path}: arc {a.ilabel}:{a.olabel} at state {s} out of range")
                return
            has_loop |= a.nextstate == s and a.olabel == lang.word_disambig
    if self_loop and not has_loop:
        out.append(f"{path}: no #0:#0 self-loop (G's backoff symbol cannot pass through L)")


def validate_lang(lang_dir: str | os.PathLike) -> list[str]:
    """Problems of ``lang_dir`` (empty when it is consistent). Loads the FSTs and the topology."""
    try:
        lang = load_lang(lang_dir)
    except Pykaldi2Error as e:
        return [str(e)]
    out: list[str] = []
    d = lang.dir
    if lang.phones.get("<eps>") != 0 or lang.words.get("<eps>") != 0:
        out.append(f"{d}: <eps> must have id 0 in phones.txt and words.txt")
    for w in ("<s>", "</s>"):
        if w not in lang.words:
            out.append(f"{d / 'words.txt'}: no {w}")
    sil, nonsil, dis = set(lang.silence_phones), set(lang.nonsilence_phones), lang.disambig_phones
    if sil & nonsil:
        out.append(f"{d / 'phones'}: silence.int and nonsilence.int overlap")
    hashed = sorted(i for s, i in lang.phones if s.startswith("#"))
    if sorted(dis) != hashed or "#0" not in lang.phones:
        out.append(f"{d / 'phones/disambig.int'}: must list exactly the #N phones, #0 included")
    real = sorted(i for s, i in lang.phones if i != 0 and not s.startswith("#"))
    if sorted(sil | nonsil) != real:
        out.append(f"{d / 'phones'}: silence.int + nonsilence.int != the phones of phones.txt")
    if lang.optional_silence not in sil:
        out.append(f"{d / 'phones/optional_silence.int'}: not a silence phone")
    oov_int = d / "oov.int"
    if oov_int.is_file() and oov_int.read_text().split() != [str(lang.oov_id)]:
        out.append(f"{oov_int}: does not match oov.txt")
    _check_cover(lang, "sets", lang.read_int_sets("sets"), out)
    _check_cover(lang, "roots", [r[2] for r in lang.roots()], out)
    if lang.position_dependent and sorted(lang.word_boundary()) != real:
        out.append(f"{d / 'phones/word_boundary.int'}: does not cover exactly the real phones")
    try:
        topo = lang.read_topo()
        if sorted(topo.phones) != real:
            out.append(f"{lang.topo_path}: covers phones {topo.phones}, expected {real}")
    except Exception as e:  # the binding's parse error, reported with the file
        out.append(f"{lang.topo_path}: not a readable topology ({str(e).splitlines()[-1]})")
    max_phone = lang.phones.max_id()
    _check_fst(lang, lang.L_path, max_phone, out)
    _check_fst(lang, lang.L_disambig_path, max_phone, out, self_loop=True)
    if lang.G_path.is_file():
        from pykaldi2.lang.format_lm import check_g

        try:
            check_g(lang.read_G(), lang.words)
        except Pykaldi2Error as e:
            out.append(f"{lang.G_path}: {e}")
    return out
