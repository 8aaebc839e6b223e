"""compute-feats / compute-cmvn on real AN4 audio: parallel jobs, resume, CLI, errors."""

from __future__ import annotations

import kaldiio
import numpy as np
import pytest

from pykaldi2.cli.main import main
from pykaldi2.data.audio import read_audio
from pykaldi2.features.cmvn import compute_cmvn_stats
from pykaldi2.features.compute import (
    compute_cmvn,
    compute_feats,
    load_cmvn,
    load_feature_config,
    split_utts,
)
from pykaldi2.features.extractors import FbankConfig, MfccConfig, make_extractor
from pykaldi2.utils.errors import DataError, Pykaldi2Error


def _wav_scp(datadir):
    return dict(line.split(maxsplit=1) for line in (datadir / "wav.scp").read_text().splitlines())


def test_split_utts():
    parts = split_utts([f"u{i}" for i in range(10)], 3)
    assert [len(p) for p in parts] == [3, 4, 3] and sum(parts, []) == [f"u{i}" for i in range(10)]
    with pytest.raises(Pykaldi2Error, match="more than the 2"):
        split_utts(["a", "b"], 3)


def test_split_utts_by_weight():
    """With weights: contiguous, covering, near-equal totals; never an empty part."""
    utts = [f"u{i:02d}" for i in range(12)]
    w = [1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4]  # the long ones at the end
    parts = split_utts(utts, 2, w)
    assert sum(parts, []) == utts and [len(p) for p in parts] == [9, 3]
    totals = [sum(w[utts.index(u)] for u in p) for p in parts]
    assert totals == [12, 12]
    rng = np.random.default_rng(0)
    for nj in (2, 3, 5):
        w = rng.exponential(size=200)
        parts = split_utts([f"u{i:03d}" for i in range(200)], nj, w)
        tot = [sum(w[int(u[1:])] for u in p) for p in parts]
        assert sum(parts, []) == [f"u{i:03d}" for i in range(200)]
        assert max(tot) - min(tot) <= 2 * w.max()  # within two utterances of equal
    # one huge utterance: every part still gets one
    parts = split_utts(["a", "b", "c"], 3, [100, 1, 1])
    assert parts == [["a"], ["b"], ["c"]]
    assert split_utts(["a", "b", "c", "d"], 2, [0, 0, 0, 1]) == [["a", "b", "c"], ["d"]]
    with pytest.raises(ValueError, match="4 finite weights"):
        split_utts(["a", "b", "c", "d"], 2, [1, 1, 1])


def test_feature_jobs_get_equal_audio(an4_small, tmp_path):
    """compute-feats splits by audio (utt2dur, else file sizes): AN4's file sizes, and an
    utt2dur that makes the first utterance 19x the others, move the jobs' bounds; a pipe in
    wav.scp leaves equal numbers of utterances (Kaldi's split_scp.pl)."""
    import os

    from pykaldi2.data.datadir import read_audio_tables
    from pykaldi2.features.compute import audio_weights

    d = read_audio_tables(an4_small)
    sizes = audio_weights(d, an4_small)
    assert sizes == [float(os.path.getsize(d.wav_scp[u])) for u in d.utt_ids]
    utts = d.utt_ids
    (an4_small / "utt2dur").write_text(
        "".join(f"{u} {19.0 if i == 0 else 1.0}\n" for i, u in enumerate(utts))
    )
    assert audio_weights(d, an4_small)[:2] == [19.0, 1.0]
    reader = compute_feats(an4_small, tmp_path / "mfcc", MfccConfig(), nj=2, fmt="ark")
    assert len(reader) == 20
    job1 = (tmp_path / "mfcc" / "raw_mfcc_train.1.scp").read_text().splitlines()
    assert [x.split()[0] for x in job1] == utts[:1]  # 19 s alone = the other 19 together
    d.wav_scp[utts[3]] = f"cat {d.wav_scp[utts[3]]} |"
    (an4_small / "utt2dur").unlink()
    assert audio_weights(d, an4_small) is None


