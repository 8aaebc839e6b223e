"""Transcripts as word ids (Kaldi's ``utils/sym2int.pl [--map-oov OOV] words.txt``), with the
words outside words.txt named.

Every place that turns a data dir's ``text`` into word ids (GMM training and alignment,
align-nnet, train-se's online numerators) goes through :func:`words_to_ids`. Kaldi's
sym2int.pl prints the first 20 replacements and the total; here one warning names the OOV
words with their counts and the utterances they are in (the first few of each), e.g.::

    data/train/text: 3 word tokens (2 distinct words) are not in data/lang/words.txt:
    ZYZZYVA (2), QOPH (1); in 2 utterances: spk1-u3, spk2-u9 (mapped to <UNK>)

Without an OOV word (``oov_word=None``) the same list is a :class:`DataError`.

    >>> ids, oovs = words_to_ids({"u1": "HELLO ZYZZYVA"}, words, oov_word="<UNK>",
    ...                          source="data/train/text")
    >>> oovs.counts
    Counter({'ZYZZYVA': 1})
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pykaldi2.lang.symbols import SymbolTable
from pykaldi2.utils.errors import DataError

log = logging.getLogger(__name__)

#: How many OOV words and utterances a message names.
SHOWN = 10


def _first(items: list[str], n: int = SHOWN) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


@dataclass
class OovReport:
    """The words of a text that are not in words.txt.

    Attributes:
        counts: OOV word -> number of tokens.
        utts: the utterances holding OOV words, in the order read.
    """

    counts: Counter = field(default_factory=Counter)
    utts: list[str] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(self.counts.values())

    def describe(self, words_file: str) -> str:
        """``"3 word tokens (2 distinct words) are not in WORDS: A (2), B (1); in 2 utterances:
        u1, u2"`` (the most frequent words and the first utterances)."""
        shown = [f"{w} ({c})" for w, c in self.counts.most_common()]
        n = len(self.counts)
        return (
            f"{self.num_tokens} word token{'s' * (self.num_tokens != 1)} ({n} distinct "
            f"word{'s' * (n != 1)}) {'are' if self.num_tokens != 1 else 'is'} not in "
            f"{words_file}: {_first(shown)}; in {len(self.utts)} "
            f"utterance{'s' * (len(self.utts) != 1)}: {_first(self.utts)}"
        )


def words_to_ids(
    transcripts: Mapping[str, str] | Iterable[tuple[str, str]],
    words: SymbolTable,
    *,
    oov_word: str | None,
    source: str,
    words_file: str | None = None,
) -> tuple[dict[str, list[int]], OovReport]:
    """``utt -> word ids`` of ``transcripts`` (utt -> words separated by spaces).

    Args:
        words: the lang dir's words.txt.
        oov_word: what words outside ``words`` become (the lang's ``oov.txt``, e.g. ``<UNK>``),
            with a warning naming them (:class:`OovReport`); None: they are a
            :class:`DataError` naming them and their utterances.
        source: the text file, named in the messages.
        words_file: the words.txt path named in the messages (default: ``words.name``).
    Returns the ids and the report of the OOV words.
    """
    items = transcripts.items() if isinstance(transcripts, Mapping) else transcripts
    words_file = words_file or words.name or "words.txt"
    oov_id = None if oov_word is None else words.id(oov_word)
    out: dict[str, list[int]] = {}
    report = OovReport()
    for utt, text in items:
        ids: list[int] = []
        seen = False
        for w in text.split():
            i = words.get(w)
            if i is None:
                report.counts[w] += 1
                seen = True
                i = oov_id if oov_id is not None else -1
            ids.append(i)
        if seen:
            report.utts.append(utt)
        out[utt] = ids
    if report.counts:
        if oov_id is None:
            raise DataError(
                report.describe(words_file),
                file=source,
                fix="use the lang dir the transcripts were prepared with, or map the words to "
                "its OOV word (e.g. <UNK>)",
            )
        log.warning("%s: %s (mapped to %s)", source, report.describe(words_file), oov_word)
    return out, report
