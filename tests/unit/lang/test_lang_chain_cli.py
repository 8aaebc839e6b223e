"""`pykaldi2 chain-est-phone-lm` and `chain-make-den-fst` on a tiny model and alignments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pykaldi2.cli.main import main
from pykaldi2.hmm.ali import write_ali
from pykaldi2.hmm.model import GmmModel
from pykaldi2.kaldi import kaldifst, khg
from pykaldi2.lang.den_fst import read_den_graph
from pykaldi2.lang.topo import TopoConfig, TopoEntry, make_topo


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    """A 1-state monophone model pickle and reordered alignments of two utterances."""
    d = tmp_path_factory.mktemp("chain_cli")
    entry = TopoEntry("left-to-right", 1)
    topo = khg.HmmTopology()
    topo.read(make_topo([1, 2, 3], [], TopoConfig(entry, entry)))
    ctx = khg.monophone_context_dependency([1, 2, 3], [0, 1, 1, 1])
    GmmModel(tm=khg.TransitionModel(ctx, topo), tree=ctx, am=khg.AmDiagGmm()).save(d / "final.mdl")
    # phone p: forward transition-id 2p on its first frame, then self-loops 2p-1 (reordered)
    alis = {
        "u1": np.array([2, 1, 1, 4, 3, 6, 5]),  # phones 1 2 3
        "u2": np.array([2, 1, 6, 5, 6, 4, 3, 3]),  # phones 1 3 3 2
    }
    write_ali(d / "ali.1.gz", alis)
    return d


def test_est_phone_lm_and_make_den_fst(exp, capsys):
    lm_path = exp / "phone_lm.fst"
    args = ["chain-est-phone-lm", "--ngram-order", "3", str(exp / "final.mdl")]
    assert main([*args, str(exp / "ali.1.gz"), str(lm_path)]) == 0
    lm = kaldifst.StdVectorFst.read(str(lm_path))
    # BOS -> phone 1 in both utterances: probability one
    (arc,) = list(kaldifst.ArcIterator(lm, lm.start))
    assert arc.ilabel == 1 and math.isclose(arc.weight.value, 0.0, abs_tol=1e-6)

    assert main(["chain-make-den-fst", str(exp / "final.mdl"), str(lm_path), str(exp)]) == 0
    graph = read_den_graph(exp / "den.fst", num_pdfs=3)
    assert graph.num_states > 0 and sorted(set(graph.pdf.tolist())) == [0, 1, 2]
    assert kaldifst.StdVectorFst.read(str(exp / "normalization.fst")).num_states > 0
    assert "den.fst" in capsys.readouterr().out


def test_missing_inputs_give_clear_errors(exp, capsys):
    missing = str(exp / "nope.fst")
    assert main(["chain-make-den-fst", str(exp / "final.mdl"), missing, str(exp)]) == 1
    err = capsys.readouterr().err
    assert "nope.fst" in err and "chain-est-phone-lm" in err
