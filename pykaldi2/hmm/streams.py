"""What a GMM job reads and writes, one utterance at a time: features as a model wants them,
transcripts, alignments; nothing corpus-sized is held in memory.

Features (Kaldi's ``$feats`` pipelines of steps/train_*.sh)::

    apply-cmvn --utt2spk (means, per speaker) | add-deltas                    feat_type "delta"
    apply-cmvn | splice-feats | transform-feats final.mat                     feat_type "lda"
    ... | transform-feats --utt2spk trans.JOB   (fMLLR, per speaker)          ``fmllr``

are described by a picklable :class:`FeaturePipeline` and streamed by :func:`iter_feats` from a
data dir (a job's ``split<N>/<JOB>``). Tables of one data dir are sorted the same way, and
alignment archives Kaldi-style (``ali.JOB.gz``) are too, so :func:`join` pairs the streams by
utterance id in a single pass, like Kaldi's ``ark,s,cs:`` readers.
"""

from __future__ import annotations

import gzip
import heapq
import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pykaldi2.hmm.exp_dir import ali_files  # noqa: F401  (re-exported: the jobs' archives)
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write

log = logging.getLogger(__name__)


@dataclass
class FeaturePipeline:
    """How a model's input features are made from a data dir's stored ones.

    Attributes:
        feat_type: ``"delta"`` (+ deltas), ``"lda"`` (splice, ``transform``), ``"splice"`` or
            ``"raw"``.
        transform: (D_out, D_in) or (D_out, D_in + 1) LDA/MLLT matrix for ``"lda"``.
        splice: left/right context of the splicing before ``transform`` (one int for both, or
            ``(left, right)``; the model's ``splice_opts``).
        cmvn: apply per-speaker CMN from ``cmvn.scp`` (the model's ``cmvn_opts``: means only
            unless ``--norm-means=false``).
        norm_vars: also normalize variances (``--norm-vars=true`` in ``cmvn_opts``).
        delta: add-deltas ``(order, window)`` (the model's ``delta_opts``; Kaldi's 2, 2).
        fmllr: per-speaker (D, D + 1) transforms: a Kaldi ark of matrices keyed by speaker
            (``trans.JOB``) or a dir of ``trans.*`` (:func:`read_matrix_ark`), applied last;
            None for none.
    """

    feat_type: str = "delta"
    transform: np.ndarray | None = None
    splice: int | tuple[int, int] = 3
    cmvn: bool = True
    fmllr: str | None = None
    norm_vars: bool = False
    delta: tuple[int, int] = (2, 2)

    @classmethod
    def for_model(cls, model, fmllr: str | os.PathLike | None = None) -> FeaturePipeline:
        """The pipeline ``model`` (a GmmModel, ours or Kaldi's) was trained on, plus optional
        fMLLR."""
        norm_means, norm_vars = model.cmvn_config
        return cls(
            feat_type=model.feat_type,
            transform=model.transform,
            splice=model.splice,
            cmvn=norm_means,
            fmllr=None if fmllr is None else os.fspath(fmllr),
            norm_vars=norm_vars,
            delta=model.delta_config,
        )

    def base(self) -> FeaturePipeline:
        """The same pipeline without fMLLR (speaker-independent features)."""
        return replace(self, fmllr=None)


def apply_feat_transform(
    x: np.ndarray,
    feat_type: str,
    transform=None,
    splice: int | tuple[int, int] = 3,
    delta: tuple[int, int] = (2, 2),
):
    """Features for a model from CMVN'd base features: ``delta`` adds deltas (add-deltas with
    ``delta = (order, window)``), ``lda`` splices ``splice`` frames (one int for both sides, or
    ``(left, right)``; splice-feats) and applies the (D_out, D_in[+1]) ``transform``
    (transform-feats), ``splice`` only splices (LDA's input), ``raw`` keeps them."""
    from pykaldi2.features.transforms import add_deltas, splice_feats

    left, right = (splice, splice) if isinstance(splice, int) else splice
    if feat_type == "delta":
        return np.ascontiguousarray(add_deltas(x, *delta), dtype=np.float32)
    if feat_type == "lda":
        if transform is None:
            raise DataError("an LDA model without its transform matrix", fix="retrain it")
        m = np.asarray(transform)
        d = x.shape[1] * (left + 1 + right)
        if m.shape[1] not in (d, d + 1):
            raise DataError(
                f"the transform is {m.shape[0]} x {m.shape[1]}, the spliced features have "
                f"{d} dimensions ({x.shape[1]} x {left + 1 + right} frames)",
                fix="use the features the model was trained on (and its splice_opts)",
            )
        return transform_feats(splice_feats(x, left, right), m)
    if feat_type == "splice":
        return np.ascontiguousarray(splice_feats(x, left, right), dtype=np.float32)
    if feat_type == "raw":
        return np.ascontiguousarray(x, dtype=np.float32)
    raise DataError(f"unknown feat_type {feat_type!r}", fix="one of raw, delta, lda, splice")


