"""L.fst and L_disambig.fst: the lexicon as a phone -> word transducer (Kaldi's make_lexicon_fst.py).

With optional silence (``sil_prob > 0``) the FST has three special states, as in Kaldi::

    start --<eps>:<eps> / -log(1-p)--> loop
    start --<eps>:<eps> / -log(p)----> sil --SIL:<eps>--> loop      (sil --SIL--> x --#N--> loop
                                                                      in L_disambig)
    loop --P1:WORD / -log(prob)--> ... --Pn:<eps> / -log(1-p)--> loop
                                    ... --Pn:<eps> / -log(p)----> sil

so each word may be followed by silence with probability ``p`` (``sil_prob``), and so may the
start of the utterance. ``loop`` is the final state. Pronunciation probabilities go on the
first arc of the word. L_disambig also has ``#0:#0`` self-loops (Kaldi's fstaddselfloops) so
G's backoff ``#0`` passes through L ∘ G. Both are arc-sorted on output labels (for L ∘ G).
"""

from __future__ import annotations

import math

from pykaldi2.lang.lexicon import LexiconEntry
from pykaldi2.lang.symbols import SymbolTable
from pykaldi2.utils.log import progress


def make_lexicon_fst(
    lexicon: list[LexiconEntry],
    phones: SymbolTable,
    words: SymbolTable,
    *,
    sil_prob: float = 0.5,
    sil_phone: str | None = None,
    sil_disambig: str | None = None,
    word_disambig_loop: tuple[str, str] | None = None,
):
    """Build the lexicon FST (a ``kaldifst.StdVectorFst``).

    Args:
      lexicon: pronunciations; phones may include disambiguation symbols (``#1``...).
      phones, words: the symbol tables (phones.txt, words.txt).
      sil_prob: probability of optional silence after each word and at the start; 0 disables.
      sil_phone: the optional silence phone (required when ``sil_prob > 0``).
      sil_disambig: for L_disambig, the phone disambiguation symbol after optional silence
        (Kaldi uses the highest ``#N``).
      word_disambig_loop: for L_disambig, ``("#0", "#0")`` (phone symbol, word symbol) added as
        self-loops on every state with word outputs and every final state.
    Returns:
      the FST, arc-sorted by output label.
    """
    from pykaldi2.kaldi import kaldifst

    if not 0.0 <= sil_prob < 1.0:
        raise ValueError(f"sil_prob must be in [0, 1), got {sil_prob}")
    fst = kaldifst.StdVectorFst()
    Arc = kaldifst.StdArc

    def new_state() -> int:
        return fst.add_state()

    if sil_prob > 0:
        if sil_phone is None:
            raise ValueError("sil_phone is required when sil_prob > 0")
        start, loop, sil = new_state(), new_state(), new_state()
        no_sil_cost, sil_cost = -math.log(1.0 - sil_prob), -math.log(sil_prob)
        fst.add_arc(start, Arc(0, 0, no_sil_cost, loop))
        fst.add_arc(start, Arc(0, 0, sil_cost, sil))
        if sil_disambig is None:
            fst.add_arc(sil, Arc(phones.id(sil_phone), 0, 0.0, loop))
        else:
            x = new_state()
            fst.add_arc(sil, Arc(phones.id(sil_phone), 0, 0.0, x))
            fst.add_arc(x, Arc(phones.id(sil_disambig), 0, 0.0, loop))
        ends = [(loop, no_sil_cost), (sil, sil_cost)]
    else:
        start = loop = new_state()
        ends = [(loop, 0.0)]
    fst.start = start
    fst.set_final(loop, 0.0)

    for e in progress(lexicon, desc="lexicon FST", unit="pron", leave=False):
        if not e.phones:
            raise ValueError(f"empty pronunciation for {e.word!r}")
        pron_cost = -math.log(e.prob)
        ids = phones.ids(e.phones)
        word = words.id(e.word)
        cur = loop
        for i, p in enumerate(ids[:-1]):
            nxt = new_state()
            fst.add_arc(cur, Arc(p, word if i == 0 else 0, pron_cost if i == 0 else 0.0, nxt))
            cur = nxt
        single = len(ids) == 1
        for dest, cost in ends:
            fst.add_arc(
                cur,
                Arc(ids[-1], word if single else 0, cost + (pron_cost if single else 0.0), dest),
            )
    if word_disambig_loop is not None:
        kaldifst.add_self_loops(
            fst, [phones.id(word_disambig_loop[0])], [words.id(word_disambig_loop[1])]
        )
    kaldifst.arcsort(fst, sort_type="olabel")
    return fst
