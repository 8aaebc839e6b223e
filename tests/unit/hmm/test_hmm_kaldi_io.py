"""Kaldi's model files both ways (pykaldi2.hmm.kaldi_io), against files written by real Kaldi 5.5
(../shared/data/kaldi_reference: gmm-est / gmm-copy / copy-transition-model / build-tree /
copy-tree / est-lda / copy-matrix outputs, binary and text)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from pykaldi2.hmm import kaldi_io as kio
from pykaldi2.kaldi import khg
from pykaldi2.utils.errors import DataError

#: (file, its text copy) pairs of TransitionModel (+ AmDiagGmm) files written by Kaldi.
MODELS = [
    "an4/exp/mono/final.mdl",
    "an4/exp/mono/0.mdl",
    "an4/exp/tri1/final.mdl",
    "an4/chain/0.trans_mdl",  # TransitionModel alone, 3-state HMM topology
    "an4/chain_ctree/0.trans_mdl",  # 1-state chain topology: <Tuples>, <ForwardPdfClass>
    "yesno/exp/mono0a/final.mdl",
]


def _bytes(path) -> bytes:
    return path.read_bytes()


@pytest.mark.parametrize(
    "name", MODELS + ["an4/exp/tri2/final.mdl", "an4/exp/chain_tree/final.mdl"]
)
def test_binary_model_written_back_is_byte_identical(kaldi_ref, name):
    tm, am = kio.read_kaldi_model(kaldi_ref / name)
    assert kio.model_bytes(tm, am, binary=True) == _bytes(kaldi_ref / name)


@pytest.mark.parametrize("name", MODELS)
def test_text_model_written_is_kaldis_text(kaldi_ref, name):
    """Our text write of the binary model equals Kaldi's gmm-copy --binary=false output."""
    tm, am = kio.read_kaldi_model(kaldi_ref / name)
    assert kio.model_bytes(tm, am, binary=False) == _bytes(kaldi_ref / (name + ".txt"))


def _parse_kaldi_text_model(text: str) -> dict:
    """An independent, regex-level reading of a Kaldi text model: tuples, log-probs, GMMs."""
    out: dict = {}
    m = re.search(r"<(Triples|Tuples)> (\d+) \n(.*?)</\1>", text, re.S)
    width = 3 if m.group(1) == "Triples" else 4
    rows = np.array(m.group(3).split(), dtype=np.int64).reshape(int(m.group(2)), width)
    if width == 3:
        rows = np.concatenate([rows, rows[:, 2:3]], axis=1)
    out["tuples"] = rows
    lp = re.search(r"<LogProbs> \n \[(.*?)\]", text, re.S).group(1)
    out["log_probs"] = np.array(lp.split(), dtype=np.float64)
    gmms = []
    for g in re.finditer(
        r"<WEIGHTS>  \[(.*?)\]\n<MEANS_INVVARS>  \[(.*?)\]\n<INV_VARS>  \[(.*?)\]", text, re.S
    ):
        w = np.array(g.group(1).split(), dtype=np.float64)
        mi = np.array([r.split() for r in g.group(2).strip().splitlines()], dtype=np.float64)
        iv = np.array([r.split() for r in g.group(3).strip().splitlines()], dtype=np.float64)
        gmms.append((w, mi, iv))
    out["gmms"] = gmms
    return out


