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


def test_outputs_follow_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f") as f:
            f.write("x")
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
