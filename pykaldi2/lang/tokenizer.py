"""Sub-word tokenizer for transducers: sentencepiece BPE / unigram trained on a data dir's text.

Symbol ids are the model's output ids: id 0 is the transducer blank (``<blk>``, sentencepiece's
pad piece, never produced by ``encode``), id 1 is ``<unk>``, ids 2.. are the pieces. So the
tokenizer's ``vocab_size`` is the model's ``vocab_size`` (blank included), as the RNN-T loss
(``blank=0``) expects.

    >>> tok = train_tokenizer(["data/train"], "exp/rnnt/tokenizer", TokenizerConfig(vocab_size=64))
    >>> ids = tok.encode("HELLO WORLD", utt="u1")      # [17, 5, ...], never 0 or 1
    >>> tok.decode(ids)
    'HELLO WORLD'

Text the tokenizer cannot encode (characters never seen in training, which sentencepiece maps
to ``<unk>``) is an error naming the utterance, or, with ``on_unknown="skip"``, the utterance is
dropped and counted (:func:`encode_text`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pykaldi2.data.tables import read_table_lines
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

BLANK_ID = 0
UNK_ID = 1
MODEL_FILE = "tokenizer.model"
ON_UNKNOWN = ("error", "skip")


@dataclass
class TokenizerConfig(ConfigMixin):
    """Sentencepiece options.

    Attributes:
        model_type: ``bpe`` or ``unigram``.
        vocab_size: output symbols including blank and ``<unk>`` (Myrtle: 1023 pieces + blank).
        character_coverage: fraction of characters covered (1.0 keeps every training character).
        hard_vocab_limit: fail when the text cannot give ``vocab_size`` pieces (else use fewer).
        on_unknown: ``error`` or ``skip`` an utterance with characters the tokenizer lacks.
    """

    model_type: str = "bpe"
    vocab_size: int = 1024
    character_coverage: float = 1.0
    hard_vocab_limit: bool = False
    on_unknown: str = "error"

    def __post_init__(self) -> None:
        if self.model_type not in ("bpe", "unigram"):
            raise Pykaldi2Error(
                f"tokenizer.model_type must be bpe or unigram, not {self.model_type!r}"
            )
        if self.vocab_size < 4:
            raise Pykaldi2Error(f"tokenizer.vocab_size must be >= 4, got {self.vocab_size}")
        if not 0.9 <= self.character_coverage <= 1.0:
            raise Pykaldi2Error("tokenizer.character_coverage must be in [0.9, 1]")
        if self.on_unknown not in ON_UNKNOWN:
            raise Pykaldi2Error(f"tokenizer.on_unknown must be one of {ON_UNKNOWN}")


class Tokenizer:
    """A trained sentencepiece model with the blank/unk id convention of this module."""

    blank = BLANK_ID
    unk = UNK_ID

    def __init__(self, model_file: str | os.PathLike) -> None:
        import sentencepiece as spm

        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise DataError("tokenizer model not found", file=str(model_file))
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        if self.sp.pad_id() != BLANK_ID or self.sp.unk_id() != UNK_ID:
            raise DataError(
                f"not a pykaldi2 tokenizer (pad id {self.sp.pad_id()}, unk id {self.sp.unk_id()}; "
                f"need {BLANK_ID} and {UNK_ID})",
                file=str(model_file),
                fix="train it with pykaldi2.lang.tokenizer.train_tokenizer",
            )

    @property
    def vocab_size(self) -> int:
        """Output symbols, blank included."""
        return int(self.sp.get_piece_size())

    def encode(self, text: str, utt: str | None = None, file: str | None = None) -> list[int]:
        """``text`` -> piece ids (>= 2); a :class:`DataError` if a character is unknown."""
        ids = list(self.sp.encode(text.strip(), out_type=int))
        if UNK_ID in ids:
            pieces = self.sp.encode(text.strip(), out_type=str)
            bad = sorted({c for p, i in zip(pieces, ids) if i == UNK_ID for c in p.lstrip("▁")})
            raise DataError(
                f"text has characters the tokenizer cannot encode: {''.join(bad)!r}",
                file=file,
                utt=utt,
                fix="normalise the text (case, punctuation) as for training, retrain the tokenizer "
                "on text with these characters, or set tokenizer.on_unknown: skip",
            )
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Piece ids (blank and unk ignored) -> text."""
        return self.sp.decode([int(i) for i in ids if int(i) > UNK_ID])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))


