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
