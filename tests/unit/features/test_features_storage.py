"""HDF5 and Kaldi ark/scp storage, read back through one FeatureReader."""

from __future__ import annotations

import json
import pickle

import h5py
import kaldiio
import numpy as np
import pytest

from pykaldi2 import __version__
from pykaldi2.cli.main import main
from pykaldi2.features.extractors import FbankConfig
from pykaldi2.features.storage import (
    ArkFeatureWriter,
    HDF5FeatureWriter,
    copy_feats,
    open_features,
    open_writer,
)
from pykaldi2.utils.errors import DataError, Pykaldi2Error


@pytest.fixture
def mats():
    rng = np.random.default_rng(0)
    return {
        f"spk1-utt{i}": rng.standard_normal((5 + 7 * i, 4)).astype(np.float32) for i in range(4)
    }


def test_ark_round_trip_bit_exact_with_kaldiio(tmp_path, mats):
    with open_writer(tmp_path / "feats.ark") as w:
        for k, v in mats.items():
            w[k] = v
    assert isinstance(w, ArkFeatureWriter)
    scp = tmp_path / "feats.scp"
    lines = scp.read_text().splitlines()
    assert lines[0] == f"spk1-utt0 {tmp_path / 'feats.ark'}:10"
    # kaldiio reads our ark and scp bit for bit
    for k, v in kaldiio.load_ark(str(tmp_path / "feats.ark")):
        np.testing.assert_array_equal(v, mats[k])
    loaded = kaldiio.load_scp(str(scp))
    assert sorted(loaded) == sorted(mats)
    for k in mats:
        np.testing.assert_array_equal(loaded[k], mats[k])
    # and our reader reads both the scp (lazily, shapes from headers) and the bare ark
    for src in (scp, tmp_path / "feats.ark"):
        r = open_features(src)
        assert list(r.keys()) == list(mats) and len(r) == 4 and r.dim == 4
        for k, v in mats.items():
            assert r.shape(k) == v.shape
            np.testing.assert_array_equal(r[k], v)


def test_ark_written_by_kaldiio_and_compressed(tmp_path, mats):
    # Kaldi's own compressed matrices (CM) and double matrices (DM): shape() reads their headers
    kaldiio.save_ark(
        str(tmp_path / "c.ark"), mats, scp=str(tmp_path / "c.scp"), compression_method=2
    )
    r = open_features(tmp_path / "c.scp")
    for k, v in mats.items():
        assert r.shape(k) == v.shape
        np.testing.assert_allclose(r[k], v, atol=0.05)
    d = {k: v.astype(np.float64) for k, v in mats.items()}
    kaldiio.save_ark(str(tmp_path / "d.ark"), d, scp=str(tmp_path / "d.scp"))
    r = open_features(tmp_path / "d.scp")
    assert r.shape("spk1-utt3") == (26, 4) and r["spk1-utt3"].dtype == np.float32


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_hdf5_round_trip_and_metadata(tmp_path, mats, compression):
    cfg = FbankConfig(num_mel_bins=40)
    path = tmp_path / "feats.h5"
    with HDF5FeatureWriter(path, config=cfg.to_dict(), compression=compression) as w:
        for k, v in mats.items():
            w[k] = v
    with h5py.File(path) as f:
        ds = f["spk1-utt3"]
        assert ds.chunks is not None and ds.dtype == np.float32
        assert ds.compression == (None if compression == "none" else compression)
        assert json.loads(f.attrs["feature_config"]) == cfg.to_dict()
    r = open_features(path)
    assert sorted(r) == sorted(mats)
    for k, v in mats.items():
        np.testing.assert_array_equal(r[k], v)
        assert r.shape(k) == v.shape
    meta = r.metadata()
    assert meta["feature_config"]["num_mel_bins"] == 40
    assert meta["feat_type"] == "fbank" and meta["sample_rate"] == 16000.0
    assert meta["frame_shift"] == pytest.approx(0.01) and meta["dim"] == 4
    assert meta["pykaldi2_version"] == __version__
    # readers pickle (DataLoader workers) and reopen their files
    r2 = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(r2["spk1-utt1"], mats["spk1-utt1"])


