"""Which utterances have a transcript: the check every command that needs ``text`` makes before
it trains or aligns, so that utterances are never dropped in silence.

Kaldi's compile-train-graphs warns ``No transcript for utterance X`` per utterance in a log
file and carries on; a data dir whose ``text`` lost a third of its lines (a bad merge, a BOM, a
filter) then trains on the rest. Here the utterances that have features but no ``text`` line
are listed in one warning (count and first ids) and left out, and when they are more than
``max_missing_text_fraction`` of them the command stops with a :class:`DataError` naming the
file, the first ids and the fix. The trainers and aligners that read transcripts call
:func:`check_transcribed`: train-mono / train-deltas / train-lda-mllt, align-si, align-nnet,
train-se with online numerators and train-transducer.

    >>> check_transcribed(["u1", "u2", "u3"], {"u1": "A", "u2": "B"}, text_file="d/text",
    ...                   max_missing_fraction=0.5)   # warns: 1 of 3 ... u3
    ['u1', 'u2']
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

from pykaldi2.utils.errors import DataError

log = logging.getLogger(__name__)

#: Default of every ``max_missing_text_fraction`` option.
MAX_MISSING_TEXT_FRACTION = 0.1
#: How many utterance ids the messages name.
SHOWN = 10


def check_transcribed(
    utts: Iterable[str],
    transcribed: Collection[str],
    *,
    text_file: str,
    max_missing_fraction: float = MAX_MISSING_TEXT_FRACTION,
    what: str = "training",
    option: str = "max_missing_text_fraction",
) -> list[str]:
    """The utterances of ``utts`` (in their order) that have a transcript in ``transcribed``
    (the keys of ``text_file``).

    The others are listed in a warning (their count and the first :data:`SHOWN` ids) as left
    out of ``what``; more than ``max_missing_fraction`` of ``utts`` without a transcript is a
    :class:`DataError` naming ``text_file``, the first ids, and ``option`` (the setting that
    allows more).
    """
    utts = list(utts)
    keep = [u for u in utts if u in transcribed]
    missing = [u for u in utts if u not in transcribed]
    if not missing:
        return keep
    shown = ", ".join(missing[:SHOWN]) + (" ..." if len(missing) > SHOWN else "")
    n, total = len(missing), len(utts)
    if n > max_missing_fraction * total:
        raise DataError(
            f"{n} of {total} utterances ({100.0 * n / total:.1f}%) have no transcript, more "
            f"than {option}={max_missing_fraction:g} allows: {shown}",
            file=text_file,
            fix="add their lines to text (or drop the utterances: pykaldi2 fix-data-dir DATA), "
            f"or raise {option} to train without them",
        )
    log.warning(
        "%s: %d of %d utterances have no transcript and are left out of %s: %s",
        text_file, n, total, what, shown,
    )  # fmt: skip
    return keep
