"""Word times from lattices: Kaldi's lattice-1best | lattice-align-words(-lexicon) | nbest-to-ctm.

The best path of a lattice (under an LM weight and insertion penalty) is a sequence of
transition-ids, one per frame, and a sequence of words. Its phones come from the transition
model (Kaldi's SplitToPhones); the words are then laid over the phones:

- with the lexicon (``phones/align_lexicon.int``, lattice-align-words-lexicon): lines
  ``word out_word phone...``; the phones of the path are matched, word after word, to one of
  the word's pronunciations, with entries of word 0 (``<eps> SIL``: optional silence) free to
  appear between words;
- with word boundaries (``phones/word_boundary.int``, lattice-align-words): a word starts at a
  ``begin`` phone, ends at an ``end`` phone (``singleton``: both), ``internal`` phones continue
  it and ``nonword`` phones (silence) are segments of word 0.

A :class:`WordSegment` is ``(word, start frame, frames)``; :func:`ctm_lines` prints them as
nbest-to-ctm does (``utt 1 start duration word``, times = frames x frame shift, 2 decimals;
word 0 left out unless ``print_silence``). This works on linear paths (what nbest-to-ctm
takes after lattice-1best), not on whole lattices.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pykaldi2.decoding.lattice import BestPath, best_path
from pykaldi2.utils.errors import DataError

__all__ = [
    "WordSegment",
    "align_words_boundary",
    "align_words_lexicon",
    "ctm_lines",
    "lattice_to_ctm",
    "read_align_lexicon",
    "read_word_boundary",
    "split_to_phones",
]

WORD_BOUNDARY_KINDS = ("nonword", "begin", "end", "internal", "singleton")


@dataclass(frozen=True)
class WordSegment:
    """One word of an aligned path: ``word`` (0: silence / <eps>), first frame, frame count."""

    word: int
    start: int
    length: int


@dataclass(frozen=True)
class PhoneSegment:
    phone: int
    start: int
    length: int


def split_to_phones(tables, ali: Sequence[int]) -> list[PhoneSegment]:
    """Kaldi's SplitToPhones on a path's transition-ids.

    ``tables``: anything with per-transition_id arrays ``tid2phone``, ``tid_is_self_loop``,
    ``tid_is_final``, ``tid2tstate`` (a :class:`~pykaldi2.hmm.model.GmmModel`).
    """
    from pykaldi2.hmm.ali import split_to_phones as split

    return [PhoneSegment(p, s, n) for p, s, n in split(tables, np.asarray(ali, np.int64))]


def read_align_lexicon(path: str | os.PathLike) -> list[tuple[int, int, tuple[int, ...]]]:
    """``phones/align_lexicon.int``: ``(word, out_word, phones)`` per line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            "align lexicon not found", file=str(path), fix="pass LANG/phones/align_lexicon.int"
        )
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        f = line.split()
        if not f:
            continue
        try:
            ints = [int(x) for x in f]
        except ValueError:
            raise DataError("non-integer field", file=str(path), line=lineno,
                            fix="use the .int file (words and phones as ids)") from None  # fmt: skip
        if len(ints) < 3:
            raise DataError("expected 'word out_word phone...'", file=str(path), line=lineno)
        out.append((ints[0], ints[1], tuple(ints[2:])))
    return out


