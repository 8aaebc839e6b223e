"""GmmModel on disk as a Kaldi exp dir: Kaldi's dirs load (features from final.mat/opts files),
ours are written in Kaldi's format, and old pickled final.mdl files still load."""

from __future__ import annotations

import logging
import pickle
import shutil

import numpy as np
import pytest

from pykaldi2.hmm import kaldi_io as kio
from pykaldi2.hmm.model import GmmModel
from pykaldi2.utils.errors import DataError


def test_kaldi_exp_dirs_load_with_their_feature_pipeline(kaldi_ref):
    mono = GmmModel.load(kaldi_ref / "an4/exp/mono/final.mdl")
    assert (mono.feat_type, mono.dim, mono.num_pdfs) == ("delta", 39, 109)
    assert mono.cmvn_config == (True, False) and mono.delta_config == (2, 2)
    tri2 = GmmModel.load(kaldi_ref / "an4/exp/tri2/final.mdl")
    assert tri2.feat_type == "lda" and tri2.transform.shape == (40, 117)
    # tri2/splice_opts is an empty line: splice-feats' defaults, +-4 frames (13 x 9 = 117)
    assert tri2.splice_context == (4, 4)
    x = np.random.default_rng(0).normal(size=(20, 13)).astype(np.float32)
    from pykaldi2.hmm.inputs import model_feats

    assert model_feats(tri2, x).shape == (20, 40) and model_feats(mono, x).shape == (20, 39)


def test_kaldi_model_saved_again_is_byte_identical(kaldi_ref, tmp_path):
    src = kaldi_ref / "an4/exp/tri2"
    GmmModel.load(src / "final.mdl").save(tmp_path / "final.mdl")
    for name in ("final.mdl", "tree", "final.mat"):
        assert (tmp_path / name).read_bytes() == (src / name).read_bytes(), name
    assert (tmp_path / "cmvn_opts").read_text() == "\n"
    assert (tmp_path / "splice_opts").read_text() == "--left-context=4 --right-context=4\n"
    back = GmmModel.load(tmp_path / "final.mdl")
    assert back.feat_type == "lda" and back.splice_context == (4, 4)


def test_our_model_round_trips_as_kaldi_files(mono_trained, tmp_path):
    model = mono_trained[0]
    model.info = {"system": "mono", "iters": 8}
    model.save(tmp_path / "final.mdl")
    raw = (tmp_path / "final.mdl").read_bytes()
    assert raw.startswith(b"\0B<TransitionModel> <Topology> ")
    assert (tmp_path / "tree").read_bytes().startswith(b"\0BContextDependency ")
    tm, am = kio.read_kaldi_model(tmp_path / "final.mdl")  # plain Kaldi reading
    assert am.num_pdfs == model.num_pdfs and am.num_gauss == model.am.num_gauss
    back = GmmModel.load(tmp_path / "final.mdl")
    assert (back.feat_type, back.info) == (model.feat_type, model.info)
    assert np.array_equal(back.tid2pdf, model.tid2pdf)
    assert kio.model_bytes(back.tm, back.am) == raw
    # text too (gmm-copy --binary=false), read back within the 7 printed digits
    back.save(tmp_path / "txt" / "final.mdl", binary=False)
    assert (tmp_path / "txt" / "final.mdl").read_bytes().startswith(b"<TransitionModel> \n")
    t = GmmModel.load(tmp_path / "txt" / "final.mdl")
    np.testing.assert_allclose(
        t.am.get_pdf(0).means_invvars, model.am.get_pdf(0).means_invvars, rtol=1e-6
    )


def test_pickled_model_of_earlier_versions_loads_and_converts(mono_trained, tmp_path, caplog):
    model = mono_trained[0]
    old = GmmModel.__new__(GmmModel)  # the fields an earlier GmmModel pickled
    old.__dict__.update(
        {k: getattr(model, k) for k in ("tm", "tree", "am", "feat_type", "transform", "splice")}
    )
    old.__dict__["info"] = {}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "final.mdl").write_bytes(pickle.dumps(old, protocol=5))
    with caplog.at_level(logging.WARNING):
        loaded = GmmModel.load(tmp_path / "old" / "final.mdl")
    assert "gmm-copy" in caplog.text
    assert loaded.cmvn_opts == "" and np.array_equal(loaded.tid2pdf, model.tid2pdf)
    from pykaldi2.cli.main import main

    assert (
        main(["gmm-copy", str(tmp_path / "old" / "final.mdl"), str(tmp_path / "old" / "final.mdl")])
        == 0
    )
    assert (tmp_path / "old" / "final.mdl").read_bytes()[:2] == b"\0B"
    assert GmmModel.load(tmp_path / "old" / "final.mdl").num_pdfs == model.num_pdfs


def test_model_dir_errors(kaldi_ref, tmp_path):
    shutil.copyfile(kaldi_ref / "an4/exp/mono/final.mdl", tmp_path / "final.mdl")
    with pytest.raises(DataError, match="no tree beside the model"):
        GmmModel.load(tmp_path / "final.mdl")
    shutil.copyfile(kaldi_ref / "an4/exp/tri1/tree", tmp_path / "tree")
    with pytest.raises(DataError, match="not the one of the model"):
        GmmModel.load(tmp_path / "final.mdl")
    shutil.copyfile(kaldi_ref / "an4/exp/mono/tree", tmp_path / "tree")
    (tmp_path / "cmvn_opts").write_text("--norm-vars=true --center=true\n")
    model = GmmModel.load(tmp_path / "final.mdl")
    with pytest.raises(DataError, match="--center=true"):
        _ = model.cmvn_config
