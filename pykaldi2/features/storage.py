"""Feature storage: HDF5 archives and Kaldi ark/scp, read through one dict-like loader.

Formats
-------
* **HDF5** (``*.h5`` / ``*.hdf5``): one float32 dataset of shape (T, F) per utterance, named by
  the utterance id, chunked and compressed (gzip level 1 by default, or lzf / none). File
  attributes describe the archive: ``feature_config`` (JSON of the extractor config, with
  ``feat_type``), ``feat_type``, ``sample_rate``, ``frame_shift`` (seconds), ``dim`` and
  ``pykaldi2_version``.
* **Kaldi ark/scp** (``*.ark`` + ``*.scp``): binary float matrices written with kaldiio, readable
  by Kaldi's own tools (``copy-feats scp:feats.scp ark,t:-``) and by kaldiio.

The data dir's ``feats.scp``
----------------------------
As in Kaldi, a data dir points at its features with ``feats.scp``, one ``<utt> <location>`` per
line, absolute paths. The location is Kaldi's ``/abs/raw_fbank_train.1.ark:<byte offset>`` for ark
archives and ``/abs/raw_fbank_train.1.h5:<utt>`` (archive path, colon, dataset name) for HDF5.
With ark storage the file is exactly Kaldi's; with HDF5 only pykaldi2 reads it. Both kinds may be
mixed in one feats.scp (e.g. after combining data dirs).

    >>> feats = open_features("data/train")        # a data dir, a .scp, a .h5 or a .ark
    >>> feats["fash-an251-fash-b"].shape            # (T, F) float32
    >>> feats.shape("fash-an251-fash-b")            # (T, F) without reading the matrix
    >>> len(feats), list(feats.keys())[:2], feats.dim

Readers are safe to use in DataLoader workers: file handles are opened lazily per process.
``copy_feats`` (``pykaldi2 copy-feats``) converts between the two formats.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2 import __version__
from pykaldi2.data.tables import format_table, read_table_lines
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.io import atomic_write, check_free_space, disk_full_errors

HDF5_SUFFIXES = (".h5", ".hdf5")
#: Free space an HDF5 archive keeps beyond each matrix it writes (see HDF5FeatureWriter).
HDF5_FREE_SPACE_MARGIN = 8 << 20
#: Datasets between two flushes of an HDF5 archive's metadata.
HDF5_FLUSH_EVERY = 64
COMPRESSIONS = ("gzip", "lzf", "none")
FEATS_SCP = "feats.scp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path`` for a library that wants a file name (h5py); on success
    the temp file is renamed onto ``path``, on failure removed (``path`` is left untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def is_hdf5(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(HDF5_SUFFIXES)


def _check_matrix(utt: str, feats: np.ndarray, dtype=np.float32) -> np.ndarray:
    feats = np.asarray(feats)
    if feats.ndim != 2:
        raise Pykaldi2Error(f"features of {utt} must have shape (T, F), got {feats.shape}")
    return np.ascontiguousarray(feats, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------
class HDF5FeatureWriter:
    """Write (T, F) matrices into one HDF5 archive, atomically (temp file renamed on close).

    >>> with HDF5FeatureWriter("raw_fbank_train.1.h5", config=cfg.to_dict()) as w:
    ...     w["utt1"] = feats                  # (T, F) float32

    A full disk: the HDF5 library does not fail cleanly when a write hits ENOSPC (the errors
    surface later, in object destructors, and the process may crash), so the writer never lets
    it get there: before each matrix it checks that its size plus
    :data:`HDF5_FREE_SPACE_MARGIN` is free (a :class:`~pykaldi2.utils.io.DiskFullError`
    otherwise; the temp archive is removed), and it flushes the file's metadata every
    :data:`HDF5_FLUSH_EVERY` datasets so that little is pending beyond the margin. Another
    process filling the same disk in between can still beat the check.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        config: dict[str, Any] | None = None,
        compression: str = "gzip",
    ) -> None:
        import h5py

        if compression not in COMPRESSIONS:
            raise Pykaldi2Error(f"compression {compression!r} not in {COMPRESSIONS}")
        self.path = Path(path)
        self._kw: dict[str, Any] = {}
        if compression == "gzip":
            self._kw = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        elif compression == "lzf":
            self._kw = {"compression": "lzf", "shuffle": True}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_free_space(self.path.parent, HDF5_FREE_SPACE_MARGIN, str(self.path))
        self._ctx = atomic_path(self.path)
        self._file = h5py.File(self._ctx.__enter__(), "w")
        attrs = self._file.attrs
        attrs["pykaldi2_version"] = __version__
        if config is not None:
            attrs["feature_config"] = json.dumps(config, sort_keys=True)
            attrs["feat_type"] = config.get("feat_type", "")
            if "sample_frequency" in config:
                attrs["sample_rate"] = float(config["sample_frequency"])
            if "frame_shift_ms" in config:
                attrs["frame_shift"] = float(config["frame_shift_ms"]) / 1000.0
        self.dim: int | None = None
        self._count = 0

    def __setitem__(self, utt: str, feats: np.ndarray) -> None:
        if "/" in utt or utt in ("", ".", ".."):
            raise DataError(
                "utterance id cannot name an HDF5 dataset (contains '/')",
                utt=utt,
                fix="rename the utterance or use --format ark",
            )
        feats = _check_matrix(utt, feats)
        if self.dim is None:
            self.dim = feats.shape[1]
            self._file.attrs["dim"] = self.dim
        elif feats.shape[1] != self.dim:
            raise Pykaldi2Error(f"{utt}: feature dim {feats.shape[1]} != archive dim {self.dim}")
        chunks = (max(1, min(len(feats), 512)), feats.shape[1]) if len(feats) else None
        kw = self._kw if len(feats) else {}
        check_free_space(self.path.parent, feats.nbytes + HDF5_FREE_SPACE_MARGIN, str(self.path))
        with disk_full_errors(self.path):
            self._file.create_dataset(utt, data=feats, chunks=chunks, **kw)
            self._count += 1
            if self._count % HDF5_FLUSH_EVERY == 0:
                self._file.flush()

    def close(self, ok: bool = True) -> None:
        """Finish the archive; ``ok=False`` discards it."""
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            with disk_full_errors(self.path):
                f.close()
        except BaseException:
            ok = False
            raise
        finally:
            if ok:
                self._ctx.__exit__(None, None, None)
            else:
                with contextlib.suppress(Exception):
                    self._ctx.__exit__(RuntimeError, RuntimeError("discarded"), None)

    def __enter__(self) -> HDF5FeatureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


