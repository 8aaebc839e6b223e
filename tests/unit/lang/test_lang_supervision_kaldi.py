"""chain-get-supervision against real Kaldi: the numerator FSTs Kaldi wrote for 20 AN4
utterances (../shared/data/kaldi_reference/an4/{chain,chain_ctree}/supervision.ark, from
Kaldi's trees and transition models, tolerance 5, frame subsampling 3)."""

from __future__ import annotations

import pytest
from kaldi_reference_data import canonical_acceptor, read_phones_lengths, read_supervision_ark

from pykaldi2.hmm import kaldi_io
from pykaldi2.lang.chain_supervision import SupervisionOptions, chain_get_supervision
from pykaldi2.utils.errors import DataError

#: The 7 utterances Kaldi cannot supervise with the tri1 tree (3-state HMMs at 1/3 rate).
KALDI_FAILS = {"fash-cen4-fash-b", "fash-cen7-fash-b", "fbbh-an86-fbbh-b", "fbbh-an87-fbbh-b",
               "fbbh-an89-fbbh-b", "fbbh-cen1-fbbh-b", "fbbh-cen3-fbbh-b"}  # fmt: skip


@pytest.mark.parametrize("name, fails", [("chain", KALDI_FAILS), ("chain_ctree", set())])
def test_supervision_is_kaldis(kaldi_ref, name, fails):
    d = kaldi_ref / "an4" / name
    tree = kaldi_io.read_tree(d / "tree")
    tm = kaldi_io.read_transition_model_file(d / "0.trans_mdl")
    theirs = read_supervision_ark(d / "supervision.ark")
    segs = read_phones_lengths(d / "phones_lengths20.txt")
    assert len(segs) == 20 and set(theirs) == set(segs) - fails
    opts = SupervisionOptions(left_tolerance=5, right_tolerance=5, frame_subsampling_factor=3)
    for utt, (phones, lengths) in segs.items():
        if utt in fails:
            with pytest.raises(DataError, match="no HMM path"):
                chain_get_supervision(phones, lengths, tree, tm, opts, utt=utt)
            continue
        ours = chain_get_supervision(phones, lengths, tree, tm, opts, utt=utt)
        assert canonical_acceptor(ours) == canonical_acceptor(theirs[utt][1]), utt
        frames = int(theirs[utt][0].split("<FramesPerSeq>")[1].split()[0])
        assert frames == -(-sum(lengths) // 3)
