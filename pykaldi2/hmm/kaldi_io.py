"""Kaldi's model files both ways: ``*.mdl``, ``tree``, matrices and vectors, binary and text.

Written from Kaldi's own readers and writers (base/io-funcs.cc, matrix/kaldi-vector.cc and
kaldi-matrix.cc, hmm/hmm-topology.cc, hmm/transition-model.cc, gmm/diag-gmm.cc,
gmm/am-diag-gmm.cc, tree/event-map.cc, tree/context-dep.cc), so Kaldi's gmm-info, hmm-info,
show-transitions, tree-info, copy-matrix read what is written here and this module reads what
they write.

The serialization, in both modes:

- A binary file starts with ``\\0B`` (InitKaldiOutputStream); a text file has no header.
- A token is its text and one space (``<TransitionModel> ``) in both modes.
- An integer: binary, one byte with its size (negative for unsigned: 4 or -4) then the
  little-endian bytes; text, the decimal and a space. A float: the byte 4 (8 for double) then
  the IEEE bytes; text, ``printf("%.7g")`` (the stream precision Kaldi sets) and a space.
- An integer vector: binary, the byte ``sizeof(T)``, a raw int32 count, the raw values; text,
  ``[ 1 2 3 ]`` and a newline.
- A float vector: binary, the token ``FV`` (``DV`` for double), an int32 size, raw floats; text,
  `` [ 1.5 2 ]`` and a newline. A matrix: ``FM``/``DM``, int32 rows and columns, raw floats
  row-major; text, `` [`` then each row on its own line indented by two spaces, then ``]``.

A model file (``final.mdl``, as gmm-init-mono / gmm-est / gmm-copy write it) is a
``TransitionModel`` followed by an ``AmDiagGmm``; a Kaldi chain or nnet3 ``final.mdl`` has the
TransitionModel followed by the network (read the TransitionModel alone with
:func:`read_transition_model_file`). A ``tree`` file is one ``ContextDependency``.

>>> tm, am = read_kaldi_model("exp/tri1/final.mdl")        # khg.TransitionModel, khg.AmDiagGmm
>>> write_kaldi_model("out/final.mdl", tm, am)               # byte-identical to Kaldi's file
>>> tree = read_tree("exp/tri1/tree")                        # khg.ContextDependency
>>> write_tree("out/tree.txt", tree, binary=False)           # copy-tree --binary=false
>>> lda = read_matrix("exp/tri2/final.mat")                  # (40, 91) float32
"""

from __future__ import annotations

import io
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.hmm.event_map import ConstantEventMap, SplitEventMap, TableEventMap
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write

#: The header of every Kaldi binary object file.
BINARY_HEADER = b"\0B"

_WS = b" \t\n\r\v\f"
_WORD = re.compile(rb"[^ \t\n\r\v\f]+")
_INT_FMT = {1: "b", 2: "h", 4: "i", 8: "q"}
_UINT_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}


def format_float(v: float) -> str:
    """A float as Kaldi's text mode prints it (C++ ``ostream`` at precision 7: ``%.7g``)."""
    v = float(v)
    if v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return "%.7g" % v


