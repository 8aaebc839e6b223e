"""Readers for the files real Kaldi wrote in ../shared/data/kaldi_reference (tests only):
chain-get-supervision's text archives, ali-to-phones --write-lengths output, the AN4 training
features as Kaldi's GMM scripts feed them, a subset of Kaldi's an4 data dirs, and a canonical
form of an unweighted acceptor."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pykaldi2.kaldi import kaldifst


def read_supervision_ark(path: str | Path) -> dict[str, tuple[str, object]]:
    """``chain-get-supervision ... ark,t:`` -> utt -> (header, ``StdVectorFst``)."""
    text = Path(path).read_text(encoding="utf-8")
    out = {}
    pattern = r"(\S+) <Supervision> (.*?)\n(.*?)\n\n?</Supervision>"
    for m in re.finditer(pattern, text, re.S):
        key, header, body = m.group(1), m.group(2), m.group(3)
        rows = [line.split() for line in body.strip().split("\n") if line.strip()]
        fst = kaldifst.StdVectorFst()
        num_states = 1 + max(max(int(r[0]), int(r[1])) if len(r) >= 4 else int(r[0]) for r in rows)
        for _ in range(num_states):
            fst.add_state()
        fst.start = 0
        for r in rows:
            if len(r) >= 4:
                w = float(r[4]) if len(r) > 4 else 0.0
                fst.add_arc(int(r[0]), kaldifst.StdArc(int(r[2]), int(r[3]), w, int(r[1])))
            else:
                fst.set_final(int(r[0]), float(r[1]) if len(r) > 1 else 0.0)
        out[key] = (header, fst)
    return out


def read_phones_lengths(path: str | Path) -> dict[str, tuple[list[int], list[int]]]:
    """``ali-to-phones --write-lengths`` text: utt -> (phones, lengths)."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        key, rest = line.split(None, 1)
        pairs = [tuple(map(int, x.split())) for x in rest.split(";") if x.strip()]
        out[key] = ([p for p, _ in pairs], [n for _, n in pairs])
    return out


def canonical_acceptor(fst) -> tuple:
    """The label language of an (acyclic or not) acceptor, ignoring weights, as a hashable
    canonical form: its minimal DFA numbered breadth-first with arcs in label order."""
    f = fst.copy()
    for s in range(f.num_states):  # drop weights: the unweighted language
        arcs = [(a.ilabel, a.nextstate) for a in kaldifst.ArcIterator(f, s)]
        f.delete_arcs(s, len(arcs))
        for lab, d in arcs:
            f.add_arc(s, kaldifst.StdArc(lab, lab, 0.0, d))
        if np.isfinite(f.final(s).value):
            f.set_final(s, 0.0)
    f = kaldifst.determinize(f)
    kaldifst.minimize(f)
    order, queue, arcs = {f.start: 0}, [f.start], []
    while queue:
        s = queue.pop(0)
        for lab, d in sorted((a.ilabel, a.nextstate) for a in kaldifst.ArcIterator(f, s)):
            if d not in order:
                order[d] = len(order)
                queue.append(d)
            arcs.append((order[s], lab, order[d]))
    finals = sorted(order[s] for s in order if np.isfinite(f.final(s).value))
    return tuple(arcs), tuple(finals)


def an4_train_feats(kaldi_ref: Path) -> dict[str, np.ndarray]:
    """AN4 train features as Kaldi's train_deltas.sh / align_si.sh fed them: Kaldi's own
    (compressed) MFCCs decoded as Kaldi decodes them, apply-cmvn per speaker (means),
    add-deltas. (T, 39) float32."""
    import kaldiio

    from pykaldi2.features.cmvn import apply_cmvn
    from pykaldi2.features.compressed import iter_kaldi_ark
    from pykaldi2.features.transforms import add_deltas

    d = kaldi_ref / "an4" / "data" / "train"
    utt2spk = dict(line.split() for line in (d / "utt2spk").read_text().splitlines())
    cmvn = dict(kaldiio.load_ark(str(d / "cmvn.ark")))
    return {
        utt: add_deltas(apply_cmvn(np.asarray(x, np.float32), cmvn[utt2spk[utt]])).astype(
            np.float32
        )
        for utt, x in iter_kaldi_ark(d / "feats.ark")
    }


def kaldi_data_subset(kaldi_ref: Path, out: Path, n: int, split: str = "train") -> Path:
    """The first ``n`` utterances of Kaldi's an4 data/<split> (feats.ark compressed, cmvn.ark
    per speaker) as a data dir whose scp paths are absolute (Kaldi's are relative to an4/)."""
    src = kaldi_ref / "an4" / "data" / split
    utts = [line.split()[0] for line in (src / "feats.scp").read_text().splitlines()][:n]
    keep = set(utts)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("text", "utt2spk", "wav.scp", "feats.scp", "cmvn.scp", "utt2num_frames"):
        lines = []
        for line in (src / name).read_text().splitlines():
            key, value = line.split(" ", 1)
            if name == "cmvn.scp" or key in keep:
                if name.endswith(".scp") and name != "wav.scp":
                    value = str(kaldi_ref / "an4" / value)
                lines.append(f"{key} {value}\n")
        (out / name).write_text("".join(lines))
    spk: dict[str, list[str]] = {}
    for line in (out / "utt2spk").read_text().splitlines():
        u, s = line.split()
        spk.setdefault(s, []).append(u)
    (out / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk.items())))
    return out
