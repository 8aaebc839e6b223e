"""A word n-gram that scores a transducer's pieces through the words' spellings, for shallow
fusion in transducer beam search (the closed-vocabulary alternative to :class:`TokenLm`).

A transducer with a sentencepiece vocabulary emits pieces; ``▁`` starts a word. The words
of the LM (its unigrams, less ``<s>``, ``</s>`` and other ``<...>`` symbols such as
``<UNK>``) are the only ones a hypothesis may spell: a piece that makes the word in progress
something no LM word begins with, or ends a word that is not an LM word, scores
:data:`INVALID` (a hard constraint, as a lexicon is in a WFST decoder). Its spelling is a
word's lexicon entry, so none is needed (the lexicon-free mapping of issue 20).

A word's LM probability is spread over its pieces by n-gram look-ahead, as Kaldi's and
other token-passing decoders do: with ``LA(h, s)`` the best ``log p(w | h)`` over the LM
words ``w`` that start with the string ``s``, the piece that starts a word with ``s`` scores
``LA(h, s)``, a piece that extends ``s`` to ``s'`` scores ``LA(h, s') - LA(h, s)``, and the
end of the word ``w`` (the next ``▁`` piece, or the end of the utterance) scores
``log p(w | h) - LA(h, w)``. Over a word the increments sum to ``log p(w | h)`` exactly, so
:meth:`WordLm.sentence_log_prob` is the n-gram's sentence log-probability (``</s>``
included), while partial words are already scored by their best completion (a word LM
without look-ahead could score a word only once its last piece is out, and beam search
would prune it before).

The state of a hypothesis is its last ``order - 1`` finished words (``<s>`` at the start)
and the spelling of the word in progress (None before the first word), so hypotheses with
the same symbols share it and can be merged. Scores are natural logs.

    >>> lm = WordLm.load("exp/rnnt/lm/words3.arpa", tokenizer)
    >>> s = lm.initial_state()
    >>> lp = lm.log_probs(s)               # (V,) float32, lp[blank] = 0
    >>> s = lm.advance(s, token_id)
    >>> lm.final_log_prob(s)               # the last word's end and log p(</s> | ...)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from pykaldi2.lang.arpa import NgramLM, read_arpa
from pykaldi2.utils.errors import DataError

LN10 = math.log(10.0)
#: the score of a piece that leaves the LM's vocabulary (natural log; finite, so that sums
#: and log-adds of dead hypotheses stay numbers)
INVALID = -1.0e9
WORD_START = "\u2581"  # sentencepiece's "▁"

#: (the last order - 1 finished words, the word in progress or None), or DEAD
WordLmState = tuple[tuple[str, ...], str | None]
DEAD: WordLmState = (("<dead>",), None)


class WordLm:
    """A word n-gram (:class:`~pykaldi2.lang.arpa.NgramLM`) scoring the symbol ids of a
    :class:`~pykaldi2.lang.tokenizer.Tokenizer` (see the module doc); cached per state."""

    def __init__(self, lm: NgramLM, tokenizer) -> None:
        self.lm, self.tokenizer = lm, tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.pieces = [tokenizer.id_to_piece(i) for i in range(self.vocab_size)]
        self.words = [w for w in lm.vocab if not (w.startswith("<") and w.endswith(">"))]
        if not self.words:
            raise DataError("the word LM has no words (only <...> symbols)")
        spelled = [w for w in self.words if WORD_START in w]
        if spelled:  # sentencepiece's word-start mark: these are pieces
            raise DataError(
                f"{len(spelled)} of the LM's {len(self.words)} words contain {WORD_START!r} "
                f"({', '.join(spelled[:3])}): it is an n-gram over pieces, not words",
                fix="use it as a piece LM (decode-transducer --lm-unit pieces), or train a "
                "word LM with `pykaldi2 train-lm` without --tokenizer",
            )
        self._index = {w: k for k, w in enumerate(self.words)}  # word -> its index
        starting: dict[str, list[int]] = {}  # prefix -> indices of the words it starts
        for k, w in enumerate(self.words):
            for n in range(len(w) + 1):
                starting.setdefault(w[:n], []).append(k)
        self._starting = {p: np.asarray(v) for p, v in starting.items()}
        # the listed n-grams by context: context -> (word indices, natural-log probs), for
        # whole vectors of p(w | h) by backoff (_word_lps) instead of one lookup per word
        listed: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        for grams in lm.ngrams:
            for g, (lp, _) in grams.items():
                if g[-1] in self._index:
                    ids, lps = listed.setdefault(g[:-1], ([], []))
                    ids.append(self._index[g[-1]])
                    lps.append(lp * LN10)
        self._listed = {h: (np.asarray(i), np.asarray(v)) for h, (i, v) in listed.items()}
        self._word_lp: dict[tuple[str, ...], np.ndarray] = {}
        self._la: dict[tuple[tuple[str, ...], str], float] = {}
        self._cache: dict[WordLmState, np.ndarray] = {}

    @classmethod
    def load(cls, arpa: str | os.PathLike, tokenizer) -> WordLm:
        return cls(read_arpa(arpa), tokenizer)

    @property
    def order(self) -> int:
        return self.lm.order

    def _history(self, hist: tuple[str, ...], word: str) -> tuple[str, ...]:
        return (hist + (word,))[-(self.order - 1) :] if self.order > 1 else ()

    def initial_state(self) -> WordLmState:
        return ((self.lm.bos,)[-(self.order - 1) :] if self.order > 1 else (), None)

    def _word_lps(self, h: tuple[str, ...]) -> np.ndarray:
        """Natural-log p(w | h) of every LM word, (len(words),), for a history of at most
        order - 1 words (NgramLM.log10_prob's backoff as one vector: bow(h) + p(. | h[1:]),
        then the n-grams listed after h)."""
        v = self._word_lp.get(h)
        if v is None:
            if h:
                ctx = self.lm.ngrams[len(h) - 1].get(h)
                bow = ctx[1] if ctx is not None and ctx[1] is not None else 0.0
                v = self._word_lps(h[1:]) + bow * LN10
            else:
                v = np.zeros(len(self.words))
            listed = self._listed.get(h)
            if listed is not None:
                v = v.copy()
                v[listed[0]] = listed[1]
            self._word_lp[h] = v
        return v

    def lookahead(self, hist: tuple[str, ...], prefix: str) -> float:
        """LA(hist, prefix): the best natural-log p(w | hist) of the LM words starting with
        ``prefix`` (:data:`INVALID` if none does)."""
        key = (hist, prefix)
        la = self._la.get(key)
        if la is None:
            idx = self._starting.get(prefix)
            la = INVALID if idx is None else float(self._word_lps(hist)[idx].max())
            self._la[key] = la
        return la

    def _end_word(self, state: WordLmState) -> tuple[float, tuple[str, ...]] | None:
        """(the score of ending the word in progress, the history after it); None if it is
        not an LM word."""
        hist, part = state
        if part is None:
            return 0.0, hist
        k = self._index.get(part)
        if k is None:
            return None
        lp = float(self._word_lps(hist)[k])
        return lp - self.lookahead(hist, part), self._history(hist, part)

    def _step(self, state: WordLmState, token: int) -> tuple[float, WordLmState]:
        if state == DEAD:
            return INVALID, DEAD
        piece = self.pieces[int(token)]
        hist, part = state
        if piece.startswith(WORD_START):
            ended = self._end_word(state)
            if ended is None:
                return INVALID, DEAD
            score, hist = ended
            new = piece[len(WORD_START) :]
            la = self.lookahead(hist, new)
            return (INVALID, DEAD) if la == INVALID else (score + la, (hist, new))
        if part is None:  # a word must start with ▁
            return INVALID, DEAD
        new = part + piece
        la = self.lookahead(hist, new)
        return (INVALID, DEAD) if la == INVALID else (la - self.lookahead(hist, part), (hist, new))

    def advance(self, state: WordLmState, token: int) -> WordLmState:
        """The state after emitting symbol id ``token`` (not blank)."""
        return self._step(state, token)[1]

    def log_probs(self, state: WordLmState) -> np.ndarray:
        """(V,) float32 natural-log score of every symbol id from ``state``: 0 for blank (and
        ids below ``<unk>``), :data:`INVALID` for ``<unk>`` and for pieces that leave the LM's
        vocabulary, else the look-ahead increments of the module doc."""
        lp = self._cache.get(state)
        if lp is None:
            unk = self.tokenizer.unk
            lp = np.zeros(self.vocab_size, np.float32)
            lp[unk] = INVALID
            for i in range(unk + 1, self.vocab_size):
                lp[i] = self._step(state, i)[0]
            self._cache[state] = lp
        return lp

    def final_log_prob(self, state: WordLmState) -> float:
        """Natural-log score of ending the utterance: the word in progress ends (an LM word,
        else :data:`INVALID`), then log p(</s> | the words)."""
        if state == DEAD:
            return INVALID
        ended = self._end_word(state)
        if ended is None:
            return INVALID
        score, hist = ended
        return score + self.lm.log10_prob(self.lm.eos, hist) * LN10

    def sentence_log_prob(self, ids: Sequence[int]) -> float:
        """Natural-log score of a whole symbol sequence, ``</s>`` included (the plain sum the
        beam search must match; for a spelling of LM words, their n-gram log-probability)."""
        s, total = self.initial_state(), 0.0
        for i in ids:
            total += float(self.log_probs(s)[int(i)])
            s = self.advance(s, i)
        return total + self.final_log_prob(s)
