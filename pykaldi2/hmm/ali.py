"""Alignments: ali-to-pdf, ali-to-phones, and Kaldi ``ali`` archives.

An alignment is a (T,) int array of transition_ids. Archives are Kaldi binary ``ark`` files of
integer vectors (``ali.ark`` + ``ali.scp``), or a gzipped ark (``ali.1.gz`` as Kaldi writes).

Transition ids mean something only with the transition model that made them, so the ali dirs
we write name it: ``model_id`` holds :func:`transition_model_id` of the aligning model, and
:func:`check_ali_model` compares it with the model the alignments are read with (Kaldi's ali
dirs have no ``model_id``: accepted, unchecked, with a note in the log).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from pykaldi2.hmm import kaldi_io
from pykaldi2.hmm.model import GmmModel, tuple_of
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

#: The file of an ali dir that names the transition model its alignments were made with.
MODEL_ID = "model_id"


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


def phones_to_ali(model: GmmModel, phones, durations) -> np.ndarray:
    """A transition-id alignment of ``phones`` lasting ``durations`` frames each: every phone
    goes through its HMM states 0, 1, ..., N-1 in order (each state's transition to the next;
    the last one's to the final state), its frames shared out as evenly as possible as
    align-equal does, self-loops reordered after each state's forward transition (Kaldi's
    default). The pdfs come from the tree in each phone's context. (T,) int32.

    For bringing phone-level alignments from elsewhere (a CTM, another aligner) into a model.
    """
    phones = [int(p) for p in phones]
    durations = [int(d) for d in durations]
    if len(phones) != len(durations):
        raise DataError(f"{len(phones)} phones but {len(durations)} durations")
    _, phone2idx, entries = kaldi_io.topology_entries(model.tm.topo)
    n, c = model.tree.context_width, model.tree.central_position
    out: list[int] = []
    for i, (p, dur) in enumerate(zip(phones, durations)):
        if not 0 < p < len(phone2idx) or phone2idx[p] < 0:
            raise DataError(f"phone {p} is not in the model's topology")
        states = entries[phone2idx[p]]
        emitting = len(states) - 1
        if dur < emitting:
            raise DataError(f"phone {p} (#{i}) needs >= {emitting} frames, got {dur}")
        window = [phones[i + k - c] if 0 <= i + k - c < len(phones) else 0 for k in range(n)]
        shares = [dur // emitting + (1 if s < dur % emitting else 0) for s in range(emitting)]
        for s, (fwd_class, loop_class, trans) in enumerate(states[:-1]):
            dests = [d for d, _ in trans]
            if s + 1 not in dests or (shares[s] > 1 and s not in dests):
                raise DataError(f"phone {p}: HMM state {s} has no transition to {s + 1}")
            ok_f, fpdf = model.tree.compute(window, int(fwd_class))
            ok_s, spdf = model.tree.compute(window, int(loop_class))
            ts = model.tuple2tstate.get((p, s, fpdf, spdf)) if ok_f and ok_s else None
            if ts is None:
                raise DataError(f"phone {p} in context {window} has no state {s} in the model")
            first = int(model.state2id[ts])
            out.append(first + dests.index(s + 1))
            if shares[s] > 1:
                out.extend([first + dests.index(s)] * (shares[s] - 1))
    return np.asarray(out, dtype=np.int32)


def ali_mismatch(model: GmmModel, ali: np.ndarray) -> str | None:
    """Why ``ali`` cannot be a path through ``model``'s HMMs, or None when it can.

    Frame by frame the states must follow the topology: self-loops stay in their transition
    state, and each state visit leads where the previous visit's forward transition goes (the
    next HMM state of the same phone, or state 0 of the next phone after a final transition).
    Alignments made with another model (a different tree or phone set) fail this almost
    surely; a range check alone does not see it. (A truncated alignment passes: lengths are
    checked against the features where they are used.)
    """
    ali = np.asarray(ali, dtype=np.int64)
    if len(ali) == 0:
        return "empty alignment"
    if ali.min() < 1 or ali.max() > model.tm.num_transition_ids:
        return f"transition-ids outside 1..{model.tm.num_transition_ids}"
    loop = model.tid_is_self_loop[ali]
    st = model.tid2tstate[ali]
    same = st[1:] == st[:-1]
    if not loop[0] and np.all(same[loop[1:]]):  # reordered: forward first, then self-loops
        fwd = np.flatnonzero(~loop)
    elif not loop[-1] and np.all(same[loop[:-1]]):  # forward transition last
        fwd = np.flatnonzero(~loop)
    else:
        t = int(np.flatnonzero(loop[1:] & ~same)[0]) + 1 if np.any(loop[1:] & ~same) else 0
        return f"a self-loop at frame {t} outside the state of its neighbours"
    tid = ali[fwd]
    final = model.tid_is_final[tid]
    phone, nxt_phone = model.tid2phone[tid[:-1]], model.tid2phone[tid[1:]]
    nxt_state = model.tid2hmm_state[tid[1:]]
    want = np.where(final[:-1], 0, model.tid2dest_state[tid[:-1]])
    bad = (nxt_state != want) | (~final[:-1] & (nxt_phone != phone))
    if np.any(bad):
        t = int(fwd[int(np.flatnonzero(bad)[0]) + 1])
        return f"HMM state sequence impossible for this model at frame {t}"
    return None


def ali_to_phones(model: GmmModel, ali: np.ndarray, per_frame: bool = False) -> np.ndarray:
    """Phone sequence of an alignment (ali-to-phones), or one phone per frame (``--per-frame``)."""
    ali = np.asarray(ali, dtype=np.int64)
    if per_frame:
        return model.tid2phone[ali]
    return np.asarray([p for p, _, _ in split_to_phones(model, ali)], dtype=np.int64)


class AliWriter:
    """Writes alignments one at a time, in the order given (as Kaldi's ark writers do), so a
    job never holds its alignments in memory: ``x.ark`` + ``x.scp`` beside it, or gzipped
    ``x.gz``. Atomic: the files appear when the ``with`` block ends without an exception.

        with AliWriter("exp/x/ali.1.gz") as w:
            w.write(utt, ali)   # ali: (T,) transition_ids
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._scp_target = self.path.resolve()  # what ali.scp's lines point at
        self._stack: contextlib.ExitStack | None = None
        self._f = self._scp = None

    def __enter__(self) -> AliWriter:
        stack = contextlib.ExitStack()
        try:
            if self.path.suffix == ".gz":
                raw = stack.enter_context(atomic_write(self.path, "wb"))
                # filename="": the header must not record the temp file's name
                self._f = stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw))
            else:
                # entered before the ark, so the ark is in place first when both are committed
                self._scp = stack.enter_context(
                    atomic_write(self.path.with_suffix(".scp"), "w", encoding="utf-8")
                )
                self._f = stack.enter_context(atomic_write(self.path, "wb"))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def write(self, utt: str, ali: np.ndarray) -> None:
        import kaldiio

        offset = self._f.tell() + len(utt.encode()) + 1 if self._scp is not None else 0
        kaldiio.save_ark(self._f, {utt: np.asarray(ali, dtype=np.int32)})
        if self._scp is not None:  # offset: after "utt "
            self._scp.write(f"{utt} {self._scp_target}:{offset}\n")

    def __exit__(self, *exc) -> bool:
        stack, self._stack = self._stack, None
        return bool(stack.__exit__(*exc)) if stack is not None else False