class ArkFeatureWriter:
    """Write a Kaldi binary ark (kaldiio) and its .scp, atomically; the scp names the final path.

    >>> with ArkFeatureWriter("raw_fbank_train.1.ark") as w:     # + raw_fbank_train.1.scp
    ...     w["utt1"] = feats
    >>> w.scp["utt1"]                                         # '/abs/raw_fbank_train.1.ark:4'
    """

    def __init__(
        self,
        path: str | os.PathLike,
        scp_path: str | os.PathLike | None = None,
        dtype: type = np.float32,
    ) -> None:
        """``dtype``: float32 for features (Kaldi "FM"), float64 for CMVN stats ("DM")."""
        self.path = Path(path).absolute()
        self.dtype = dtype
        self.scp_path = Path(scp_path) if scp_path else self.path.with_suffix(".scp")
        self.scp: dict[str, str] = {}
        self._ctx = atomic_write(self.path, "wb")
        self._f = self._ctx.__enter__()

    def __setitem__(self, utt: str, feats: np.ndarray) -> None:
        from kaldiio.matio import write_array

        if not utt or any(c.isspace() for c in utt):
            raise DataError("utterance id is empty or contains whitespace", utt=repr(utt))
        feats = _check_matrix(utt, feats, self.dtype)
        with disk_full_errors(self.path):  # ENOSPC: a DiskFullError naming the archive
            self._f.write((utt + " ").encode("utf-8"))
            self.scp[utt] = f"{self.path}:{self._f.tell()}"
            write_array(self._f, feats)

    def close(self, ok: bool = True) -> None:
        if self._f is None:
            return
        self._f = None
        if not ok:
            with contextlib.suppress(Exception):
                self._ctx.__exit__(RuntimeError, RuntimeError("discarded"), None)
            return
        self._ctx.__exit__(None, None, None)
        with atomic_write(self.scp_path) as f:
            f.write(format_table(self.scp))

    def __enter__(self) -> ArkFeatureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def open_writer(path: str | os.PathLike, config: dict | None = None, compression: str = "gzip"):
    """An HDF5 writer for ``*.h5``/``*.hdf5``, else a Kaldi ark writer (+ ``.scp`` beside it)."""
    if is_hdf5(path):
        return HDF5FeatureWriter(path, config=config, compression=compression)
    return ArkFeatureWriter(path)


