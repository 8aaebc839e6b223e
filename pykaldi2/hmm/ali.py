"""Alignments: ali-to-pdf, ali-to-phones, and Kaldi ``ali`` archives.

An alignment is a (T,) int array of transition_ids. Archives are Kaldi binary ``ark`` files of
integer vectors (``ali.ark`` + ``ali.scp``), or a gzipped ark (``ali.1.gz`` as Kaldi writes).
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pykaldi2.hmm.model import GmmModel
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write


def ali_to_pdf(model: GmmModel, ali: np.ndarray) -> np.ndarray:
    """(T,) transition_ids -> (T,) pdf_ids (ali-to-pdf): the targets of a hybrid network."""
    return model.tid2pdf[np.asarray(ali, dtype=np.int64)]


def split_to_phones(model: GmmModel, ali: np.ndarray) -> list[tuple[int, int, int]]:
    """Phone segments of an alignment as ``(phone, start_frame, num_frames)`` (SplitToPhones).

    Each visit of an HMM state is its self-loops plus one forward transition. Training graphs
    are built with reordered self-loops (the forward transition on the visit's first frame,
    Kaldi's default); otherwise it comes last. A phone ends with the visit whose forward
    transition is final; both orders are detected as Kaldi's IsReordered does.
    """
    ali = np.asarray(ali, dtype=np.int64)
    if len(ali) == 0:
        return []
    loop = model.tid_is_self_loop[ali]
    final = model.tid_is_final[ali]
    st = model.tid2tstate[ali]
    reordered = bool(np.any(~loop[:-1] & loop[1:] & (st[:-1] == st[1:])))
    if reordered:
        fwd = np.flatnonzero(~loop)  # first frame of every state visit
        visit_end = np.append(fwd[1:], len(ali))
        ends = visit_end[final[fwd]]
        ok = len(fwd) > 0 and fwd[0] == 0
    else:
        ends = np.flatnonzero(final) + 1
        ok = True
    if not ok or len(ends) == 0 or ends[-1] != len(ali):
        raise DataError(
            "alignment does not split into whole phones (truncated, or from another model)",
            fix="re-align with this model or run convert_ali",
        )
    starts = np.concatenate([[0], ends[:-1]])
    phones = model.tid2phone[ali[starts]]
    return [(int(p), int(s), int(e - s)) for p, s, e in zip(phones, starts, ends)]


def ali_to_phones(model: GmmModel, ali: np.ndarray, per_frame: bool = False) -> np.ndarray:
    """Phone sequence of an alignment (ali-to-phones), or one phone per frame (``--per-frame``)."""
    ali = np.asarray(ali, dtype=np.int64)
    if per_frame:
        return model.tid2phone[ali]
    return np.asarray([p for p, _, _ in split_to_phones(model, ali)], dtype=np.int64)


def write_ali(path: str | os.PathLike, alis: Mapping[str, np.ndarray]) -> None:
    """Write alignments as a Kaldi ark: ``x.ark`` (+ ``x.scp`` beside it) or gzipped ``x.gz``."""
    import kaldiio

    path = Path(path)
    data = {utt: np.asarray(a, dtype=np.int32) for utt, a in sorted(alis.items())}
    if path.suffix == ".gz":
        buf = io.BytesIO()
        kaldiio.save_ark(buf, data)
        with atomic_write(path, "wb") as f:
            f.write(gzip.compress(buf.getvalue()))
        return
    scp = path.with_suffix(".scp")
    with atomic_write(path, "wb") as f:
        offsets = {}
        for utt, a in data.items():
            offsets[utt] = f.tell() + len(utt.encode()) + 1  # after "utt "
            kaldiio.save_ark(f, {utt: a})
    with atomic_write(scp, "w") as f:
        for utt, off in offsets.items():
            f.write(f"{utt} {path.resolve()}:{off}\n")


def write_ali_dir(out_dir: str | os.PathLike, model: GmmModel, res) -> Path:
    """An alignment dir (Kaldi's exp/*_ali): ``final.mdl``, ``tree``, ``ali.{ark,scp}``
    (transition_ids), ``pdf.{ark,scp}`` (pdf_id targets) and ``failed_utts`` when ``res``
    (an :class:`~pykaldi2.hmm.align.AlignResult`) has failures. Returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "final.mdl")
    write_ali(out / "ali.ark", res.alis)
    write_ali(out / "pdf.ark", {u: ali_to_pdf(model, a) for u, a in res.alis.items()})
    failed = out / "failed_utts"
    if res.failed:
        with atomic_write(failed) as f:
            f.write("\n".join(sorted(res.failed)) + "\n")
    elif failed.exists():  # from an earlier run into the same dir
        failed.unlink()
    return out


def read_ali(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read alignments from an ``.ark``, ``.scp`` or gzipped ark; utt -> (T,) int32."""
    import kaldiio

    path = Path(path)
    if not path.is_file():
        raise DataError("no such alignment file", file=str(path))
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return {k: np.asarray(v, dtype=np.int32) for k, v in kaldiio.load_ark(f)}
        if path.suffix == ".scp":
            return {
                k: np.asarray(v, dtype=np.int32) for k, v in kaldiio.load_scp(str(path)).items()
            }
        return {k: np.asarray(v, dtype=np.int32) for k, v in kaldiio.load_ark(str(path))}
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"not a Kaldi alignment archive: {e}", file=str(path)) from None
