"""The decoders' matrix sources (decode --feats / --loglik): an scp or ark split into NJ job
sources, every matrix once, compressed ones decoded as Kaldi does."""

from __future__ import annotations

import kaldiio
import numpy as np
import pytest

from pykaldi2.decoding.batch import matrix_tables
from pykaldi2.features.compressed import iter_kaldi_ark, load_kaldi_mat
from pykaldi2.utils.errors import DataError


@pytest.mark.parametrize("method", [2, None])  # CM (copy-feats --compress) and plain float
@pytest.mark.parametrize("nj", [1, 3])
def test_matrix_tables_read_every_matrix_once_as_kaldi(tmp_path, method, nj):
    rng = np.random.default_rng(1)
    mats = {f"u{i:02d}": (rng.normal(size=(11 + i, 5)) * 9).astype(np.float32) for i in range(7)}
    ark, scp = tmp_path / "m.ark", tmp_path / "m.scp"
    kaldiio.save_ark(str(ark), mats, scp=str(scp), compression_method=method)
    want = dict(iter_kaldi_ark(ark))
    for path in (scp, ark):
        sources, n = matrix_tables(path, nj)
        assert len(sources) == nj and n == (7 if path == scp else None)
        got = [(k, m) for src in sources for k, m in src]
        assert sorted(k for k, _ in got) == sorted(mats)  # each matrix in exactly one job
        for key, mat in got:
            assert mat.dtype == np.float32
            np.testing.assert_array_equal(mat, want[key])  # Kaldi's CopyToMat, not kaldiio's
    locs = dict(line.split() for line in scp.read_text().splitlines())
    for key, loc in locs.items():
        np.testing.assert_array_equal(want[key], load_kaldi_mat(loc))
        if method is None:
            np.testing.assert_array_equal(want[key], mats[key])


def test_matrix_tables_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match="no such matrix file"):
        matrix_tables(tmp_path / "absent.scp", 2)


@pytest.mark.parametrize("form", ["scp", "ark"])
def test_matrix_tables_read_kaldis_compressed_features_as_kaldi(kaldi_ref, tmp_path, form):
    """Kaldi's AN4 test feats.ark (copy-feats --compress=true) through decode's sources (2 jobs):
    the per-speaker sums equal Kaldi's own compute-cmvn-stats (data/test/cmvn.ark) bit for bit,
    i.e. every matrix is decoded as Kaldi's binaries decode it."""
    d = kaldi_ref / "an4" / "data" / "test"
    if form == "scp":
        path = tmp_path / "feats.scp"  # the scp's paths made absolute
        path.write_text(
            "".join(f"{k} {d / loc.split('/')[-1]}\n"
                    for k, loc in (line.split() for line in (d / "feats.scp").read_text().splitlines())),
        )  # fmt: skip
    else:
        path = d / "feats.ark"
    sources, _ = matrix_tables(path, 2)
    mats = {k: m for src in sources for k, m in src}
    spk2utt = [line.split() for line in (d / "spk2utt").read_text().splitlines()]
    assert sum(len(u) for _, *u in spk2utt) == len(mats)
    for line in (d / "cmvn.scp").read_text().splitlines()[:4]:
        spk, loc = line.split()
        utts = next(u for s, *u in spk2utt if s == spk)
        x = np.concatenate([mats[u] for u in utts]).astype(np.float64)
        kaldi = kaldiio.load_mat(f"{d / 'cmvn.ark'}:{loc.rpartition(':')[2]}")
        # compute-cmvn-stats adds frame after frame in double: a running sum, not a pairwise one
        np.testing.assert_array_equal(np.cumsum(x, axis=0)[-1], kaldi[0, :-1], err_msg=spk)
        assert kaldi[0, -1] == len(x)
