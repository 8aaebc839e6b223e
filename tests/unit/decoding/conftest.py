"""A tiny monophone system for decoding tests: 3 words, 3 phones + silence, HCLG built by us.

Lexicon: A = a b (#1, a prefix of C), B = b c, C = a b c; optional silence between words.
G: a backoff unigram (``#0`` on the backoff arc) that favours A.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

TOPO = """<Topology>
<TopologyEntry>
<ForPhones>
1 2 3 4
</ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.5 <Transition> 1 0.5 </State>
<State> 1 <PdfClass> 1 <Transition> 1 0.5 <Transition> 2 0.5 </State>
<State> 2 <PdfClass> 2 <Transition> 2 0.5 <Transition> 3 0.5 </State>
<State> 3 </State>
</TopologyEntry>
</Topology>
"""
PHONES = {"<eps>": 0, "sil": 1, "a": 2, "b": 3, "c": 4, "#0": 5, "#1": 6}
WORDS = {"<eps>": 0, "A": 1, "B": 2, "C": 3, "#0": 4}
LEXICON = {"A": ["a", "b"], "B": ["b", "c"], "C": ["a", "b", "c"]}

# src dst phone word: words enter on their first phone; A ends with #1; sil and #0:#0 loop.
L_TEXT = """0 0 1 0
0 1 2 1
1 2 3 0
2 0 6 0
0 3 3 2
3 0 4 0
0 4 2 3
4 5 3 0
5 0 4 0
0 0 5 4
0
"""
G_TEXT = """0 1 4 0 0.5
1 0 1 1 1.0
1 0 2 2 1.0
1 0 3 3 1.0
0 0 1 1 0.3
0
"""


@pytest.fixture(scope="session")
def tiny():
    """The tiny system: ``hclg``, ``tm``, ``ctx``, ``tid2pdf`` and a log-likelihood maker."""
    from pykaldi2.decoding.wfst import tid2pdf_of
    from pykaldi2.kaldi import kaldifst, khg
    from pykaldi2.lang.hclg import make_hclg

    topo = khg.HmmTopology()
    topo.read(TOPO)
    ctx = khg.monophone_context_dependency([1, 2, 3, 4], topo.get_phone_to_num_pdf_classes())
    tm = khg.TransitionModel(ctx, topo)
    L = kaldifst.compile(L_TEXT)
    G = kaldifst.compile(G_TEXT)
    hclg = make_hclg(L, G, [PHONES["#0"], PHONES["#1"]], ctx, tm)

    def pdf_of(phone: str, k: int) -> int:
        ok, pdf = ctx.compute([PHONES[phone]], k)
        assert ok
        return pdf

    def loglik_for(words: list[str], frames: int = 2, sil: bool = True, floor: float = -10.0):
        """(T, num_pdfs) log-likelihoods favouring the pdfs of ``words`` (``frames`` per state)."""
        phones = (["sil"] if sil else []) + [p for w in words for p in LEXICON[w]]
        phones += ["sil"] if sil else []
        seq = [pdf_of(p, k) for p in phones for k in range(3) for _ in range(frames)]
        ll = np.full((len(seq), tm.num_pdfs), floor, dtype=np.float32)
        ll[np.arange(len(seq)), seq] = 0.0
        return ll

    return SimpleNamespace(
        hclg=hclg,
        tm=tm,
        ctx=ctx,
        topo=topo,
        tid2pdf=tid2pdf_of(tm),
        words=WORDS,
        id2word={i: w for w, i in WORDS.items()},
        loglik_for=loglik_for,
        pdf_of=pdf_of,
        phones=PHONES,
        lexicon=LEXICON,
    )


@pytest.fixture(scope="session")
def tiny_am(tiny):
    """A GMM for ``tiny``: one unit-variance Gaussian per pdf, mean ``4 * e_pdf`` (dim num_pdfs).

    ``tiny_am.feats_for(words)`` gives (T, num_pdfs) features that sit on the means of the
    pdfs ``tiny.loglik_for(words)`` favours.
    """
    from pykaldi2.kaldi import khg

    P = tiny.tm.num_pdfs
    am = khg.AmDiagGmm()
    for p in range(P):
        g = khg.DiagGmm()
        g.resize(1, P)
        g.set_weights(np.ones(1, dtype=np.float32))
        mean = np.zeros((1, P), np.float32)
        mean[0, p] = 4.0
        g.set_invvars_and_means(np.ones((1, P), np.float32), mean)
        g.compute_gconsts()
        am.add_pdf(g)

    def feats_for(words: list[str]) -> np.ndarray:
        pdfs = tiny.loglik_for(words).argmax(1)
        feats = np.zeros((len(pdfs), P), np.float32)
        feats[np.arange(len(pdfs)), pdfs] = 4.0
        return feats

    return SimpleNamespace(am=am, feats_for=feats_for)


# The tiny topology with state 0 entered once (no self-loop): the same pdfs (and pdf count),
# other transition-ids. A graph built for one of the two models must not decode with the other.
TOPO_NO_LOOP0 = TOPO.replace(
    "<State> 0 <PdfClass> 0 <Transition> 0 0.5 <Transition> 1 0.5 </State>",
    "<State> 0 <PdfClass> 0 <Transition> 1 1.0 </State>",
)


def write_tiny_lang(path):
    """``tiny``'s lexicon and grammar as a lang dir (L_disambig.fst, G.fst, phones.txt,
    words.txt + <UNK> as the OOV word, phones/*.int) for ``pykaldi2 mkgraph``."""
    from pykaldi2.kaldi import kaldifst

    (path / "phones").mkdir(parents=True)
    (path / "phones.txt").write_text("".join(f"{p} {i}\n" for p, i in PHONES.items()))
    words = {**WORDS, "<UNK>": len(WORDS)}
    (path / "words.txt").write_text("".join(f"{w} {i}\n" for w, i in words.items()))
    (path / "oov.txt").write_text("<UNK>\n")
    for name, ids in (("disambig", [5, 6]), ("silence", [1]), ("nonsilence", [2, 3, 4]),
                      ("optional_silence", [1])):  # fmt: skip
        (path / "phones" / f"{name}.int").write_text("".join(f"{i}\n" for i in ids))
    kaldifst.compile(L_TEXT).write(str(path / "L_disambig.fst"))
    kaldifst.compile(G_TEXT).write(str(path / "G.fst"))
    return path


@pytest.fixture(scope="session")
def tiny_graphs(tiny, tiny_am, tmp_path_factory):
    """Two models of ``tiny``'s tree and GMMs that differ only in the topology (``a``: tiny's,
    ``b``: :data:`TOPO_NO_LOOP0`; same pdf count), each with its graph dir from
    ``pykaldi2 mkgraph``: ``model_a``/``model_b`` (final.mdl paths), ``graph_a``/``graph_b``,
    ``tm_b``, ``lang``."""
    from pykaldi2.cli.main import main
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import khg

    root = tmp_path_factory.mktemp("tiny_graphs")
    lang = write_tiny_lang(root / "lang")
    topo_b = khg.HmmTopology()
    topo_b.read(TOPO_NO_LOOP0)
    tm_b = khg.TransitionModel(tiny.ctx, topo_b)
    assert tm_b.num_pdfs == tiny.tm.num_pdfs
    assert tm_b.num_transition_ids < tiny.tm.num_transition_ids
    out = SimpleNamespace(lang=lang, tm_b=tm_b)
    for name, tm in (("a", tiny.tm), ("b", tm_b)):
        model = root / f"exp_{name}" / "final.mdl"
        GmmModel(tm=tm, tree=tiny.ctx, am=tiny_am.am).save(model)
        graph = root / f"exp_{name}" / "graph"
        assert main(["mkgraph", str(lang), str(model), str(graph)]) == 0
        setattr(out, f"model_{name}", model)
        setattr(out, f"graph_{name}", graph)
    return out
