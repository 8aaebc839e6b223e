"""Model dirs written by an older pykaldi2 still load into the same model: the fixture
tests/fixtures/model_dirs_v0 (train-ce and train-chain final dirs written at commit 5969f80 by
tests/fixtures/make_model_dirs.py, with each model's outputs on a fixed input) is loaded by
today's readers and must give the same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "model_dirs_v0"


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FIXTURE / "outputs.npz"))


def _run(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x), torch.tensor([x.shape[1]])).numpy()


def test_ce_dir_written_before_loads(expected, one_thread):
    from pykaldi2.training.model_dir import load_final_dir

    md = load_final_dir(FIXTURE / "ce")
    assert (md.model_type, md.num_pdfs, md.feature_dim) == ("blstm", 12, 12)
    assert (md.chunk_size, md.left_context, md.right_context) == (8, 1, 2)
    assert md.features.cmvn == "utterance"
    np.testing.assert_array_equal(md.log_priors, expected["ce_log_priors"])
    np.testing.assert_allclose(_run(md.model, expected["input"]), expected["ce_logits"],
                               rtol=1e-6, atol=1e-6)  # fmt: skip


def test_chain_dir_written_before_loads(expected, one_thread):
    from pykaldi2.training.model_dir import load_chain_dir

    md = load_chain_dir(FIXTURE / "chain")
    assert (md.num_pdfs, md.feature_dim, md.frame_subsampling_factor) == (11, 12, 3)
    assert md.model.xent is not None and md.chunk_size == 0
    np.testing.assert_allclose(_run(md.model, expected["input"]), expected["chain_output"],
                               rtol=1e-6, atol=1e-6)  # fmt: skip
