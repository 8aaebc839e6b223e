"""Predictions for a list of utterances, with or without references (Myrtle's DUMP_PREDS,
``transcribe --dump-preds`` and ``decode-transducer --dump-preds``).

:func:`write_preds` writes one ``<key> <words>`` line per utterance (Kaldi's ``text`` format,
the same as ``hyp.txt``), or, for a path ending in ``.json``, a JSON list of ``{"key",
"audio", "prediction", "reference", "wer"}`` (Myrtle's preds JSON: per-utterance WER where
a reference exists, else null). The WER over the utterances that have a reference is returned
(None when none has one) and written beside the predictions as ``<path>.wer`` in Kaldi's
compute-wer format: utterances without a reference are never scored.

    >>> stats = write_preds("preds.txt", {"u1": ["YES", "NO"]}, refs={"u1": ["YES"]})
    >>> stats.wer_line()
    '%WER 100.00 [ 1 / 1, 1 ins, 0 del, 0 sub ]'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pykaldi2.decoding.scoring import WerStats, compute_wer, levenshtein
from pykaldi2.utils.io import atomic_write_text


def write_preds(
    path: str | os.PathLike,
    hyp: Mapping[str, list[str]],
    refs: Mapping[str, list[str]] | None = None,
    audio: Mapping[str, str] | None = None,
) -> WerStats | None:
    """Write the predictions ``hyp`` (key -> words) to ``path``; score those keys that have a
    reference in ``refs`` (key -> words) into ``<path>.wer`` and return the WerStats (None
    without any reference). ``audio``: key -> the audio file (recorded in the JSON form)."""
    path = Path(path)
    refs = {k: list(v) for k, v in (refs or {}).items() if k in hyp}
    if path.suffix == ".json":
        rows = []
        for key in sorted(hyp):
            ref = refs.get(key)
            wer = None
            if ref is not None:
                c = levenshtein(ref, list(hyp[key]))
                wer = 100.0 * c.total / len(ref) if ref else float(c.total > 0) * 100.0
            rows.append({"key": key, "audio": (audio or {}).get(key),
                         "prediction": " ".join(hyp[key]),
                         "reference": " ".join(ref) if ref is not None else None,
                         "wer": wer})  # fmt: skip
        atomic_write_text(path, json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    else:
        atomic_write_text(path, "".join(f"{k} {' '.join(hyp[k])}".rstrip() + "\n"
                                        for k in sorted(hyp)))  # fmt: skip
    wer_file = path.with_name(path.name + ".wer")
    if not refs:
        if wer_file.exists():
            wer_file.unlink()  # a stale score of an earlier run would mislead
        return None
    stats = compute_wer(refs, {k: list(hyp[k]) for k in refs}, mode="present")
    atomic_write_text(wer_file, stats.format())
    return stats
