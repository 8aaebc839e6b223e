"""mkgraph: HCLG from a lang dir on disk (homophones, disambiguation symbols, graph dir layout)."""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.lang.hclg import HclgConfig, fst_rmsymbols, make_hclg, mkgraph
from pykaldi2.utils.errors import DataError, Pykaldi2Error

# One-state HMMs (pdf class 0, self-loop 0.6): the smallest topology with a self-loop.
TOPO_1STATE = """<Topology>
<TopologyEntry>
<ForPhones>
1 2 3
</ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.6 <Transition> 1 0.4 </State>
<State> 1 </State>
</TopologyEntry>
</Topology>
"""
PHONES = ["<eps>", "SIL", "x", "y", "#0", "#1", "#2"]
WORDS = ["<eps>", "PAIR", "PEAR", "WHY", "<UNK>", "#0"]
# PAIR and PEAR are homophones (x y #1 / x y #2); WHY = y; SIL optional; #0:#0 loop.
L_DISAMBIG = """0 0 1 0
0 1 2 1
1 2 3 0
2 0 5 0
0 3 2 2
3 4 3 0
4 0 6 0
0 0 3 3
0 0 4 5
0
"""
# Bigram-ish G: PAIR is cheaper than PEAR; #0 backoff to a unigram state.
G_TEXT = """0 1 1 1 0.5
0 1 2 2 1.5
1 0 5 0 0.2
1 1 3 3 2.0
1 0.1
0 2 5 0 0.7
2 1 3 3 1.0
"""


@pytest.fixture()
def lang_and_model(tmp_path):
    from pykaldi2.kaldi import kaldifst, khg

    lang = tmp_path / "lang"
    (lang / "phones").mkdir(parents=True)
    (lang / "phones.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(PHONES)))
    (lang / "words.txt").write_text("".join(f"{w} {i}\n" for i, w in enumerate(WORDS)))
    for name, ids in [("disambig", "4 5 6"), ("silence", "1"), ("nonsilence", "2 3")]:
        (lang / "phones" / f"{name}.int").write_text(ids.replace(" ", "\n") + "\n")
    (lang / "phones" / "optional_silence.int").write_text("1\n")
    (lang / "oov.txt").write_text("<UNK>\n")
    (lang / "phones" / "word_boundary.int").write_text("1 nonword\n2 begin\n3 end\n")
    kaldifst.compile(L_DISAMBIG).write(str(lang / "L_disambig.fst"))
    kaldifst.compile(G_TEXT).write(str(lang / "G.fst"))
    topo = khg.HmmTopology()
    topo.read(TOPO_1STATE)
    ctx = khg.monophone_context_dependency([1, 2, 3], topo.get_phone_to_num_pdf_classes())
    return lang, ctx, khg.TransitionModel(ctx, topo)


def arcs_of(fst):
    from pykaldi2.kaldi import kaldifst

    return [
        (s, a.ilabel, a.olabel, a.nextstate)
        for s in range(fst.num_states)
        for a in kaldifst.ArcIterator(fst, s)
    ]


def test_mkgraph_writes_kaldi_graph_dir(lang_and_model, tmp_path):
    from pykaldi2.kaldi import kaldifst

    lang, ctx, tm = lang_and_model
    graph = mkgraph(lang, ctx, tm, tmp_path / "graph", HclgConfig(self_loop_scale=0.1))
    for name in ("HCLG.fst", "words.txt", "phones.txt", "disambig_tid.int", "num_pdfs"):
        assert (graph / name).is_file(), name
    assert (graph / "phones" / "word_boundary.int").read_text() == "1 nonword\n2 begin\n3 end\n"
    assert (graph / "num_pdfs").read_text() == f"{tm.num_pdfs}\n"
    tids = [int(t) for t in (graph / "disambig_tid.int").read_text().split()]
    assert len(tids) == 3 and min(tids) > tm.num_transition_ids  # #0 #1 #2
    hclg = kaldifst.StdVectorFst.read(str(graph / "HCLG.fst"))
    arcs = arcs_of(hclg)
    ilabels = {a[1] for a in arcs}
    assert max(ilabels) <= tm.num_transition_ids  # disambiguation symbols removed
    assert ilabels - {0} == set(range(1, tm.num_transition_ids + 1))  # every transition used
    assert {a[2] for a in arcs} == {0, 1, 2, 3}  # words only, no #0
    # add-self-loops: every non-self-loop tid state has a self-loop on some state
    assert any(s == d and il > 0 for s, il, _, d in arcs)


def test_homophones_are_decoded_by_their_lm_cost(lang_and_model):
    from pykaldi2.decoding.wfst import decode_faster, tid2pdf_of
    from pykaldi2.lang.lang_dir import load_lang

    lang_dir, ctx, tm = lang_and_model
    lang = load_lang(lang_dir)
    hclg = make_hclg(lang.read_L_disambig(), lang.read_G(), lang.disambig_phones, ctx, tm)

    def loglik(phones: list[int], frames: int = 3) -> np.ndarray:
        seq = [ctx.compute([p], 0)[1] for p in phones for _ in range(frames)]
        ll = np.full((len(seq), tm.num_pdfs), -30.0, np.float32)
        ll[np.arange(len(seq)), seq] = 0.0
        return ll

    tid2pdf = tid2pdf_of(tm)
    x, y, sil = 2, 3, 1
    assert decode_faster(hclg.fst, loglik([sil, x, y, sil]), tid2pdf).words == [1]  # PAIR < PEAR
    assert decode_faster(hclg.fst, loglik([x, y, sil, y]), tid2pdf).words == [1, 3]  # PAIR WHY


def test_fst_rmsymbols_replaces_labels_by_epsilon():
    from pykaldi2.kaldi import kaldifst

    fst = kaldifst.compile("0 1 7 1\n0 1 3 2\n1 2 8 8\n2\n")
    assert fst_rmsymbols(fst, [7, 8]) == 2
    assert sorted(a[1:3] for a in arcs_of(fst)) == [(0, 1), (0, 8), (3, 2)]
    assert fst_rmsymbols(fst, [8], output_side=True) == 1
    assert sorted(a[1:3] for a in arcs_of(fst)) == [(0, 0), (0, 1), (3, 2)]


def test_mkgraph_errors_name_the_problem(lang_and_model, tmp_path):
    from pykaldi2.kaldi import kaldifst

    lang, ctx, tm = lang_and_model
    L = kaldifst.compile(L_DISAMBIG)
    with pytest.raises(Pykaldi2Error, match="L_disambig o G.*words"):
        make_hclg(L, kaldifst.compile("0 1 9 9\n1\n"), [4, 5, 6], ctx, tm)  # word 9 not in L
    with pytest.raises(DataError, match=r"phones \[7\]"):
        make_hclg(kaldifst.compile("0 0 7 1\n0\n"), kaldifst.compile(G_TEXT), [4], ctx, tm)
    (lang / "G.fst").write_text("not an fst")
    with pytest.raises(DataError, match="G.fst could not be read"):
        mkgraph(lang, ctx, tm, tmp_path / "graph")
    (lang / "G.fst").unlink()
    with pytest.raises(DataError, match="G.fst"):
        mkgraph(lang, ctx, tm, tmp_path / "graph")
    assert not (tmp_path / "graph").exists()
    with pytest.raises(Pykaldi2Error):
        HclgConfig(self_loop_scale=-1.0)
    with pytest.raises(Pykaldi2Error, match="unknown"):
        HclgConfig.from_dict({"loopscale": 0.1})
    assert HclgConfig.from_dict(HclgConfig().to_dict()) == HclgConfig()
