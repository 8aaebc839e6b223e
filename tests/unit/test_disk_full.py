"""A really full disk (#18, "not probed yet"): compute-feats and train-ce write onto a small
tmpfs that a ballast file fills, mounted in a private user + mount namespace
(``unshare --user --map-root-user --mount``, so no privileges are needed where user
namespaces are allowed; the mount disappears with the namespace). Each run must stop with a
clear error (exit 1, no traceback), leave no corrupt or half-written output, and complete
after the ballast is removed, with the outputs of a run that never saw a full disk.

The same paths with ENOSPC injected in-process (always run, no namespace needed) are in
tests/unit/features/test_features_compute.py and tests/unit/training/test_training_ce.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pykaldi2.cli.main import main

NS = ["unshare", "--user", "--map-root-user", "--mount"]
FREE = (
    f'{sys.executable} -c "import os,sys; s=os.statvfs(sys.argv[1]); print(s.f_bavail*s.f_frsize)"'
)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYKALDI2_NO_PROGRESS": "1"}


@pytest.fixture()
def tmpfs_runner(tmp_path):
    """``run(script, size)``: run the sh ``script`` in a new namespace with a tmpfs of ``size``
    mounted at ``$FD`` (``$PY``: this Python, ``$OUT``: tmp_path/out, ``fill N``: leave N
    bytes free on the tmpfs with a ballast file $FD/ballast). Skips where it cannot mount."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1): cannot mount a private tmpfs")
    fd, out = tmp_path / "fd", tmp_path / "out"
    fd.mkdir()
    out.mkdir()
    probe = subprocess.run([*NS, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {fd}"],
                           capture_output=True, text=True)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.strip()}")

    def run(script: str, size: str) -> None:
        prelude = (
            f"set -u\nFD={fd}\nOUT={out}\nPY={sys.executable}\n"
            f"mount -t tmpfs -o size={size} tmpfs $FD || exit 97\n"
            f"fill() {{ head -c $(( $({FREE} $FD) - $1 )) /dev/zero > $FD/ballast; }}\n"
        )
        res = subprocess.run([*NS, "sh", "-c", prelude + script], env=_env(), capture_output=True,
                             text=True, timeout=600)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr

    return run, fd, out


def _rc(out: Path, name: str) -> int:
    return int((out / f"{name}.rc").read_text())


def _clear_error(out: Path, name: str) -> str:
    err = (out / f"{name}.err").read_text()
    assert "Traceback" not in err and "Segmentation" not in err, err
    assert "no space left on the device" in err or "not enough space left" in err, err
    assert "run the same command again" in err, err
    return err


@pytest.mark.slow
def test_compute_feats_on_a_full_tmpfs(yesno_dir, tmp_path, tmpfs_runner):
    """ark, 2 jobs, 200 KiB free for ~0.9 MB of features; hdf5, 1 job, just above its 8 MiB
    free-space margin: both stop mid-way with a clear error and leave only finished files; with
    the ballast gone the same command completes, features equal to a run on a roomy disk."""
    run, fd, out = tmpfs_runner
    assert main(["prepare", "yesno", "--corpus-dir", str(yesno_dir), str(tmp_path / "p")]) == 0
    src = tmp_path / "p" / "train_yesno"
    data = {k: tmp_path / k / "train_yesno" for k in ("clean", "ark", "h5")}
    for d in data.values():
        shutil.copytree(src, d)
    feats = "-m pykaldi2 compute-feats --feat-type mfcc --sample-frequency 8000"
    assert main(["compute-feats", "--feat-type", "mfcc", "--sample-frequency", "8000", "--format",
                 "ark", "--nj", "2", str(data["clean"]), str(tmp_path / "clean_feats")]) == 0  # fmt: skip
    run(
        f"""
fill 204800
$PY {feats} --format ark --nj 2 {data["ark"]} $FD/ark 2> $OUT/a1.err; echo $? > $OUT/a1.rc
ls -A $FD/ark > $OUT/a1.ls
rm $FD/ballast
$PY {feats} --format ark --nj 2 {data["ark"]} $FD/ark 2> $OUT/a2.err; echo $? > $OUT/a2.rc
mkdir $OUT/ark && cp $FD/ark/*.ark $OUT/ark/ && rm -r $FD/ark
fill $((8 * 1024 * 1024 + 150000))
$PY {feats} --format hdf5 {data["h5"]} $FD/h5 2> $OUT/h1.err; echo $? > $OUT/h1.rc
ls -A $FD/h5 > $OUT/h1.ls
rm $FD/ballast
$PY {feats} --format hdf5 {data["h5"]} $FD/h5 2> $OUT/h2.err; echo $? > $OUT/h2.rc
mkdir $OUT/h5 && cp $FD/h5/*.h5 $OUT/h5/
""",
        size="16m",
    )
    for first, second in (("a1", "a2"), ("h1", "h2")):
        assert _rc(out, first) == 1 and _rc(out, second) == 0, (out / f"{second}.err").read_text()
        _clear_error(out, first)
        left = (out / f"{first}.ls").read_text().split()
        assert not [n for n in left if n.endswith(".tmp")], left  # nothing half written
        for name in left:  # an archive left is a finished job's, with its inputs hash
            if name.endswith((".ark", ".h5")):
                assert name.rsplit(".", 1)[0] + ".inputs" in left, left
    err = _clear_error(out, "a1")  # the job that failed first names its archive
    # the file it names is the one whose write failed: the archive or its utt2num_frames
    assert re.search(r"/ark/raw_mfcc_train_yesno\.\d\.(ark|utt2num_frames): no space left on the "
                     "device", err), err  # fmt: skip
    assert "raw_mfcc_train_yesno.1.h5: not enough space left" in _clear_error(out, "h1")
    for j in (1, 2):  # byte for byte the archives of the clean run
        name = f"raw_mfcc_train_yesno.{j}.ark"
        assert (out / "ark" / name).read_bytes() == (tmp_path / "clean_feats" / name).read_bytes()
    import h5py
    import kaldiio

    clean = kaldiio.load_scp(str(data["clean"] / "feats.scp"))
    with h5py.File(out / "h5" / "raw_mfcc_train_yesno.1.h5", "r") as f:
        assert sorted(f) == sorted(clean)
        assert all(np.array_equal(f[u][()], clean[u]) for u in clean)


