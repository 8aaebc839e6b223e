"""Ali dirs name the transition model their alignments were made with (issue 18 item 11): the
identity is a hash of the model's content (topology + tuples), checked against real Kaldi
transition models. train-ce's check: tests/unit/training/test_training_ce.py."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest


def _reference_text(trans_mdl_txt: str) -> str:
    """transition_model_text computed from the text form of a Kaldi TransitionModel
    (copy-transition-model --binary=false): its <Topology> entries and <Triples>/<Tuples>."""
    topo = trans_mdl_txt.split("<Topology>")[1].split("</Topology>")[0]
    phones: dict[int, str] = {}
    for entry in topo.split("<TopologyEntry>")[1:]:
        ids = entry.split("<ForPhones>")[1].split("</ForPhones>")[0].split()
        states = []
        for body in re.findall(r"<State>(.*?)</State>", entry, flags=re.S):
            tok = body.split()[1:]  # after the state index
            fwd = self_loop = -1
            arcs = []
            i = 0
            while i < len(tok):
                if tok[i] == "<PdfClass>":
                    fwd = self_loop = int(tok[i + 1])
                elif tok[i] == "<ForwardPdfClass>":
                    fwd = int(tok[i + 1])
                elif tok[i] == "<SelfLoopPdfClass>":
                    self_loop = int(tok[i + 1])
                elif tok[i] == "<Transition>":
                    arcs.append(f"{int(tok[i + 1])}:{float(tok[i + 2]):.6g}")
                    i += 1
                i += 2
            states.append(f"{fwd},{self_loop}>{','.join(arcs)}")
        for p in ids:
            phones[int(p)] = " ".join(states)
    lines = ["topology"] + [f"{p} {phones[p]}" for p in sorted(phones)] + ["tuples"]
    kind = "<Tuples>" if "<Tuples>" in trans_mdl_txt else "<Triples>"
    rows = trans_mdl_txt.split(kind)[1].split("</" + kind[1:])[0].split("\n")
    for row in rows[1:]:
        v = row.split()
        if v:
            lines.append(" ".join(v if len(v) == 4 else [v[0], v[1], v[2], v[2]]))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "tree, topo, trans_mdl",
    [
        ("exp/chain_tree/tree", "lang_chain/topo", "chain_ctree/0.trans_mdl.txt"),  # tuples
        ("exp/tri1/tree", "lang/topo", "chain/0.trans_mdl.txt"),  # triples (3-state HMMs)
    ],
)
def test_identity_is_the_content_of_real_kaldi_transition_models(kaldi_ref, tree, topo, trans_mdl):
    """Kaldi's tree + topology give khg a TransitionModel whose identity equals the hash of the
    topology and tuples Kaldi wrote (text form) for the same model: the identity depends on
    the content, not on a file format (so final.mdl in Kaldi's binary format keeps it)."""
    from pykaldi2.hmm.ali import transition_model_id, transition_model_text
    from pykaldi2.hmm.kaldi_io import read_tree
    from pykaldi2.hmm.topo import read_topo
    from pykaldi2.kaldi import khg

    an4 = kaldi_ref / "an4"
    data = (an4 / tree).read_bytes()
    assert data.startswith(b"\0B")  # Kaldi's binary-mode header
    tm = khg.TransitionModel(read_tree(an4 / tree), read_topo(an4 / topo))
    ref = _reference_text((an4 / trans_mdl).read_text())
    assert transition_model_text(tm) == ref
    assert transition_model_id(tm) == hashlib.sha256(ref.encode()).hexdigest()


def test_identity_ignores_trained_probabilities_and_tells_models_apart():
    import pickle

    from pykaldi2.hmm.ali import transition_model_id
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import khg
    from pykaldi2.lang.topo import TopoConfig, make_topo

    def model(nonsil, sil, cfg=TopoConfig()):
        topo = khg.HmmTopology()
        topo.read(make_topo(nonsil, sil, cfg))
        phones = sorted([*nonsil, *sil])
        tree = khg.monophone_context_dependency(phones, topo.get_phone_to_num_pdf_classes())
        return GmmModel(tm=khg.TransitionModel(tree, topo), tree=tree, am=khg.AmDiagGmm())

    a = model([2, 3], [1])
    first = transition_model_id(a.tm)
    before = np.asarray(a.tm.log_probs).copy()
    stats = np.arange(a.tm.num_transition_ids + 1, dtype=np.float64) + 10.0  # occupancies
    a.tm.mle_update(stats, khg.MleTransitionUpdateConfig())  # gmm-est's transition update
    assert not np.allclose(np.asarray(a.tm.log_probs), before)  # other trained probabilities
    assert transition_model_id(a.tm) == first  # the same model
    assert transition_model_id(pickle.loads(pickle.dumps(a)).tm) == first  # our final.mdl
    assert transition_model_id(model([2, 3, 4], [1]).tm) != first  # another phone set
    assert transition_model_id(model([2, 3], [1], TopoConfig.chain()).tm) != first  # topology