def read_word_boundary(path: str | os.PathLike) -> dict[int, str]:
    """``phones/word_boundary.int``: phone id -> nonword / begin / end / internal / singleton."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            "word boundary file not found", file=str(path), fix="pass LANG/phones/word_boundary.int"
        )
    out = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        f = line.split()
        if not f:
            continue
        if len(f) != 2 or f[1] not in WORD_BOUNDARY_KINDS or not f[0].isdigit():
            raise DataError(
                f"bad line {line!r}", file=str(path), line=lineno,
                fix=f"expected 'phone-id kind', kind one of {', '.join(WORD_BOUNDARY_KINDS)}",
            )  # fmt: skip
        out[int(f[0])] = f[1]
    return out


def align_words_lexicon(
    phones: Sequence[PhoneSegment],
    words: Sequence[int],
    lexicon: Sequence[tuple[int, int, tuple[int, ...]]],
    utt: str = "",
) -> list[WordSegment]:
    """Lay ``words`` over ``phones`` with the lexicon (lattice-align-words-lexicon on a path).

    A dynamic programme over (phones used, words used): a step takes the next word with one
    of its pronunciations, or an entry of word 0 (optional silence). The first complete
    alignment found (words before silences, pronunciations in lexicon order) is returned;
    a DataError names ``utt`` when there is none.
    """
    prons: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
    for w, out_w, ph in lexicon:
        prons.setdefault(w, []).append((out_w, ph))
    eps = prons.get(0, [])
    seq = [p.phone for p in phones]
    M, N = len(seq), len(words)
    back: dict[tuple[int, int], tuple[tuple[int, int], int]] = {(0, 0): ((-1, -1), 0)}
    frontier = [(0, 0)]
    while frontier and (M, N) not in back:
        nxt = []
        for i, j in frontier:
            options = [(out_w, ph, 1) for out_w, ph in prons.get(words[j], [])] if j < N else []
            options += [(out_w, ph, 0) for out_w, ph in eps]
            for out_w, ph, step in options:
                k = i + len(ph)
                if k <= M and tuple(seq[i:k]) == ph and (k, j + step) not in back:
                    back[(k, j + step)] = ((i, j), out_w)
                    nxt.append((k, j + step))
        frontier = nxt
    if (M, N) not in back:
        raise DataError(
            "the best path's phones do not spell its words with this lexicon",
            utt=utt or None,
            fix="use the lang dir's phones/align_lexicon.int that the graph was built from",
        )
    out = []
    node = (M, N)
    while node != (0, 0):
        prev, out_w = back[node]
        start = phones[prev[0]].start
        end = phones[node[0] - 1].start + phones[node[0] - 1].length
        out.append(WordSegment(out_w, start, end - start))
        node = prev
    return out[::-1]


def align_words_boundary(
    phones: Sequence[PhoneSegment],
    words: Sequence[int],
    boundary: Mapping[int, str],
    utt: str = "",
) -> list[WordSegment]:
    """Lay ``words`` over ``phones`` by the phones' word-boundary kinds (lattice-align-words
    on a path): begin ... end or singleton make one word each, nonword phones word 0."""
    segs: list[WordSegment] = []
    start = None
    k = 0

    def fail(why: str):
        return DataError(
            f"word alignment failed: {why}", utt=utt or None,
            fix="word_boundary.int must come from the lang dir the graph was built from",
        )  # fmt: skip

    for p in phones:
        kind = boundary.get(p.phone)
        if kind is None:
            raise fail(f"phone {p.phone} is not in word_boundary.int")
        if kind == "nonword":
            if start is not None:
                raise fail("silence inside a word")
            segs.append(WordSegment(0, p.start, p.length))
            continue
        if kind in ("begin", "singleton"):
            if start is not None:
                raise fail("a word begins inside a word")
            start = p.start
        elif start is None:
            raise fail(f"an {kind} phone outside a word")
        if kind in ("end", "singleton"):
            if k >= len(words):
                raise fail("more words in the phones than on the path")
            segs.append(WordSegment(int(words[k]), start, p.start + p.length - start))
            k += 1
            start = None
    if start is not None or k != len(words):
        raise fail(f"{k} words in the phones, {len(words)} on the path")
    return segs


def ctm_lines(
    utt: str,
    segments: Iterable[WordSegment],
    frame_shift: float = 0.01,
    print_silence: bool = False,
    precision: int = 2,
    words: Mapping[int, str] | None = None,
) -> list[str]:
    """nbest-to-ctm lines ``utt 1 start duration word`` (word ids, or symbols with ``words``
    as utils/int2sym.pl -f 5 does). Times are float32 products as Kaldi computes them."""
    if frame_shift < 0.01 and precision <= 2:
        precision = 3
    if frame_shift < 0.001 and precision <= 3:
        precision = 4
    fs = np.float32(frame_shift)
    out = []
    for s in segments:
        if s.word == 0 and not print_silence:
            continue
        w = words[s.word] if words is not None else str(s.word)
        t0, d = float(fs * np.float32(s.start)), float(fs * np.float32(s.length))
        out.append(f"{utt} 1 {t0:.{precision}f} {d:.{precision}f} {w}\n")
    return out


def lattice_to_ctm(
    lattices: Iterable[tuple[str, object]],
    tables,
    *,
    lmwt: float = 1.0,
    word_ins_penalty: float = 0.0,
    lexicon: Sequence[tuple[int, int, tuple[int, ...]]] | None = None,
    boundary: Mapping[int, str] | None = None,
    frame_shift: float = 0.01,
    print_silence: bool = False,
    words: Mapping[int, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Kaldi's steps/get_ctm.sh on ``(utt, lattice)`` pairs: the best path under ``lmwt`` /
    ``word_ins_penalty`` (lattice-1best), its word alignment by ``lexicon`` or ``boundary``,
    then nbest-to-ctm. Returns the CTM lines and ``{utt: error}`` of the utterances that could
    not be aligned (Kaldi warns and skips them too)."""
    if (lexicon is None) == (boundary is None):
        raise DataError("pass exactly one of an align lexicon and a word boundary table")
    lines: list[str] = []
    failed: dict[str, str] = {}
    for utt, lat in lattices:
        path: BestPath | None = best_path(lat, lmwt, word_ins_penalty)  # type: ignore[arg-type]
        if path is None:
            failed[utt] = "no path to a final state"
            continue
        try:
            phones = split_to_phones(tables, path.ali)
            segs = (
                align_words_lexicon(phones, path.words, lexicon, utt)
                if lexicon is not None
                else align_words_boundary(phones, path.words, boundary, utt)  # type: ignore[arg-type]
            )
        except DataError as e:
            failed[utt] = str(e)
            continue
        lines += ctm_lines(utt, segs, frame_shift, print_silence, words=words)
    return lines, failed