@pytest.mark.slow
def test_train_ce_checkpoint_on_a_full_tmpfs(tmp_path, tmpfs_runner):
    """train-ce with its exp dir on a tmpfs that fills (8 KiB left) once ckpt-2.pt exists:
    the next checkpoint write fails with a clear error; every checkpoint left loads, ``latest``
    names one, no temp file, no half log line; with the ballast gone the same command resumes
    and ends with the weights of an uninterrupted run on a roomy disk, bit for bit."""
    sys.path.insert(0, str(Path(__file__).parent / "training"))
    from test_training_ce import make_corpus, write_config

    run, fd, out = tmpfs_runner
    data, ali, _ = make_corpus(tmp_path / "corpus")
    conf = write_config(tmp_path, data, ali)  # 3 epochs, a checkpoint every 2 steps
    assert main(["train-ce", "--config", conf, str(tmp_path / "full")]) == 0
    train = f"$PY -m pykaldi2 train-ce --config {conf} $FD/exp"
    check = (
        "import json, sys; from pathlib import Path; from pykaldi2.training import checkpoint "
        "as ck; d = Path(sys.argv[1]); c = d / 'checkpoints'; "
        "print(sorted(p.name for p in c.iterdir())); "
        "print(ck.latest_checkpoint(c).name, [ck.load_checkpoint(p)['step'] for p in "
        "ck.list_checkpoints(c)]); "
        "[json.loads(x) for f in (d / 'log').glob('*.jsonl') for x in "
        "f.read_text().splitlines()]"
    )
    run(
        f"""
{train} 2> $OUT/t1.err & pid=$!
while [ ! -e $FD/exp/checkpoints/ckpt-2.pt ] && kill -0 $pid 2>/dev/null; do sleep 0.01; done
fill 8192
wait $pid; echo $? > $OUT/t1.rc
$PY -c "{check}" $FD/exp > $OUT/t1.check 2>&1; echo $? > $OUT/check.rc
rm $FD/ballast
{train} 2> $OUT/t2.err; echo $? > $OUT/t2.rc
cp $FD/exp/final/final.pt $OUT/final.pt
""",
        size="8m",
    )
    assert _rc(out, "t1") == 1, (out / "t1.err").read_text()
    _clear_error(out, "t1")
    assert _rc(out, "check") == 0, (out / "t1.check").read_text()
    names = (out / "t1.check").read_text().splitlines()[0]
    assert ".tmp" not in names and "'latest'" in names, names
    assert _rc(out, "t2") == 0, (out / "t2.err").read_text()
    a = torch.load(tmp_path / "full" / "final" / "final.pt", weights_only=False)["model"]
    b = torch.load(out / "final.pt", weights_only=False)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
