"""The model directory format: round trip, version checks, missing/changed files, atomicity."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import pykaldi2
from pykaldi2.export import model_dir as mdir
from pykaldi2.export.model_dir import load_model_dir, save_model_dir
from pykaldi2.utils.errors import DataError


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "src").mkdir()
    hclg = tmp_path / "src" / "HCLG.fst"
    hclg.write_bytes(b"\x00fst" * 100)
    words = tmp_path / "src" / "words.txt"
    words.write_text("<eps> 0\nYES 1\nNO 2\n")
    lang = tmp_path / "src" / "lang"
    (lang / "phones").mkdir(parents=True)
    (lang / "phones" / "silence.txt").write_text("SIL\n")
    return {"HCLG": hclg, "words": words, "lang": lang}


def _rewrite_yaml(path: Path, **changes) -> None:
    meta = yaml.safe_load((path / "model.yaml").read_text())
    meta.update(changes)
    (path / "model.yaml").write_text(yaml.safe_dump(meta))


def test_round_trip(tmp_path: Path, sources) -> None:
    out = tmp_path / "model"
    cfg = {"features": {"feat_type": "mfcc", "num_ceps": 13}, "decoder": {"beam": 11.0}}
    md = save_model_dir(out, "gmm", files=sources, configs=cfg)
    assert md.kind == "gmm" and md.format_version == mdir.FORMAT_VERSION
    assert md.pykaldi2_version == pykaldi2.__version__
    assert md.file("HCLG").read_bytes() == sources["HCLG"].read_bytes()
    assert md.file("words").name == "words.txt"
    assert (md.file("lang") / "phones" / "silence.txt").read_text() == "SIL\n"
    again = load_model_dir(out, verify=True)
    assert again.configs == cfg and again.files == md.files
    assert again.config("decoder")["beam"] == 11.0
    assert again.config("cmvn", {"norm_vars": False}) == {"norm_vars": False}
    with pytest.raises(DataError, match="no 'tokenizer' file"):
        again.file("tokenizer")
    with pytest.raises(DataError, match="no 'model' config"):
        again.config("model")
    # no temp dirs are left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "src"]


def test_torch_state(tmp_path: Path) -> None:
    import torch

    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    md = save_model_dir(tmp_path / "m", "transducer", state=state, configs={"model": {"d": 3}})
    got = load_model_dir(md.path).load_state()
    assert torch.equal(got["w"], state["w"]) and torch.equal(got["b"], state["b"])


def test_newer_and_older_formats(tmp_path: Path, sources) -> None:
    out = tmp_path / "m"
    save_model_dir(out, "gmm", files=sources)
    _rewrite_yaml(out, format_version=mdir.FORMAT_VERSION + 1, pykaldi2_version="9.9.9")
    with pytest.raises(DataError, match=r"written by pykaldi2 9\.9\.9.*upgrade pykaldi2"):
        load_model_dir(out)
    # a newer format from this very version (a development build or an edited model.yaml):
    # upgrading to the version that runs now cannot help
    for writer in (pykaldi2.__version__, f"{pykaldi2.__version__}.dev3+g1a2b", "0.0.9"):
        _rewrite_yaml(out, format_version=mdir.FORMAT_VERSION + 1, pykaldi2_version=writer)
        with pytest.raises(DataError) as e:
            load_model_dir(out)
        assert "upgrade" not in str(e.value) and f"names pykaldi2 {writer} as its" in str(e.value)
        assert f"re-export the model with this pykaldi2 {pykaldi2.__version__}" in str(e.value)
    _rewrite_yaml(out, format_version=mdir.MIN_FORMAT_VERSION - 1, pykaldi2_version="0.0.1")
    with pytest.raises(DataError, match=r"older than this pykaldi2.*re-export"):
        load_model_dir(out)
    _rewrite_yaml(out, format_version="1")
    with pytest.raises(DataError, match="no integer format_version"):
        load_model_dir(out)
    _rewrite_yaml(out, format_version=mdir.FORMAT_VERSION, kind="hmm")
    with pytest.raises(DataError, match="unknown model kind 'hmm'"):
        load_model_dir(out)


def test_missing_and_changed_files(tmp_path: Path, sources) -> None:
    with pytest.raises(DataError, match="no model.yaml"):
        load_model_dir(tmp_path)
    out = tmp_path / "m"
    md = save_model_dir(out, "gmm", files=sources)
    md.file("words").write_text("<eps> 0\nYES 1\nNo 2\n")  # same size, other bytes
    load_model_dir(out, verify=False)
    with pytest.raises(DataError, match="words.txt fails its sha256 check"):
        load_model_dir(out)  # verified by default (issue 18 item 9: it loaded silently)
    md.file("words").write_text("<eps> 0\n")
    with pytest.raises(DataError, match="truncated or changed"):
        load_model_dir(out)
    md.file("HCLG").unlink()
    with pytest.raises(DataError, match=r"'HCLG' file HCLG.fst listed in model.yaml is missing"):
        load_model_dir(out)
    (out / "model.yaml").write_text("format_version: [1\n")
    with pytest.raises(DataError, match="unreadable YAML"):
        load_model_dir(out)


def test_save_errors_leave_nothing(tmp_path: Path, sources) -> None:
    out = tmp_path / "m"
    with pytest.raises(ValueError, match="kind 'hmm'"):
        save_model_dir(out, "hmm", files=sources)
    with pytest.raises(DataError, match="role 'tree' not found"):
        save_model_dir(out, "gmm", files={"tree": tmp_path / "nope"})
    with pytest.raises(ValueError, match="bad file role"):
        save_model_dir(out, "gmm", files={"a/b": sources["words"]})
    with pytest.raises(ValueError, match="plain values"):
        save_model_dir(out, "gmm", configs={"x": {"f": object()}})
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    save_model_dir(out, "gmm", files=sources)
    with pytest.raises(DataError, match="model directory exists"):
        save_model_dir(out, "gmm", files=sources)
    save_model_dir(out, "hybrid", files=sources, overwrite=True)
    assert load_model_dir(out).kind == "hybrid"


def test_load_hybrid_model_without_nnet(tmp_path: Path, sources) -> None:
    save_model_dir(tmp_path / "m", "hybrid", files=sources)
    with pytest.raises(DataError, match="this hybrid model has no 'nnet' file"):
        pykaldi2.load_model(tmp_path / "m")


def test_checksums_cover_every_file(tmp_path: Path, sources) -> None:
    """checksums.sha256 lists every file, model.yaml and those inside directory roles included
    (model.yaml's own list has no hash for a directory): a flipped byte anywhere is named."""
    out = tmp_path / "m"
    save_model_dir(out, "gmm", files=sources)
    listed = [ln.split("  ", 1)[1] for ln in (out / "checksums.sha256").read_text().splitlines()]
    assert listed == ["HCLG.fst", "lang/phones/silence.txt", "model.yaml", "words.txt"]
    (out / "lang" / "phones" / "silence.txt").write_text("SIX\n")
    with pytest.raises(DataError, match=r"lang/phones/silence\.txt fails its sha256 check"):
        load_model_dir(out)
