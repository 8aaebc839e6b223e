"""Word error rates exactly as Kaldi's ``compute-wer`` and ``utils/best_wer.sh`` report them.

>>> ref = {"u1": ["A", "B", "C"]}; hyp = {"u1": ["A", "C", "D"]}
>>> print(compute_wer(ref, hyp).format(), end="")
%WER 66.67 [ 2 / 3, 1 ins, 1 del, 0 sub ]
%SER 100.00 [ 1 / 1 ]
Scored 1 sentences, 0 not present in hyp.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pykaldi2.utils.errors import DataError

MODES = ("strict", "present", "all")


def read_text(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a Kaldi ``text`` file (``utt w1 w2 ...``; an utterance may have no words)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("transcript file not found", file=str(path))
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if fields[0] in out:
                raise DataError(f"utterance {fields[0]} appears twice", file=str(path), line=lineno)
            out[fields[0]] = fields[1:]
    return out


@dataclass(frozen=True)
class EditCounts:
    """Insertions, deletions and substitutions of one alignment (total = their sum)."""

    ins: int
    dels: int
    subs: int

    @property
    def total(self) -> int:
        return self.ins + self.dels + self.subs


def levenshtein(ref: list, hyp: list) -> EditCounts:
    """Edit distance with Kaldi's tie-breaking (``LevenshteinEditDistance`` in util/edit-distance).

    Among alignments of least total cost, Kaldi prefers a (mis)match, then a deletion, then an
    insertion at each cell; the ins/del/sub split below follows it exactly.
    """
    # e[i] = (total, ins, del, sub) for hyp[:j] against ref[:i]
    e = [(i, 0, i, 0) for i in range(len(ref) + 1)]
    for h in hyp:
        cur = [(e[0][0] + 1, e[0][1] + 1, e[0][2], e[0][3])]
        for i, r in enumerate(ref, 1):
            ins_err = e[i][0] + 1
            del_err = cur[i - 1][0] + 1
            diff = int(h != r)
            sub_err = e[i - 1][0] + diff
            if sub_err < ins_err and sub_err < del_err:
                t, a, d, s = e[i - 1]
                cur.append((sub_err, a, d, s + diff))
            elif del_err < ins_err:
                t, a, d, s = cur[i - 1]
                cur.append((del_err, a, d + 1, s))
            else:
                t, a, d, s = e[i]
                cur.append((ins_err, a + 1, d, s))
        e = cur
    _, a, d, s = e[-1]
    return EditCounts(ins=a, dels=d, subs=s)


@dataclass
class WerStats:
    """Totals of a scoring run; :meth:`format` writes Kaldi's ``wer`` file."""

    ins: int = 0
    dels: int = 0
    subs: int = 0
    num_words: int = 0
    sent_errs: int = 0
    num_sent: int = 0
    num_absent: int = 0

    @property
    def word_errs(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def wer(self) -> float:
        """Percent word error rate (``nan`` when the references have no words)."""
        return 100.0 * self.word_errs / self.num_words if self.num_words else float("nan")

    @property
    def ser(self) -> float:
        return 100.0 * self.sent_errs / self.num_sent if self.num_sent else float("nan")

    def wer_line(self) -> str:
        partial = " [PARTIAL]" if self.num_absent else ""
        return (
            f"%WER {self.wer:.2f} [ {self.word_errs} / {self.num_words}, {self.ins} ins, "
            f"{self.dels} del, {self.subs} sub ]{partial}"
        )

    def format(self) -> str:
        """The three lines compute-wer prints (``%WER``, ``%SER``, ``Scored ...``)."""
        return (
            f"{self.wer_line()}\n"
            f"%SER {self.ser:.2f} [ {self.sent_errs} / {self.num_sent} ]\n"
            f"Scored {self.num_sent} sentences, {self.num_absent} not present in hyp.\n"
        )


def compute_wer(
    ref: Mapping[str, list[str]],
    hyp: Mapping[str, list[str]],
    mode: str = "strict",
    ignore: Iterable[str] = (),
) -> WerStats:
    """Kaldi's ``compute-wer --mode=MODE ark:ref ark:hyp``.

    Modes (as Kaldi): ``strict`` — every reference utterance must have a hypothesis;
    ``present`` — score only utterances with a hypothesis; ``all`` — a missing hypothesis counts
    as empty. In both, missing ones are counted in ``Scored N sentences, M not present in hyp``
    and the WER line is marked ``[PARTIAL]``, as Kaldi does. ``ignore``: words dropped from both
    sides first (e.g. ``<UNK>`` or noise words; empty by default, as Kaldi).
    """
    stats = WerStats(num_absent=sum(utt not in hyp for utt in ref))
    for _, r, h in _scored_pairs(ref, hyp, mode, ignore):
        c = levenshtein(r, h)
        stats.ins += c.ins
        stats.dels += c.dels
        stats.subs += c.subs
        stats.num_words += len(r)
        stats.sent_errs += int(c.total > 0)
        stats.num_sent += 1
    return stats


def _scored_pairs(ref, hyp, mode: str, ignore: Iterable[str]):
    """``(utt, ref words, hyp words)`` of every scored utterance, in ``ref``'s order, ``ignore``d
    words dropped; raises for ``strict`` with a missing hypothesis or references without words.
    A missing hypothesis is skipped (``present``) or empty (``all``)."""
    if mode not in MODES:
        raise DataError(f"unknown scoring mode {mode!r}", fix=f"use one of {MODES}")
    drop = set(ignore)
    pairs = []
    for utt, ref_words in ref.items():
        if utt not in hyp:
            if mode == "strict":
                raise DataError(
                    "no hypothesis for this reference utterance",
                    utt=utt,
                    fix="decode every utterance, or score with mode 'present' or 'all'",
                )
            if mode == "present":
                continue
        r = [w for w in ref_words if w not in drop]
        pairs.append((utt, r, [w for w in hyp.get(utt, []) if w not in drop]))
    if not any(r for _, r, _ in pairs):
        raise DataError(
            "the references have no words to score", fix="check the ref text and utterance ids"
        )
    return pairs


def best_wer(results: Mapping[str, WerStats]) -> tuple[str, WerStats]:
    """The name (e.g. ``wer_10_0.0``) with the lowest WER, ties to the first in sorted order.

    Like ``grep WER wer_* | utils/best_wer.sh`` (the glob lists names sorted).
    """
    if not results:
        raise DataError("no scoring results to choose from")
    name = min(sorted(results), key=lambda n: results[n].wer)
    return name, results[name]


# --------------------------------------------------------------------------------------------
# Bootstrap confidence intervals (Kaldi's compute-wer-bootci; Bisani & Ney, ICASSP 2004)
# --------------------------------------------------------------------------------------------


def utterance_errors(
    ref: Mapping[str, list[str]],
    hyp: Mapping[str, list[str]],
    mode: str = "strict",
    ignore: Iterable[str] = (),
) -> tuple[list[str], list[int], list[int]]:
    """Per utterance (in ``ref``'s order): ``(utts, word errors, reference words)``, the
    quantities :func:`compute_wer` sums (same ``mode`` and ``ignore`` rules)."""
    pairs = _scored_pairs(ref, hyp, mode, ignore)
    errs = [levenshtein(r, h).total for _, r, h in pairs]
    return [u for u, _, _ in pairs], errs, [len(r) for _, r, _ in pairs]


@dataclass(frozen=True)
class BootstrapWer:
    """One system's bootstrap: ``wer`` on the test set itself; ``mean`` and ``interval`` (the
    95% half-width, 1.96 standard deviations) of the WER over the replications, in percent."""

    wer: float
    mean: float
    interval: float

    def line(self, name: str) -> str:
        lo, hi = self.mean - self.interval, self.mean + self.interval
        return f"{name}: %WER {self.wer:.2f} 95% Conf Interval [ {lo:.2f}, {hi:.2f} ]"


def _replicate(n: int, replications: int, seed: int, block: int = 1000):
    """(B, n) blocks of utterance indices drawn with replacement, ``replications`` rows in all."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for start in range(0, replications, block):
        yield rng.integers(0, n, size=(min(block, replications - start), n))


def bootstrap_wer(
    errs: Sequence[int], words: Sequence[int], replications: int = 10000, seed: int = 0
) -> BootstrapWer:
    """Resample the utterances with replacement ``replications`` times (each replication as many
    utterances as the test set) and summarize the replicated WERs as Kaldi's compute-wer-bootci
    does: mean +- 1.96 standard deviations.

    errs, words: (U,) word errors and reference words per utterance.
    """
    import numpy as np

    e, w = np.asarray(errs, dtype=np.int64), np.asarray(words, dtype=np.int64)
    _check_bootstrap(len(e), len(w), replications)
    wers = np.concatenate(
        [
            e[idx].sum(1) / np.maximum(w[idx].sum(1), 1)
            for idx in _replicate(len(e), replications, seed)
        ]
    )
    mean = float(wers.mean())
    return BootstrapWer(
        wer=100.0 * e.sum() / w.sum(), mean=100.0 * mean, interval=100.0 * 1.96 * float(wers.std())
    )


def bootstrap_improvement(
    errs1: Sequence[int], errs2: Sequence[int], replications: int = 10000, seed: int = 0
) -> float:
    """Probability that system 2 improves on system 1: the fraction of replications (the same
    resampled utterances for both) in which system 2 makes strictly fewer word errors.

    errs1, errs2: (U,) word errors per utterance of the same utterances, in the same order.
    """
    import numpy as np

    _check_bootstrap(len(errs1), len(errs2), replications)
    d = np.asarray(errs1, dtype=np.int64) - np.asarray(errs2, dtype=np.int64)
    better = sum(int((d[idx].sum(1) > 0).sum()) for idx in _replicate(len(d), replications, seed))
    return better / replications


def _check_bootstrap(n1: int, n2: int, replications: int) -> None:
    if n1 != n2:
        raise DataError(f"{n1} and {n2} utterances: the systems must score the same utterances")
    if n1 == 0:
        raise DataError("no utterances to resample", fix="check the ref and hyp utterance ids")
    if replications < 1:
        raise DataError(f"replications must be >= 1, got {replications}")


def best_setting(decode_dir: str | os.PathLike) -> tuple[str, str]:
    """``(LMWT, WIP)`` as spelled in the file names (``"10"``, ``"0.5"``) of the setting that
    a scored decode dir's ``best_wer`` names (``.../wer_LMWT_WIP``)."""
    p = Path(decode_dir)
    best = p / "best_wer"
    if not best.is_file():
        raise DataError(
            "not a scored decode dir (no best_wer)",
            file=str(p),
            fix="score the decode dir first (pykaldi2 score)",
        )
    name = Path(best.read_text(encoding="utf-8").split()[-1]).name  # wer_LMWT_WIP
    parts = name.split("_")
    if len(parts) != 3 or parts[0] != "wer":
        raise DataError(f"best_wer names {name!r}, not wer_LMWT_WIP", file=str(best))
    return parts[1], parts[2]


def best_hyp_file(path: str | os.PathLike) -> Path:
    """A hypothesis text, or for a decode dir the text of its best LMWT/WIP (``best_wer`` names
    ``.../wer_LMWT_WIP``; the text is ``scoring_kaldi/penalty_WIP/LMWT.txt``), or for a decode
    dir of one setting (decode-transducer's: ``hyp.txt``, no lattices to sweep) its
    ``hyp.txt``."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise DataError("no such hypothesis text or decode dir", file=str(p))
    if not (p / "best_wer").is_file():
        if (p / "hyp.txt").is_file() and not any(p.glob("lat.*")):
            return p / "hyp.txt"
        raise DataError(
            "neither a hypothesis text nor a scored decode dir (no best_wer)",
            file=str(p),
            fix="pass a text file (utt w1 w2 ...) or score the decode dir first (pykaldi2 score)",
        )
    lmwt, wip = best_setting(p)
    hyp = p / "scoring_kaldi" / f"penalty_{wip}" / f"{lmwt}.txt"
    if not hyp.is_file():
        raise DataError(
            f"best_wer names wer_{lmwt}_{wip} but {hyp} does not exist",
            file=str(p / "best_wer"),
            fix="re-score the decode dir (pykaldi2 score)",
        )
    return hyp
