"""add-deltas / splice-feats against hand-computed values and the slow numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.features.reference import add_deltas_reference, splice_feats_reference
from pykaldi2.features.transforms import DeltaConfig, add_deltas, splice_feats
from pykaldi2.utils.errors import Pykaldi2Error


def test_deltas_by_hand():
    # Kaldi's formula, window 1: d_t = (x_{t+1} - x_{t-1}) / 2, edges clamped;
    # dd = [0.25, 0, -0.5, 0, 0.25] over t-2..t+2
    x = np.array([[1.0], [2.0], [4.0]], np.float32)
    out = add_deltas(x, order=2, window=1)
    want = np.array([[1, 0.5, 0.75], [2, 1.5, 0.25], [4, 1.0, -0.75]], np.float32)
    np.testing.assert_allclose(out, want, atol=1e-6)
    # window 2 (Kaldi default): d_t = sum_j j x_{t+j} / 10
    x = np.array([[3.0], [1.0], [4.0], [1.0], [5.0]], np.float32)
    d = add_deltas(x, order=1, window=2)[:, 1]
    np.testing.assert_allclose(d, [0.0, -0.3, 0.4, 0.9, 0.6], atol=1e-6)


@pytest.mark.parametrize("order, window", [(2, 2), (1, 3), (3, 1), (0, 2)])
def test_deltas_match_reference(order, window):
    x = np.random.default_rng(order * 10 + window).standard_normal((37, 5)).astype(np.float32)
    got = add_deltas(x, order, window)
    assert got.shape == (37, 5 * (order + 1))
    np.testing.assert_allclose(got, add_deltas_reference(x, order, window), atol=1e-5)


@pytest.mark.parametrize("left, right", [(4, 4), (0, 3), (2, 0), (5, 7)])
def test_splice_matches_reference(left, right):
    x = np.random.default_rng(left + right).standard_normal((11, 3)).astype(np.float32)
    got = splice_feats(x, left, right)
    assert got.shape == (11, 3 * (left + 1 + right))
    np.testing.assert_array_equal(got, splice_feats_reference(x, left, right))
    # the centre block is the input itself
    np.testing.assert_array_equal(got[:, 3 * left : 3 * left + 3], x)


def test_empty_and_bad_input():
    e = np.zeros((0, 4), np.float32)
    assert add_deltas(e).shape == (0, 12)
    assert splice_feats(e, 1, 1).shape == (0, 12)
    with pytest.raises(Pykaldi2Error, match=r"\(T, F\)"):
        add_deltas(np.zeros(5))
    with pytest.raises(Pykaldi2Error, match="DeltaConfig"):
        DeltaConfig(order=-1)
    with pytest.raises(Pykaldi2Error, match="contexts"):
        splice_feats(np.zeros((3, 2)), -1, 0)
