"""The chain tree (steps/nnet3/chain/build_tree.sh) and convert-ali at 1/3 rate, against the
files real Kaldi wrote: ../shared/data/kaldi_reference/an4/exp/chain_tree (built from Kaldi's
tri1 alignments with lang_chain's topology, 500 leaves) and chain_ctree/supervision.ark."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from kaldi_reference_data import (
    an4_train_feats,
    canonical_acceptor,
    read_phones_lengths,
    read_supervision_ark,
)

from pykaldi2.hmm.ali import read_ali, split_to_phones
from pykaldi2.hmm.chain_tree import (
    ChainTreeConfig,
    TreeInputs,
    chain_build_tree,
    chain_monophone_model,
)
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.tri import convert_ali
from pykaldi2.kaldi import khg
from pykaldi2.lang.chain_supervision import SupervisionOptions, chain_get_supervision
from pykaldi2.lang.den_fst import map_arcs
from pykaldi2.lang.topo import TopoConfig, make_topo
from pykaldi2.utils.errors import DataError


@pytest.fixture(scope="module")
def an4(kaldi_ref):
    from pykaldi2.lang.lang_dir import load_lang

    r = kaldi_ref / "an4"
    lang = load_lang(r / "lang")
    topo = khg.HmmTopology()
    topo.read((r / "lang_chain" / "topo").read_text())
    return {
        "tri1": GmmModel.load(r / "exp" / "tri1" / "final.mdl"),
        "tri1_alis": read_ali(r / "exp" / "tri1_ali" / "ali.1.gz"),
        "kaldi": GmmModel.load(r / "exp" / "chain_tree" / "final.mdl"),
        "kaldi_alis": read_ali(r / "exp" / "chain_tree" / "ali.1.gz"),
        "topo": topo,
        "tree_inputs": TreeInputs(
            roots=lang.roots(),
            phone_sets=lang.read_int_sets("sets"),
            extra_questions=lang.read_int_sets("extra_questions"),
            ci_phones=lang.silence_phones,
        ),
        "dir": r,
    }


def test_convert_ali_at_one_third_rate_is_kaldis(an4):
    """convert-ali --frame-subsampling-factor=3 tri1 -> Kaldi's chain tree model: Kaldi's
    exp/chain_tree/ali.1.gz, transition-id for transition-id, for all 948 utterances."""
    tri1, kaldi = an4["tri1"], an4["kaldi"]
    for utt, ali in an4["tri1_alis"].items():
        ours = convert_ali(tri1, kaldi, ali, frame_subsampling_factor=3, utt=utt)
        assert np.array_equal(ours, an4["kaldi_alis"][utt]), utt
        assert len(ours) == (len(ali) + 2) // 3


@pytest.fixture(scope="module")
def chain_tree(an4, kaldi_ref):
    feats = an4_train_feats(kaldi_ref)
    return chain_build_tree(
        an4["tri1"], feats, an4["tri1_alis"], an4["topo"], an4["tree_inputs"],
        ChainTreeConfig(num_leaves=500),
    )  # fmt: skip


def test_chain_tree_from_kaldis_tri1_is_kaldis_chain_tree(an4, chain_tree):
    model, alis = chain_tree
    kaldi, kaldi_alis = an4["kaldi"], an4["kaldi_alis"]
    assert model.tm.num_pdfs == kaldi.tm.num_pdfs == 168
    assert (model.tree.context_width, model.tree.central_position) == (2, 1)
    assert set(alis) == set(kaldi_alis)
    # the same phone segments at 1/3 rate, and nearly the same pdf on every training frame:
    # Kaldi's pdfs and ours, paired frame by frame, are one-to-one but for a handful of frames
    # (AN4: 2 of 84,560, in one leaf of a rare context)
    pairs = Counter()
    for utt, ali in kaldi_alis.items():
        seg_k = [(p, n) for p, _, n in split_to_phones(kaldi, ali)]
        assert [(p, n) for p, _, n in split_to_phones(model, alis[utt])] == seg_k, utt
        pairs.update(zip(model.tid2pdf[alis[utt]].tolist(), kaldi.tid2pdf[ali].tolist()))
    total = sum(pairs.values())
    best_k: dict[int, tuple[int, int]] = {}
    best_o: dict[int, tuple[int, int]] = {}
    for (o, k), c in pairs.items():
        best_k[o] = max(best_k.get(o, (0, -1)), (c, k))
        best_o[k] = max(best_o.get(k, (0, -1)), (c, o))
    assert total == 84560
    assert sum(c for c, _ in best_k.values()) >= total - 10
    assert sum(c for c, _ in best_o.values()) >= total - 10


def test_chain_tree_supervision_is_kaldis(an4, chain_tree):
    """Our chain tree's supervision of the 20 utterances of chain_ctree/supervision.ark
    (Kaldi's chain tree): every one buildable (the GMM tree fails 7) and, with our pdfs
    renamed to the Kaldi pdf they share most training frames with, the same FSTs."""
    model, alis = chain_tree
    kaldi, kaldi_alis = an4["kaldi"], an4["kaldi_alis"]
    pairs = Counter()
    for utt, ali in kaldi_alis.items():
        pairs.update(zip(model.tid2pdf[alis[utt]].tolist(), kaldi.tid2pdf[ali].tolist()))
    to_kaldi: dict[int, int] = {}
    for (o, k), _ in sorted(pairs.items(), key=lambda x: -x[1]):
        to_kaldi.setdefault(o, k)
    d = an4["dir"] / "chain_ctree"
    theirs = read_supervision_ark(d / "supervision.ark")
    opts = SupervisionOptions(left_tolerance=5, right_tolerance=5, frame_subsampling_factor=3)
    segs = read_phones_lengths(d / "phones_lengths20.txt")
    assert len(segs) == len(theirs) == 20
    for utt, (phones, lengths) in segs.items():
        ours = chain_get_supervision(phones, lengths, model.tree, model.tm, opts, utt=utt)
        map_arcs(ours, lambda i, o, w, dst: (to_kaldi[i - 1] + 1, to_kaldi[o - 1] + 1, w, dst))
        assert canonical_acceptor(ours) == canonical_acceptor(theirs[utt][1]), utt


# ---- convert-ali with subsampling on small inputs ------------------------------------------


def three_state_model(phones=(1, 2, 3)):
    topo = khg.HmmTopology()
    topo.read(make_topo(list(phones), [], TopoConfig()))
    return chain_monophone_model(topo)


def alignment(model, segments):
    """A reordered alignment with the given (phone, [frames per HMM state]) segments."""
    out = []
    for p, frames in segments:
        for s, n in enumerate(frames):
            ts = model.tuple2tstate[(p, s, *_pdfs(model, p, s))]
            first = int(model.state2id[ts])
            loop = [t for t in range(first, int(model.state2id[ts + 1]))
                    if model.tid_is_self_loop[t]][0]  # fmt: skip
            fwd = [t for t in range(first, int(model.state2id[ts + 1])) if t != loop][0]
            out += [fwd] + [loop] * (n - 1)
    return np.asarray(out, dtype=np.int64)


def _pdfs(model, p, s):
    hmm = model.tm.topo.topology_for_phone(p)
    return (model.tree.compute([p], hmm[s].forward_pdf_class)[1],
            model.tree.compute([p], hmm[s].self_loop_pdf_class)[1])  # fmt: skip


def test_convert_ali_subsampled_borrows_frames_as_kaldi():
    """ComputeNewPhoneLengths: boundaries (t + 2) // 3; a phone left below its minimum length
    (3 for 3-state HMMs) takes a frame from the nearest phone that can spare one, the left
    one on a tie."""
    m = three_state_model()
    for frames, want in [
        # 12, 4, 12 frames: boundaries 0 12 16 28 -> 0 4 6 10: lengths 4 2 4 -> 3 3 4
        ([[4, 4, 4], [1, 2, 1], [4, 4, 4]], [3, 3, 4]),
        # 9, 4, 14 frames: 0 9 13 27 -> 0 3 5 9: 3 2 4; the left one cannot spare -> 3 3 3
        ([[3, 3, 3], [1, 2, 1], [5, 5, 4]], [3, 3, 3]),
    ]:
        ali = alignment(m, list(zip([1, 2, 3], frames)))
        out = convert_ali(m, m, ali, frame_subsampling_factor=3)
        assert len(out) == (len(ali) + 2) // 3
        segs = split_to_phones(m, out)
        assert [(p, n) for p, _, n in segs] == list(zip([1, 2, 3], want))
    with pytest.raises(DataError, match="too few"):  # 9 frames -> 3 at 1/3 rate for 3 phones
        short = alignment(m, [(1, [1, 1, 1]), (2, [1, 1, 1]), (3, [1, 1, 1])])
        convert_ali(m, m, short, frame_subsampling_factor=3, utt="short")


def test_convert_ali_to_chain_topology_has_one_forward_frame_per_phone():
    m = three_state_model()
    topo = khg.HmmTopology()
    topo.read(make_topo([1, 2, 3], [], TopoConfig.chain()))
    chain = chain_monophone_model(topo)
    ali = alignment(m, [(1, [3, 4, 2]), (2, [2, 2, 2]), (3, [5, 1, 1]), (1, [2, 2, 2])])
    out = convert_ali(m, chain, ali, frame_subsampling_factor=3)
    assert len(out) == (len(ali) + 2) // 3
    segs = split_to_phones(chain, out)
    assert [p for p, _, _ in segs] == [1, 2, 3, 1]
    for _, start, n in segs:  # reordered: the forward transition first, then self-loops
        assert not chain.tid_is_self_loop[out[start]]
        assert chain.tid_is_self_loop[out[start + 1 : start + n]].all()
    # the same at full rate keeps every boundary
    full = convert_ali(m, chain, ali)
    assert [(s, n) for _, s, n in split_to_phones(chain, full)] == [
        (s, n) for _, s, n in split_to_phones(m, ali)
    ]
