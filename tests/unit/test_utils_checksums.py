"""checksums.sha256 of a model dir: the sha256sum format, and every way a dir can fail it."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from pykaldi2.utils.checksums import MANIFEST, read_checksums, verify_checksums, write_checksums
from pykaldi2.utils.errors import DataError


def _dir(tmp_path):
    d = tmp_path / "m"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(bytes(range(256)) * 10)
    (d / "sub" / "b.txt").write_text("hello\n")
    write_checksums(d)
    return d


def test_manifest_is_sha256sum_format(tmp_path):
    d = _dir(tmp_path)
    lines = (d / MANIFEST).read_text().splitlines()
    want = hashlib.sha256((d / "sub" / "b.txt").read_bytes()).hexdigest()
    assert lines[1] == f"{want}  sub/b.txt" and len(lines) == 2
    assert read_checksums(d)["sub/b.txt"] == want
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--quiet", "-c", MANIFEST], cwd=d, check=True)
    assert verify_checksums(d, fix="x") is True
    assert verify_checksums(tmp_path, fix="x") is False  # no manifest: nothing checked


def test_each_failure_is_named(tmp_path):
    d = _dir(tmp_path)
    (d / "sub" / "b.txt").write_text("hellO\n")
    with pytest.raises(DataError, match=r"sub/b\.txt fails its sha256 check.*Fix: redo it"):
        verify_checksums(d, fix="redo it")
    (d / "sub" / "b.txt").unlink()
    with pytest.raises(DataError, match=r"sub/b\.txt is listed in checksums\.sha256 but missing"):
        verify_checksums(d, fix="redo it")
    (d / MANIFEST).write_text("abc  a.bin\n")
    with pytest.raises(DataError, match=r"checksums\.sha256:1: not a '<sha256>  <file>' line"):
        verify_checksums(d, fix="x")
    (d / MANIFEST).write_text(f"{'0' * 64}  ../outside\n")
    with pytest.raises(DataError, match="not a '<sha256>  <file>' line"):
        read_checksums(d)
