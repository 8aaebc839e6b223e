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


# ---- a full disk (#18): DiskFullError naming the file, nothing half written ----------------
def _enospc():
    import errno

    return OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_in_atomic_write_names_the_file_and_keeps_the_old_one(tmp_path):
    from pykaldi2.utils.io import DiskFullError

    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(DiskFullError) as e:
        with atomic_write(p) as f:
            f.write("new")
            raise _enospc()
    assert str(e.value).startswith(f"{p}: no space left on the device (")
    assert "(the previous version is kept). Fix: free disk space (df -h " in str(e.value)
    assert "run the same command again" in str(e.value)
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["f.txt"]
    with pytest.raises(DiskFullError, match=r"/d: no space left on the device"):
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("1")
            raise _enospc()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]
    with pytest.raises(ValueError):  # other errors pass through unchanged
        with atomic_write(tmp_path / "g") as f:
            raise ValueError("boom")


def test_torch_save_into_a_full_device_is_recognised():
    """torch.save may report a failed write as RuntimeError('unexpected pos ...') (seen on a
    full tmpfs); the file object of atomic_write records the OSError underneath (here from
    /dev/full, which answers every write with ENOSPC)."""
    import os

    import torch

    from pykaldi2.utils.io import _RecordingFile, is_disk_full

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "wb", buffering=0) as raw:
        rec = _RecordingFile(raw)
        with pytest.raises((RuntimeError, OSError)):
            torch.save({"w": torch.zeros(100_000)}, rec)
    assert is_disk_full(rec.error)


def test_check_free_space_and_library_texts(tmp_path, monkeypatch):
    from pykaldi2.utils import io as uio

    uio.check_free_space(tmp_path, 1, "x")
    monkeypatch.setattr(uio, "free_bytes", lambda path: 1000)
    with pytest.raises(uio.DiskFullError, match=r"arch\.h5: not enough space left on the "
                       r"device of .* \(1000 B free, 8\.0 MiB needed\); nothing was written"):  # fmt: skip
        uio.check_free_space(tmp_path, 8 << 20, "arch.h5")
    assert uio.is_disk_full(RuntimeError("Can't close (file write failed: errno = 28, ...)"))
    try:
        try:
            raise _enospc()
        except OSError:
            raise RuntimeError("wrapped") from None
    except RuntimeError as e:
        assert not uio.is_disk_full(e)  # `from None` hides the cause
    assert not uio.is_disk_full(OSError(13, "Permission denied"))


def test_append_jsonl_leaves_no_half_line(tmp_path, monkeypatch):
    import json
    import os

    from pykaldi2.utils.log import append_jsonl

    log = tmp_path / "log" / "train.jsonl"
    append_jsonl(log, {"step": 1})
    real = os.write

    def short_then_full(fd, data):  # half the line fits, then the disk is full
        if len(data) > 8:
            return real(fd, bytes(data[: len(data) // 2]))
        raise _enospc()

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError):
        append_jsonl(log, {"step": 2, "loss": 0.5})
    monkeypatch.setattr(os, "write", real)
    append_jsonl(log, {"step": 2})
    assert [json.loads(x) for x in log.read_text().splitlines()] == [{"step": 1}, {"step": 2}]