def transform_feats(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """transform-feats: (T, D) features times a (D', D) matrix, or (D', D + 1) affine."""
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    d = x.shape[1]
    if m.shape[1] not in (d, d + 1):
        raise DataError(f"transform of shape {m.shape} does not fit {d}-dimensional features")
    y = x @ m[:, :d].T
    if m.shape[1] == d + 1:
        y += m[:, d]
    return np.ascontiguousarray(y, dtype=np.float32)


def read_matrix_ark(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Per-speaker matrices (fMLLR ``trans.JOB``): key -> (R, C) float64, from a Kaldi ark of
    matrices, or from a dir's ``trans.1 .. trans.N`` merged (a Kaldi SAT dir used as
    ``--transform-dir``)."""
    from pykaldi2.hmm.exp_dir import read_transforms_dir
    from pykaldi2.hmm.kaldi_io import read_transforms

    path = Path(path)
    mats = read_transforms_dir(path) if path.is_dir() else read_transforms(path)
    if path.is_dir() and not mats:
        raise DataError("no fMLLR transforms trans.1 .. trans.N", file=str(path))
    return {k: np.asarray(v, dtype=np.float64) for k, v in mats.items()}


def iter_feats(
    data_dir: str | os.PathLike, pipe: FeaturePipeline, utts: Iterable[str] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """(utt, (T, D) float32 features) of ``data_dir`` in its feats.scp order, one at a time.

    ``utts`` restricts the stream to those utterances.
    """
    from pykaldi2.data.tables import read_table
    from pykaldi2.features.cmvn import apply_cmvn
    from pykaldi2.features.compute import load_cmvn
    from pykaldi2.features.storage import open_features

    data_dir = Path(data_dir)
    utt2spk = read_table(data_dir / "utt2spk")
    stats = load_cmvn(data_dir) if pipe.cmvn else {}
    trans = read_matrix_ark(pipe.fmllr) if pipe.fmllr else None
    wanted = None if utts is None else set(utts)
    reader = open_features(data_dir)
    try:
        for utt in reader.keys():
            if wanted is not None and utt not in wanted:
                continue
            spk = utt2spk.get(utt)
            if spk is None:
                raise DataError(
                    "utterance not in utt2spk", file=str(data_dir / "feats.scp"), utt=utt
                )
            x = np.asarray(reader[utt], dtype=np.float32)
            if pipe.cmvn:
                if spk not in stats:
                    raise DataError(
                        f"no CMVN stats for speaker {spk}",
                        utt=utt,
                        file=str(data_dir / "cmvn.scp"),
                        fix="run `pykaldi2 compute-cmvn` on this data dir",
                    )
                x = apply_cmvn(x, stats[spk], norm_vars=pipe.norm_vars)
            x = apply_feat_transform(x, pipe.feat_type, pipe.transform, pipe.splice, pipe.delta)
            if trans is not None:
                if spk not in trans:
                    raise DataError(
                        f"no fMLLR transform for speaker {spk}", file=pipe.fmllr, utt=utt
                    )
                x = transform_feats(x, trans[spk])
            yield utt, x
    finally:
        reader.close()


def iter_texts(data_dir: str | os.PathLike, lang) -> Iterator[tuple[str, list[int]]]:
    """(utt, word ids) of ``data_dir/text`` in file order; OOV words map to the lang's OOV
    (named once per command by :func:`check_texts`, not per job)."""
    from pykaldi2.data.tables import read_table_lines

    path = Path(data_dir) / "text"
    if not path.is_file():
        raise DataError("no text (transcripts)", file=str(path), fix="alignment needs `text`")
    for e in read_table_lines(path):
        yield e.key, [lang.words.get(w, lang.oov_id) for w in e.value.split()]


def check_texts(data_dir: str | os.PathLike, lang) -> None:
    """The words of ``data_dir/text`` outside the lang's words.txt, named once with their
    utterances in a warning (:func:`pykaldi2.lang.transcripts.words_to_ids`; they map to the
    OOV word), before the jobs read their parts."""
    from pykaldi2.data.tables import read_table_lines
    from pykaldi2.lang.transcripts import words_to_ids

    path = Path(data_dir) / "text"
    if path.is_file():
        lines = ((e.key, e.value) for e in read_table_lines(path))
        words_to_ids(lines, lang.words, oov_word=lang.oov_word, source=str(path),
                     words_file=str(Path(lang.dir) / "words.txt"))  # fmt: skip


def _read_token(f) -> bytes:
    """Bytes up to (not including) the next space; b"" at the end of the stream."""
    out = bytearray()
    while True:
        c = f.read(1)
        if not c or c == b" ":
            return bytes(out)
        out += c


def read_int32_vector_ark(f, name: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """(key, (N,) int32) of a Kaldi ark of integer vectors (alignments), binary
    (``key \\0B \\4 <int32 N> (\\4 <int32>) * N``, one read per vector) or text
    (``key 1 2 3``, one line per vector). ``f`` is a buffered binary stream."""
    elem = np.dtype([("size", "u1"), ("value", "<i4")])
    while True:
        key = _read_token(f)
        if not key:
            return
        utt = key.decode()
        # Read, not peek: a buffered stream's peek returns what is left in its buffer, one byte
        # when the buffer ends between the \0 and the B (a binary archive then looked like text).
        first = f.read(1)
        if first != b"\0":
            line = first + f.readline() if first not in (b"\n", b"") else b""
            try:
                yield utt, np.asarray(line.split(), dtype=np.int32)
            except ValueError:
                raise DataError("not an alignment (integers) line", file=name, utt=utt) from None
            continue
        head = first + f.read(6)
        if len(head) != 7 or head[1:2] != b"B" or head[2:3] != b"\x04":
            raise DataError("not a Kaldi ark of int32 vectors", file=name, utt=utt)
        n = int.from_bytes(head[3:7], "little", signed=True)
        body = f.read(5 * n)
        if len(body) != 5 * n:
            raise DataError("truncated alignment archive", file=name, utt=utt)
        rec = np.frombuffer(body, dtype=elem)
        if n and (rec["size"] != 4).any():
            raise DataError("not an int32 vector", file=name, utt=utt)
        yield utt, rec["value"].astype(np.int32)


def _read_ark_stream(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as raw, io.BufferedReader(raw, 1 << 16) as f:
            yield from read_int32_vector_ark(f, str(path))
    except DataError:
        raise
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read the alignment archive: {e}", file=str(path)) from None


def iter_alis(paths: Sequence[str | os.PathLike]) -> Iterator[tuple[str, np.ndarray]]:
    """(utt, (T,) int32 transition-ids) of the archives ``paths`` merged in utterance order
    (each archive is sorted, as Kaldi and pykaldi2 write them)."""
    from pykaldi2.hmm.ali import read_ali

    streams = []
    for p in map(Path, paths):
        if p.suffix == ".scp":
            streams.append(iter(sorted(read_ali(p).items())))
        else:
            streams.append(_read_ark_stream(p))
    return heapq.merge(*streams, key=lambda kv: kv[0])


def join(
    primary: Iterable[tuple[str, object]], *others: Iterable[tuple[str, object]]
) -> Iterator[tuple]:
    """Merge-join streams sorted by utterance id: ``(utt, v0, v1, ...)`` for the utterances of
    ``primary`` that every other stream has (others' extra utterances are skipped).

    Raises :class:`DataError` if a stream is out of order (then it is not Kaldi-sorted)."""
    its = [iter(o) for o in others]
    heads: list = [next(it, None) for it in its]
    last = [None] * len(its)
    for utt, v in primary:
        row = [utt, v]
        for k, it in enumerate(its):
            while heads[k] is not None and heads[k][0] < utt:
                last[k] = heads[k][0]
                heads[k] = next(it, None)
                if heads[k] is not None and last[k] is not None and heads[k][0] < last[k]:
                    raise DataError(
                        f"input {k + 1} is not sorted by utterance ({heads[k][0]} after {last[k]})",
                        fix="sort it (LC_ALL=C) as Kaldi writes tables",
                    )
            if heads[k] is None or heads[k][0] != utt:
                row = None
                break
            row.append(heads[k][1])
        if row is not None:
            yield tuple(row)


def iter_graphs(path: str | os.PathLike) -> Iterator[tuple[str, object]]:
    """(utt, training graph) of a Kaldi ark of FSTs (compile-train-graphs' ``fsts.JOB``)."""
    from pykaldi2.kaldi import kaldifst

    if not Path(path).is_file():
        raise DataError("no such graph archive", file=str(path), fix="recompile the graphs")
    r = kaldifst.SequentialVectorFstReader(f"ark:{os.fspath(path)}")
    try:
        while not r.done:
            yield r.key, r.value
            r.next()
    finally:
        r.close()


class AliWriter:
    """Write alignments as a gzipped Kaldi ark (``ali.JOB.gz``) as they come, atomically.

    >>> with AliWriter("exp/tri1/ali.1.gz") as w:
    ...     w.write("utt1", ali)
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._ctx = atomic_write(self.path, "wb")
        self._raw = self._ctx.__enter__()
        self._gz = gzip.GzipFile(
            filename="", fileobj=self._raw, mode="wb", mtime=0, compresslevel=1
        )
        self.count = 0

    def write(self, utt: str, ali: np.ndarray) -> None:
        """Append ``utt``'s (T,) alignment (Kaldi binary int32 vector)."""
        ali = np.asarray(ali)
        rec = np.empty(len(ali), dtype=[("size", "u1"), ("value", "<i4")])
        rec["size"] = 4
        rec["value"] = ali
        self._gz.write(
            utt.encode() + b" \0B\x04" + int(len(ali)).to_bytes(4, "little") + rec.tobytes()
        )
        self.count += 1

    def close(self, ok: bool = True) -> None:
        if self._gz is None:
            return
        self._gz.close()
        self._gz = None
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("discarded"), None)

    def __enter__(self) -> AliWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)
