"""Train an n-gram LM with interpolated modified Kneser-Ney smoothing (orders 1..4 and up).

Why our own: no maintained PyPI package trains an ARPA LM without a C++ build. ``kenlm`` on
PyPI (0.3.0, checked with ``pip download kenlm``) is an sdist compiled at install time, and its
Python module only *queries* models: the trainer ``lmplz`` (lm/builder) is a separate C++ binary
that needs cmake and boost. SRILM is not on PyPI and has a restrictive licence; NLTK's
``KneserNeyInterpolated`` is unmodified KN, cannot write ARPA and is slow. LMs for ASR recipes here are trained on transcripts (thousands to millions of words), which
a dictionary-based trainer handles in seconds; for large corpora use an official ARPA file.
The code below is small, follows Chen & Goodman (1998) and KenLM's conventions, and is tested
against :func:`kneser_ney_reference_prob`, a slow direct transcription of the definition.

The model (for order ``N``, KenLM conventions):

- Sentences are padded as ``<s> w1 ... wn </s>``. ``<s>`` is only ever a context.
- Adjusted counts ``a(g)``: the raw count for N-grams and for n-grams starting with ``<s>``;
  otherwise the number of distinct words seen to the left of ``g`` (continuation count).
- Discounts per order from the count-of-counts ``t1..t4`` of the adjusted counts::

      Y = t1 / (t1 + 2 t2);   D1 = 1 - 2Y t2/t1;   D2 = 2 - 3Y t3/t2;   D3+ = 3 - 4Y t4/t3

  When a count-of-count is zero or a discount is not positive (tiny corpora), the fallback
  discounts (0.5, 1.0, 1.5) are used, as KenLM's ``--discount_fallback``, with a warning.
- Interpolation, for context ``h`` with ``T(h) = sum_w a(h w)``::

      p(w | h) = (a(h w) - D(a(h w))) / T(h) + gamma(h) p(w | h[1:])
      gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / T(h)

  and the unigram level interpolates with the uniform distribution over the vocabulary (every
  word but ``<s>``, plus any ``vocab`` words never seen, which get only this uniform mass).
- In ARPA form, listed n-grams carry the interpolated probability and the backoff weight of a
  context is exactly ``gamma(h)``; every ``p(. | h)`` sums to one.

    >>> lm = train_kneser_ney([["A", "B"], ["A", "C"]], order=3)
    >>> write_arpa(lm, "lm.arpa")                 # pykaldi2.lang.arpa
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pykaldi2.lang.arpa import LOG10_ZERO, Ngram, NgramLM
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

#: KenLM's --discount_fallback values for D1, D2, D3+.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


@dataclass(frozen=True)
class Discounts:
    """Modified KN discounts of one order: ``D1``, ``D2``, ``D3+``."""

    d1: float
    d2: float
    d3: float

    def __call__(self, count: float) -> float:
        if count <= 0:
            return 0.0
        if count == 1:
            return self.d1
        if count == 2:
            return self.d2
        return self.d3


def modified_kn_discounts(count_of_counts: Sequence[int]) -> Discounts | None:
    """Chen & Goodman's discounts from ``(t1, t2, t3, t4)``; ``None`` when undefined."""
    t1, t2, t3, t4 = (list(count_of_counts) + [0, 0, 0, 0])[:4]
    if min(t1, t2, t3, t4) <= 0:
        return None
    y = t1 / (t1 + 2 * t2)
    d = Discounts(1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
    if min(d.d1, d.d2, d.d3) <= 0:
        return None
    return d


def _pad(sentences: Iterable[Sequence[str]], bos: str, eos: str) -> list[list[str]]:
    return [[bos, *s, eos] for s in sentences]


def _check_order(order: int) -> None:
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")


def train_kneser_ney(
    sentences: Iterable[Sequence[str]],
    order: int = 3,
    *,
    vocab: Iterable[str] = (),
    bos: str = "<s>",
    eos: str = "</s>",
) -> NgramLM:
    """Estimate an interpolated modified Kneser-Ney LM of ``order`` from tokenized sentences.

    ``vocab``: extra words to include as unigrams even if unseen (e.g. the lexicon's words, so
    that G.fst can output them). Returns an :class:`NgramLM` ready for ``write_arpa``.
    """
    _check_order(order)
    sents = _pad(sentences, bos, eos)
    if not sents:
        raise ValueError("no sentences to train on")
    # Raw counts of every order.
    raw: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    for t in sents:
        for n in range(1, order + 1):  # all windows of n tokens: zip(t, t[1:], ..., t[n-1:])
            raw[n - 1].update(zip(*(t[i:] for i in range(n))))
    # Adjusted counts.
    adj: list[dict[Ngram, int]] = [dict() for _ in range(order)]
    adj[order - 1] = dict(raw[order - 1])
    for n in range(order - 1, 0, -1):  # order n from order n+1
        left = Counter(g[1:] for g in raw[n])
        adj[n - 1] = {g: (c if g[0] == bos else left[g]) for g, c in raw[n - 1].items()}
    # Discounts per order (<s> as a unigram is never predicted).
    discounts = []
    for n in range(1, order + 1):
        coc = Counter(c for g, c in adj[n - 1].items() if c <= 4 and g != (bos,))
        d = modified_kn_discounts([coc[1], coc[2], coc[3], coc[4]])
        if d is None:
            log.warning(
                "order %d: count-of-counts %s give no valid modified-KN discounts (corpus too "
                "small); using the fallback discounts %s",
                n,
                [coc[k] for k in (1, 2, 3, 4)],
                FALLBACK_DISCOUNTS,
            )
            d = Discounts(*FALLBACK_DISCOUNTS)
        discounts.append(d)

    # Unigrams: interpolate with the uniform distribution over the vocabulary.
    words = sorted({g[0] for g in adj[0]} - {bos} | set(vocab) - {bos})
    uni = {(w,): adj[0].get((w,), 0) for w in words}
    total = sum(uni.values())
    d = discounts[0]
    gamma0 = sum(d(c) for c in uni.values()) / total
    probs: list[dict[Ngram, float]] = [
        {g: (c - d(c)) / total + gamma0 / len(words) for g, c in uni.items()}
    ]
    gammas: list[dict[Ngram, float]] = []
    # Higher orders, from each context's totals.
    for n in range(2, order + 1):
        d = discounts[n - 1]
        tot: dict[Ngram, float] = defaultdict(float)
        dsum: dict[Ngram, float] = defaultdict(float)
        for g, c in adj[n - 1].items():
            tot[g[:-1]] += c
            dsum[g[:-1]] += d(c)
        gamma = {h: dsum[h] / tot[h] for h in tot}
        lower = probs[n - 2]
        probs.append(
            {
                g: (c - d(c)) / tot[g[:-1]] + gamma[g[:-1]] * lower[g[1:]]
                for g, c in adj[n - 1].items()
            }
        )
        gammas.append(gamma)

    lm = NgramLM(bos=bos, eos=eos)
    for n in range(1, order + 1):
        bows = gammas[n - 1] if n < order else {}
        table: dict[Ngram, tuple[float, float | None]] = {}
        if n == 1:
            g0 = (bos,)
            table[g0] = (LOG10_ZERO, math.log10(bows[g0]) if g0 in bows else None)
        for g in sorted(probs[n - 1]):
            table[g] = (math.log10(probs[n - 1][g]), math.log10(bows[g]) if g in bows else None)
        lm.ngrams.append(table)
    log.info("trained a %d-gram modified KN LM: n-gram counts %s", order, lm.counts())
    return lm


def kneser_ney_reference_prob(
    sentences: Sequence[Sequence[str]],
    order: int,
    word: str,
    context: Sequence[str],
    *,
    vocab: Iterable[str] = (),
    bos: str = "<s>",
    eos: str = "</s>",
) -> float:
    """p(word | context) by the definition, rescanning the corpus for every count (slow).

    The reference for :func:`train_kneser_ney`: no tables, no shared state, only the formulas
    of the module docstring. Use on tiny corpora in tests.
    """
    _check_order(order)
    sents = _pad(sentences, bos, eos)

    def occurrences(g: Ngram) -> list[tuple[list[str], int]]:
        n = len(g)
        return [(t, i) for t in sents for i in range(len(t) - n + 1) if tuple(t[i : i + n]) == g]

    def adjusted(g: Ngram) -> int:
        if len(g) == order or g[0] == bos:
            return len(occurrences(g))
        return len({t[i - 1] for t, i in occurrences(g) if i > 0})

    def all_ngrams(n: int) -> set[Ngram]:
        return {tuple(t[i : i + n]) for t in sents for i in range(len(t) - n + 1)}

    def discount(n: int, c: int) -> float:
        counts = [adjusted(g) for g in all_ngrams(n) if g != (bos,)]
        coc = [sum(1 for c2 in counts if c2 == k) for k in (1, 2, 3, 4)]
        d = modified_kn_discounts(coc) or Discounts(*FALLBACK_DISCOUNTS)
        return d(c)

    words = sorted({g[0] for g in all_ngrams(1)} - {bos} | set(vocab) - {bos})

    def prob(w: str, h: tuple[str, ...]) -> float:
        if w not in words:
            return 0.0
        n = len(h) + 1
        followers = [g for g in all_ngrams(n) if g[:-1] == h and g != (bos,)]
        total = sum(adjusted(g) for g in followers)
        if total == 0:  # unseen context: back off with weight 1
            return prob(w, h[1:])
        gamma = sum(discount(n, adjusted(g)) for g in followers) / total
        c = adjusted(h + (w,)) if h + (w,) in followers else 0
        lower = 1.0 / len(words) if n == 1 else prob(w, h[1:])
        return (c - discount(n, c)) / total + gamma * lower if c else gamma * lower

    h = tuple(context)[max(0, len(context) - (order - 1)) :] if order > 1 else ()
    return prob(word, h)