def read_transcripts(data_dirs: Iterable[str | os.PathLike]) -> dict[str, str]:
    """``utt -> transcript`` from each data dir's ``text`` (an utterance id twice is an error)."""
    out: dict[str, str] = {}
    for d in data_dirs:
        path = Path(d) / "text"
        if not path.is_file():
            raise DataError("no text file in the data dir", file=str(path))
        for e in read_table_lines(path):  # id and words split at spaces or tabs
            if e.key in out:
                raise DataError("utterance appears twice", file=str(path), line=e.line, utt=e.key)
            out[e.key] = " ".join(e.value.split())
    return out


def train_tokenizer(
    data_dirs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: TokenizerConfig | None = None,
) -> Tokenizer:
    """Train a sentencepiece model on the transcripts of ``data_dirs``; writes
    ``out_dir/tokenizer.model`` (+ ``.vocab``) atomically and returns the :class:`Tokenizer` (deterministic: one training thread)."""
    import sentencepiece as spm

    from pykaldi2.utils.io import atomic_dir

    cfg = config or TokenizerConfig()
    data_dirs = [str(d) for d in data_dirs]
    lines = [t for t in read_transcripts(data_dirs).values() if t]
    if not lines:
        raise DataError("no transcripts to train the tokenizer on", file=", ".join(data_dirs))
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory() as work:
        text = Path(work) / "text.txt"
        text.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            spm.SentencePieceTrainer.train(
                input=str(text),
                model_prefix=str(tmp / "tokenizer"),
                model_type=cfg.model_type,
                vocab_size=cfg.vocab_size,
                character_coverage=cfg.character_coverage,
                hard_vocab_limit=cfg.hard_vocab_limit,
                pad_id=BLANK_ID,
                pad_piece="<blk>",
                unk_id=UNK_ID,
                bos_id=-1,
                eos_id=-1,
                num_threads=1,
                minloglevel=2,
            )
        except RuntimeError as e:
            raise DataError(
                f"sentencepiece could not train a {cfg.vocab_size}-symbol {cfg.model_type} "
                f"model: {e}",
                file=", ".join(data_dirs),
                fix="lower tokenizer.vocab_size or set tokenizer.hard_vocab_limit: false",
            ) from None
    tok = Tokenizer(Path(out_dir) / MODEL_FILE)
    log.info("tokenizer: %d symbols (%s) in %s", tok.vocab_size, cfg.model_type, out_dir)
    return tok


@dataclass
class EncodedText:
    """Token ids of the encodable utterances, and the ids of those skipped."""

    tokens: dict[str, list[int]]
    skipped: list[str]


def encode_text(
    tok: Tokenizer, transcripts: Mapping[str, str], on_unknown: str = "error", source: str = "text"
) -> EncodedText:
    """Encode every transcript; an unknown character raises (``error``) or skips (``skip``)."""
    if on_unknown not in ON_UNKNOWN:
        raise Pykaldi2Error(f"on_unknown must be one of {ON_UNKNOWN}, not {on_unknown!r}")
    tokens: dict[str, list[int]] = {}
    skipped: list[str] = []
    for utt, text in transcripts.items():
        try:
            tokens[utt] = tok.encode(text, utt=utt, file=source)
        except DataError:
            if on_unknown == "error":
                raise
            skipped.append(utt)
    if skipped:
        log.warning(
            "%s: skipped %d utterances with characters the tokenizer cannot encode (e.g. %s)",
            source,
            len(skipped),
            ", ".join(skipped[:3]),
        )
    return EncodedText(tokens, skipped)
