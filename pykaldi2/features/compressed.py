"""Kaldi's compressed matrices (``copy-feats --compress=true``) decoded as Kaldi decodes them.

steps/make_mfcc.sh writes the features as CompressedMatrix (``CM``: one byte per value with
per-column percentile headers). kaldiio decodes them with another order of float operations
(``min + v * range / 65535`` for the headers, float ``* (1 / 63)``), which puts about half of
the values one float step away from what every Kaldi binary reads (AN4 train: 100,270 of
188,240 values of the first 50 utterances). That is enough to move near-tied Viterbi
alignments and, through them, monophone training (#15). Here the arithmetic is Kaldi's
CompressedMatrix::CopyToMat (matrix/compressed-matrix.cc): ``Uint16ToFloat`` in float,
``CharToFloat`` in double rounded to float. Checked against Kaldi: the per-speaker sums in
Kaldi's own cmvn.ark (compute-cmvn-stats on the decoded features) come out bit for bit.

>>> mat = load_kaldi_mat("data/train/feats.ark:18")     # (T, D) float32
"""

from __future__ import annotations

import os
from typing import IO

import numpy as np

#: Kaldi's 1/65535 as written in Uint16ToFloat (a float literal).
_INV_65535 = np.float32(1.52590218966964e-05)


def _read_exact(fd: IO[bytes], n: int, what: str) -> bytes:
    buf = fd.read(n)
    if len(buf) != n:
        raise ValueError(f"truncated compressed matrix ({what}: {len(buf)} of {n} bytes)")
    return buf


def read_compressed(fd: IO[bytes], token: str) -> np.ndarray:
    """The compressed matrix whose token (``CM``, ``CM2`` or ``CM3``) was just read from
    ``fd``, decoded with Kaldi's float arithmetic: (rows, cols) float32."""
    min_value, value_range = np.frombuffer(_read_exact(fd, 8, "header"), "<f4")
    rows, cols = (int(v) for v in np.frombuffer(_read_exact(fd, 8, "header"), "<i4"))
    if rows < 0 or cols < 0:
        raise ValueError(f"compressed matrix with {rows} x {cols} values")
    if token == "CM":  # kOneByteWithColHeaders
        head = np.frombuffer(_read_exact(fd, 8 * cols, "column headers"), "<u2")
        # Uint16ToFloat: min_value + range * 1.52590218966964e-05F * value, all in float
        pct = (min_value + (value_range * _INV_65535) * head.astype(np.float32)).astype(np.float32)
        pct = pct.reshape(cols, 4, 1)
        p0, p25, p75, p100 = pct[:, 0], pct[:, 1], pct[:, 2], pct[:, 3]
        data = np.frombuffer(_read_exact(fd, rows * cols, "values"), "u1").reshape(cols, rows)
        v = data.astype(np.float32)
        # CharToFloat: p + float((q - p) * value) * (1/64.0 | 1/128.0 | 1/63.0) in double
        lo = p0 + ((p25 - p0) * v).astype(np.float64) * (1 / 64.0)
        mid = p25 + ((p75 - p25) * (v - np.float32(64))).astype(np.float64) * (1 / 128.0)
        hi = p75 + ((p100 - p75) * (v - np.float32(192))).astype(np.float64) * (1 / 63.0)
        out = np.where(data <= 64, lo, np.where(data <= 192, mid, hi)).astype(np.float32)
        return np.ascontiguousarray(out.T)
    if token in ("CM2", "CM3"):  # kTwoByte, kOneByte: min + value * float(range / N)
        n, dtype, size = (65535.0, "<u2", 2) if token == "CM2" else (255.0, "u1", 1)
        increment = np.float32(np.float64(value_range) * (1.0 / n))
        raw = np.frombuffer(_read_exact(fd, size * rows * cols, "values"), dtype)
        out = min_value + raw.astype(np.float32) * increment
        return out.astype(np.float32).reshape(rows, cols)
    raise ValueError(f"not a compressed matrix token: {token!r}")


def _peek_compressed_token(fd: IO[bytes]) -> str | None:
    """The compressed-matrix token after ``\\0B`` (consumed with its space), or None with
    ``fd`` rewound when the object there is something else."""
    start = fd.tell()
    if fd.read(2) == b"\0B":
        head = fd.read(4)
        for token in ("CM2", "CM3", "CM"):
            t = token.encode() + b" "
            if head.startswith(t):
                fd.seek(start + 2 + len(t))
                return token
    fd.seek(start)
    return None


def load_kaldi_mat(loc: str | os.PathLike, fd_dict: dict | None = None) -> np.ndarray:
    """A matrix at ``archive.ark:offset`` (a feats.scp location) or in a file: compressed
    ones decoded as Kaldi does (:func:`read_compressed`), everything else by kaldiio.

    ``fd_dict`` caches open archives between calls (kaldiio's convention)."""
    import kaldiio

    loc = os.fspath(loc)
    path, sep, offset = loc.rpartition(":")
    if not sep or not offset.isdigit() or not path:
        path, offset = loc, ""
    if not os.path.isfile(path):  # a pipe or something kaldiio knows how to open
        return np.asarray(kaldiio.load_mat(loc, fd_dict=fd_dict), dtype=np.float32)
    fds = fd_dict if fd_dict is not None else {}
    fd = fds.get(path)
    if fd is None:
        fd = open(path, "rb")  # noqa: SIM115 (cached in fd_dict, closed by its owner)
        fds[path] = fd
    try:
        fd.seek(int(offset) if offset else 0)
        token = _peek_compressed_token(fd)
        if token is not None:
            return read_compressed(fd, token)
    finally:
        if fd_dict is None:
            fd.close()
    return np.asarray(kaldiio.load_mat(loc, fd_dict=fd_dict), dtype=np.float32)


def iter_kaldi_ark(path: str | os.PathLike):
    """(key, matrix) of a binary Kaldi archive in file order, compressed matrices decoded as
    Kaldi does (:func:`read_compressed`), other objects by kaldiio."""
    from kaldiio.matio import read_kaldi, read_token

    with open(path, "rb") as fd:
        while (key := read_token(fd)) is not None:
            token = _peek_compressed_token(fd)
            if token is not None:
                yield key, read_compressed(fd, token)
            else:
                yield key, np.asarray(read_kaldi(fd), dtype=np.float32)
