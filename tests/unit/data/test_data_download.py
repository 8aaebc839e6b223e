"""Resumable, md5-checked downloads against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest
import soundfile as sf

from pykaldi2.data.audio import load_utterance
from pykaldi2.data.corpora.an4 import download_an4, prepare_an4
from pykaldi2.data.corpora.librispeech import download_librispeech, prepare_librispeech
from pykaldi2.data.download import download, extract_tar, fetch_md5sums, read_md5sums
from pykaldi2.utils.errors import DataError

PAYLOAD = bytes(range(256)) * 40  # 10 KiB


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    honour_range = True
    log: list[tuple[str, str | None, int]] = []  # (path, Range header, bytes sent)

    def do_GET(self):  # noqa: N802 (http.server API)
        body = self.files.get(self.path)
        rng = self.headers.get("Range")
        if body is None:
            self.log.append((self.path, rng, 0))
            self.send_error(404)
            return
        start = 0
        if rng and self.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.log.append((self.path, rng, 0))
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        # Log before sending: the client may return (and the test assert) as soon as the
        # body arrives, before this thread runs again.
        self.log.append((self.path, rng, len(chunk)))
        self.end_headers()
        self.wfile.write(chunk)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server():
    _Handler.files = {"/f.bin": PAYLOAD}
    _Handler.honour_range = True
    _Handler.log = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


MD5 = hashlib.md5(PAYLOAD).hexdigest()


def test_full_download_with_md5(server, tmp_path):
    url, h = server
    dest = download(f"{url}/f.bin", tmp_path / "f.bin", md5=MD5)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "f.bin.part").exists()
    # a second call finds the verified file and does not download again
    download(f"{url}/f.bin", tmp_path / "f.bin", md5=MD5)
    assert len(h.log) == 1


def test_resume_with_range(server, tmp_path):
    url, h = server
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:3000])
    download(f"{url}/f.bin", tmp_path / "f.bin", md5=MD5)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert h.log == [("/f.bin", "bytes=3000-", len(PAYLOAD) - 3000)]


def test_server_ignoring_range_restarts(server, tmp_path):
    url, h = server
    h.honour_range = False
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:3000])
    download(f"{url}/f.bin", tmp_path / "f.bin", md5=MD5)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert h.log == [("/f.bin", "bytes=3000-", len(PAYLOAD))]


def test_complete_part_file_gets_416_and_is_verified(server, tmp_path):
    url, h = server
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)
    download(f"{url}/f.bin", tmp_path / "f.bin", md5=MD5)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_md5_mismatch_deletes_part_then_rerun_succeeds(server, tmp_path):
    url, h = server
    (tmp_path / "f.bin.part").write_bytes(b"X" * 3000)  # corrupt partial file
    with pytest.raises(DataError, match=r"f.bin: md5 mismatch: got [0-9a-f]{32}, expected"):
        download(f"{url}/f.bin", tmp_path / "f.bin", md5=MD5)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    download(f"{url}/f.bin", tmp_path / "f.bin", md5=MD5)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_http_error(server, tmp_path):
    url, _ = server
    with pytest.raises(DataError, match=r"HTTP 404 .* for http://127.0.0.1:\d+/nope"):
        download(f"{url}/nope", tmp_path / "nope")


def test_md5sums_and_tar(server, tmp_path):
    url, h = server
    h.files["/md5sum.txt"] = f"{MD5}  f.bin\n{'0' * 32} *g.tar.gz\nnot a line\n".encode()
    assert fetch_md5sums(f"{url}/md5sum.txt") == {"f.bin": MD5, "g.tar.gz": "0" * 32}
    assert read_md5sums("") == {}
    bad = tmp_path / "evil.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError, match="evil.tar: cannot extract"):
        extract_tar(bad, tmp_path / "x")
    assert not (tmp_path / "escape.txt").exists()


def test_download_librispeech_end_to_end(server, librispeech_sample_dir, tmp_path):
    url, h = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:  # a tiny "dev-clean.tar.gz"
        tar.add(librispeech_sample_dir / "LibriSpeech" / "test-clean", "LibriSpeech/dev-clean")
    archive = buf.getvalue()
    h.files["/12/dev-clean.tar.gz"] = archive
    h.files["/12/md5sum.txt"] = f"{hashlib.md5(archive).hexdigest()}  dev-clean.tar.gz\n".encode()
    download_librispeech(tmp_path / "corpus", ["dev-clean"], base_url=f"{url}/12")
    dirs = prepare_librispeech(tmp_path / "corpus", tmp_path / "data")
    assert list(dirs) == ["dev_clean"] and len(dirs["dev_clean"]) == 4
    h.files["/12/md5sum.txt"] = f"{'0' * 32}  dev-clean.tar.gz\n".encode()
    with pytest.raises(DataError, match="md5 mismatch"):
        download_librispeech(tmp_path / "corpus2", ["dev-clean"], base_url=f"{url}/12")
    with pytest.raises(DataError, match="unknown LibriSpeech part 'dev-cleen'"):
        download_librispeech(tmp_path / "corpus2", ["dev-cleen"], base_url=f"{url}/12")


def _fake_an4_sphere(root):
    """A 3-utterance AN4 in the official an4_sphere.tar.gz layout (wav/.../*.sph)."""
    etc = root / "an4" / "etc"
    etc.mkdir(parents=True)
    lists = {
        "an4_train": [
            ("an4_clstk/fash/an251-fash-b", "<s> YES </s>"),
            ("an4_clstk/mblw/cen1-mblw-b", "<s> G O </s>"),
        ],
        "an4_test": [("an4test_clstk/fcaw/an406-fcaw-b", "RUBOUT ONE")],
    }
    rng = np.random.default_rng(0)
    for name, items in lists.items():
        (etc / f"{name}.fileids").write_text("".join(f"{fid}\n" for fid, _ in items))
        (etc / f"{name}.transcription").write_text(
            "".join(f"{words} ({fid.rsplit('/', 1)[1]})\n" for fid, words in items)
        )
        for fid, _ in items:
            wav = root / "an4" / "wav" / f"{fid}.sph"
            wav.parent.mkdir(parents=True, exist_ok=True)
            sig = rng.integers(-3000, 3000, 1600).astype(np.int16)
            sf.write(wav, sig, 16000, format="NIST", subtype="PCM_16")
    return lists


def test_download_an4_sphere_layout(server, tmp_path):
    url, h = server
    _fake_an4_sphere(tmp_path / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "an4", "an4")
    h.files["/an4_sphere.tar.gz"] = buf.getvalue()
    corpus = download_an4(tmp_path / "dl", url=f"{url}/an4_sphere.tar.gz")
    assert corpus == tmp_path / "dl" / "an4"
    dirs = prepare_an4(corpus, tmp_path / "data")
    assert (len(dirs["train"]), len(dirs["test"])) == (2, 1)
    assert dirs["train"].text["mblw-cen1-mblw-b"] == "G O"
    x, sr = load_utterance(dirs["test"], "fcaw-an406-fcaw-b")
    ref, _ = sf.read(corpus / "wav/an4test_clstk/fcaw/an406-fcaw-b.sph", dtype="int16")
    np.testing.assert_array_equal(x, ref.astype(np.float32))
    download_an4(tmp_path / "dl", url=f"{url}/an4_sphere.tar.gz")  # extracted: no new request
    assert len(h.log) == 1


def test_size_check_and_speechocean762_download(server, tiny_speechocean762, tmp_path):
    """OpenSLR gives no md5 for speechocean762: the size is checked (as Kaldi's
    download_and_untar.sh does), a wrong one deletes the partial file; then the tarball is
    extracted and prepared."""
    url, h = server
    with pytest.raises(DataError, match=r"f.bin: size mismatch: got 10240 bytes, expected 10"):
        download(f"{url}/f.bin", tmp_path / "f.bin", size=10)
    assert not (tmp_path / "f.bin.part").exists()
    assert download(f"{url}/f.bin", tmp_path / "f.bin", size=len(PAYLOAD)).is_file()
    from pykaldi2.data.corpora.speechocean762 import (
        download_speechocean762,
        prepare_speechocean762,
    )

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tiny_speechocean762, "speechocean762")
    h.files["/101/speechocean762.tar.gz"] = buf.getvalue()
    tar_url = f"{url}/101/speechocean762.tar.gz"
    corpus = download_speechocean762(tmp_path / "dl", url=tar_url, size=len(buf.getvalue()))
    assert corpus == tmp_path / "dl" / "speechocean762" and (corpus / ".complete").is_file()
    dirs = prepare_speechocean762(corpus, tmp_path / "data")
    assert [len(dirs[n]) for n in ("train", "dev", "test", "test_full")] == [8, 4, 4, 8]
    download_speechocean762(tmp_path / "dl", url=tar_url)  # extracted: no new request
    assert sum(p == "/101/speechocean762.tar.gz" for p, _, _ in h.log) == 1