def write_ali(path: str | os.PathLike, alis: Mapping[str, np.ndarray]) -> None:
    """Write alignments as a Kaldi ark: ``x.ark`` (+ ``x.scp`` beside it) or gzipped ``x.gz``,
    in sorted utterance order (:class:`AliWriter` writes them as they come)."""
    with AliWriter(path) as w:
        for utt in sorted(alis):
            w.write(utt, alis[utt])


def transition_model_text(tm) -> str:
    """The content of a ``khg.TransitionModel`` that gives transition_ids their meaning, as
    canonical text: each phone's HMM (``phone`` then per state ``forward_pdf_class,
    self_loop_pdf_class>dest:prob,...``, the topology's initial probabilities), then the
    transition-state tuples ``phone hmm_state forward_pdf self_loop_pdf`` in order.

    Transition ids and pdf ids are functions of these. Not in it: the trained transition
    probabilities (re-estimation keeps alignments valid, as Kaldi's gmm-est does) and any file
    format (Kaldi's binary final.mdl and our pickle of one model give the same text)."""
    topo = tm.topo
    lines = ["topology"]
    for phone in sorted(int(p) for p in topo.phones):
        states = []
        for st in topo.topology_for_phone(phone):
            arcs = ",".join(f"{int(d)}:{float(p):.6g}" for d, p in st.transitions)
            states.append(f"{int(st.forward_pdf_class)},{int(st.self_loop_pdf_class)}>{arcs}")
        lines.append(f"{phone} " + " ".join(states))
    lines.append("tuples")
    lines += [" ".join(map(str, tuple_of(t))) for t in tm.tuples]
    return "\n".join(lines) + "\n"


