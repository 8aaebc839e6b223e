import numpy as np
import pytest
import torch

from pykaldi2.data.datasets import (
    IGNORE,
    ChunkDataset,
    UtteranceDataset,
    collate_frames,
    match_targets,
)
from pykaldi2.losses.ce import frame_ce
from pykaldi2.nnet.priors import log_likelihoods, pdf_priors
from pykaldi2.utils.errors import DataError


def _data(lengths, dim=3):
    feats = {
        f"u{i}": np.arange(n * dim, dtype=np.float32).reshape(n, dim) for i, n in enumerate(lengths)
    }
    targets = {u: np.arange(len(x)) % 5 for u, x in feats.items()}
    return feats, targets


def test_chunks_cover_every_frame_with_context():
    feats, targets = _data([10, 25, 4])
    ds = ChunkDataset(feats, targets, chunk_size=8, left=2, right=1)
    covered = {u: np.zeros(len(x), bool) for u, x in feats.items()}
    for i in range(len(ds)):
        utt, x, y = ds[i]
        assert x.shape == (11, 3) and y.shape == (8,)
        start = ds.chunks[i][1]
        valid = y != IGNORE
        covered[utt][start : start + valid.sum()] = True
        np.testing.assert_array_equal(y[valid], targets[utt][start : start + valid.sum()])
        # centre frames equal the utterance frames; context clamps at the edges
        n = len(feats[utt])
        idx = np.clip(np.arange(start - 2, start + 9), 0, n - 1)
        np.testing.assert_array_equal(x, feats[utt][idx])
    assert all(c.all() for c in covered.values())


def test_mismatched_and_missing_targets():
    feats, targets = _data([10, 12, 9, 11, 8])
    targets["u1"] = targets["u1"][:5]
    del targets["u2"]
    chk = match_targets(feats, targets, tolerance=1, max_missing_fraction=0.5)
    assert (
        chk.utts == ["u0", "u3", "u4"]
        and chk.missing == ["u2"]
        and chk.mismatched == [("u1", 12, 5)]
    )
    with pytest.raises(DataError, match="u2: no targets"):
        match_targets(feats, targets, source="exp/ali/pdf.scp")


def test_collate_and_ce_ignore_padding():
    feats, targets = _data([4, 6])
    ds = UtteranceDataset(feats, targets)
    batch = collate_frames([ds[0], ds[1]])
    assert batch["feats"].shape == (2, 6, 3) and batch["lengths"].tolist() == [4, 6]
    assert (batch["targets"][0, 4:] == IGNORE).all()
    logits = torch.randn(2, 6, 5)
    out = frame_ce(logits, batch["targets"])
    ref = sum(
        torch.nn.functional.cross_entropy(logits[i, :n], batch["targets"][i, :n], reduction="sum")
        for i, n in enumerate([4, 6])
    )
    torch.testing.assert_close(out.loss, ref)
    assert out.count == 10


def test_priors():
    p = pdf_priors([np.array([0, 0, 1]), np.array([1, 1])], num_pdfs=3)
    assert p[0] == pytest.approx(0.4, rel=1e-6) and p[1] == pytest.approx(0.6, rel=1e-6)
    # pdf 2 never occurs: a huge prior (Kaldi nnet1) so that it never wins, even where the
    # network gives it a high posterior; a tiny prior made unseen pdfs win every frame
    ll = log_likelihoods(torch.tensor([[0.0, 0.0, 5.0]]), torch.log(torch.tensor(p)))
    assert ll[0, 2] < ll[0, 0] - 10
