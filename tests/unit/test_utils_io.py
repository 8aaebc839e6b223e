import pytest

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_dir, atomic_write


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(ValueError):
        with atomic_write(p) as f:
            f.write("new")
            raise ValueError("boom")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_dir_replaces_only_on_success(tmp_path):
    d = tmp_path / "train"
    with atomic_dir(d) as tmp:
        (tmp / "a").write_text("1")
    assert (d / "a").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(d) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError
    assert sorted(x.name for x in d.iterdir()) == ["a"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["train"]


def test_data_error_message():
    e = DataError("empty transcript", file="text", line=3, utt="u1", fix="remove it")
    assert str(e) == "text:3 (utterance u1): empty transcript. Fix: remove it"