def transition_model_id(tm) -> str:
    """sha256 (hex) of :func:`transition_model_text`: the identity of a transition model."""
    return hashlib.sha256(transition_model_text(tm).encode()).hexdigest()


def write_model_id(out_dir: str | os.PathLike, model: GmmModel) -> None:
    """``out_dir/model_id``: the identity of the model whose alignments the dir holds."""
    atomic_write_text(Path(out_dir) / MODEL_ID, transition_model_id(model.tm) + "\n")


def check_ali_model(ali_dir: str | os.PathLike, model: GmmModel, what: str = "") -> bool:
    """Check that the alignments of ``ali_dir`` were made with ``model`` (its ``model_id``
    against :func:`transition_model_id`; ``what`` names the model in the message, default
    ``ali_dir/final.mdl``). True when checked; False, with a note in the log, for a dir without
    ``model_id`` (Kaldi's ali dirs, ours before model_id existed); a :class:`DataError` when it
    names another model."""
    ali_dir = Path(ali_dir)
    path = ali_dir / MODEL_ID
    what = what or str(ali_dir / "final.mdl")
    if not path.is_file():
        log.info(
            "%s has no %s (a Kaldi ali dir?): not checked that its alignments were made with %s",
            ali_dir, MODEL_ID, what,
        )  # fmt: skip
        return False
    recorded = path.read_text(encoding="utf-8").strip()
    if recorded != transition_model_id(model.tm):
        raise DataError(
            f"the alignments were made with another transition model (model_id {recorded[:12]}) "
            f"than {what} ({transition_model_id(model.tm)[:12]}): their transition_ids mean "
            "other HMM states",
            file=str(path),
            fix=f"re-align with the model you train with (pykaldi2 align-si DATA LANG "
            f"SRC_DIR {ali_dir}), or use the ali dir that model made",
        )
    return True


def write_ali_dir(out_dir: str | os.PathLike, model: GmmModel, res) -> Path:
    """An alignment dir (Kaldi's exp/*_ali): ``final.mdl``, ``tree``, ``model_id``,
    ``ali.{ark,scp}`` (transition_ids), ``pdf.{ark,scp}`` (pdf_id targets) and ``failed_utts`` when ``res``
    (an :class:`~pykaldi2.hmm.align.AlignResult`) has failures. Returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "final.mdl")
    write_model_id(out, model)
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
    return dict(iter_ali(path))


def iter_ali(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """``(utt, (T,) int32)`` of an ``.ark``, ``.scp`` or gzipped ark, one entry at a time (an
    archive of a corpus is never held whole)."""
    import kaldiio

    path = Path(path)
    if not path.is_file():
        raise DataError("no such alignment file", file=str(path))
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                for k, v in kaldiio.load_ark(f):
                    yield k, np.asarray(v, dtype=np.int32)
        elif path.suffix == ".scp":
            for k, v in kaldiio.load_scp_sequential(str(path)):
                yield k, np.asarray(v, dtype=np.int32)
        else:
            for k, v in kaldiio.load_ark(str(path)):
                yield k, np.asarray(v, dtype=np.int32)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"not a Kaldi alignment archive: {e}", file=str(path)) from None
