"""Speaker-adapted training on synthetic speakers (each with its own affine distortion):
train-sat gains over the speaker-independent system, writes Kaldi transforms and the
alignment model; align-fmllr aligns new data with it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mono_config
from hmm_synth_data import make_synth, write_synth


@pytest.fixture(scope="module")
def spk_synth(tmp_path_factory):
    from pykaldi2.hmm.mono import train_mono

    root = tmp_path_factory.mktemp("sat")
    s = write_synth(make_synth(num_utts=40, seed=5, spk_transform=0.3), root)
    train_mono(s.data, s.lang, root / "mono", mono_config(totgauss=60))
    return s, root


def test_train_sat_and_align_fmllr(spk_synth):
    from pykaldi2.hmm.ali import read_ali
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.hmm.sat import SatConfig, align_fmllr, train_sat
    from pykaldi2.hmm.streams import read_matrix_ark
    from pykaldi2.hmm.tri import DeltasConfig, train_deltas

    s, root = spk_synth
    common = dict(
        num_leaves=24,
        tot_gauss=60,
        num_iters=6,
        max_iter_inc=4,
        realign_iters=[3],
        tree_thresh=20.0,
    )
    _, si_hist = train_deltas(s.data, s.lang, root / "mono", root / "tri", DeltasConfig(**common))
    cfg = SatConfig(**common, fmllr_iters=[2, 4], fmllr_min_count=50.0)
    sat, hist = train_sat(s.data, s.lang, root / "mono", root / "sat", cfg, nj=2)
    assert sat.info["sat"] and (root / "sat" / "final.alimdl").is_file()
    # adaptation helps: the data's likelihood (Gaussian + the transforms' log-determinant)
    sat_like = hist[-1]["like_per_frame"] + hist[-1]["logdet_per_frame"]
    assert sat_like > si_hist[-1]["like_per_frame"] + 0.2, (sat_like, si_hist[-1])
    trans = {
        **read_matrix_ark(root / "sat" / "trans.1"),
        **read_matrix_ark(root / "sat" / "trans.2"),
    }
    assert sorted(trans) == sorted({u.split("-")[0] for u in s.feats})
    assert all(t.shape == (sat.dim, sat.dim + 1) for t in trans.values())
    assert max(np.abs(t[:, :-1] - np.eye(sat.dim)).max() for t in trans.values()) > 0.01
    alimdl = GmmModel.load(root / "sat" / "final.alimdl")
    assert alimdl.am.num_gauss == sat.am.num_gauss and not alimdl.info.get("sat")
    # align-si refuses the SAT model; align-fmllr aligns with it
    from pykaldi2.hmm.ali_dir import align_si
    from pykaldi2.utils.errors import DataError

    with pytest.raises(DataError, match="align-fmllr"):
        align_si(s.data, s.lang, root / "sat", root / "bad_ali")
    res = align_fmllr(s.data, s.lang, root / "sat", root / "sat_ali", nj=2)
    assert res.num_done == len(s.feats) and not res.failed
    alis = {**read_ali(root / "sat_ali" / "ali.1.gz"), **read_ali(root / "sat_ali" / "ali.2.gz")}
    assert len(alis) == len(s.feats)
    assert (root / "sat_ali" / "trans.2").is_file() and (
        root / "sat_ali" / "final.alimdl"
    ).is_file()
