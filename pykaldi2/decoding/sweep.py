"""Scoring a decode dir over LM weights x word insertion penalties (Kaldi's score_kaldi.sh).

For each ``LMWT`` in ``lm_weights`` and ``WIP`` in ``word_ins_penalties`` the best path of every
lattice (the decode dir's ``lat.J.gz`` CompactLattices, as Kaldi's decode.sh writes them, or
``lat.J.ark`` archives of either kind) is taken under ``graph + acoustic / LMWT + WIP * num_words`` (Kaldi:
``lattice-scale --inv-acoustic-scale=LMWT | lattice-add-penalty --word-ins-penalty=WIP |
lattice-best-path``), scored with ``compute-wer --mode=present``, and written as::

    DECODE_DIR/wer_LMWT_WIP                        e.g. wer_10_0.5 (compute-wer's output)
    DECODE_DIR/best_wer                            ``%WER ... [ ... ] DECODE_DIR/wer_10_0.5``
    DECODE_DIR/scoring_kaldi/penalty_WIP/LMWT.txt  the hypotheses (``utt w1 w2 ...``)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from pykaldi2.decoding.lattice import best_paths
from pykaldi2.decoding.lattice_io import read_lattices
from pykaldi2.decoding.scoring import WerStats, best_wer, compute_wer, read_text
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write_text
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)

DEFAULT_LMWTS = tuple(range(7, 18))
DEFAULT_WIPS = (0.0, 0.5, 1.0)


def lattice_files(decode_dir: str | os.PathLike) -> list[Path]:
    """``lat.J.gz`` (or ``lat.J.ark``) of a decode dir, in job order."""
    d = Path(decode_dir)
    found = {}
    for ext in ("gz", "ark"):
        files = [p for p in d.glob(f"lat.*.{ext}") if p.name.split(".")[1].isdigit()]
        if files:
            found[ext] = sorted(files, key=lambda p: int(p.name.split(".")[1]))
    if len(found) == 2:
        raise DataError(
            "the decode dir has both lat.*.gz and lat.*.ark",
            file=str(d),
            fix="remove the stale ones (pykaldi2 decode rewrites the dir consistently)",
        )
    if not found:
        raise DataError(
            "no lat.*.gz or lat.*.ark in the decode dir",
            file=str(decode_dir),
            fix="run `pykaldi2 decode` first",
        )
    return next(iter(found.values()))


def sweep_lattices(
    files: Sequence[str | os.PathLike],
    lm_weights: Sequence[float],
    word_ins_penalties: Sequence[float],
    total: int | None = None,
) -> dict[tuple[float, float], dict[str, list[int]]]:
    """Best-path word ids of every lattice for every ``(lmwt, wip)`` pair (``total``: the
    number of lattices expected, for the progress bar).

    Returns ``{(lmwt, wip): {utt: [word ids]}}``; an utterance whose lattice has no final
    state is left out (it counts as absent, like a failed decode in Kaldi).
    """
    pairs = [(float(lm), float(wip)) for wip in word_ins_penalties for lm in lm_weights]
    out: dict[tuple[float, float], dict[str, list[int]]] = {p: {} for p in pairs}
    lm = [p[0] for p in pairs]
    wips = [p[1] for p in pairs]
    bar = progress(desc="best paths", unit="lat", total=total)
    for f in files:
        for utt, lat in read_lattices(f):
            bar.update(1)
            for pair, path in zip(pairs, best_paths(lat, lm, wips)):
                if path is not None:
                    out[pair][utt] = path.words
    bar.close()
    return out


def _wip_str(wip: float) -> str:
    """Kaldi's penalty spelling: 0.0, 0.5, 1.0."""
    return f"{wip:.1f}" if round(wip, 1) == wip else f"{wip:g}"


def _lmwt_str(lmwt: float) -> str:
    return f"{int(lmwt)}" if float(lmwt).is_integer() else f"{lmwt:g}"


def score_dir(
    decode_dir: str | os.PathLike,
    ref_text: str | os.PathLike,
    *,
    words_txt: str | os.PathLike | None = None,
    lm_weights: Sequence[float] = DEFAULT_LMWTS,
    word_ins_penalties: Sequence[float] = DEFAULT_WIPS,
    mode: str = "present",
    ignore: Sequence[str] = (),
) -> tuple[str, WerStats]:
    """Score ``decode_dir``'s lattices against ``ref_text`` over the LMWT x WIP grid.

    ``words_txt`` defaults to the graph dir's words.txt recorded in decode_info.json.
    Returns the best ``(name, WerStats)``, e.g. ``("wer_10_0.0", stats)``.
    """
    from pykaldi2.lang.symbols import SymbolTable

    out = Path(decode_dir)
    if words_txt is None:
        info_file = out / "decode_info.json"
        if not info_file.is_file():
            raise DataError(
                "no decode_info.json to find words.txt", file=str(out), fix="pass --words"
            )
        words_txt = Path(json.loads(info_file.read_text())["graph_dir"]) / "words.txt"
    words = SymbolTable.read(words_txt)
    ref = read_text(ref_text)
    # every utterance of the reference was decoded (a failed one counts as absent)
    sweep = sweep_lattices(lattice_files(out), lm_weights, word_ins_penalties, total=len(ref))
    results: dict[str, WerStats] = {}
    for (lmwt, wip), hyp_ids in sweep.items():
        hyp = {utt: words.syms(ids) for utt, ids in hyp_ids.items()}
        lm_s, wip_s = _lmwt_str(lmwt), _wip_str(wip)
        atomic_write_text(
            out / "scoring_kaldi" / f"penalty_{wip_s}" / f"{lm_s}.txt",
            "".join(" ".join([u, *ws]) + "\n" for u, ws in hyp.items()),
        )
        stats = compute_wer(ref, hyp, mode=mode, ignore=ignore)
        name = f"wer_{lm_s}_{wip_s}"
        atomic_write_text(out / name, stats.format())
        results[name] = stats
    name, stats = best_wer(results)
    atomic_write_text(out / "best_wer", f"{stats.wer_line()} {out / name}\n")
    log.info("best: %s %s", stats.wer_line(), name)
    return name, stats
