"""compute-feats and compute-cmvn on a data dir (Kaldi's steps/make_fbank.sh, compute_cmvn_stats.sh).

    >>> compute_feats("data/train", "fbank", FbankConfig(num_mel_bins=80), nj=4, fmt="hdf5")
    >>> compute_cmvn("data/train")                       # per-speaker cmvn.scp

Layout written (``<name>`` is the data dir's base name, e.g. ``train``)::

    FEATDIR/raw_fbank_train.json        the resolved config, nj and format of the run
    FEATDIR/raw_fbank_train.<j>.h5      job j's archive (or .ark + .scp with --format ark)
    DATADIR/feats.scp                   utt -> archive location (see pykaldi2.features.storage)
    DATADIR/utt2num_frames
    DATADIR/frame_shift                 in seconds (Kaldi's utils/data/get_frame_shift.sh)
    DATADIR/conf/feats.json             the feature config (to compute the same features later)

Jobs: ``nj`` contiguous parts of the sorted utterances with near-equal amounts of audio (from
``utt2dur``, ``segments`` or the audio files' sizes; equal numbers of utterances, as Kaldi's
split_scp.pl, where a pipe or archive entry hides the amount), so that they finish together.

Resuming: each job's archive appears only when the job finished (temp file + rename), so a killed
run, run again with the same arguments, recomputes only the jobs whose archive is missing (a
leftover temp file of a killed job is ignored and replaced). Beside each finished archive,
``FEATDIR/raw_fbank_train.<j>.inputs`` holds a hash of the job's wav.scp and segments entries: a
job whose audio entries changed since (an edited wav.scp) is recomputed. Running again with a
different config or nj is refused unless ``overwrite`` is set, so archives of two configs never
get mixed. Two compute-feats writing the same archives (same FEATDIR and data dir name) cannot
run at once: the second stops with the first's pid (``FEATDIR/.raw_fbank_train.lock``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pykaldi2.data.audio import is_ark_entry, is_pipe
from pykaldi2.data.datadir import DataDir, read_audio_tables, read_utt2dur
from pykaldi2.data.split import split_utts
from pykaldi2.data.tables import c_sort_key, iter_table_lines, read_table, read_table_lines
from pykaldi2.features.cmvn import cmvn_stats_per_speaker
from pykaldi2.features.extractors import FrameConfig, config_from_dict, make_extractor
from pykaldi2.features.storage import (
    FEATS_SCP,
    ArkFeatureWriter,
    FeatureReader,
    open_features,
    open_writer,
    write_feats_scp,
)
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.io import atomic_write, atomic_write_text, exclusive_lock
from pykaldi2.utils.jobs import JobRunner, job_progress
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

FORMATS = {"hdf5": ".h5", "ark": ".ark"}
FEATS_CONFIG = "conf/feats.json"


def job_inputs_sha1(d: DataDir, utts: list[str]) -> str:
    """A hash of what a job's features are computed from: each utterance's id, wav.scp entry
    (of its recording) and segment."""
    h = hashlib.sha1()
    for u in utts:
        seg = d.segments.get(u) if d.segments is not None else None
        h.update(f"{u}\t{d.wav_scp.get(d.recording_of(u))}\t{seg}\n".encode())
    return h.hexdigest()


@dataclass
class FeatsJob:
    """One of the ``nj`` jobs of compute-feats: its utterances, its archive and the hash of its
    audio entries (:func:`job_inputs_sha1`)."""

    index: int  # 1-based, as in Kaldi's split data dirs
    utts: list[str]
    archive: Path
    inputs_sha1: str = ""

    @property
    def scp(self) -> Path:
        """The part's own scp (ark format only)."""
        return self.archive.with_suffix(".scp")

    @property
    def num_frames_file(self) -> Path:
        """The job's utt2num_frames (Kaldi's ``utt2num_frames.JOB``), written by the job."""
        return self.archive.with_name(self.archive.stem + ".utt2num_frames")

    def entries(self) -> Iterator[tuple[str, str, str]]:
        """(utt, feats.scp location, number of frames) of each utterance of the finished job,
        in its order, read from the job's files (never all of them in memory)."""
        if self.archive.suffix == ".ark":
            locs = ((e.key, e.value) for e in iter_table_lines(self.scp))
            part = None
        else:
            part = open_features(self.archive)
            locs = ((u, part.location(u)) for u in part.keys())
        try:
            if self.num_frames_file.is_file():
                nums = ((e.key, e.value) for e in iter_table_lines(self.num_frames_file))
            else:  # written by an earlier version: the matrix headers
                part = part or open_features(self.scp)
                nums = ((u, str(part.shape(u)[0])) for u in part.keys())
            for (utt, loc), (utt2, n) in itertools.zip_longest(locs, nums, fillvalue=(None, None)):
                if utt != utt2:
                    raise DataError(
                        f"the job's archive and utt2num_frames disagree ({utt} vs {utt2})",
                        file=str(self.num_frames_file),
                        fix="run compute-feats again with --overwrite",
                    )
                yield utt, loc, n
        finally:
            if part is not None:
                part.close()

    @property
    def inputs_file(self) -> Path:
        """Written when the job has finished: the hash of the audio entries it was made from."""
        return self.archive.with_name(self.archive.stem + ".inputs")

    def finished_keys(self) -> list[str] | None:
        """The utterances stored by a finished earlier run of this job made from the same audio
        entries, or None if not finished (or made from other entries)."""
        try:
            if self.inputs_file.read_text().strip() != self.inputs_sha1:
                return None
        except FileNotFoundError:
            return None
        if self.archive.suffix == ".ark":
            if not (self.archive.is_file() and self.scp.is_file()):
                return None
            return [e.key for e in read_table_lines(self.scp)]
        if not self.archive.is_file():
            return None
        try:
            return list(FeatureReader(self.archive).keys())
        except Exception:  # a corrupt archive is recomputed
            return None


