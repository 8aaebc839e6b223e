"""GMM and alignment dirs, ours and Kaldi's: finding their alignments, checking them, and the
side files Kaldi's scripts write beside a model.

Both kinds hold ``final.mdl`` and ``tree`` (Kaldi's formats, :mod:`pykaldi2.hmm.model`). They
differ in the alignments and side files::

    ours (align-si, train-*)            Kaldi (align_si.sh, train_*.sh)
    ali.ark + ali.scp (transition-ids)  ali.1.gz .. ali.N.gz (N = num_jobs), text or binary ark
    pdf.ark + pdf.scp (ali-to-pdf)      -
    final.mdl.json (feat_type, info)    -
    phones.txt, num_jobs, cmvn_opts, final.occs, final.mat + splice_opts (LDA), as Kaldi's
    trans.N (fMLLR, SAT systems)        trans.N: per-speaker (D, D+1) matrices (read only here)

How the features of a dir are made (CMVN, then deltas or splicing + final.mat, then fMLLR) is
the model's business (:meth:`GmmModel.load`); :func:`read_transforms_dir` reads the fMLLR
transforms for ``feats_for_model(..., transforms=...)``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from pykaldi2.hmm import kaldi_io
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write_text

log = logging.getLogger(__name__)

_JOB_FILE = re.compile(r"^(ali|trans)\.(\d+)(\.gz)?$")


def _job_files(d: Path, prefix: str, suffix: str) -> list[Path]:
    """``prefix.1suffix .. prefix.Nsuffix`` of ``d`` in job order; with ``num_jobs`` all of
    1..N must be there (Kaldi's scripts need every job's file)."""
    found = {}
    for p in d.iterdir():
        m = _JOB_FILE.match(p.name)
        if m and m.group(1) == prefix and (m.group(3) or "") == suffix:
            found[int(m.group(2))] = p
    nj_file = d / "num_jobs"
    if found and nj_file.is_file():
        try:
            nj = int(nj_file.read_text().split()[0])
        except (ValueError, IndexError):
            raise DataError("num_jobs is not a number", file=str(nj_file)) from None
        missing = [j for j in range(1, nj + 1) if j not in found]
        if missing:
            raise DataError(
                f"num_jobs says {nj} but {prefix}.{missing[0]}{suffix} is missing",
                file=str(d),
                fix="copy the dir whole (every job's file), or rerun the alignment",
            )
        return [found[j] for j in range(1, nj + 1)]
    return [found[j] for j in sorted(found)]


def ali_files(ali_dir: str | os.PathLike) -> list[Path]:
    """The alignment archives of an ali dir (or GMM exp dir): ours (``ali.scp``, else
    ``ali.ark``) or Kaldi's ``ali.1.gz .. ali.N.gz``. A dir with neither is a clear error."""
    d = Path(ali_dir)
    if not d.is_dir():
        raise DataError("no such alignment dir", file=str(d))
    for name in ("ali.scp", "ali.ark"):
        if (d / name).is_file():
            return [d / name]
    gz = _job_files(d, "ali", ".gz")
    if not gz:
        has_model = (d / "final.mdl").is_file()
        raise DataError(
            "no alignments in the dir: neither pykaldi2's ali.scp / ali.ark nor Kaldi's "
            "ali.1.gz .. ali.N.gz"
            + ("" if has_model else " (and no final.mdl: not an alignment or GMM dir at all)"),
            file=str(d),
            fix="align first (`pykaldi2 align-si DATA LANG SRC_DIR ALI_DIR`, or Kaldi's "
            "steps/align_si.sh)",
        )
    return gz


