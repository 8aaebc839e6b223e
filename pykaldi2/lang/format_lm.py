"""make-g (Kaldi's format_lm.sh): an ARPA LM + a lang dir -> a lang_test dir with G.fst.

G.fst is an acceptor over words.txt ids made by kaldilm's arpa2fst (in a subprocess, see
pykaldi2.kaldi): one state per LM history, word arcs weighted by -ln p, and a backoff arc
``#0:<eps>`` (input ``#0``, never epsilon, so G stays deterministic on its input).
:func:`check_g` verifies what HCLG construction relies on, and :func:`g_sentence_cost`
evaluates a sentence on G exactly (taking ``#0`` only when the word has no arc:
failure-transition semantics) so G can be compared with the ARPA model.

    >>> format_lm("data/lang", "data/local/lm/lm.arpa", "data/lang_test")
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pykaldi2.lang.arpa import read_arpa
from pykaldi2.lang.lang_dir import load_lang
from pykaldi2.lang.symbols import SymbolTable
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.io import atomic_dir
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)


@dataclass
class GCheck:
    """What :func:`check_g` found: sizes and the range of per-state word-probability mass."""

    num_states: int
    num_arcs: int
    num_backoff_arcs: int
    min_mass: float  # min over states of sum of exp(-w) over word arcs and the final weight
    max_mass: float


def _arcs(fst, state):
    from pykaldi2.kaldi import kaldifst

    return kaldifst.ArcIterator(fst, state)


def check_g(G, words: SymbolTable) -> GCheck:
    """Check that G is a valid LM acceptor over ``words``; raise :class:`Pykaldi2Error` if not.

    Checks: a start state; ilabel == olabel on every word arc, backoff arcs are ``#0:<eps>`` (as
    Kaldi's arpa2fst writes them); no epsilon input labels;
    labels are words of words.txt; at most one arc per label and state (deterministic); the word
    probabilities leaving each state (plus its final probability) sum to at most 1 (they are
    explicit p(w|h) of distinct words; the rest of the mass is behind the backoff arc).
    """
    from pykaldi2.kaldi import kaldifst

    if G.start < 0 or G.num_states == 0:
        raise Pykaldi2Error("G.fst is empty (no start state)")
    disambig = words.id("#0")
    max_id = words.max_id()
    n_arcs = n_bo = 0
    lo, hi = math.inf, 0.0
    zero = kaldifst.TropicalWeight.zero
    for s in kaldifst.StateIterator(G):
        seen = set()
        mass = 0.0
        final = G.final(s)
        if final != zero:
            mass += math.exp(-final.value)
        for a in _arcs(G, s):
            n_arcs += 1
            if a.ilabel != a.olabel and not (a.ilabel == disambig and a.olabel == 0):
                raise Pykaldi2Error(
                    f"G.fst is not an acceptor: state {s} arc {a.ilabel}:{a.olabel}"
                )
            if a.ilabel == 0:
                raise Pykaldi2Error(f"G.fst has an epsilon arc at state {s} (expected #0 backoff)")
            if not 0 < a.ilabel <= max_id:
                raise Pykaldi2Error(f"G.fst label {a.ilabel} is not in words.txt")
            if a.ilabel in seen:
                raise Pykaldi2Error(f"G.fst is not deterministic: state {s} label {a.ilabel}")
            seen.add(a.ilabel)
            if a.ilabel == disambig:
                n_bo += 1
            else:
                mass += math.exp(-a.weight.value)
        if seen - {disambig} or final != zero:
            lo, hi = min(lo, mass), max(hi, mass)
    if hi > 1.0 + 1e-3:
        raise Pykaldi2Error(f"G.fst: a state's word probabilities sum to {hi:.4f} > 1")
    return GCheck(G.num_states, n_arcs, n_bo, lo, hi)


def g_sentence_cost(G, word_ids: Sequence[int], backoff_id: int) -> float:
    """-ln p(sentence) on G, following ``#0`` only when a word has no arc (exact backoff).

    ``word_ids`` excludes <s> and </s> (the start state is the <s> history, the final weight
    holds </s>). Returns ``inf`` if G cannot accept the sentence.
    """
    from pykaldi2.kaldi import kaldifst

    def step(state: int, label: int | None) -> tuple[int, float] | None:
        """Follow ``label`` (None: the final weight) from ``state``, backing off as needed."""
        cost = 0.0
        while True:
            if label is None:
                f = G.final(state)
                if f != kaldifst.TropicalWeight.zero:
                    return state, cost + f.value
            backoff = None
            for a in _arcs(G, state):
                if label is not None and a.ilabel == label:
                    return a.nextstate, cost + a.weight.value
                if a.ilabel == backoff_id:
                    backoff = a
            if backoff is None:
                return None
            cost += backoff.weight.value
            state = backoff.nextstate

    state, total = G.start, 0.0
    for w in list(word_ids) + [None]:
        r = step(state, w)
        if r is None:
            return math.inf
        state, c = r
        total += c
    return total


def _plain_arpa(arpa: Path, tmpdir: Path) -> Path:
    """kaldilm reads plain text: decompress a .gz into ``tmpdir``."""
    if arpa.suffix != ".gz":
        return arpa
    out = tmpdir / arpa.stem
    with gzip.open(arpa, "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def format_lm(
    lang_dir: str | os.PathLike,
    arpa: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    check_words: bool = True,
) -> GCheck:
    """Copy ``lang_dir`` to ``out_dir`` and add ``G.fst`` made from ``arpa`` (``.gz`` allowed).

    Words of the ARPA file missing from words.txt are an error listing them (``check_words``
    reads the whole ARPA in Python first; turn it off for huge LMs and let arpa2fst fail).
    """
    from pykaldi2.kaldi import arpa2fst, kaldifst

    lang = load_lang(lang_dir)
    arpa = Path(arpa)
    if not arpa.is_file():
        raise DataError("ARPA file not found", file=str(arpa))
    if check_words:
        lm = read_arpa(arpa)
        missing = [w for w in lm.vocab if w not in lang.words]
        if missing:
            raise DataError(
                f"{len(missing)} words of the LM are not in words.txt, e.g. {missing[:10]}",
                file=str(arpa),
                fix="train the LM with `pykaldi2 train-lm --words LANG/words.txt` (maps them to "
                "the OOV word) or add them to the lexicon",
            )
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent) as work:
        shutil.copytree(lang.dir, tmp, dirs_exist_ok=True)
        plain = _plain_arpa(arpa, Path(work))
        arpa2fst(plain, tmp / "G.fst", read_symbol_table=tmp / "words.txt", disambig_symbol="#0")
        G = kaldifst.StdVectorFst.read(str(tmp / "G.fst"))
        kaldifst.arcsort(G, sort_type="ilabel")
        G.write(str(tmp / "G.fst"))
        result = check_g(G, lang.words)
    log.info(
        "make-g: %s -> %s/G.fst: %d states, %d arcs (%d backoff), word mass per state in "
        "[%.3f, %.3f]",
        arpa,
        out_dir,
        result.num_states,
        result.num_arcs,
        result.num_backoff_arcs,
        result.min_mass,
        result.max_mass,
    )
    return result
