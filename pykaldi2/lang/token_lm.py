"""An n-gram over a tokenizer's pieces, for shallow fusion in transducer beam search.

Trained like any word LM (``pykaldi2 train-lm --tokenizer TOKENIZER.model ...``: the
transcripts are cut into the model's sentencepiece pieces, which are the LM's "words"), read
back as :class:`TokenLm`, which scores the model's symbol ids. Why pieces and not words: the
transducer emits pieces, so a piece n-gram scores every partial hypothesis at every step
and any spelling is allowed (open vocabulary); with AN4's near-character pieces a 4- to
6-gram spans one to two words. The closed-vocabulary alternative is
:class:`~pykaldi2.lang.word_lm.WordLm`: a word n-gram, the words' spellings as their
lexicon, partial words scored by look-ahead.

The LM state of a hypothesis is its last ``order - 1`` pieces (``<s>`` at the start), so two
hypotheses with the same symbols share it and can be merged. Scores are natural logs.

    >>> lm = TokenLm.load("exp/rnnt/lm/tokens.arpa", tokenizer)
    >>> s = lm.initial_state()
    >>> lp = lm.log_probs(s)               # (V,) float32, lp[blank] = 0
    >>> s = lm.advance(s, token_id)
    >>> lm.final_log_prob(s)               # log p(</s> | state)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from pykaldi2.lang.arpa import NgramLM, read_arpa
from pykaldi2.utils.errors import DataError

LN10 = math.log(10.0)
LmState = tuple[str, ...]


def tokenize_sentences(tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
    """Word sentences -> piece sentences (the tokenizer's pieces, ``▁`` marking word starts)."""
    return [tokenizer.sp.encode(" ".join(s), out_type=str) for s in sentences]


class TokenLm:
    """A piece n-gram (:class:`~pykaldi2.lang.arpa.NgramLM`) scoring symbol ids of a
    :class:`~pykaldi2.lang.tokenizer.Tokenizer`; ``log_probs`` are cached per state."""

    def __init__(self, lm: NgramLM, tokenizer) -> None:
        self.lm, self.tokenizer = lm, tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.pieces = [tokenizer.id_to_piece(i) for i in range(self.vocab_size)]
        foreign = sorted(set(lm.vocab) - set(self.pieces) - {lm.bos, lm.eos})
        if foreign:
            raise DataError(
                f"the LM has words that are not pieces of the tokenizer ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}): it was not trained on its pieces",
                fix="train it with `pykaldi2 train-lm --tokenizer TOKENIZER.model ...`",
            )
        self._cache: dict[LmState, np.ndarray] = {}

    @classmethod
    def load(cls, arpa: str | os.PathLike, tokenizer) -> TokenLm:
        return cls(read_arpa(arpa), tokenizer)

    @property
    def order(self) -> int:
        return self.lm.order

    def initial_state(self) -> LmState:
        return (self.lm.bos,)[-(self.order - 1) :] if self.order > 1 else ()

    def advance(self, state: LmState, token: int) -> LmState:
        """The state after emitting symbol id ``token`` (not blank)."""
        if self.order <= 1:
            return ()
        return (state + (self.pieces[int(token)],))[-(self.order - 1) :]

    def log_probs(self, state: LmState) -> np.ndarray:
        """(V,) float32 natural-log p(piece | state) of every symbol id; 0 for blank and
        ``<unk>`` (never emitted as pieces), ``LOG10_ZERO * ln 10`` for pieces the LM lacks."""
        lp = self._cache.get(state)
        if lp is None:
            lp = np.zeros(self.vocab_size, np.float32)
            for i in range(self.tokenizer.unk + 1, self.vocab_size):
                lp[i] = self.lm.log10_prob(self.pieces[i], state) * LN10
            self._cache[state] = lp
        return lp

    def final_log_prob(self, state: LmState) -> float:
        """Natural-log p(</s> | state)."""
        return self.lm.log10_prob(self.lm.eos, state) * LN10

    def sentence_log_prob(self, ids: Sequence[int]) -> float:
        """Natural-log p(ids, </s> | <s>) (the slow, plain sum the beam search must match)."""
        s, total = self.initial_state(), 0.0
        for i in ids:
            total += float(self.log_probs(s)[int(i)])
            s = self.advance(s, i)
        return total + self.final_log_prob(s)