@pytest.mark.parametrize("name", ["an4/exp/mono/final.mdl", "an4/exp/tri1/final.mdl"])
def test_written_model_read_back_matches_kaldis_text_field_by_field(kaldi_ref, tmp_path, name):
    """Read Kaldi's binary model, write it (binary), read ours back: every field equals what
    Kaldi's text file (parsed independently of kaldi_io) says, within its 7 printed digits;
    reading Kaldi's text file with kaldi_io gives the same fields too."""
    tm, am = kio.read_kaldi_model(kaldi_ref / name)
    kio.write_kaldi_model(tmp_path / "m.mdl", tm, am)
    ours_tm, ours_am = kio.read_kaldi_model(tmp_path / "m.mdl")
    txt_tm, txt_am = kio.read_kaldi_model(kaldi_ref / (name + ".txt"))
    ref = _parse_kaldi_text_model((kaldi_ref / (name + ".txt")).read_text())
    for t, a in ((ours_tm, ours_am), (txt_tm, txt_am)):
        assert np.array_equal(kio.transition_model_tuples(t), ref["tuples"])
        np.testing.assert_allclose(t.log_probs, ref["log_probs"], rtol=1e-6, atol=1e-7)
        assert kio.topology_entries(t.topo) == kio.topology_entries(tm.topo)
        assert a.num_pdfs == len(ref["gmms"]) == t.num_pdfs
        for p, (w, mi, iv) in enumerate(ref["gmms"]):
            g = a.get_pdf(p)
            np.testing.assert_allclose(g.weights, w, rtol=1e-6)
            np.testing.assert_allclose(g.means_invvars, mi, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(g.inv_vars, iv, rtol=1e-6)
    # the derived tables agree with Kaldi's own (khg's) reading of the same numbers
    assert list(ours_tm.id2pdf_id) == list(tm.id2pdf_id)
    assert ours_am.num_gauss == am.num_gauss


def test_model_sizes_are_kaldis(kaldi_ref):
    """gmm-info numbers of the README (109/984 mono, 416/2507 tri1, 424/3006 tri2)."""
    for name, pdfs, gauss in (("mono", 109, 984), ("tri1", 416, 2507), ("tri2", 424, 3006)):
        tm, am = kio.read_kaldi_model(kaldi_ref / "an4/exp" / name / "final.mdl")
        assert (tm.num_pdfs, am.num_pdfs, am.num_gauss) == (pdfs, pdfs, gauss)


def test_transition_model_derived_tables_equal_kaldis_constructor(kaldi_ref):
    """make_transition_model (ComputeDerived / ComputeDerivedOfProbs written in Python) gives
    exactly the tables of Kaldi's own TransitionModel constructor, for HMM and chain topologies."""
    from pykaldi2.hmm.topo import read_topo

    for topo_file in ("an4/lang/topo", "an4/lang_chain/topo"):
        topo = read_topo(kaldi_ref / topo_file)
        tree = kio.read_tree(kaldi_ref / "an4/exp/tri1/tree")
        if "chain" in topo_file:
            tree = kio.read_tree(kaldi_ref / "an4/exp/chain_tree/tree")
        ref = khg.TransitionModel(ctx_dep=tree, hmm_topo=topo)
        ours = kio.make_transition_model(topo, kio.transition_model_tuples(ref))
        a, b = ref.__getstate__(), ours.__getstate__()
        for i in (2, 3, 4, 5, 6, 7):  # state2id, id2state, id2pdf, num_pdfs, log-probs, nsl
            assert a[i] == b[i], i


@pytest.mark.parametrize("system", ["mono", "tri1", "tri2"])
def test_tree_both_formats(kaldi_ref, system):
    d = kaldi_ref / "an4/exp" / system
    tree = kio.read_tree(d / "tree")
    assert kio.tree_bytes(tree, binary=True) == _bytes(d / "tree")  # \0B header included
    assert kio.tree_bytes(tree, binary=False) == _bytes(d / "tree.txt")
    from_text = kio.read_tree(d / "tree.txt")
    assert (from_text.num_pdfs, from_text.context_width) == (tree.num_pdfs, tree.context_width)
    rng = np.random.default_rng(0)
    n = tree.context_width
    for _ in range(300):
        window = rng.integers(0, 143, size=n).tolist()
        window[tree.central_position] = int(rng.integers(1, 143))
        for pc in range(3):
            assert from_text.compute(window, pc) == tree.compute(window, pc)


def test_tree_without_header_from_older_pykaldi2_still_reads(kaldi_ref, tmp_path):
    raw = _bytes(kaldi_ref / "an4/exp/mono/tree")
    (tmp_path / "tree").write_bytes(raw[2:])  # what pykaldi2 wrote before the header fix
    assert kio.read_tree(tmp_path / "tree").num_pdfs == 109


def test_matrix_and_vector_files(kaldi_ref, tmp_path):
    d = kaldi_ref / "an4/exp/tri2"
    m = kio.read_matrix(d / "final.mat")
    assert m.shape == (40, 117)  # empty splice_opts: splice-feats' default +-4 frames, 13 x 9
    np.testing.assert_allclose(kio.read_matrix(d / "final.mat.txt"), m, rtol=1e-6, atol=1e-7)
    kio.write_matrix(tmp_path / "a.mat", m)
    assert _bytes(tmp_path / "a.mat") == _bytes(d / "final.mat")
    kio.write_matrix(tmp_path / "a.mat.txt", m, binary=False)
    assert _bytes(tmp_path / "a.mat.txt") == _bytes(d / "final.mat.txt")
    occs = kio.read_vector(d / "final.occs")
    assert len(occs) == 424
    kio.write_vector(tmp_path / "occs", occs)
    assert _bytes(tmp_path / "occs") == _bytes(d / "final.occs")


def test_our_models_round_trip(kaldi_ref, tmp_path):
    """A model built with khg (our gmm-init-mono path) written and read back is identical."""
    from pykaldi2.hmm.topo import read_topo

    topo = read_topo(kaldi_ref / "an4/lang/topo")
    tree = khg.monophone_context_dependency(
        phones=topo.phones, phone2num_pdf_classes=topo.get_phone_to_num_pdf_classes()
    )
    tm = khg.TransitionModel(ctx_dep=tree, hmm_topo=topo)
    am = khg.AmDiagGmm()
    rng = np.random.default_rng(1)
    for _ in range(tm.num_pdfs):
        g = khg.DiagGmm(nmix=2, dim=4)
        g.set_weights(np.array([0.25, 0.75], np.float32))
        g.set_means(rng.normal(size=(2, 4)).astype(np.float32))
        g.set_invvars(rng.uniform(0.5, 2, size=(2, 4)).astype(np.float32))
        g.compute_gconsts()
        am.add_pdf(g)
    for binary in (True, False):
        path = tmp_path / f"m{int(binary)}.mdl"
        kio.write_kaldi_model(path, tm, am, binary=binary)
        tm2, am2 = kio.read_kaldi_model(path)
        assert kio.model_bytes(tm2, None, binary) == kio.model_bytes(tm, None, binary)
        if binary:  # exact; text keeps 7 digits (and Kaldi recomputes the gconsts from them)
            assert kio.model_bytes(tm2, am2) == path.read_bytes()
            assert tm2.__getstate__()[2:] == tm.__getstate__()[2:]
        for p in range(am.num_pdfs):
            a, b = am.get_pdf(p), am2.get_pdf(p)
            np.testing.assert_allclose(b.means_invvars, a.means_invvars, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(b.gconsts, a.gconsts, rtol=1e-5)
    kio.write_tree(tmp_path / "tree", tree)
    assert (tmp_path / "tree").read_bytes().startswith(b"\0BContextDependency ")
    t2 = kio.read_tree(tmp_path / "tree")
    for phone, pc in itertools.product(topo.phones, range(3)):
        assert t2.compute([phone], pc) == tree.compute([phone], pc)


def test_bad_files_are_clear_errors(kaldi_ref, tmp_path):
    raw = _bytes(kaldi_ref / "an4/exp/mono/final.mdl")
    (tmp_path / "cut.mdl").write_bytes(raw[:5000])
    with pytest.raises(DataError, match=r"cut\.mdl.*end of file"):
        kio.read_kaldi_model(tmp_path / "cut.mdl")
    trans_only = _bytes(kaldi_ref / "an4/chain/0.trans_mdl")
    (tmp_path / "nnet.mdl").write_bytes(trans_only + b"<Nnet3> \n")
    with pytest.raises(DataError, match="read_transition_model_file"):
        kio.read_kaldi_model(tmp_path / "nnet.mdl")
    assert kio.read_transition_model_file(tmp_path / "nnet.mdl").num_pdfs == 416
    (tmp_path / "tree").write_bytes(b"\0BContextDependency \x04\x03\x00\x00\x00 oops")
    with pytest.raises(DataError, match="tree"):
        kio.read_tree(tmp_path / "tree")
    with pytest.raises(DataError, match="no such file"):
        kio.read_kaldi_model(tmp_path / "missing.mdl")