def read_ali_dir(ali_dir: str | os.PathLike, model=None) -> tuple[dict[str, np.ndarray], object]:
    """All alignments of an ali dir (ours or Kaldi's) and the model they belong to:
    ``({utt: (T,) int32 transition-ids}, GmmModel)``.

    ``model``: the dir's final.mdl already loaded (else it is loaded here). A ``model_id``
    naming another transition model (:func:`~pykaldi2.hmm.ali.check_ali_model`; Kaldi's dirs
    have none), an empty alignment or transition-ids out of the model's range are errors naming
    the file and utterance; alignments that are no path through the model's HMMs
    (:func:`~pykaldi2.hmm.ali.ali_mismatch`: made with another model of the same size, or
    frame targets written as alignments) are counted and warned about, naming the first.
    :func:`iter_ali_dir` gives the same alignments one at a time (for a corpus).
    """
    if model is None:
        model = ali_dir_model(ali_dir)
    else:
        from pykaldi2.hmm.ali import check_ali_model

        check_ali_model(Path(ali_dir), model)
    return dict(iter_ali_dir(ali_dir, model)), model


def ali_dir_model(ali_dir: str | os.PathLike):
    """The GmmModel (final.mdl) of an ali dir, checked against the dir's ``model_id``."""
    from pykaldi2.hmm.ali import check_ali_model
    from pykaldi2.hmm.model import GmmModel

    d = Path(ali_dir)
    if not (d / "final.mdl").is_file():
        ali_files(d)  # no alignments at all: that error first
        raise DataError(
            "an alignment dir without final.mdl",
            file=str(d),
            fix="Kaldi's and pykaldi2's ali dirs keep the model (final.mdl, tree) that made "
            "the alignments: copy them from the source exp dir",
        )
    model = GmmModel.load(d / "final.mdl")
    check_ali_model(d, model)  # a model_id naming another model than final.mdl is an error
    return model


def iter_ali_dir(ali_dir: str | os.PathLike, model) -> Iterator[tuple[str, np.ndarray]]:
    """``(utt, (T,) int32 transition-ids)`` of every alignment of an ali dir, one archive entry
    at a time, checked as in :func:`read_ali_dir` against ``model`` (the dir's final.mdl,
    :func:`ali_dir_model`); the warning about alignments that are no HMM path comes at the end.
    """
    from pykaldi2.hmm.ali import ali_mismatch, iter_ali

    d = Path(ali_dir)
    files = ali_files(d)
    num_tids = int(model.tm.num_transition_ids)
    bad: list[str] = []
    count = 0
    for f in files:
        for utt, ali in iter_ali(f):
            if len(ali) == 0 or ali.min() < 1 or ali.max() > num_tids:
                raise DataError(
                    f"empty alignment or transition_id {int(ali.max()) if len(ali) else 0} "
                    f"outside 1..{num_tids} of final.mdl",
                    file=str(f),
                    utt=utt,
                    fix="the alignments come from another model: re-align with this one",
                )
            why = ali_mismatch(model, ali)
            if why is not None:
                bad.append(f"{utt} ({f.name}): {why}")
            count += 1
            yield utt, ali
    if bad:
        log.warning(
            "%s: %d of %d alignments are no path through the HMMs of its final.mdl (made with "
            "another model?), e.g. %s",
            d,
            len(bad),
            count,
            bad[0],
        )


def iter_ali_dirs(ali_dirs, model=None) -> Iterator[tuple[str, np.ndarray]]:
    """:func:`iter_ali_dir` of every dir in turn; all must come from one transition model
    (the same transition-id -> pdf-id table as ``model``, the first dir's final.mdl when
    None)."""
    dirs = [Path(d) for d in ali_dirs]
    if not dirs:
        raise DataError("no alignment dir given", fix="set ali_dir in the config")
    first = model if model is not None else ali_dir_model(dirs[0])
    for i, d in enumerate(dirs):
        m = first if i == 0 else ali_dir_model(d)
        if not np.array_equal(m.tid2pdf, first.tid2pdf):
            raise DataError(
                "alignment dirs come from different models (transition-id -> pdf-id differ)",
                file=str(d / "final.mdl"),
                fix="align every data dir with the same model",
            )
        yield from iter_ali_dir(d, m)


def read_ali_dirs(ali_dirs) -> tuple[dict[str, np.ndarray], object]:
    """:func:`read_ali_dir` of every dir, merged (a later dir's alignment of an utterance
    wins); all must come from one transition model (same transition-id -> pdf-id table):
    ``({utt: (T,) int32}, GmmModel of the first)``."""
    if not ali_dirs:
        raise DataError("no alignment dir given", fix="set ali_dir in the config")
    model = ali_dir_model(Path(ali_dirs[0]))
    return dict(iter_ali_dirs(ali_dirs, model)), model


