"""chain_compute: chunked inference of a chain model equals whole-utterance inference when the
model has no memory across frames (so only the chunk/offset bookkeeping is tested)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pykaldi2.decoding.nnet import chain_compute, chain_windows
from pykaldi2.utils.errors import Pykaldi2Error


class FrameModel(torch.nn.Module):
    """(N, T, F) -> (N, ceil(T / 3), P): a per-frame linear map of every third frame."""

    def __init__(self, f: int, p: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(f, p)

    def forward(self, x, lengths):
        return self.lin(x[:, ::3])


def _md(chunk: int, left: int, right: int):
    return SimpleNamespace(
        model=FrameModel(4, 5), feature_dim=4, frame_subsampling_factor=3,
        chunk_size=chunk, chunk_left_context=left, chunk_right_context=right,
    )  # fmt: skip


def test_chunked_chain_compute_equals_whole_utterances():
    rng = np.random.default_rng(0)
    feats = {f"u{n}": rng.normal(size=(n, 4)).astype(np.float32) for n in (1, 7, 12, 31, 50)}
    whole = dict(chain_compute(_md(0, 0, 0), feats, list(feats)))
    for chunk, left, right in [(9, 0, 0), (9, 3, 2), (12, 6, 5), (30, 3, 0)]:
        got = dict(chain_compute(_md(chunk, left, right), feats, list(feats)))
        for utt in feats:
            assert got[utt].shape == (-(-len(feats[utt]) // 3), 5)
            np.testing.assert_allclose(got[utt], whole[utt], rtol=1e-6, atol=1e-6)


def test_chain_windows_start_on_the_output_grid():
    starts, idx = chain_windows(31, 3, 9, 3, 2)
    assert starts == [0, 3, 6, 8]  # 11 output frames, chunks of 3, the last shifted back
    assert idx.shape == (4, 14)
    assert idx[0, :4].tolist() == [0, 0, 0, 0] and idx[3, 3] == 24 and idx[3, -1] == 30


class CumsumModel(FrameModel):
    """Every output sees all earlier frames (a running sum): chunking changes the outputs."""

    def forward(self, x, lengths):
        return self.lin(torch.cumsum(x, dim=1)[:, ::3])


def test_utterance_mode_runs_whole_utterances_on_a_chunk_trained_model():
    rng = np.random.default_rng(1)
    feats = {"u": rng.normal(size=(50, 4)).astype(np.float32)}
    whole = SimpleNamespace(**{**vars(_md(0, 0, 0)), "model": CumsumModel(4, 5)})
    chunked = SimpleNamespace(**{**vars(_md(9, 3, 2)), "model": CumsumModel(4, 5)})
    ref = dict(chain_compute(whole, feats, ["u"]))["u"]
    by_chunk = dict(chain_compute(chunked, feats, ["u"]))["u"]
    by_utt = dict(chain_compute(chunked, feats, ["u"], mode="utterance"))["u"]
    np.testing.assert_allclose(by_utt, ref, rtol=1e-6, atol=1e-6)
    assert not np.allclose(by_chunk, ref, atol=1e-3)  # the chunks really are different input
    with pytest.raises(Pykaldi2Error, match="inference mode"):
        next(chain_compute(chunked, feats, ["u"], mode="sentence"))
