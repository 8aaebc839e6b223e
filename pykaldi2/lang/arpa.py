"""ARPA n-gram language models: an in-memory :class:`NgramLM`, reader and writer.

The model is the usual backoff form: for a context ``h = (h1, ..., hk)`` and word ``w``::

    log10 p(w | h) = logp[h + (w,)]                         if h + (w,) is listed
                   = bow[h] + log10 p(w | h[1:])            otherwise (bow = 0 if h is not listed)

    >>> lm = read_arpa("lm.arpa.gz")
    >>> lm.log10_prob("B", ("<s>", "A"))
    >>> lm.sentence_log10_prob(["A", "B"])        # includes </s>
    >>> write_arpa(lm, "copy.arpa")
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write

#: log10 probability written for impossible events (<s> as a predicted word), as SRILM does.
LOG10_ZERO = -99.0

Ngram = tuple[str, ...]


@dataclass
class NgramLM:
    """A backoff n-gram LM in log10.

    ``ngrams[n-1]`` maps each listed n-gram (a tuple of n words) to ``(log10_prob, log10_bow)``;
    ``log10_bow`` is ``None`` when the n-gram has no backoff weight (highest order, or never a
    context).
    """

    ngrams: list[dict[Ngram, tuple[float, float | None]]] = field(default_factory=list)
    bos: str = "<s>"
    eos: str = "</s>"

    @property
    def order(self) -> int:
        return len(self.ngrams)

    @property
    def vocab(self) -> list[str]:
        """All words (the unigrams), in file order."""
        return [g[0] for g in self.ngrams[0]] if self.ngrams else []

    def counts(self) -> list[int]:
        return [len(d) for d in self.ngrams]

    def log10_prob(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 p(word | context) with backoff; ``context`` is truncated to order - 1 words.

        A word that is not a unigram gets :data:`LOG10_ZERO`.
        """
        h = tuple(context)[max(0, len(context) - (self.order - 1)) :] if self.order > 1 else ()
        bow = 0.0
        while True:
            entry = self.ngrams[len(h)].get(h + (word,))
            if entry is not None:
                return bow + entry[0]
            if not h:
                return LOG10_ZERO
            ctx = self.ngrams[len(h) - 1].get(h)
            if ctx is not None and ctx[1] is not None:
                bow += ctx[1]
            h = h[1:]

    def sentence_log10_prob(self, words: Sequence[str]) -> float:
        """log10 p(words, </s> | <s>)."""
        hist = [self.bos]
        total = 0.0
        for w in list(words) + [self.eos]:
            total += self.log10_prob(w, hist)
            hist.append(w)
        return total

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> tuple[float, int]:
        """Perplexity over the words and ``</s>`` of ``sentences`` (SRILM's ``ppl``), and the
        number of OOV tokens (words that are not unigrams), which are excluded from it."""
        vocab = {g[0] for g in self.ngrams[0]}
        total, n, oov = 0.0, 0, 0
        for s in sentences:
            hist = [self.bos]
            for w in list(s) + [self.eos]:
                if w in vocab:
                    total += self.log10_prob(w, hist)
                    n += 1
                else:  # not scored; later words back off past it (bow 0), as SRILM
                    oov += 1
                hist.append(w)
        return (10 ** (-total / n) if n else math.inf), oov

    def contexts(self) -> Iterator[Ngram]:
        """Every listed n-gram that has a backoff weight (the contexts the model conditions on)."""
        for d in self.ngrams[:-1]:
            for g, (_, bow) in d.items():
                if bow is not None:
                    yield g


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def read_arpa(path: str | os.PathLike) -> NgramLM:
    """Read an ARPA file (``.gz`` allowed); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("ARPA file not found", file=str(path))
    lm = NgramLM()
    declared: dict[int, int] = {}
    section = None  # None: before \data\, 0: in \data\, n: in \n-grams:
    with _open_text(path, "r") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if line == "\\data\\":
                section = 0
                continue
            if line == "\\end\\":
                break
            if section is None:
                continue  # header comments before \data\
            if line.startswith("\\") and line.endswith("-grams:"):
                try:
                    section = int(line[1:-7])
                except ValueError:
                    raise DataError(f"bad section {line!r}", file=str(path), line=lineno) from None
                while len(lm.ngrams) < section:
                    lm.ngrams.append({})
                continue
            if section == 0:
                if line.startswith("ngram "):
                    n, c = line[6:].split("=")
                    declared[int(n)] = int(c)
                    continue
                raise DataError(
                    f"unexpected line {line!r} in \\data\\", file=str(path), line=lineno
                )
            fields = line.split()
            n = section
            if len(fields) not in (n + 1, n + 2):
                raise DataError(
                    f"expected 'logprob {n} words [backoff]', got {line!r}",
                    file=str(path),
                    line=lineno,
                )
            try:
                logp = float(fields[0])
                bow = float(fields[n + 1]) if len(fields) == n + 2 else None
            except ValueError:
                raise DataError(f"bad number in {line!r}", file=str(path), line=lineno) from None
            lm.ngrams[n - 1][tuple(fields[1 : n + 1])] = (logp, bow)
        else:
            raise DataError("no \\end\\ marker (truncated file?)", file=str(path))
    if not declared or not lm.ngrams:
        raise DataError("no \\data\\ section or no n-grams", file=str(path))
    for n, c in declared.items():
        have = len(lm.ngrams[n - 1]) if n <= len(lm.ngrams) else 0
        if have != c:
            raise DataError(
                f"\\data\\ declares {c} {n}-grams but the file lists {have}", file=str(path)
            )
    return lm


def _fmt(x: float) -> str:
    return f"{x:.7g}"


def write_arpa(lm: NgramLM, path: str | os.PathLike) -> None:
    """Write ``lm`` as ARPA text (``.gz`` compresses), atomically."""
    path = Path(path)
    lines = ["\\data\\\n"]
    lines += [f"ngram {n}={c}\n" for n, c in enumerate(lm.counts(), 1)]
    for n, d in enumerate(lm.ngrams, 1):
        lines.append(f"\n\\{n}-grams:\n")
        for g, (logp, bow) in d.items():
            lp = _fmt(max(logp, LOG10_ZERO)) if math.isfinite(logp) else _fmt(LOG10_ZERO)
            tail = f"\t{_fmt(bow)}" if bow is not None else ""
            lines.append(f"{lp}\t{' '.join(g)}{tail}\n")
    lines.append("\n\\end\\\n")
    text = "".join(lines)
    if path.suffix == ".gz":
        with atomic_write(path, "wb") as f:
            f.write(gzip.compress(text.encode("utf-8")))
    else:
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(text)