def read_transforms_dir(transform_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The fMLLR transforms ``trans.1 .. trans.N`` of a (Kaldi SAT) dir, merged:
    speaker (or utterance) -> (D, D + 1) float32. Empty when the dir has none."""
    d = Path(transform_dir)
    out: dict[str, np.ndarray] = {}
    for f in _job_files(d, "trans", ""):
        out.update(kaldi_io.read_transforms(f))
    return out


def apply_transforms(
    feats: Mapping[str, np.ndarray], transforms: Mapping[str, np.ndarray], utt2spk: Mapping
) -> dict[str, np.ndarray]:
    """transform-feats --utt2spk: each utterance times its speaker's (D, D[+1]) matrix (an
    utterance-keyed archive also works, as without --utt2spk). A missing key is an error."""
    out = {}
    for utt, x in feats.items():
        key = utt2spk.get(utt, utt)
        m = transforms.get(key, transforms.get(utt))
        if m is None:
            raise DataError(
                f"no fMLLR transform for speaker {key}",
                utt=utt,
                fix="the trans.* archives belong to another data dir",
            )
        m = np.asarray(m, dtype=np.float64)
        if m.shape[1] not in (x.shape[1], x.shape[1] + 1):
            raise DataError(
                f"fMLLR transform is {m.shape[0]} x {m.shape[1]}, the features have "
                f"{x.shape[1]} dimensions",
                utt=utt,
            )
        y = np.asarray(x, dtype=np.float64) @ m[:, : x.shape[1]].T
        if m.shape[1] == x.shape[1] + 1:
            y += m[:, -1]
        out[utt] = np.ascontiguousarray(y, dtype=np.float32)
    return out


def check_phones_compatible(lang_dir: str | os.PathLike, exp_dir: str | os.PathLike) -> None:
    """Kaldi's utils/lang/check_phones_compatible.sh: the lang dir's phones.txt must equal the
    model dir's (disambiguation symbols ``#n`` aside). A dir without phones.txt is not checked
    (older pykaldi2 dirs)."""
    theirs = Path(exp_dir) / "phones.txt"
    ours = Path(lang_dir) / "phones.txt"
    if not theirs.is_file() or not ours.is_file():
        return

    def table(p: Path) -> list[str]:
        return [ln for ln in p.read_text(encoding="utf-8").split("\n") if ln and ln[0] != "#"]

    if table(ours) != table(theirs):
        raise DataError(
            f"phones.txt differs from the model's {theirs}: the lang dir and the model use "
            "other phone ids",
            file=str(ours),
            fix="use the lang dir the model was trained with (or one made from the same dict)",
        )


def write_side_files(
    out_dir: str | os.PathLike,
    *,
    lang_dir: str | os.PathLike | None = None,
    num_jobs: int = 1,
    model=None,
    alis: Mapping[str, np.ndarray] | None = None,
) -> None:
    """The files Kaldi's scripts write beside a model that the model itself does not: a copy
    of the lang dir's ``phones.txt``, ``num_jobs``, and ``final.occs`` (pdf occupancies of
    ``alis``, which gmm-est --write-occs gives for Viterbi statistics) when given."""
    d = Path(out_dir)
    if lang_dir is not None and (Path(lang_dir) / "phones.txt").is_file():
        tmp = d / ".phones.txt.tmp"
        shutil.copyfile(Path(lang_dir) / "phones.txt", tmp)
        os.replace(tmp, d / "phones.txt")
    atomic_write_text(d / "num_jobs", f"{int(num_jobs)}\n")
    if model is not None and alis is not None:
        occs = np.zeros(int(model.tm.num_pdfs))
        for ali in alis.values():
            occs += np.bincount(model.tid2pdf[np.asarray(ali, np.int64)], minlength=len(occs))
        kaldi_io.write_vector(d / "final.occs", occs)