# ---- the stream level: Kaldi's ReadToken/ReadBasicType/... over bytes ---------------------------
class KaldiReader:
    """Reads Kaldi objects from the bytes of one file (binary if they start with ``\\0B``).

    Every read method raises :class:`DataError` naming ``source`` and the byte offset.
    """

    def __init__(self, data: bytes, source: str = "<bytes>", binary: bool | None = None):
        self.data = bytes(data)
        self.source = source
        if binary is None:
            binary = self.data.startswith(BINARY_HEADER)
        self.binary = binary
        self.pos = len(BINARY_HEADER) if binary and self.data.startswith(BINARY_HEADER) else 0

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> KaldiReader:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise DataError("no such file", file=path)
        with open(path, "rb") as f:
            return cls(f.read(), path)

    # -- errors and positions
    def error(self, message: str, fix: str | None = None) -> DataError:
        mode = "binary" if self.binary else "text"
        return DataError(
            f"{message} (byte {self.pos} of {len(self.data)}, Kaldi {mode} format)",
            file=self.source,
            fix=fix or "the file is truncated or not the Kaldi object expected here",
        )

    def _skip_ws(self) -> None:
        data, n = self.data, len(self.data)
        while self.pos < n and data[self.pos] in _WS:
            self.pos += 1

    def at_end(self) -> bool:
        """True when only whitespace is left (text) or nothing (binary)."""
        if not self.binary:
            self._skip_ws()
        return self.pos >= len(self.data)

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.error(f"unexpected end of file (needed {n} more bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def _word(self) -> bytes:
        self._skip_ws()
        m = _WORD.match(self.data, self.pos)
        if m is None:
            raise self.error("unexpected end of file")
        self.pos = m.end()
        return m.group()

    # -- tokens
    def token(self) -> str:
        """ReadToken: the next token (in binary mode too, a token ends at a space)."""
        if self.binary:
            end = self.data.find(b" ", self.pos)
            if end < 0:
                raise self.error("unexpected end of file while reading a token")
            tok = self.data[self.pos : end]
            self.pos = end + 1
            return tok.decode("latin-1")
        tok = self._word().decode("latin-1")
        if self.pos < len(self.data):
            self.pos += 1  # the one whitespace after a token
        return tok

    def expect(self, token: str) -> None:
        """ExpectToken (as Kaldi, ``Foo>`` is accepted for ``<Foo>``)."""
        start = self.pos
        got = self.token()
        if got != token and not (token.startswith("<") and got == token[1:]):
            self.pos = start
            raise self.error(f"expected {token!r}, got {got!r}")

    def peek(self) -> str:
        """The next character (after whitespace in text mode), '' at the end."""
        if not self.binary:
            self._skip_ws()
        return chr(self.data[self.pos]) if self.pos < len(self.data) else ""

    def peek_token(self) -> str:
        """The next token without consuming it."""
        start = self.pos
        try:
            return self.token()
        finally:
            self.pos = start

    # -- basic types
    def int(self) -> int:
        """ReadBasicType for an integer (any size, signed or unsigned)."""
        if not self.binary:
            w = self._word()
            try:
                return int(w)
            except ValueError:
                raise self.error(f"expected an integer, got {w[:20]!r}") from None
        size = struct.unpack("<b", self._take(1))[0]
        fmt = (_INT_FMT if size > 0 else _UINT_FMT).get(abs(size))
        if fmt is None:
            self.pos -= 1
            raise self.error(f"expected an integer, found size byte {size}")
        return struct.unpack("<" + fmt, self._take(abs(size)))[0]

    def float(self) -> float:
        """ReadBasicType for a float or double."""
        if not self.binary:
            w = self._word()
            try:
                return float(w)
            except ValueError:
                raise self.error(f"expected a number, got {w[:20]!r}") from None
        size = self._take(1)[0]
        if size == 4:
            return struct.unpack("<f", self._take(4))[0]
        if size == 8:
            return struct.unpack("<d", self._take(8))[0]
        self.pos -= 1
        raise self.error(f"expected a float, found size byte {size}")

    def _bracketed_words(self) -> list[bytes]:
        self.expect("[")
        out = []
        while True:
            w = self._word()
            if w == b"]":
                return out
            out.append(w)

    def int_vector(self) -> np.ndarray:
        """ReadIntegerVector (int32 elements): (N,) int64."""
        if not self.binary:
            try:
                return np.asarray([int(w) for w in self._bracketed_words()], dtype=np.int64)
            except ValueError:
                raise self.error("expected integers in [ ... ]") from None
        size = self._take(1)[0]
        if size != 4:
            self.pos -= 1
            raise self.error(f"expected an int32 vector, found element size {size}")
        (n,) = struct.unpack("<i", self._take(4))
        if n < 0:
            raise self.error(f"negative vector size {n}")
        return np.frombuffer(self._take(4 * n), dtype="<i4").astype(np.int64)

    def vector(self) -> np.ndarray:
        """Vector<float>::Read (``FV``; ``DV`` is converted): (N,) float32."""
        if not self.binary:
            try:
                return np.asarray([float(w) for w in self._bracketed_words()], dtype=np.float32)
            except ValueError:
                raise self.error("expected numbers in [ ... ]") from None
        tok = self.token()
        if tok not in ("FV", "DV"):
            raise self.error(f"expected a vector (FV or DV), got {tok!r}")
        n = self.int()
        dt = "<f4" if tok == "FV" else "<f8"
        return np.frombuffer(self._take(n * np.dtype(dt).itemsize), dtype=dt).astype(np.float32)

    def matrix(self, dtype=np.float32) -> np.ndarray:
        """Matrix<float>::Read (``FM``/``DM``; compressed ``CM*`` through kaldiio): (R, C)."""
        if not self.binary:
            self.expect("[")
            end = self.data.find(b"]", self.pos)
            if end < 0:
                raise self.error("matrix without its closing ']'")
            body = self.data[self.pos : end]
            self.pos = end + 1
            rows = [line.split() for line in body.splitlines() if line.strip()]
            if rows and any(len(r) != len(rows[0]) for r in rows):
                raise self.error("matrix rows of different lengths")
            try:
                return np.asarray([[float(v) for v in r] for r in rows], dtype=dtype).reshape(
                    len(rows), len(rows[0]) if rows else 0
                )
            except ValueError:
                raise self.error("expected numbers in a matrix") from None
        start = self.pos
        tok = self.token()
        if tok.startswith("CM"):
            import kaldiio.matio

            buf = io.BytesIO(self.data[start:])
            buf.read(0)
            try:
                mat = kaldiio.matio.read_kaldi(buf)
            except Exception as e:
                raise self.error(f"cannot read a compressed matrix ({e})") from None
            self.pos = start + buf.tell()
            return np.asarray(mat, dtype=dtype)
        if tok not in ("FM", "DM"):
            raise self.error(f"expected a matrix (FM or DM), got {tok!r}")
        rows, cols = self.int(), self.int()
        dt = "<f4" if tok == "FM" else "<f8"
        raw = self._take(rows * cols * np.dtype(dt).itemsize)
        return np.frombuffer(raw, dtype=dt).reshape(rows, cols).astype(dtype)


class KaldiWriter:
    """Writes Kaldi objects into bytes, binary (with the ``\\0B`` header) or text."""

    def __init__(self, binary: bool = True, header: bool = True):
        self.binary = binary
        self.buf = io.BytesIO()
        if binary and header:
            self.buf.write(BINARY_HEADER)

    def getvalue(self) -> bytes:
        return self.buf.getvalue()

    def raw(self, s: str | bytes) -> None:
        self.buf.write(s.encode() if isinstance(s, str) else s)

    def newline(self) -> None:
        """``os << "\\n"`` where Kaldi writes one in text mode only."""
        if not self.binary:
            self.buf.write(b"\n")

    def token(self, tok: str) -> None:
        if not tok or any(c in tok for c in " \t\n"):
            raise ValueError(f"not a valid Kaldi token: {tok!r}")
        self.buf.write(tok.encode() + b" ")

    def int(self, v: int, unsigned: bool = False) -> None:
        v = int(v)
        if self.binary:
            self.buf.write(
                b"\xfc" + struct.pack("<I", v) if unsigned else b"\x04" + struct.pack("<i", v)
            )
        else:
            self.buf.write(f"{v} ".encode())

    def float(self, v: float) -> None:
        if self.binary:
            self.buf.write(b"\x04" + struct.pack("<f", float(v)))
        else:
            self.buf.write((format_float(np.float32(v)) + " ").encode())

    def int_vector(self, v: Sequence[int]) -> None:
        a = np.asarray(v, dtype="<i4")
        if self.binary:
            self.buf.write(b"\x04" + struct.pack("<i", len(a)) + a.tobytes())
        else:
            self.buf.write(("[ " + "".join(f"{int(x)} " for x in a) + "]\n").encode())

    def vector(self, v: Sequence[float]) -> None:
        a = np.asarray(v, dtype="<f4").reshape(-1)
        if self.binary:
            self.token("FV")
            self.int(len(a))
            self.buf.write(a.tobytes())
        else:
            self.buf.write((" [ " + "".join(format_float(x) + " " for x in a) + "]\n").encode())

    def matrix(self, m: np.ndarray) -> None:
        a = np.asarray(m, dtype="<f4")
        if a.ndim != 2:
            raise ValueError(f"a Kaldi matrix is 2-D, got shape {a.shape}")
        if self.binary:
            self.token("FM")
            self.int(a.shape[0])
            self.int(a.shape[1])
            self.buf.write(np.ascontiguousarray(a).tobytes())
        elif a.shape[1] == 0:
            self.buf.write(b" [ ]\n")
        else:
            rows = "".join("\n  " + "".join(format_float(x) + " " for x in r) for r in a)
            self.buf.write((" [" + rows + "]\n").encode())


# ---- HmmTopology ----------------------------------------------------------------------------
def _new(cls, state: tuple):
    obj = cls.__new__(cls)
    obj.__setstate__(state)
    return obj


def _ext(name: str):
    """A class of khg's extension module that the package does not re-export (HmmState,
    TransitionModelTuple); the module is already loaded by ``pykaldi2.kaldi``."""
    import sys

    from pykaldi2.kaldi import khg

    return getattr(sys.modules[khg.HmmTopology.__module__], name)


def topology_entries(topo) -> tuple[list[int], list[int], list[list[tuple]]]:
    """``(phones, phone2idx, entries)`` of a ``khg.HmmTopology``; an entry is a list of states
    ``(forward_pdf_class, self_loop_pdf_class, [(dest_state, prob), ...])``."""
    phones, phone2idx, entries = topo.__getstate__()
    return (
        [int(p) for p in phones],
        [int(i) for i in phone2idx],
        [[s.__getstate__() for s in e] for e in entries],
    )


def make_topology(phones, phone2idx, entries):
    """A ``khg.HmmTopology`` from :func:`topology_entries`' three lists (Kaldi checks it)."""
    from pykaldi2.kaldi import khg

    hs = _ext("HmmState")
    states = [
        [_new(hs, (int(f), int(s), [(int(d), float(p)) for d, p in tr])) for f, s, tr in e]
        for e in entries
    ]
    topo = _new(khg.HmmTopology, ([int(p) for p in phones], [int(i) for i in phone2idx], states))
    try:
        topo.check()
    except Exception as e:
        raise DataError(f"invalid HMM topology: {e}") from None
    return topo


def _is_hmm(entries) -> bool:
    return all(f == s for e in entries for f, s, _ in e)


def read_topology(r: KaldiReader):
    """HmmTopology::Read: binary members, or the human-readable text form (lang/topo)."""
    from pykaldi2.hmm.topo import read_topo

    if not r.binary:
        start = r.pos
        end = r.data.find(b"</Topology>", start)
        if end < 0:
            raise r.error("no </Topology>")
        r.pos = end + len(b"</Topology>")
        return read_topo(r.data[start : r.pos].decode("latin-1"))
    r.expect("<Topology>")
    phones = r.int_vector().tolist()
    phone2idx = r.int_vector().tolist()
    n = r.int()
    is_hmm = n != -1
    if not is_hmm:
        n = r.int()
    entries = []
    for _ in range(n):
        states = []
        for _ in range(r.int()):
            fwd = r.int()
            loop = fwd if is_hmm else r.int()
            trans = [(r.int(), r.float()) for _ in range(r.int())]
            states.append((fwd, loop, trans))
        entries.append(states)
    r.expect("</Topology>")
    return make_topology(phones, phone2idx, entries)


def write_topology(w: KaldiWriter, topo) -> None:
    """HmmTopology::Write."""
    phones, phone2idx, entries = topology_entries(topo)
    is_hmm = _is_hmm(entries)
    w.token("<Topology>")
    if not w.binary:
        w.raw("\n")
        for i, entry in enumerate(entries):
            w.token("<TopologyEntry>")
            w.raw("\n")
            w.token("<ForPhones>")
            w.raw("\n" + "".join(f"{p} " for p, idx in enumerate(phone2idx) if idx == i) + "\n")
            w.token("</ForPhones>")
            w.raw("\n")
            for j, (fwd, loop, trans) in enumerate(entry):
                w.token("<State>")
                w.int(j)
                if fwd != -1:
                    if is_hmm:
                        w.token("<PdfClass>")
                        w.int(fwd)
                    else:
                        w.token("<ForwardPdfClass>")
                        w.int(fwd)
                        w.token("<SelfLoopPdfClass>")
                        w.int(loop)
                for dst, prob in trans:
                    w.token("<Transition>")
                    w.int(dst)
                    w.float(prob)
                w.token("</State>")
                w.raw("\n")
            w.token("</TopologyEntry>")
            w.raw("\n")
    else:
        w.int_vector(phones)
        w.int_vector(phone2idx)
        if not is_hmm:
            w.int(-1)
        w.int(len(entries))
        for entry in entries:
            w.int(len(entry))
            for fwd, loop, trans in entry:
                w.int(fwd)
                if not is_hmm:
                    w.int(loop)
                w.int(len(trans))
                for dst, prob in trans:
                    w.int(dst)
                    w.float(prob)
    w.token("</Topology>")
    w.newline()


# ---- TransitionModel ------------------------------------------------------------------------
def transition_model_tuples(tm) -> np.ndarray:
    """(num_transition_states, 4) int: ``(phone, hmm_state, forward_pdf, self_loop_pdf)``."""
    rows = [t.__getstate__() for t in tm.tuples]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def make_transition_model(topo, tuples: np.ndarray, log_probs: np.ndarray | None = None):
    """A ``khg.TransitionModel`` from its stored members, with the derived tables computed as
    TransitionModel::ComputeDerived / ComputeDerivedOfProbs do.

    Args:
        topo: ``khg.HmmTopology``.
        tuples: (S, 4) ``(phone, hmm_state, forward_pdf, self_loop_pdf)``, sorted (Kaldi's
            order defines the transition-ids).
        log_probs: (num_transition_ids + 1,) log-probabilities (index 0 unused); ``None``
            takes them from the topology (TransitionModel::InitializeProbs).
    """
    from pykaldi2.kaldi import khg

    tuples = np.asarray(tuples, dtype=np.int64).reshape(-1, 4)
    phones, phone2idx, entries = topology_entries(topo)
    phone_set = set(phones)
    state2id = [0] * (len(tuples) + 2)
    cur, num_pdfs = 1, 0
    dests = []  # per transition state: destination of each of its transitions
    for ts, (phone, hmm_state, fwd, loop) in enumerate(tuples.tolist(), start=1):
        if phone not in phone_set or not 0 <= hmm_state < len(entries[phone2idx[phone]]):
            raise DataError(
                f"transition state {ts} has phone {phone} / HMM state {hmm_state}, which the "
                "topology does not have",
                fix="the tuples and the topology come from different models",
            )
        state2id[ts] = cur
        num_pdfs = max(num_pdfs, fwd + 1, loop + 1)
        trans = entries[phone2idx[phone]][hmm_state][2]
        dests.append([d for d, _ in trans])
        cur += len(trans)
    state2id[len(tuples) + 1] = cur
    id2state = [0] * cur
    id2pdf = [0] * cur
    topo_log_probs = [0.0] * cur
    for ts, (phone, hmm_state, fwd, loop) in enumerate(tuples.tolist(), start=1):
        trans = entries[phone2idx[phone]][hmm_state][2]
        for k, (dst, prob) in enumerate(trans):
            tid = state2id[ts] + k
            id2state[tid] = ts
            id2pdf[tid] = loop if dst == hmm_state else fwd
            topo_log_probs[tid] = float(np.float32(np.log(np.float64(np.float32(prob)))))
    if log_probs is None:
        lp = np.asarray(topo_log_probs, dtype=np.float32)
    else:
        lp = np.asarray(log_probs, dtype=np.float32).reshape(-1)
        if len(lp) != cur:
            raise DataError(
                f"{len(lp)} log-probs for {cur - 1} transition-ids (+1)",
                fix="the file is not a consistent TransitionModel",
            )
        bad = np.flatnonzero(~(lp[1:] <= 0.0) | ~np.isfinite(lp[1:]))
        if len(bad):
            raise DataError(
                f"transition-id {int(bad[0]) + 1} has log-prob {lp[bad[0] + 1]} (must be finite "
                "and <= 0)",
                fix="the model file is corrupt",
            )
    non_self_loop = [0.0] * (len(tuples) + 1)
    for ts, (_, hmm_state, _, _) in enumerate(tuples.tolist(), start=1):
        for k, dst in enumerate(dests[ts - 1]):
            if dst == hmm_state:  # SelfLoopOf(tstate)
                p_loop = np.float32(np.exp(np.float64(lp[state2id[ts] + k])))
                p_other = np.float32(1.0 - np.float64(p_loop))
                if p_other <= 0.0:
                    p_other = np.float32(1e-10)
                non_self_loop[ts] = float(np.float32(np.log(np.float64(p_other))))
                break
    tuple_cls = _ext("TransitionModelTuple")
    state = (
        [_new(tuple_cls, tuple(int(x) for x in t)) for t in tuples.tolist()],
        topo,
        state2id,
        id2state,
        id2pdf,
        int(num_pdfs),
        [float(x) for x in lp],
        non_self_loop,
    )
    tm = _new(khg.TransitionModel, state)
    return tm


def read_transition_model(r: KaldiReader):
    """TransitionModel::Read (``<Triples>`` of old HMM models or ``<Tuples>``)."""
    r.expect("<TransitionModel>")
    topo = read_topology(r)
    tok = r.token()
    if tok not in ("<Triples>", "<Tuples>"):
        raise r.error(f"expected <Triples> or <Tuples>, got {tok!r}")
    n = r.int()
    rows = []
    for _ in range(n):
        phone, hmm_state, fwd = r.int(), r.int(), r.int()
        rows.append((phone, hmm_state, fwd, r.int() if tok == "<Tuples>" else fwd))
    end = r.token()
    if end not in ("</Triples>", "</Tuples>"):
        raise r.error(f"expected </Triples> or </Tuples>, got {end!r}")
    r.expect("<LogProbs>")
    log_probs = r.vector()
    r.expect("</LogProbs>")
    r.expect("</TransitionModel>")
    try:
        return make_transition_model(topo, np.asarray(rows, dtype=np.int64), log_probs)
    except DataError as e:
        raise DataError(str(e), file=r.source) from None


def write_transition_model(w: KaldiWriter, tm) -> None:
    """TransitionModel::Write (``<Triples>`` when every state's two pdf classes agree)."""
    topo = tm.topo
    is_hmm = _is_hmm(topology_entries(topo)[2])
    w.token("<TransitionModel>")
    w.newline()
    write_topology(w, topo)
    w.token("<Triples>" if is_hmm else "<Tuples>")
    tuples = transition_model_tuples(tm)
    w.int(len(tuples))
    w.newline()
    for phone, hmm_state, fwd, loop in tuples.tolist():
        w.int(phone)
        w.int(hmm_state)
        w.int(fwd)
        if not is_hmm:
            w.int(loop)
        w.newline()
    w.token("</Triples>" if is_hmm else "</Tuples>")
    w.newline()
    w.token("<LogProbs>")
    w.newline()
    w.vector(np.asarray(tm.log_probs, dtype=np.float32))
    w.token("</LogProbs>")
    w.newline()
    w.token("</TransitionModel>")
    w.newline()


# ---- DiagGmm / AmDiagGmm --------------------------------------------------------------------
def read_diag_gmm(r: KaldiReader):
    """DiagGmm::Read: gconsts (optional, recomputed as Kaldi does), weights, means*inv_vars,
    inv_vars -> ``khg.DiagGmm``."""
    from pykaldi2.kaldi import khg

    tok = r.token()
    if tok not in ("<DiagGMM>", "<DiagGMMBegin>"):
        raise r.error(f"expected <DiagGMM>, got {tok!r}")
    tok = r.token()
    if tok == "<GCONSTS>":
        r.vector()  # Kaldi recomputes them: "safer option than trusting the read gconsts"
        r.expect("<WEIGHTS>")
    elif tok != "<WEIGHTS>":
        raise r.error(f"expected <WEIGHTS> or <GCONSTS>, got {tok!r}")
    weights = r.vector()
    r.expect("<MEANS_INVVARS>")
    means_invvars = r.matrix()
    r.expect("<INV_VARS>")
    inv_vars = r.matrix()
    tok = r.token()
    if tok not in ("</DiagGMM>", "<DiagGMMEnd>"):
        raise r.error(f"expected </DiagGMM>, got {tok!r}")
    if means_invvars.shape != inv_vars.shape or len(weights) != len(inv_vars):
        raise r.error(
            f"inconsistent GMM: {len(weights)} weights, means {means_invvars.shape}, "
            f"inv_vars {inv_vars.shape}"
        )
    return _new(khg.DiagGmm, (weights, inv_vars, means_invvars))


def write_diag_gmm(w: KaldiWriter, gmm) -> None:
    """DiagGmm::Write."""
    w.token("<DiagGMM>")
    w.newline()
    w.token("<GCONSTS>")
    w.vector(np.asarray(gmm.gconsts, dtype=np.float32))
    w.token("<WEIGHTS>")
    w.vector(np.asarray(gmm.weights, dtype=np.float32))
    w.token("<MEANS_INVVARS>")
    w.matrix(np.asarray(gmm.means_invvars, dtype=np.float32))
    w.token("<INV_VARS>")
    w.matrix(np.asarray(gmm.inv_vars, dtype=np.float32))
    w.token("</DiagGMM>")
    w.newline()


def read_am_diag_gmm(r: KaldiReader):
    """AmDiagGmm::Read -> ``khg.AmDiagGmm``."""
    from pykaldi2.kaldi import khg

    r.expect("<DIMENSION>")
    dim = r.int()
    r.expect("<NUMPDFS>")
    n = r.int()
    if n <= 0:
        raise r.error(f"an AmDiagGmm with {n} pdfs")
    state: list = []
    for pdf in range(n):
        gmm = read_diag_gmm(r)
        if gmm.dim != dim:
            raise r.error(f"pdf {pdf} has dimension {gmm.dim}, the model {dim}")
        state.extend(gmm.__getstate__())
    return _new(khg.AmDiagGmm, tuple(state))


def write_am_diag_gmm(w: KaldiWriter, am) -> None:
    """AmDiagGmm::Write."""
    w.token("<DIMENSION>")
    w.int(am.dim)
    w.token("<NUMPDFS>")
    w.int(am.num_pdfs)
    for p in range(am.num_pdfs):
        gmm = am.get_pdf(p)
        if not gmm.valid_gconsts:
            gmm.compute_gconsts()
        write_diag_gmm(w, gmm)


# ---- EventMap / ContextDependency -----------------------------------------------------------
def read_event_map(r: KaldiReader):
    """EventMap::Read: ``NULL``, ``CE``, ``TE`` or ``SE`` (the Python maps of :mod:`.event_map`).
    Iterative, so deep trees do not hit Python's recursion limit."""
    stack: list = []  # open TE/SE nodes: [node, children read so far, children needed, closer]
    while True:
        c = r.peek()
        if c == "N":
            r.expect("NULL")
            done, value = True, None
        elif c == "C":
            r.expect("CE")
            done, value = True, ConstantEventMap(r.int())
        elif c == "T":
            r.expect("TE")
            key, size = r.int(), r.int()
            r.expect("(")
            stack.append([TableEventMap(key, []), [], size, ")"])
            done = size == 0
            value = None
        elif c == "S":
            r.expect("SE")
            key = r.int()
            yes_set = r.int_vector().tolist()
            r.expect("{")
            stack.append([SplitEventMap(key, yes_set, None, None), [], 2, "}"])
            done = False
        else:
            raise r.error(f"expected an event map (NULL, CE, TE or SE), got {c!r}")
        if not done:
            continue
        if stack and stack[-1][2] == 0 and not stack[-1][1]:  # an empty table just opened
            node, _, _, closer = stack.pop()
            r.expect(closer)
            value = node
        while True:
            if not stack:
                return value
            frame = stack[-1]
            frame[1].append(value)
            if len(frame[1]) < frame[2]:
                break
            node, children, _, closer = stack.pop()
            r.expect(closer)
            if isinstance(node, TableEventMap):
                node.table = children
            else:
                if children[0] is None or children[1] is None:
                    raise r.error("a split (SE) node with a NULL child")
                node.yes, node.no = children
            value = node


def write_event_map(w: KaldiWriter, m) -> None:
    """EventMap::Write (iterative)."""
    stack: list = [m]
    while stack:
        m = stack.pop()
        if isinstance(m, str):  # a closer
            w.token(m)
            if m in (")", "}"):
                w.newline()
        elif m is None:
            w.token("NULL")
        elif isinstance(m, ConstantEventMap):
            w.token("CE")
            w.int(m.answer)
        elif isinstance(m, TableEventMap):
            w.token("TE")
            w.int(m.key)
            w.int(len(m.table), unsigned=True)
            w.token("(")
            stack.append(")")
            stack.extend(reversed(m.table))
        elif isinstance(m, SplitEventMap):
            w.token("SE")
            w.int(m.key)
            w.int_vector(sorted(set(int(v) for v in m.yes_set)))
            w.token("{")
            stack.extend(["}", m.no, m.yes])
        else:
            raise TypeError(f"not an event map: {type(m)}")


@dataclass
class Tree:
    """A ContextDependency as Python data: ``to_pdf`` (event map), N and P."""

    to_pdf: Any
    context_width: int
    central_position: int

    def khg(self):
        """As ``khg.ContextDependency`` (through its Kaldi binary serialization)."""
        from pykaldi2.kaldi import khg

        w = KaldiWriter(binary=True, header=False)
        write_context_dependency(w, self)
        return _new(khg.ContextDependency, (np.frombuffer(w.getvalue(), np.int8).tolist(),))


def read_context_dependency(r: KaldiReader) -> Tree:
    """ContextDependency::Read (the old ``ToLength`` map is skipped, as Kaldi does)."""
    r.expect("ContextDependency")
    n, p = r.int(), r.int()
    tok = r.token()
    if tok == "ToLength":
        read_event_map(r)
        tok = r.token()
    if tok != "ToPdf":
        raise r.error(f"expected ToPdf, got {tok!r}")
    to_pdf = read_event_map(r)
    r.expect("EndContextDependency")
    if not 0 <= p < n:
        raise r.error(f"central position {p} outside the context width {n}")
    return Tree(to_pdf, n, p)


def write_context_dependency(w: KaldiWriter, tree: Tree) -> None:
    """ContextDependency::Write."""
    w.token("ContextDependency")
    w.int(tree.context_width)
    w.int(tree.central_position)
    w.token("ToPdf")
    write_event_map(w, tree.to_pdf)
    w.token("EndContextDependency")


def tree_of(ctx_dep) -> Tree:
    """A ``khg.ContextDependency`` (or a :class:`Tree`) as a :class:`Tree`."""
    if isinstance(ctx_dep, Tree):
        return ctx_dep
    data = bytes(np.asarray(ctx_dep.__getstate__()[0], dtype=np.int64).astype(np.int8).tobytes())
    return read_context_dependency(KaldiReader(data, "<khg.ContextDependency>", binary=True))


# ---- files -----------------------------------------------------------------------------------
def _write_file(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def _finish(r: KaldiReader, what: str) -> None:
    """Kaldi's readers ignore what follows an object; a stray tail is worth an error here only
    when it is not whitespace in text mode (a concatenated or corrupt file)."""
    if not r.binary and not r.at_end():
        raise r.error(f"unexpected data after the {what}")


def model_bytes(tm, am=None, binary: bool = True) -> bytes:
    """The bytes of a ``*.mdl`` file: TransitionModel, then the AmDiagGmm unless ``am`` is
    ``None`` or has no pdfs (then it is a transition model alone, as ``*.trans_mdl``)."""
    w = KaldiWriter(binary)
    write_transition_model(w, tm)
    if am is not None and am.num_pdfs > 0:
        if am.num_pdfs != tm.num_pdfs:
            raise DataError(
                f"the AmDiagGmm has {am.num_pdfs} pdfs, the transition model {tm.num_pdfs}",
                fix="the GMMs and the transition model come from different trees",
            )
        write_am_diag_gmm(w, am)
    return w.getvalue()


def write_kaldi_model(path: str | os.PathLike, tm, am=None, binary: bool = True) -> None:
    """Write a Kaldi ``*.mdl`` (gmm-copy's output format), atomically."""
    _write_file(path, model_bytes(tm, am, binary))


def read_kaldi_model(path: str | os.PathLike) -> tuple[Any, Any]:
    """Read a Kaldi GMM ``*.mdl`` (binary or text): ``(khg.TransitionModel, khg.AmDiagGmm)``.

    A file that holds only a TransitionModel (``*.trans_mdl``) gives an empty AmDiagGmm; a
    model whose TransitionModel is followed by something else (an nnet3 network) is an error
    that says to use :func:`read_transition_model_file`.
    """
    from pykaldi2.kaldi import khg

    r = KaldiReader.from_file(path)
    tm = read_transition_model(r)
    if r.at_end():
        return tm, khg.AmDiagGmm()
    if r.peek_token() != "<DIMENSION>":
        raise r.error(
            f"the transition model is followed by {r.peek_token()!r}, not a GMM (<DIMENSION>)",
            fix="this is not a GMM model (an nnet3/chain final.mdl?); read its transition "
            "model alone (pykaldi2.hmm.kaldi_io.read_transition_model_file)",
        )
    am = read_am_diag_gmm(r)
    _finish(r, "AmDiagGmm")
    if am.num_pdfs != tm.num_pdfs:
        raise DataError(
            f"the GMMs have {am.num_pdfs} pdfs, the transition model {tm.num_pdfs}",
            file=os.fspath(path),
            fix="the file is corrupt or was assembled from two models",
        )
    return tm, am


def read_transition_model_file(path: str | os.PathLike):
    """The TransitionModel at the start of any Kaldi model file (GMM, nnet3, chain, trans_mdl)."""
    return read_transition_model(KaldiReader.from_file(path))


def tree_bytes(ctx_dep, binary: bool = True) -> bytes:
    """The bytes of a Kaldi ``tree`` file (``\\0B`` + ContextDependency in binary mode)."""
    w = KaldiWriter(binary)
    write_context_dependency(w, tree_of(ctx_dep))
    return w.getvalue()


def write_tree(path: str | os.PathLike, ctx_dep, binary: bool = True) -> None:
    """Write a tree as Kaldi's build-tree / copy-tree do, atomically (``khg.ContextDependency``
    or :class:`Tree`)."""
    _write_file(path, tree_bytes(ctx_dep, binary))


def read_tree(path: str | os.PathLike, as_khg: bool = True):
    """Read a Kaldi ``tree`` (binary with ``\\0B``, or text): ``khg.ContextDependency``, or the
    :class:`Tree` with ``as_khg=False``. Files written by earlier pykaldi2 versions (binary
    without the header) are read too."""
    path = os.fspath(path)
    r = KaldiReader.from_file(path)
    if r.data.startswith(b"ContextDependency \x04"):  # binary without the header
        r = KaldiReader(r.data, path, binary=True)
    tree = read_context_dependency(r)
    _finish(r, "ContextDependency")
    return tree.khg() if as_khg else tree


def read_matrix(path: str | os.PathLike) -> np.ndarray:
    """A Kaldi matrix file (``final.mat``, ``full.mat``; binary or text): (R, C) float32."""
    r = KaldiReader.from_file(path)
    m = r.matrix()
    _finish(r, "matrix")
    return m


def write_matrix(path: str | os.PathLike, m: np.ndarray, binary: bool = True) -> None:
    """Write a matrix as Kaldi's est-lda / copy-matrix do (float), atomically."""
    w = KaldiWriter(binary)
    w.matrix(m)
    _write_file(path, w.getvalue())


def read_vector(path: str | os.PathLike) -> np.ndarray:
    """A Kaldi vector file (``final.occs``; binary or text): (N,) float32."""
    r = KaldiReader.from_file(path)
    v = r.vector()
    _finish(r, "vector")
    return v


def write_vector(path: str | os.PathLike, v: Sequence[float], binary: bool = False) -> None:
    """Write a vector; text by default, as gmm-est ``--write-occs`` writes ``final.occs``."""
    w = KaldiWriter(binary)
    w.vector(v)
    _write_file(path, w.getvalue())


def read_transforms(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A Kaldi archive of matrices (fMLLR ``trans.*``, keyed by speaker or utterance):
    key -> (D, D + 1) float32. Read with kaldiio."""
    import kaldiio

    path = Path(path)
    if not path.is_file():
        raise DataError("no such transform archive", file=str(path))
    try:
        return {k: np.asarray(v, dtype=np.float32) for k, v in kaldiio.load_ark(str(path))}
    except Exception as e:
        raise DataError(f"not a Kaldi archive of matrices: {e}", file=str(path)) from None


def write_transforms(path: str | os.PathLike, mats: dict[str, np.ndarray]) -> None:
    """Write an archive of matrices (``trans.*``) in Kaldi's binary ark format, atomically."""
    import kaldiio

    buf = io.BytesIO()
    kaldiio.save_ark(buf, {k: np.asarray(v, dtype=np.float32) for k, v in sorted(mats.items())})
    _write_file(path, buf.getvalue())


# ---- exp-dir side files: cmvn_opts, splice_opts, delta_opts, num_jobs --------------------------
def read_opts_file(path: str | os.PathLike) -> str:
    """The one line of an options file (``cmvn_opts``, ``splice_opts``, ``delta_opts``), as the
    scripts read it with `cat`; '' when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return ""
    return " ".join(path.read_text(encoding="utf-8").split())


def write_opts_file(path: str | os.PathLike, opts: str) -> None:
    """Write an options file as the scripts do (``echo $opts > file``: a newline when empty)."""
    from pykaldi2.utils.io import atomic_write_text

    atomic_write_text(path, " ".join(str(opts).split()) + "\n")


def parse_opts(opts: str, spec: dict[str, Any], source: str = "options") -> dict[str, Any]:
    """Kaldi command-line options (``--name=value``) as a dict over ``spec`` (name -> default;
    the default's type converts the value, bools as Kaldi's ``true``/``false``). An option
    outside ``spec`` is an error naming ``source``."""
    out = dict(spec)
    for arg in opts.split():
        name, eq, value = arg.partition("=")
        key = name.lstrip("-")
        if not name.startswith("--") or key not in spec:
            raise DataError(
                f"option {arg!r} is not supported here (known: "
                + ", ".join("--" + k for k in spec)
                + ")",
                file=source,
                fix="remove it, or transform the features with Kaldi first",
            )
        default = spec[key]
        try:
            if isinstance(default, bool):
                if value.lower() not in ("", "true", "false", "1", "0"):
                    raise ValueError(value)
                out[key] = value.lower() in ("", "true", "1")
            else:
                out[key] = type(default)(value)
        except ValueError:
            raise DataError(f"bad value in {arg!r}", file=source) from None
    return out


#: splice-feats' options and defaults (an empty splice_opts means +-4 frames).
SPLICE_OPTS = {"left-context": 4, "right-context": 4}
#: add-deltas' options and defaults.
DELTA_OPTS = {"delta-order": 2, "delta-window": 2}
#: apply-cmvn's options the GMM scripts pass, with its defaults (means only).
CMVN_OPTS = {"norm-means": True, "norm-vars": False}