def audio_weights(d: DataDir, datadir: Path) -> list[float] | None:
    """How much audio each utterance of ``d`` has (its ``utt2dur``, else its segment's length,
    else its file's size), so that the jobs get near-equal shares of it; None (equal numbers of
    utterances, as Kaldi's split_scp.pl) when some utterance's amount is not known without
    reading it (a pipe, an ark entry, a segment to the end of its recording)."""
    utts = d.utt_ids
    if (datadir / "utt2dur").is_file():
        try:
            durs = read_utt2dur(datadir / "utt2dur")
        except DataError:
            durs = {}  # a malformed utt2dur is reported by validate-data-dir, not here
        if all(u in durs for u in utts):
            return [durs[u] for u in utts]
    if d.segments is not None:
        segs = [d.segments.get(u) for u in utts]
        if all(s is not None and s[2] != -1 for s in segs):
            return [max(end - start, 0.0) for _, start, end in segs]
        return None
    sizes = []
    for u in utts:
        spec = d.wav_scp.get(u, "").strip()
        if not spec or is_pipe(spec) or is_ark_entry(spec):
            return None
        try:
            sizes.append(float(os.path.getsize(spec)))
        except OSError:
            return None  # missing audio: the job that reads it reports it
    return sizes


def _compute_job(args: tuple) -> tuple[int, list[str]]:
    """One job (``(datadir, config dict, FeatsJob, compression, resample)``): features of its
    utterances into its archive, their frame counts into its utt2num_frames. Returns (number
    of utterances written, skipped utts). Runs where
    :class:`~pykaldi2.utils.jobs.JobRunner` runs it (a worker process, a SLURM task), and
    reports one progress unit per utterance (:func:`~pykaldi2.utils.jobs.job_progress`)."""
    from pykaldi2.data.audio import load_utterance

    datadir, config_dict, job, compression, resample = args
    config = config_from_dict(config_dict)
    extractor = make_extractor(config)
    d = read_audio_tables(datadir, job.utts)  # this job's entries only
    sr = int(config.sample_frequency)
    done = 0
    skipped: list[str] = []
    with (
        open_writer(job.archive, config=config_dict, compression=compression) as w,
        atomic_write(job.num_frames_file) as nf,
    ):
        for n, utt in enumerate(job.utts, 1):
            samples, rate = _load(d, utt, sr, resample, load_utterance)
            try:
                feats = extractor.compute(samples, rate)
            except Pykaldi2Error as e:
                raise DataError(str(e), utt=utt, file=str(Path(datadir) / "wav.scp")) from None
            if len(feats) == 0:
                skipped.append(utt)
            else:
                w[utt] = feats
                nf.write(f"{utt} {len(feats)}\n")
                done += 1
            del samples, feats
            if n % 10 == 0 or n == len(job.utts):
                job_progress(10 if n % 10 == 0 else n % 10)
    log.info("%s: %d utterances, %d skipped", job.archive.name, done, len(skipped))
    atomic_write_text(job.inputs_file, job.inputs_sha1 + "\n")  # after the archive is in place
    return done, skipped