def test_compute_feats_nj2_then_resume(an4_small, tmp_path):
    featdir = tmp_path / "fbank"
    cfg = FbankConfig(num_mel_bins=40)
    reader = compute_feats(an4_small, featdir, cfg, nj=2)  # two spawned processes
    assert len(reader) == 20 and reader.dim == 40
    parts = sorted(featdir.glob("raw_fbank_train.*.h5"))
    assert [p.name for p in parts] == ["raw_fbank_train.1.h5", "raw_fbank_train.2.h5"]
    # the features are exactly the extractor's on the audio
    utt, spec = next(iter(_wav_scp(an4_small).items()))
    want = make_extractor(cfg).compute(*read_audio(spec))
    np.testing.assert_array_equal(reader[utt], want)
    frames = dict(x.split() for x in (an4_small / "utt2num_frames").read_text().splitlines())
    assert frames == {u: str(reader.shape(u)[0]) for u in reader}
    assert load_feature_config(an4_small) == cfg
    assert (an4_small / "frame_shift").read_text() == "0.01\n"
    before = {u: reader[u] for u in reader}

    # simulate a run killed while job 2 was writing: its archive missing, a temp file left
    inode1 = parts[0].stat().st_ino
    parts[1].unlink()
    (featdir / ".raw_fbank_train.2.h5.12345.tmp").write_bytes(b"half written")
    (an4_small / "feats.scp").unlink()
    reader = compute_feats(an4_small, featdir, cfg, nj=2)
    assert parts[0].stat().st_ino == inode1  # job 1 was not redone
    assert parts[1].is_file()  # job 2 was
    assert not list(featdir.glob(".*.tmp"))  # the killed job's temp file was cleaned up
    assert {u: reader[u].tobytes() for u in reader} == {u: v.tobytes() for u, v in before.items()}

    # a different config in the same featdir is refused, --overwrite recomputes
    with pytest.raises(Pykaldi2Error, match="changed: --num-mel-bins"):
        compute_feats(an4_small, featdir, FbankConfig(num_mel_bins=23), nj=2)
    reader = compute_feats(an4_small, featdir, FbankConfig(num_mel_bins=23), nj=1, overwrite=True)
    assert reader.dim == 23 and parts[0].stat().st_ino != inode1


def test_cli_ark_mfcc_and_cmvn(an4_small, tmp_path):
    featdir = tmp_path / "mfcc"
    rc = main(["compute-feats", "--feat-type", "mfcc", "--format", "ark", "--num-ceps", "20",
               "--num-mel-bins", "30", str(an4_small), str(featdir)])  # fmt: skip
    assert rc == 0
    # feats.scp is a plain Kaldi scp: kaldiio reads it
    feats = kaldiio.load_scp(str(an4_small / "feats.scp"))
    assert len(feats) == 20 and all(v.shape[1] == 20 for v in feats.values())
    assert load_feature_config(an4_small) == MfccConfig(num_ceps=20, num_mel_bins=30)

    assert main(["compute-cmvn", str(an4_small)]) == 0
    cmvn = load_cmvn(an4_small)
    assert sorted(cmvn) == ["fash", "fbbh", "fclc", "fejs"]
    spk_utts = [u for u in feats if u.startswith("fash-")]
    want = compute_cmvn_stats(np.vstack([feats[u] for u in spk_utts]))
    np.testing.assert_allclose(cmvn["fash"], want, rtol=1e-9)
    assert (featdir / "cmvn_train.ark").is_file()
    # stored as Kaldi double matrices, readable by kaldiio
    raw = kaldiio.load_scp(str(an4_small / "cmvn.scp"))
    assert raw["fash"].dtype == np.float64 and raw["fash"].shape == (2, 21)


def test_bad_audio_names_the_utterance(an4_small, tmp_path):
    wav = _wav_scp(an4_small)
    utts = sorted(wav)
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio at all")
    wav[utts[3]] = str(bad)
    (an4_small / "wav.scp").write_text("".join(f"{u} {wav[u]}\n" for u in utts))
    with pytest.raises(DataError, match=utts[3]):
        compute_feats(an4_small, tmp_path / "f", FbankConfig(), nj=2)
    assert not list((tmp_path / "f").glob("*.1.h5"))  # the failed job left no archive
    with pytest.raises(DataError, match="sample rate is 16000 Hz, expected 8000"):
        compute_feats(an4_small, tmp_path / "g", FbankConfig(sample_frequency=8000), nj=1)