def test_failed_write_leaves_nothing(tmp_path, mats):
    with pytest.raises(RuntimeError):
        with HDF5FeatureWriter(tmp_path / "x.h5") as w:
            w["a"] = mats["spk1-utt0"]
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        with ArkFeatureWriter(tmp_path / "x.ark") as w:
            w["a"] = mats["spk1-utt0"]
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_mixed_scp_and_datadir(tmp_path, mats):
    keys = list(mats)
    with open_writer(tmp_path / "a.h5") as w:
        for k in keys[:2]:
            w[k] = mats[k]
    with open_writer(tmp_path / "b.ark") as w:
        for k in keys[2:]:
            w[k] = mats[k]
    data = tmp_path / "data"
    data.mkdir()
    scp_lines = [f"{k} {tmp_path / 'a.h5'}:{k}" for k in keys[:2]]
    scp_lines += (tmp_path / "b.scp").read_text().splitlines()
    (data / "feats.scp").write_text("\n".join(scp_lines) + "\n")
    r = open_features(data)
    assert list(r) == keys
    for k in keys:
        np.testing.assert_array_equal(r[k], mats[k])
        assert r.shape(k) == mats[k].shape
    assert r.location(keys[0]).endswith(f"a.h5:{keys[0]}")


def test_reader_errors(tmp_path, mats):
    with pytest.raises(DataError, match="no feats.scp"):
        open_features(tmp_path)
    (tmp_path / "feats.scp").write_text("u1 /nope.ark:10\nu2\n")
    with pytest.raises(DataError, match="feats.scp:2"):
        open_features(tmp_path)
    (tmp_path / "feats.scp").write_text(f"u1 {tmp_path}/nope.ark:10\n")
    with pytest.raises(DataError, match=r"\(utterance u1\)"):
        open_features(tmp_path)["u1"]
    with open_writer(tmp_path / "a.h5") as w:
        w["u1"] = mats["spk1-utt0"]
        with pytest.raises(DataError, match="HDF5 dataset"):
            w["a/b"] = mats["spk1-utt0"]
    (tmp_path / "feats.scp").write_text(f"u2 {tmp_path}/a.h5:u2\n")
    with pytest.raises(DataError, match="not in the HDF5 archive"):
        open_features(tmp_path)["u2"]


def test_copy_feats_h5_to_ark_and_back(tmp_path, mats):
    cfg = FbankConfig(num_mel_bins=4)
    with open_writer(tmp_path / "a.h5", config=cfg.to_dict()) as w:
        for k, v in mats.items():
            w[k] = v
    assert main(["copy-feats", str(tmp_path / "a.h5"), str(tmp_path / "b.ark")]) == 0
    back = copy_feats(tmp_path / "b.scp", tmp_path / "c.h5", compression="lzf")
    loaded = kaldiio.load_scp(str(tmp_path / "b.scp"))
    for k, v in mats.items():
        np.testing.assert_array_equal(loaded[k], v)
        np.testing.assert_array_equal(back[k], v)
    assert (
        copy_feats(tmp_path / "a.h5", tmp_path / "d.h5").metadata()["feature_config"]
        == cfg.to_dict()
    )
    with pytest.raises(Pykaldi2Error, match="also the input"):
        copy_feats(tmp_path / "a.h5", tmp_path / "a.h5")


@pytest.mark.parametrize("method, token", [(2, "CM"), (3, "CM2"), (5, "CM3"), (None, None)])
def test_load_kaldi_mat_decodes_compressed_as_kaldi(tmp_path, method, token):
    """Compressed matrices (copy-feats --compress) of every format come back within a float
    step or two of kaldiio's decoding (ours is Kaldi's CopyToMat arithmetic, checked bit for
    bit against Kaldi's AN4 cmvn.ark in tests/unit/hmm); uncompressed ones unchanged."""
    from pykaldi2.features.compressed import load_kaldi_mat

    x = np.random.default_rng(0).normal(size=(57, 13)).astype(np.float32) * 7
    ark = tmp_path / "f.ark"
    scp = tmp_path / "f.scp"
    kaldiio.save_ark(str(ark), {"a": x, "b": x[:20] + 1}, scp=str(scp), compression_method=method)
    with open(ark, "rb") as fd:
        head = fd.read(40)
    if token is not None:
        assert f"\0B{token} ".encode() in head
    locs = dict(line.split() for line in scp.read_text().splitlines())
    fds: dict = {}
    for loc in locs.values():
        ours, theirs = load_kaldi_mat(loc, fd_dict=fds), kaldiio.load_mat(loc)
        assert ours.dtype == np.float32 and ours.shape == theirs.shape
        if token is None:
            np.testing.assert_array_equal(ours, theirs)
        else:
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=4e-6 * np.abs(theirs).max())
        assert not np.array_equal(load_kaldi_mat(loc), np.zeros_like(ours))
    for fd in fds.values():
        fd.close()
    from pykaldi2.features.compressed import iter_kaldi_ark

    got = dict(iter_kaldi_ark(ark))
    assert list(got) == ["a", "b"]
    for key, loc in locs.items():
        np.testing.assert_array_equal(got[key], load_kaldi_mat(loc))
    reader = open_features(ark)  # an .ark path: read whole through iter_kaldi_ark
    np.testing.assert_array_equal(reader["b"], got["b"])
