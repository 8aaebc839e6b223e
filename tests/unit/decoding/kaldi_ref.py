"""Test helpers: a real Kaldi GMM exp dir of ../shared/data/kaldi_reference as decoder inputs.

A small reader of Kaldi's model files for the decoder tests, until ``pykaldi2/hmm/kaldi_io.py``
(branch kaldi-io) reads Kaldi's final.mdl: the topology and transition tuples come from the
text copy ``final.mdl.txt`` (integers, exact), the GMM parameters from the binary ``final.mdl``
(its AmDiagGmm part: ``<DIMENSION>``, ``<NUMPDFS>``, then per pdf ``<DiagGMM>`` with
``<GCONSTS>``/``<WEIGHTS>`` float vectors ``FV`` and ``<MEANS_INVVARS>``/``<INV_VARS>`` float
matrices ``FM``, each number a size byte then its bytes), which are not rounded as the text's.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pykaldi2.decoding.wfst import GmmScorer
from pykaldi2.hmm.decoder import TransitionTables


def _topology(text: str) -> dict[int, list[tuple[int, list[int]]]]:
    """phone -> [(pdf_class, [transition destination states])] from the text topology."""
    out: dict[int, list] = {}
    for entry in re.findall(r"<TopologyEntry>(.*?)</TopologyEntry>", text, re.S):
        phones = [
            int(p) for p in re.search(r"<ForPhones>(.*?)</ForPhones>", entry, re.S).group(1).split()
        ]
        states = []
        for st in re.findall(r"<State>(.*?)</State>", entry, re.S):
            m = re.search(r"<PdfClass>\s*(-?\d+)", st)
            dests = [int(d) for d in re.findall(r"<Transition>\s*(\d+)", st)]
            states.append((int(m.group(1)) if m else -1, dests))
        for p in phones:
            out[p] = states
    return out


def transition_arrays(mdl_txt: Path) -> SimpleNamespace:
    """Per-transition_id arrays of a Kaldi text model (Kaldi's TransitionModel::ComputeDerived)."""
    text = Path(mdl_txt).read_text()
    topo = _topology(text.split("</Topology>")[0])
    m = re.search(r"<Triples>\s*(\d+)(.*?)</Triples>", text, re.S)
    if m:  # (phone, hmm_state, pdf): forward and self-loop pdfs equal
        nums = np.asarray(m.group(2).split(), dtype=np.int64).reshape(-1, 3)
        tuples = np.concatenate([nums, nums[:, 2:3]], axis=1)
    else:
        m = re.search(r"<Tuples>\s*(\d+)(.*?)</Tuples>", text, re.S)
        tuples = np.asarray(m.group(2).split(), dtype=np.int64).reshape(-1, 4)
    pdf, phone, hmm_state, self_loop, final, tstate = [0], [0], [-1], [False], [False], [-1]
    for ts, (ph, hs, fwd, sl) in enumerate(tuples, 1):
        for dest in topo[int(ph)][int(hs)][1]:
            tstate.append(ts)
            loop = dest == hs
            pdf.append(int(sl if loop else fwd))
            phone.append(int(ph))
            hmm_state.append(int(hs))
            self_loop.append(loop)
            final.append(dest == len(topo[int(ph)]) - 1)
    return SimpleNamespace(
        tid2pdf=np.asarray(pdf, np.int64),
        tid2phone=np.asarray(phone, np.int64),
        tid2hmm_state=np.asarray(hmm_state, np.int64),
        tid_is_self_loop=np.asarray(self_loop, bool),
        tid_is_final=np.asarray(final, bool),
        tid2tstate=np.asarray(tstate, np.int64),
    )


class _Binary:
    def __init__(self, data: bytes, pos: int) -> None:
        self.d, self.p = data, pos

    def token(self, tok: bytes) -> None:
        assert self.d[self.p : self.p + len(tok) + 1] == tok + b" ", (
            tok,
            self.d[self.p : self.p + 20],
        )
        self.p += len(tok) + 1

    def int32(self) -> int:
        assert self.d[self.p] == 4
        (v,) = struct.unpack_from("<i", self.d, self.p + 1)
        self.p += 5
        return v

    def vector(self) -> np.ndarray:
        self.token(b"FV")
        n = self.int32()
        v = np.frombuffer(self.d, np.float32, n, self.p)
        self.p += 4 * n
        return v

    def matrix(self) -> np.ndarray:
        self.token(b"FM")
        r, c = self.int32(), self.int32()
        v = np.frombuffer(self.d, np.float32, r * c, self.p).reshape(r, c)
        self.p += 4 * r * c
        return v


def gmm_scorer(mdl: Path) -> GmmScorer:
    """The AmDiagGmm of a binary Kaldi final.mdl as a :class:`GmmScorer`."""
    data = Path(mdl).read_bytes()
    b = _Binary(data, data.index(b"<DIMENSION> "))
    b.token(b"<DIMENSION>")
    b.int32()
    b.token(b"<NUMPDFS>")
    num_pdfs = b.int32()
    gconsts, means_invvars, inv_vars = [], [], []
    for _ in range(num_pdfs):
        b.token(b"<DiagGMM>")
        b.token(b"<GCONSTS>")
        gconsts.append(b.vector())
        b.token(b"<WEIGHTS>")
        b.vector()
        b.token(b"<MEANS_INVVARS>")
        means_invvars.append(b.matrix())
        b.token(b"<INV_VARS>")
        inv_vars.append(b.matrix())
        b.token(b"</DiagGMM>")
    return GmmScorer.from_params(gconsts, means_invvars, inv_vars)


def kaldi_system(exp: Path) -> SimpleNamespace:
    """A Kaldi GMM exp dir: transition arrays, TransitionTables and the GMM scorer."""
    arrays = transition_arrays(exp / "final.mdl.txt")
    tables = TransitionTables.from_arrays(
        arrays.tid2pdf, arrays.tid2phone, arrays.tid2hmm_state, arrays.tid_is_self_loop
    )
    return SimpleNamespace(arrays=arrays, tables=tables, scorer=gmm_scorer(exp / "final.mdl"))


def decode_feats(corpus: Path, data: str, deltas: bool = True) -> dict[str, np.ndarray]:
    """Kaldi's decode.sh features of a data dir: apply-cmvn --utt2spk (means only), add-deltas."""
    import kaldiio

    from pykaldi2.features.cmvn import apply_cmvn
    from pykaldi2.features.transforms import add_deltas

    d = corpus / data
    utt2spk = dict(line.split() for line in (d / "utt2spk").read_text().splitlines())

    def load(scp: str) -> dict:
        out = {}
        for line in (d / scp).read_text().splitlines():
            key, spec = line.split()
            out[key] = np.asarray(kaldiio.load_mat(str(corpus / spec)))
        return out

    cmvn, feats = load("cmvn.scp"), load("feats.scp")
    out = {}
    for utt, x in feats.items():
        y = apply_cmvn(x.astype(np.float32), cmvn[utt2spk[utt]])
        out[utt] = add_deltas(y) if deltas else y
    return out


def kaldi_best_paths(decode_log: Path) -> dict[str, tuple[list[str], float]]:
    """utt -> (words, total cost) from gmm-latgen-faster's log (cost = -loglike/frame x frames)."""
    words: dict[str, list[str]] = {}
    out = {}
    for line in Path(decode_log).read_text().splitlines():
        m = re.search(r"Log-like per frame for utterance (\S+) is (\S+) over (\d+) frames", line)
        if m:
            utt = m.group(1)
            out[utt] = (words.get(utt, []), -float(m.group(2)) * int(m.group(3)))
        elif line and not line.startswith(("#", "LOG", "WARNING", "gmm-", "apply-", "add-")):
            f = line.split()
            words[f[0]] = f[1:]
    return out