def _load(d: DataDir, utt: str, sr: int, resample: bool, load_utterance):
    """The utterance's audio; any failure becomes a DataError naming the utterance."""
    try:
        if resample:
            return load_utterance(d, utt, target_sr=sr)
        return load_utterance(d, utt, expected_sr=sr)
    except DataError:
        raise
    except Exception as e:  # a decoder error from soundfile etc.
        raise DataError(
            f"cannot read audio: {type(e).__name__}: {e}",
            file=str(Path(d.path or ".") / "wav.scp"),
            utt=utt,
            fix="check the wav.scp entry, or remove the utterance (fix-data-dir)",
        ) from None


#: How the keys of FEATDIR/raw_<type>_<name>.json are named in the "different run" error.
_RUN_KEY_NAMES = {"utts_sha1": "the data dir's utterances", "nj": "--nj", "format": "--format"}


def _diff(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _check_run_config(path: Path, run: dict, overwrite: bool) -> None:
    """Refuse to resume into archives of another config / nj / format / utterance list."""
    if path.is_file() and not overwrite:
        old = json.loads(path.read_text())
        if old != run:
            changed = [_RUN_KEY_NAMES.get(k, k) for k in _diff(old, run) if k != "config"]
            changed += [
                f"--{k.replace('_', '-')}" for k in _diff(old.get("config", {}), run["config"])
            ]
            raise Pykaldi2Error(
                f"{path.parent} holds features of another run (changed: {', '.join(changed)}). "
                "Fix: use another FEATDIR, or pass --overwrite to recompute everything"
            )
    atomic_write_text(path, json.dumps(run, indent=2, sort_keys=True) + "\n")


def compute_feats(
    datadir: str | os.PathLike,
    featdir: str | os.PathLike,
    config: FrameConfig,
    nj: int = 1,
    fmt: str = "hdf5",
    compression: str = "gzip",
    resample: bool = False,
    overwrite: bool = False,
    cmd: str | None = None,
) -> FeatureReader:
    """Compute features for every utterance of ``datadir`` into ``featdir`` (see module doc).

    Args:
        datadir: a Kaldi data dir (wav.scp, utt2spk, optional segments).
        featdir: where the archives go (created).
        config: a :class:`FbankConfig` / :class:`MfccConfig`.
        nj: number of jobs, each a process writing its own archive.
        fmt: "hdf5" or "ark".
        compression: HDF5 compression ("gzip", "lzf", "none").
        resample: resample audio whose rate differs from ``config.sample_frequency`` (else a
            DataError naming the utterance).
        overwrite: recompute every job even if a finished archive of it exists.
        cmd: where the jobs run (Kaldi's ``--cmd``: run.pl, slurm.pl ...;
            :mod:`pykaldi2.utils.jobs`); their logs are ``FEATDIR/log/make_<name>.JOB.log``.

    Returns:
        A reader on the new ``datadir/feats.scp``. Utterances shorter than one frame get no
        features (Kaldi skips them too); they are listed in a warning.
    """
    if fmt not in FORMATS:
        raise Pykaldi2Error(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    datadir, featdir = Path(datadir), Path(featdir).absolute()
    d = read_audio_tables(datadir)  # not text etc.: the parent holds no more than it needs
    if len(d) == 0:
        raise DataError("the data dir has no utterances", file=str(datadir))
    config_dict = config.to_dict()
    name = f"raw_{config.feat_type}_{datadir.absolute().name}"
    featdir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(featdir / f".{name}.lock", f"compute-feats into {featdir}/{name}.*"):
        parts = split_utts(d.utt_ids, nj, audio_weights(d, datadir))
        utts_sha1 = hashlib.sha1("\n".join(d.utt_ids).encode("utf-8")).hexdigest()
        run = {"config": config_dict, "nj": nj, "format": fmt, "utts_sha1": utts_sha1}
        _check_run_config(featdir / f"{name}.json", run, overwrite)
        jobs = [
            FeatsJob(i + 1, u, featdir / f"{name}.{i + 1}{FORMATS[fmt]}", job_inputs_sha1(d, u))
            for i, u in enumerate(parts)
        ]
        del d, parts
        todo = []
        for job in jobs:
            keys = None if overwrite else job.finished_keys()
            if keys is None or not set(keys) <= set(job.utts):
                if not overwrite and job.archive.is_file() and job.inputs_file.is_file():
                    log.info(
                        "compute-feats: job %d's wav.scp/segments entries changed: redone",
                        job.index,
                    )
                todo.append(job)
        for job in todo:  # temp files of a killed earlier run (we hold the lock: none is live)
            job.inputs_file.unlink(missing_ok=True)
            for tmp_of in (job.archive.name, job.num_frames_file.name):
                for stale in job.archive.parent.glob(f".{tmp_of}.*.tmp"):
                    stale.unlink(missing_ok=True)
        if len(todo) < len(jobs):
            log.info(
                "compute-feats: %d of %d jobs already finished, skipped", len(jobs) - len(todo), nj
            )
        # When a job fails, the others still run to the end: their finished archives are
        # kept, so a re-run after the fix redoes only the failed job.
        with JobRunner(len(todo) or 1, cmd=cmd) as run:
            results = run(
                _compute_job,
                [(str(datadir), config_dict, j, compression, resample) for j in todo],
                log=featdir / "log" / f"make_{name}.JOB.log",
                desc="compute-feats",
                ids=[j.index for j in todo],
                total=sum(len(j.utts) for j in todo),
            )
        reader = _write_feats_scp(datadir, jobs, config_dict)
    skipped = [u for _, s in results for u in s]
    if skipped:
        log.warning(
            "compute-feats: %d utterance(s) shorter than one frame got no features (e.g. %s); "
            "run `pykaldi2 fix-data-dir %s` to drop them",
            len(skipped),
            ", ".join(skipped[:5]),
            datadir,
        )
    return reader


def _write_feats_scp(datadir: Path, jobs: list[FeatsJob], config_dict: dict) -> FeatureReader:
    """Merge the jobs' scp and utt2num_frames into DATADIR/feats.scp and utt2num_frames (a
    line at a time, as Kaldi's ``cat raw_mfcc_train.*.scp``), and write conf/feats.json and
    frame_shift. The jobs hold consecutive runs of the C-sorted utterances, so the merged
    files come out sorted."""
    prev = None
    with atomic_write(datadir / FEATS_SCP) as scp, atomic_write(datadir / "utt2num_frames") as nf:
        for job in jobs:
            for utt, loc, n in job.entries():
                key = c_sort_key(utt)
                if prev is not None and key <= prev:
                    raise DataError(
                        f"utterance {utt} of job {job.index} is out of order",
                        file=str(job.archive),
                        fix="run compute-feats again with --overwrite",
                    )
                prev = key
                scp.write(f"{utt} {loc}\n")
                nf.write(f"{utt} {n}\n")
    if (datadir / "cmvn.scp").is_file():
        log.warning("%s/cmvn.scp predates these features: re-run `pykaldi2 compute-cmvn`", datadir)
    atomic_write_text(datadir / FEATS_CONFIG, json.dumps(config_dict, indent=2) + "\n")
    # read by Kaldi's utils/data/get_frame_shift.sh
    atomic_write_text(datadir / "frame_shift", f"{config_dict['frame_shift_ms'] / 1000:g}\n")
    return open_features(datadir)


def load_feature_config(datadir: str | os.PathLike) -> FrameConfig:
    """The config the data dir's features were computed with (DATADIR/conf/feats.json)."""
    path = Path(datadir) / FEATS_CONFIG
    if not path.is_file():
        raise DataError(
            "no feature config", file=str(path), fix="run `pykaldi2 compute-feats` on the data dir"
        )
    return config_from_dict(json.loads(path.read_text()))


def compute_cmvn(
    datadir: str | os.PathLike, cmvndir: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """Per-speaker CMVN stats (compute-cmvn-stats --spk2utt) into a Kaldi cmvn.ark + cmvn.scp.

    Writes ``CMVNDIR/cmvn_<name>.ark`` (+ .scp) and ``DATADIR/cmvn.scp``; ``cmvndir`` defaults
    to the directory of the first feature archive. Returns speaker -> (2, F + 1) stats.
    """
    datadir = Path(datadir)
    utt2spk = read_table(datadir / "utt2spk")
    feats = open_features(datadir)
    if cmvndir is None:
        first = feats.location(next(iter(feats)))
        cmvndir = Path(first.rpartition(":")[0]).parent
    stats = cmvn_stats_per_speaker(feats, utt2spk)
    ark = Path(cmvndir).absolute() / f"cmvn_{datadir.absolute().name}.ark"
    with ArkFeatureWriter(ark, dtype=np.float64) as w:
        for spk, st in stats.items():
            w[spk] = st
    write_feats_scp(datadir / "cmvn.scp", w.scp)
    return stats


def load_cmvn(datadir: str | os.PathLike) -> dict[str, np.ndarray]:
    """speaker -> (2, F + 1) float64 stats from DATADIR/cmvn.scp."""
    import kaldiio

    path = Path(datadir) / "cmvn.scp"
    if not path.is_file():
        raise DataError("no cmvn.scp", file=str(path), fix="run `pykaldi2 compute-cmvn DATADIR`")
    try:
        return {k: np.asarray(v, dtype=np.float64) for k, v in kaldiio.load_scp(str(path)).items()}
    except Exception as e:
        raise DataError(f"cannot read CMVN stats: {e}", file=str(path)) from None
