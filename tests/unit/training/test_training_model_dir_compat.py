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


def test_damaged_final_pt_of_a_dir_written_before_checksums_is_named(tmp_path):
    """A dir without checksums.sha256 (written before them) still loads unchecked, but a
    truncated final.pt is a DataError naming the file (it was an OSError traceback)."""
    import shutil

    from pykaldi2.training.model_dir import load_final_dir
    from pykaldi2.utils.errors import DataError

    ce = tmp_path / "ce"
    shutil.copytree(FIXTURE / "ce", ce)
    data = (ce / "final.pt").read_bytes()
    (ce / "final.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"final\.pt: cannot read final\.pt"):
        load_final_dir(ce)


def test_export_dir_written_before_checksums_loads_and_is_still_checked(tmp_path):
    """An export dir of the old format (sizes and sha256 of file roles in model.yaml, no
    checksums.sha256) loads; a flipped byte in a file role is caught by model.yaml's sha256."""
    import shutil

    from pykaldi2.export.model_dir import load_model_dir
    from pykaldi2.utils.errors import DataError

    md = load_model_dir(FIXTURE / "export")
    assert md.kind == "gmm" and (md.file("nnet") / "final.pt").is_file()
    old = tmp_path / "export"
    shutil.copytree(FIXTURE / "export", old)
    _flip_byte(old / "model.mdl")
    with pytest.raises(DataError, match="'model' file fails its sha256 check"):
        load_model_dir(old)


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))
