"""train-lm: LM training text -> ARPA, with the OOV words of the text mapped to the lexicon's OOV.

>>> sents = read_lm_text("data/train/text", skip_first_field=True)
>>> sents, oovs = map_oov(sents, vocab={"A", "B", "<UNK>"}, oov_word="<UNK>")
>>> train_lm("data/train/text", "data/local/lm/lm.arpa", order=3, words="data/lang/words.txt")
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from pykaldi2.lang.arpa import write_arpa
from pykaldi2.lang.kneser_ney import train_kneser_ney
from pykaldi2.lang.lexicon import read_lexicon
from pykaldi2.lang.symbols import SymbolTable
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)

#: words.txt entries that are not words of the LM.
NON_LM_SYMBOLS = frozenset({"<eps>", "<s>", "</s>"})


@dataclass
class TrainLmConfig(ConfigMixin):
    order: int = 3
    oov_word: str = "<UNK>"
    #: Text lines start with an utterance id (a Kaldi data dir's ``text``).
    skip_first_field: bool = False
    #: Put every vocabulary word in the LM, unseen ones with the unigram floor probability, so
    #: the decoding graph can output them; non-speech tokens (``<sil>``, ``!SIL``, ``<UNK>``)
    #: only when they occur in the text.
    full_vocab: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.order <= 10:
            raise ValueError(f"order must be in 1..10, got {self.order}")

    def to_dict(self) -> dict:
        return asdict(self)


def read_lm_text(path: str | os.PathLike, skip_first_field: bool = False) -> list[list[str]]:
    """Read LM training text: one sentence per line, words separated by whitespace.

    A leading ``<s>`` and trailing ``</s>`` are dropped; elsewhere they are an error (file:line).
    Empty lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("LM text not found", file=str(path))
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            words = line.split()
            if skip_first_field:
                words = words[1:]
            if words and words[0] == "<s>":
                words = words[1:]
            if words and words[-1] == "</s>":
                words = words[:-1]
            if not words:
                continue
            for w in words:
                if w in ("<s>", "</s>", "<eps>"):
                    raise DataError(
                        f"reserved word {w!r} inside a sentence",
                        file=str(path),
                        line=lineno,
                        fix="remove it (or pass --skip-first-field for a Kaldi text file)",
                    )
            out.append(words)
    if not out:
        raise DataError("LM text has no sentences", file=str(path))
    return out


def map_oov(
    sentences: Iterable[list[str]], vocab: set[str] | frozenset[str], oov_word: str
) -> tuple[list[list[str]], Counter[str]]:
    """Replace words not in ``vocab`` by ``oov_word``; return the sentences and the OOV counts."""
    oovs: Counter[str] = Counter()
    out = []
    for s in sentences:
        mapped = []
        for w in s:
            if w in vocab:
                mapped.append(w)
            else:
                oovs[w] += 1
                mapped.append(oov_word)
        out.append(mapped)
    return out, oovs


def is_non_speech(word: str) -> bool:
    """Kaldi-style non-speech tokens (``<sil>``, ``<UNK>``, ``<SPOKEN_NOISE>``, ``!SIL``): the
    LM gives them probability only when they occur in the training text."""
    return (word.startswith("<") and word.endswith(">")) or word.startswith("!")


def read_vocab(path: str | os.PathLike) -> set[str]:
    """The words of a words.txt (without <eps>, <s>, </s>, #N) or of a lexicon.txt/lexiconp.txt."""
    path = Path(path)
    if path.name.endswith("words.txt"):
        table = SymbolTable.read(path)
        return {s for s, _ in table if s not in NON_LM_SYMBOLS and not s.startswith("#")}
    return {e.word for e in read_lexicon(path)}


def train_lm(
    text: str | os.PathLike,
    arpa: str | os.PathLike,
    *,
    words: str | os.PathLike | None = None,
    config: TrainLmConfig | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> Counter[str]:
    """Train a modified-KN LM on ``text`` and write it to ``arpa`` (``.gz`` allowed).

    ``words``: a words.txt or lexicon; text words outside it are mapped to ``config.oov_word``
    (which must be in it). Returns the counts of the OOV words mapped. ``tokenizer``: a
    sentencepiece ``tokenizer.model``; the sentences are cut into its pieces first, which
    become the LM's words (a piece LM for transducer shallow fusion,
    :mod:`pykaldi2.lang.token_lm`; not with ``words``).
    """
    config = config or TrainLmConfig()
    sents = read_lm_text(text, config.skip_first_field)
    if tokenizer is not None:
        from pykaldi2.lang.token_lm import tokenize_sentences
        from pykaldi2.lang.tokenizer import Tokenizer

        if words is not None:
            raise DataError("train-lm: --tokenizer and --words exclude each other (pieces have "
                            "no lexicon)", file=str(tokenizer))  # fmt: skip
        sents = tokenize_sentences(Tokenizer(tokenizer), sents)
    oovs: Counter[str] = Counter()
    vocab: set[str] = set()
    if words is not None:
        vocab = read_vocab(words)
        if config.oov_word not in vocab:
            raise DataError(
                f"OOV word {config.oov_word!r} is not in the vocabulary",
                file=str(words),
                fix="pass --oov-word with a word of the lexicon (e.g. <UNK> or <SPOKEN_NOISE>)",
            )
        sents, oovs = map_oov(progress(sents, desc="map OOV", unit="sent"), vocab, config.oov_word)
        ntok = sum(len(s) for s in sents)
        log.info(
            "train-lm: %d of %d tokens (%.2f%%, %d distinct words) mapped to %s%s",
            sum(oovs.values()),
            ntok,
            100.0 * sum(oovs.values()) / max(ntok, 1),
            len(oovs),
            config.oov_word,
            (": most frequent " + ", ".join(f"{w} ({c})" for w, c in oovs.most_common(5)))
            if oovs
            else "",
        )
    extra = {w for w in vocab if not is_non_speech(w)} if config.full_vocab else set()
    lm = train_kneser_ney(sents, config.order, vocab=extra)
    write_arpa(lm, arpa)
    return oovs