def test_compute_cmvn_needs_feats(an4_small):
    with pytest.raises(DataError, match="compute-feats"):
        compute_cmvn(an4_small)


def test_segments_and_resample(yesno_dir, tmp_path):
    # one 8 kHz yesno recording cut into two segments, features at 16 kHz with --resample
    wav = sorted((yesno_dir / "waves_yesno").glob("*.wav"))[0]
    d = tmp_path / "data" / "seg"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text(f"rec1 {wav}\n")
    (d / "segments").write_text("spk-a rec1 0.0 1.5\nspk-b rec1 1.5 3.0\n")
    (d / "utt2spk").write_text("spk-a spk\nspk-b spk\n")
    (d / "text").write_text("spk-a YES\nspk-b NO\n")
    with pytest.raises(DataError, match="expected 16000"):
        compute_feats(d, tmp_path / "f", FbankConfig(), nj=1)
    reader = compute_feats(d, tmp_path / "f", MfccConfig(), nj=1, resample=True, overwrite=True)
    assert sorted(reader) == ["spk-a", "spk-b"]
    x, sr = read_audio(str(wav), 1.5, 3.0, target_sr=16000)
    np.testing.assert_array_equal(reader["spk-b"], make_extractor(MfccConfig()).compute(x, sr))
    assert reader.shape("spk-a") == (148, 13)  # 1.5 s at 10 ms shift, 25 ms window


def test_cli_bad_yaml_config_names_the_file(tmp_path, capsys):
    conf = tmp_path / "fbank.yaml"
    for text, words in (("- 80\n", "must be a YAML mapping"), ("a: [1\n", "not valid YAML")):
        conf.write_text(text)
        rc = main(
            ["compute-feats", "--config", str(conf), str(tmp_path / "d"), str(tmp_path / "f")]
        )
        assert rc != 0
        err = capsys.readouterr().err
        assert "fbank.yaml" in err and words in err


def test_edited_wav_scp_recomputes_only_the_changed_job(an4_small, tmp_path):
    """#18.5: a finished job whose wav.scp/segments entries changed is recomputed (it used to be
    'already finished, skipped' with the old features kept)."""
    featdir, cfg = tmp_path / "fbank", FbankConfig(num_mel_bins=23)
    reader = compute_feats(an4_small, featdir, cfg, nj=2)
    first = sorted(reader)[0]  # in job 1
    old = reader[first]
    inode2 = (featdir / "raw_fbank_train.2.h5").stat().st_ino
    wav = _wav_scp(an4_small)
    other = sorted(wav)[1]
    wav[first] = wav[other]  # the entry now points at another recording
    (an4_small / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(wav.items())))
    reader = compute_feats(an4_small, featdir, cfg, nj=2)
    assert not np.array_equal(reader[first], old)
    np.testing.assert_array_equal(reader[first], reader[other])
    assert (featdir / "raw_fbank_train.2.h5").stat().st_ino == inode2  # job 2 untouched


def test_two_runs_into_one_featdir_are_refused(an4_small, tmp_path):
    """#18.1: a second compute-feats of the same archives stops with the first one's pid (it
    used to delete the first one's live temp file); the lock dies with its holder."""
    import subprocess
    import sys

    from pykaldi2.utils.io import exclusive_lock

    featdir = tmp_path / "fbank"
    lock = featdir / ".raw_fbank_train.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from pykaldi2.utils.io import exclusive_lock\n"
         f"with exclusive_lock({str(lock)!r}, 'x'):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "locked\n"
        live_tmp = featdir / ".raw_fbank_train.1.h5.999.tmp"
        live_tmp.write_bytes(b"being written by the other run")
        with pytest.raises(Pykaldi2Error, match=rf"another process \(pid {holder.pid}\) is running "
                           rf"compute-feats into {featdir}/raw_fbank_train\.\*"):  # fmt: skip
            compute_feats(an4_small, featdir, FbankConfig(num_mel_bins=23), nj=1)
        assert live_tmp.read_bytes() == b"being written by the other run"
    finally:
        holder.kill()
        holder.wait()
    reader = compute_feats(an4_small, featdir, FbankConfig(num_mel_bins=23), nj=1)
    assert len(reader) == 20 and not live_tmp.exists()  # stale now: cleaned up
    with exclusive_lock(lock, "x"):  # released by the finished run
        pass