def write_feats_scp(path: str | os.PathLike, entries: Mapping[str, str]) -> None:
    """Write a ``feats.scp``/``cmvn.scp`` (C-sorted, atomically)."""
    with atomic_write(path) as f:
        f.write(format_table(dict(entries)))


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------
def _kaldi_matrix_shape(fd, offset: int) -> tuple[int, int] | None:
    """(rows, cols) from the header of a binary Kaldi matrix at ``offset`` (FM/DM/CM/CM2/CM3)."""
    fd.seek(offset)
    if fd.read(2) != b"\0B":
        return None
    token = b""
    while len(token) < 8:
        c = fd.read(1)
        if c in (b" ", b""):
            break
        token += c
    if token in (b"FM", b"DM"):
        head = fd.read(10)  # '\x04' int32 rows '\x04' int32 cols
        if len(head) != 10:
            return None
        return struct.unpack("<i", head[1:5])[0], struct.unpack("<i", head[6:10])[0]
    if token in (b"CM", b"CM2", b"CM3"):
        head = fd.read(16)  # float min, float range, int32 rows, int32 cols
        if len(head) != 16:
            return None
        return struct.unpack("<ii", head[8:16])
    return None


class FeatureReader(Mapping[str, np.ndarray]):
    """Dict-like, lazy access to features: ``reader[utt] -> (T, F) float32``.

    ``path`` is a data dir (its feats.scp), a ``.scp`` file (Kaldi ark offsets and/or
    ``archive.h5:utt`` entries), an HDF5 archive, or a bare Kaldi ``.ark`` (read into memory once;
    prefer its .scp). Keys keep the order of the scp / archive.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._entries: dict[str, tuple[str, str]] = {}  # utt -> ("h5"|"ark"|"mem", location)
        self._mem: dict[str, np.ndarray] = {}
        self._pid = -1
        self._h5: dict[str, Any] = {}
        self._fds: dict[str, Any] = {}
        p = self.path
        if p.is_dir():
            p = p / FEATS_SCP
            if not p.is_file():
                raise DataError(
                    "no feats.scp in the data dir",
                    file=str(self.path),
                    fix="run `pykaldi2 compute-feats DATADIR FEATDIR` first",
                )
        if not p.is_file():
            raise DataError("feature file not found", file=str(p))
        self.source = p
        if is_hdf5(p):
            for utt in self._h5_file(str(p)).keys():
                self._entries[utt] = ("h5", f"{p}:{utt}")
        elif p.suffix == ".ark":
            from pykaldi2.features.compressed import iter_kaldi_ark

            for utt, mat in iter_kaldi_ark(p):
                self._mem[utt] = np.asarray(mat, dtype=np.float32)
                self._entries[utt] = ("mem", utt)
        else:
            self._read_scp(p)

    def _read_scp(self, p: Path) -> None:
        for e in read_table_lines(p):
            if not e.value:
                raise DataError(
                    "no feature location after the utterance id", file=str(p), line=e.line
                )
            path, _, key = e.value.rpartition(":")
            kind = "h5" if is_hdf5(path) and key else "ark"
            if e.key in self._entries:
                raise DataError(f"duplicate utterance {e.key!r}", file=str(p), line=e.line)
            self._entries[e.key] = (kind, e.value)

    # -- handles, reopened after a fork ---------------------------------------------------------
    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._h5, self._fds, self._pid = {}, {}, os.getpid()

    def _h5_file(self, path: str):
        import h5py

        self._check_pid()
        f = self._h5.get(path)
        if f is None:
            try:
                f = h5py.File(path, "r")
            except OSError as e:
                raise DataError(f"cannot open HDF5 archive: {e}", file=path) from None
            self._h5[path] = f
        return f

    def _h5_dataset(self, utt: str, loc: str):
        path, _, key = loc.rpartition(":")
        f = self._h5_file(path)
        if key not in f:
            raise DataError(
                f"dataset {key!r} not in the HDF5 archive",
                file=path,
                utt=utt,
                fix="recompute the features (pykaldi2 compute-feats)",
            )
        return f[key]

    def _h5_read(self, utt: str, loc: str) -> np.ndarray:
        """One dataset through h5py's low-level API: a third of ``f[key][()]``'s per-call
        overhead, which dominates for utterance-sized matrices read in a loop (GMM passes)."""
        import h5py

        path, _, key = loc.rpartition(":")
        f = self._h5_file(path)
        try:
            ds = h5py.h5d.open(f.id, key.encode())
        except KeyError:
            self._h5_dataset(utt, loc)  # raises the DataError (or is a group: read it as before)
            return np.asarray(self._h5_dataset(utt, loc)[()], dtype=np.float32)
        arr = np.empty(ds.shape, dtype=ds.dtype)
        if arr.size:
            ds.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
        return arr if arr.dtype == np.float32 else arr.astype(np.float32)

    # -- Mapping interface ----------------------------------------------------------------------
    def __getitem__(self, utt: str) -> np.ndarray:
        kind, loc = self._entries[utt]
        if kind == "mem":
            return self._mem[loc]
        if kind == "h5":
            return self._h5_read(utt, loc)
        from pykaldi2.features.compressed import load_kaldi_mat

        self._check_pid()
        try:
            mat = load_kaldi_mat(loc, fd_dict=self._fds)
        except Exception as e:  # kaldiio raises bare ValueErrors/OSErrors
            raise DataError(
                f"cannot read features at {loc}: {e}", file=str(self.source), utt=utt
            ) from None
        return np.asarray(mat, dtype=np.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, utt: object) -> bool:
        return utt in self._entries

    def location(self, utt: str) -> str:
        """Where ``utt`` is stored, as written in feats.scp (``archive.ark:offset`` or
        ``archive.h5:utt``)."""
        kind, loc = self._entries[utt]
        return str(self.source) if kind == "mem" else loc

    def shape(self, utt: str) -> tuple[int, int]:
        """(T, F) of ``utt`` from the archive header, without reading the matrix."""
        kind, loc = self._entries[utt]
        if kind == "mem":
            return tuple(self._mem[loc].shape)
        if kind == "h5":
            return tuple(self._h5_dataset(utt, loc).shape)
        path, _, off = loc.rpartition(":")
        if off.isdigit() and "[" not in loc:
            self._check_pid()
            fd = self._fds.get(path)
            if fd is None:
                fd = self._fds[path] = open(path, "rb")
            shape = _kaldi_matrix_shape(fd, int(off))
            if shape is not None:
                return shape
        return tuple(self[utt].shape)

    @property
    def dim(self) -> int:
        """Feature dimension F (of the first utterance)."""
        if not self._entries:
            raise Pykaldi2Error(f"{self.source}: no features")
        return self.shape(next(iter(self._entries)))[1]

    def metadata(self) -> dict[str, Any]:
        """Attributes of the (first) HDF5 archive, with ``feature_config`` parsed; {} for ark."""
        for kind, loc in self._entries.values():
            if kind != "h5":
                return {}
            attrs = dict(self._h5_file(loc.rpartition(":")[0]).attrs)
            if "feature_config" in attrs:
                attrs["feature_config"] = json.loads(attrs["feature_config"])
            return attrs
        return {}

    def close(self) -> None:
        for f in list(self._h5.values()) + list(self._fds.values()):
            with contextlib.suppress(Exception):
                f.close()
        self._h5, self._fds = {}, {}

    def __enter__(self) -> FeatureReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_h5"], state["_fds"], state["_pid"] = {}, {}, -1
        return state


def open_features(path: str | os.PathLike) -> FeatureReader:
    """A :class:`FeatureReader` on a data dir, a .scp, an HDF5 archive or a Kaldi .ark."""
    return FeatureReader(path)


def copy_feats(
    src: str | os.PathLike, dst: str | os.PathLike, compression: str = "gzip"
) -> FeatureReader:
    """copy-feats: any readable features (data dir, .scp, .h5, .ark) -> ``dst`` (.h5 or .ark).

    Converts between HDF5 and Kaldi ark (for Kaldi's own tools); an HDF5 source's
    ``feature_config`` is carried into an HDF5 destination. Returns a reader on the copy.
    """
    from pykaldi2.utils.log import progress

    reader = open_features(src)
    if Path(dst).resolve() in {
        Path(reader.location(u).rpartition(":")[0]).resolve() for u in reader
    }:
        raise Pykaldi2Error(f"copy-feats: {dst} is also the input; write to another file")
    config = reader.metadata().get("feature_config")
    with open_writer(dst, config=config, compression=compression) as w:
        for utt in progress(reader, total=len(reader), desc="copy-feats", unit="utt"):
            w[utt] = reader[utt]
    reader.close()
    return open_features(w.scp_path if isinstance(w, ArkFeatureWriter) else dst)