def test_killed_parent_leaves_no_worker(an4_small, tmp_path):
    """#18.10: SIGKILL of compute-feats --nj 2 used to leave its spawned workers running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    featdir = tmp_path / "fbank"
    parent = subprocess.Popen(
        [sys.executable, "-m", "pykaldi2", "compute-feats", "--nj", "2", "--feat-type", "fbank",
         str(an4_small), str(featdir)], stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def children() -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent.pid)], capture_output=True)
        return [int(x) for x in out.stdout.split()]

    deadline = time.time() + 60
    while len(children()) < 3 and time.time() < deadline:  # the manager and 2 workers
        time.sleep(0.05)
    kids = children()
    assert len(kids) >= 3, kids
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    alive = kids
    while alive and time.time() < deadline:
        time.sleep(0.1)
        alive = [k for k in kids if os.path.exists(f"/proc/{k}") and
                 "Z" not in open(f"/proc/{k}/stat").read().split()[2]]  # fmt: skip
    assert alive == [], f"workers outlived their parent: {alive}"


def test_a_full_disk_stops_compute_feats_cleanly_and_it_resumes(an4_small, tmp_path, monkeypatch,
                                                                 capsys):  # fmt: skip
    """ENOSPC injected (#18; tests/unit/test_disk_full.py fills a real tmpfs): the ark write of
    the 7th utterance fails -> a clear error naming the archive, no archive, temp file or
    feats.scp left; HDF5 stops by its free-space check before the library can hit ENOSPC.
    After space is freed the same command completes with the features of a clean run."""
    import errno

    import kaldiio.matio

    from pykaldi2.utils import io as uio

    argv = ["compute-feats", "--feat-type", "mfcc", "--format", "ark", str(an4_small)]
    assert main([*argv, str(tmp_path / "clean")]) == 0
    clean = {u: v.copy() for u, v in kaldiio.load_scp(str(an4_small / "feats.scp")).items()}
    (an4_small / "feats.scp").unlink()
    real, calls = kaldiio.matio.write_array, []

    def full_at_7(fd, array, *args, **kw):
        calls.append(1)
        if len(calls) == 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, array, *args, **kw)

    featdir = tmp_path / "mfcc"
    monkeypatch.setattr(kaldiio.matio, "write_array", full_at_7)
    assert main([*argv, str(featdir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"pykaldi2 compute-feats: error: {featdir}/raw_mfcc_train.1.ark: no space left on the "
        "device ("
    )
    assert "run the same command again: finished outputs are kept" in err and "Traceback" not in err
    assert sorted(p.name for p in featdir.iterdir()) == [".raw_mfcc_train.lock", "log",
                                                         "raw_mfcc_train.json"]  # fmt: skip
    assert "# Ended (code 1)" in (featdir / "log" / "make_raw_mfcc_train.1.log").read_text()
    assert not (an4_small / "feats.scp").exists()
    monkeypatch.setattr(kaldiio.matio, "write_array", real)
    assert main([*argv, str(featdir)]) == 0
    got = kaldiio.load_scp(str(an4_small / "feats.scp"))
    assert got.keys() == clean.keys() and all(np.array_equal(got[u], clean[u]) for u in clean)

    # HDF5: the archive opens and 8 utterances fit, then the free-space check refuses the 9th
    real_free, checks = uio.free_bytes, []

    def free_until_9(path):
        checks.append(path)
        return real_free(path) if len(checks) <= 9 else 4096

    monkeypatch.setattr(uio, "free_bytes", free_until_9)
    h5dir = tmp_path / "h5"
    with pytest.raises(uio.DiskFullError, match=r"raw_mfcc_train\.1\.h5: not enough space left"):
        compute_feats(an4_small, h5dir, MfccConfig(), fmt="hdf5")
    assert not list(h5dir.glob("*.h5")) and not list(h5dir.glob(".*.tmp"))
    monkeypatch.setattr(uio, "free_bytes", real_free)
    reader = compute_feats(an4_small, h5dir, MfccConfig(), fmt="hdf5")
    assert reader.keys() == clean.keys() and all(np.array_equal(reader[u], clean[u]) for u in clean)
