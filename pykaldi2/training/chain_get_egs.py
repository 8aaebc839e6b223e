"""chain-get-egs: LF-MMI training examples written once, on disk (Kaldi's
steps/nnet3/chain/get_egs.sh with nnet3-chain-get-egs and nnet3-chain-shuffle-egs).

Stages, each resumable (a killed run redoes only what is missing; a finished egs dir is reused
as long as ``info.json`` records the same settings)::

    0  den graph     one streamed pass over the alignments
                     (:func:`~pykaldi2.training.chain_data.chain_utterances`): the phone LM
                     (chain-est-phone-lm), den.fst and normalization.fst (chain-make-den-fst),
                     the chain model (final.mdl + tree), the train/valid split (copies of one
                     recording, by ``utt2uniq``, stay on one side) and each job's utterances
                     (``tmp/share.JOB.json``: ids only)
    1  NJ jobs       each streams the alignments of its own utterances from the ali dirs;
                     per utterance: features read once, supervision built once from the
                     alignment's phones with tolerance (chain-get-supervision), cut into
                     Kaldi's chunks (:class:`~pykaldi2.training.utterance_splitter.UtteranceSplitter`),
                     each chunk's numerator composed with normalization.fst and its input
                     window taken with the model's context plus ``extra_context`` frames on
                     each side (room for frame shifts; edge frames repeated outside the
                     utterance); chunks go to random archives, appended as they are made
                     to ``tmp/egs.JOB.ARCHIVE.pieces``
                     (:class:`~pykaldi2.training.egs_archive.ArchiveSpool`)
    2  merge         per archive: the jobs' pieces concatenated and shuffled -> ``egs.K.npz``
                     (and ``valid.npz``), then ``info.json``

No process holds the corpus: stage 0 keeps per utterance its id and frame count, a job its
share's ids and at most ``ArchiveSpool.max_bytes`` bytes of examples, a merge one archive.

An egs dir::

    egs/{info.json, egs.0.npz ... egs.K-1.npz, valid.npz, den.fst, normalization.fst,
         phone_lm.fst, final.mdl, tree, split.json, valid_uttlist}

``cfg`` is a :class:`~pykaldi2.training.chain.TrainChainConfig` (its ``egs`` section is
:class:`ChainEgsConfig`).

Dimension legend: T input frames, F feature dim.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.training.egs_archive import ArchiveSpool, Example, merge_archives
from pykaldi2.training.utterance_splitter import UtteranceSplitter, round_up_num_frames
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.io import atomic_write_text
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)

__all__ = [
    "ChainEgsConfig",
    "EgsInfo",
    "chain_get_egs",
    "egs_dir_of",
    "egs_settings",
    "read_egs_info",
    "wait_for_egs",
]

#: Version of the egs dir format (info.json).
EGS_VERSION = 1
#: Bytes of examples (features in the egs dtype + numerator arrays) a job keeps before
#: appending them to its piece files: the bound of a job's memory for examples. (A bound in
#: input frames, as before, let the buffer grow with the numerators, i.e. with the tree.)
JOB_BUFFER_BYTES = 16 << 20


@dataclass
class ChainEgsConfig(ConfigMixin):
    """get_egs.sh's options.

    Attributes:
        dir: the egs dir ('' : EXP_DIR/egs).
        chunk_widths: ``--egs.chunk-width``, input frames (rounded up to multiples of the frame
            subsampling factor; the first is the principal width). Empty: no egs dir, the
            examples are made in memory at every start (the older path; simulation needs it).
        nj: parallel jobs of stages 1 and 2.
        frames_per_archive: about this many input frames per archive (Kaldi's
            frames_per_iter plays this part); at least ``min_archives`` archives.
        min_archives: lower bound on the number of archives (each training rank reads its own
            archives: keep it a multiple of the number of ranks).
        extra_context: input frames beyond the model's context on each side (-1: the frame
            subsampling factor // 2, Kaldi's margin for ``--frame-shift``).
        dtype: storage type of the features (``float16`` halves the size; Kaldi compresses
            egs to 8 bits).
    """

    dir: str = ""
    chunk_widths: list[int] = field(default_factory=list)
    nj: int = 2
    frames_per_archive: int = 200000
    min_archives: int = 2
    extra_context: int = -1
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if any(int(w) <= 0 for w in self.chunk_widths):
            raise Pykaldi2Error(f"egs.chunk_widths must be > 0, got {self.chunk_widths}")
        if self.nj < 1 or self.frames_per_archive < 1 or self.min_archives < 1:
            raise Pykaldi2Error("egs.nj, egs.frames_per_archive, egs.min_archives must be >= 1")
        if self.dtype not in ("float16", "float32"):
            raise Pykaldi2Error(f"egs.dtype must be float16 or float32, got {self.dtype!r}")
        if self.extra_context < -1:
            raise Pykaldi2Error("egs.extra_context must be >= 0 (or -1: automatic)")

    @property
    def enabled(self) -> bool:
        return bool(self.chunk_widths)


@dataclass
class EgsInfo:
    """``info.json`` of a finished egs dir."""

    dir: Path
    settings: dict
    num_archives: int
    archive_sizes: list[int]
    chunk_widths: list[int]
    left_context: int
    right_context: int
    extra_context: int
    frame_subsampling_factor: int
    num_pdfs: int
    feat_dim: int
    num_chunks: int
    num_valid_chunks: int
    num_utts: int
    stats: dict = field(default_factory=dict)

    def archive(self, k: int) -> Path:
        return self.dir / f"egs.{k}.npz"

    @property
    def valid_archive(self) -> Path:
        return self.dir / "valid.npz"

    def to_json(self) -> str:
        d = {k: v for k, v in self.__dict__.items() if k != "dir"}
        return json.dumps({"version": EGS_VERSION, **d}, indent=1, sort_keys=True) + "\n"


def read_egs_info(egs_dir: str | os.PathLike) -> EgsInfo | None:
    """The egs dir's ``info.json`` (None when the dir is not finished)."""
    path = Path(egs_dir) / "info.json"
    if not path.is_file():
        return None
    d = json.loads(path.read_text(encoding="utf-8"))
    if d.pop("version", None) != EGS_VERSION:
        raise DataError("egs dir of another format version", file=str(path),
                        fix="delete the egs dir; train-chain rebuilds it")  # fmt: skip
    return EgsInfo(dir=Path(egs_dir), **d)


def _file_stamp(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, int(st.st_mtime)]


def egs_settings(cfg, left_context: int, right_context: int) -> dict:
    """Everything the examples depend on (compared on reuse)."""
    from pykaldi2.hmm.exp_dir import ali_files

    e = cfg.egs
    inputs = []
    for d in cfg.ali_dir:
        inputs += [_file_stamp(p) for p in [Path(d) / "final.mdl", *ali_files(Path(d))]]
    for d in cfg.train_data:
        inputs += [_file_stamp(Path(d) / "feats.scp")]
    if cfg.tree_dir:
        inputs += [_file_stamp(Path(cfg.tree_dir) / "final.mdl")]
    return {
        "inputs": inputs,
        "train_data": [str(Path(d).resolve()) for d in cfg.train_data],
        "features": cfg.features.to_dict(),
        "tree_dir": str(Path(cfg.tree_dir).resolve()) if cfg.tree_dir else "",
        "topology": cfg.topology,
        "frame_subsampling_factor": cfg.frame_subsampling_factor,
        "left_tolerance": cfg.left_tolerance,
        "right_tolerance": cfg.right_tolerance,
        "phone_lm": cfg.phone_lm.to_dict(),
        "chunk_widths": round_up_num_frames(e.chunk_widths, cfg.frame_subsampling_factor),
        "left_context": int(left_context),
        "right_context": int(right_context),
        "extra_context": _extra(cfg),
        "frames_per_archive": e.frames_per_archive,
        "min_archives": e.min_archives,
        "dtype": e.dtype,
        "valid_fraction": cfg.valid_fraction,
        "length_tolerance": cfg.length_tolerance,
        "seed": cfg.seed,
        # only when set: egs dirs made before den_fst_dir was honoured keep their digest
        **({"den_fst_dir": str(Path(cfg.den_fst_dir).resolve())} if cfg.den_fst_dir else {}),
    }


def _extra(cfg) -> int:
    e = cfg.egs.extra_context
    return cfg.frame_subsampling_factor // 2 if e < 0 else int(e)


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Stage 0
# ---------------------------------------------------------------------------------------------
def _stage0(cfg, egs_dir: Path, tmp: Path, settings: dict) -> dict:
    from pykaldi2.lang.den_fst import write_fst
    from pykaldi2.training.chain_data import chain_utterances
    from pykaldi2.training.data import DataDirFeatures

    feats = DataDirFeatures(cfg.train_data, cfg.features)
    cu = chain_utterances(cfg, feats)
    frames, train, valid, den = cu.frames, cu.train, cu.valid, cu.den_fst
    if cu.phone_lm is not None:
        write_fst(cu.phone_lm, egs_dir / "phone_lm.fst")
    write_fst(den, egs_dir / "den.fst")
    write_fst(cu.norm_fst, egs_dir / "normalization.fst")
    chain_model = cu.chain_model
    chain_model.save(egs_dir / "final.mdl")
    nj = cfg.egs.nj
    utts = [(u, False) for u in train] + [(u, True) for u in valid]
    for j in range(nj):  # each job streams the alignments of its share itself
        atomic_write_text(tmp / f"share.{j}.json", json.dumps(dict(utts[j::nj])))
    f = cfg.frame_subsampling_factor
    widths = settings["chunk_widths"]
    ctx = settings["left_context"] + settings["right_context"] + 2 * settings["extra_context"]
    frames_est = sum(frames[u] for u in train) * (1.0 + ctx / widths[0])
    num_archives = max(cfg.egs.min_archives, int(np.ceil(frames_est / cfg.egs.frames_per_archive)))
    split = {"train": train, "valid": valid, "num_archives": num_archives, "nj": nj,
             "num_pdfs": int(chain_model.tm.num_pdfs), "feat_dim": int(feats.dim),
             "frame_subsampling_factor": f, "digest": _digest(settings)}  # fmt: skip
    atomic_write_text(egs_dir / "valid_uttlist", "".join(u + "\n" for u in valid))
    atomic_write_text(egs_dir / "split.json", json.dumps(split, indent=1) + "\n")
    log.info(
        "chain-get-egs: %d train / %d valid utterances, %d archives, den.fst %d states",
        len(train), len(valid), num_archives, den.num_states,
    )  # fmt: skip
    return split


# ---------------------------------------------------------------------------------------------
# Stage 1: the jobs
# ---------------------------------------------------------------------------------------------
def _utt_rng(seed: int, utt: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(utt.encode())])


def _egs_job(args: tuple) -> dict:
    """One job of stage 1 (picklable for the spawn pool): writes its pieces and marker."""
    from pykaldi2.hmm.exp_dir import ali_dir_model
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import kaldifst
    from pykaldi2.lang.chain_supervision import (
        add_weight_to_supervision,
        chain_get_supervision,
        split_supervision,
    )
    from pykaldi2.lang.den_fst import ChainGraph
    from pykaldi2.training.chain_data import iter_phone_segments
    from pykaldi2.training.data import DataDirFeatures
    from pykaldi2.utils.proc import die_with_parent

    cfg_dict, cfg_cls, egs_dir, j, settings, split = args
    die_with_parent()
    cfg = cfg_cls.from_dict(cfg_dict)
    egs_dir = Path(egs_dir)
    tmp = egs_dir / "tmp"
    marker = tmp / f"job.{j}.json"
    if marker.is_file():
        return json.loads(marker.read_text(encoding="utf-8"))
    for p in tmp.glob(f"egs.{j}.*.pieces"):  # a killed run's partial pieces
        p.unlink()
    chain_model = GmmModel.load(egs_dir / "final.mdl")
    ali_model = ali_dir_model(Path(cfg.ali_dir[0]))
    norm = kaldifst.StdVectorFst.read(str(egs_dir / "normalization.fst"))
    feats = DataDirFeatures(cfg.train_data, cfg.features)
    share: dict[str, bool] = json.loads((tmp / f"share.{j}.json").read_text(encoding="utf-8"))
    f = cfg.frame_subsampling_factor
    splitter = UtteranceSplitter(settings["chunk_widths"], f)
    left = settings["left_context"] + settings["extra_context"]
    right = settings["right_context"] + settings["extra_context"]
    num_archives, num_pdfs = split["num_archives"], split["num_pdfs"]
    dtype = np.float16 if settings["dtype"] == "float16" else np.float32
    sup_opts = cfg.supervision_options()
    spool = ArchiveSpool(lambda k: tmp / f"egs.{j}.{k}.pieces", dtype, JOB_BUFFER_BYTES)
    stats = {"utts": 0, "chunks": 0, "too_short": 0, "no_supervision": 0, "chunk_failed": 0,
             "frames_in": 0, "frames_out": 0}  # fmt: skip
    segments = iter_phone_segments(cfg.ali_dir, ali_model, share)
    for utt, phones, durations in progress(segments, desc=f"chain-get-egs job {j}", unit="utt",
                                           total=len(share)):  # fmt: skip
        is_valid = share[utt]
        rng = _utt_rng(cfg.seed, utt)
        n = int(sum(durations))
        chunks = splitter.chunks(n, rng)
        if not chunks:
            stats["too_short"] += 1
            continue
        try:
            sup = chain_get_supervision(phones, durations, chain_model.tree, chain_model.tm,
                                        sup_opts, utt=utt)  # fmt: skip
        except DataError as e:
            stats["no_supervision"] += 1
            log.warning("chain-get-egs: dropping %s: %s", utt, e)
            continue
        x = np.asarray(feats[utt], dtype=np.float32)  # read once per utterance
        last = min(n, len(x)) - 1
        num_out = -(-n // f)
        stats["utts"] += 1
        stats["frames_in"] += n
        for t0, width in chunks:
            b, e = t0 // f, min((t0 + width) // f, num_out)
            try:
                part = split_supervision(sup, b, e, utt)
                g = ChainGraph.from_fst(add_weight_to_supervision(part, norm, utt=utt), num_pdfs)
            except DataError:
                stats["chunk_failed"] += 1
                continue
            idx = np.clip(np.arange(f * b - left, f * (e - 1) + 1 + right), 0, last)
            k = "valid" if is_valid else int(rng.integers(num_archives))
            spool.add(k, Example.from_graph(f"{utt}:{b}", x[idx], e - b, g))
            stats["chunks"] += 1
            stats["frames_out"] += e - b
    spool.flush()
    atomic_write_text(marker, json.dumps(stats))
    return stats


def _merge_job(args: tuple) -> int:
    egs_dir, k, nj, seed, dtype = args
    from pykaldi2.utils.proc import die_with_parent

    die_with_parent()
    egs_dir = Path(egs_dir)
    out = egs_dir / ("valid.npz" if k == "valid" else f"egs.{k}.npz")
    if out.is_file():
        from pykaldi2.training.egs_archive import EgsArchive

        return len(EgsArchive(out))
    pieces = [p for j in range(nj) if (p := egs_dir / "tmp" / f"egs.{j}.{k}.pieces").is_file()]
    sub = 1_000_000 if k == "valid" else int(k)
    return merge_archives(pieces, out, [seed, 7, sub],
                          np.float16 if dtype == "float16" else np.float32)  # fmt: skip


def _run(fn, jobs: list, nj: int, cmd: str | None, log: Path) -> list:
    """``fn`` over ``jobs``, ``nj`` at a time, where ``cmd`` runs them (Kaldi's ``--cmd``;
    :class:`~pykaldi2.utils.jobs.JobRunner`), logs ``log`` with ``JOB``."""
    from pykaldi2.utils.jobs import JobRunner

    with JobRunner(max(1, min(nj, len(jobs))), cmd=cmd) as run:
        return run(fn, jobs, log=log, desc=fn.__name__.strip("_"))


def chain_get_egs(cfg, egs_dir: str | os.PathLike, left_context: int, right_context: int,
                  nj: int | None = None, cmd: str | None = None) -> EgsInfo:  # fmt: skip
    """Build (or resume, or reuse) the egs dir for a model with the given context; the jobs of
    stages 1 and 2 run where ``cmd`` runs them (Kaldi's ``--cmd``; default ``$PYKALDI2_CMD``,
    else run.pl), logs in ``EGS_DIR/log/``."""
    egs_dir = Path(egs_dir)
    settings = egs_settings(cfg, left_context, right_context)
    digest = _digest(settings)
    info = read_egs_info(egs_dir)
    if info is not None:
        if _digest(info.settings) != digest:
            changed = sorted(k for k in settings if info.settings.get(k) != settings[k])
            raise DataError(
                f"the egs dir was made with other settings ({', '.join(changed)})",
                file=str(egs_dir / "info.json"),
                fix="delete the egs dir (or set egs.dir to a new one) to rebuild it",
            )
        log.info("chain-get-egs: %s is complete (%d archives); not rebuilt", egs_dir,
                 info.num_archives)  # fmt: skip
        return info
    egs_dir.mkdir(parents=True, exist_ok=True)
    tmp = egs_dir / "tmp"
    tmp.mkdir(exist_ok=True)
    split_path = egs_dir / "split.json"
    split = json.loads(split_path.read_text(encoding="utf-8")) if split_path.is_file() else None
    if split is not None and split.get("digest") != digest:
        raise DataError("a partial egs dir made with other settings", file=str(egs_dir),
                        fix="delete it (or set egs.dir to a new one)")  # fmt: skip
    if split is None:
        split = _stage0(cfg, egs_dir, tmp, settings)
    nj = int(nj or cfg.egs.nj)
    if split["nj"] != cfg.egs.nj:
        raise DataError(f"the partial egs dir was split for {split['nj']} jobs",
                        file=str(egs_dir), fix=f"set egs.nj={split['nj']} to resume it")  # fmt: skip
    jobs = [(cfg.to_dict(), type(cfg), str(egs_dir), j, settings, split)
            for j in range(split["nj"])]  # fmt: skip
    stats = _run(_egs_job, jobs, nj, cmd, egs_dir / "log" / "get_egs.JOB.log")
    ks: list[Any] = list(range(split["num_archives"])) + (["valid"] if split["valid"] else [])
    sizes = _run(_merge_job, [(str(egs_dir), k, split["nj"], cfg.seed, settings["dtype"])
                              for k in ks], nj, cmd, egs_dir / "log" / "merge.JOB.log")  # fmt: skip
    total = {k: sum(s[k] for s in stats) for k in stats[0]}
    n_train = sizes[: split["num_archives"]]
    if sum(n_train) == 0:
        raise DataError("no training chunk was made", file=str(egs_dir),
                        fix="check the chunk widths against the utterance lengths")  # fmt: skip
    info = EgsInfo(
        dir=egs_dir, settings=settings, num_archives=split["num_archives"],
        archive_sizes=[int(s) for s in n_train],
        chunk_widths=settings["chunk_widths"], left_context=settings["left_context"],
        right_context=settings["right_context"], extra_context=settings["extra_context"],
        frame_subsampling_factor=split["frame_subsampling_factor"],
        num_pdfs=split["num_pdfs"], feat_dim=split["feat_dim"], num_chunks=int(sum(n_train)),
        num_valid_chunks=int(sizes[-1]) if split["valid"] else 0,
        num_utts=total["utts"], stats=total,
    )  # fmt: skip
    atomic_write_text(egs_dir / "info.json", info.to_json())
    shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "chain-get-egs: %s: %d chunks in %d archives (+%d valid) from %d utterances; %d too "
        "short, %d without supervision, %d chunks failed", egs_dir, info.num_chunks,
        info.num_archives, info.num_valid_chunks, total["utts"], total["too_short"],
        total["no_supervision"], total["chunk_failed"],
    )  # fmt: skip
    return info


def egs_dir_of(cfg, exp_dir: str | os.PathLike) -> Path:
    """``cfg.egs.dir``, or EXP_DIR/egs."""
    return Path(cfg.egs.dir) if cfg.egs.dir else Path(exp_dir) / "egs"


def wait_for_egs(egs_dir: str | os.PathLike, poll_s: float = 5.0) -> EgsInfo:
    """Block until another rank has finished the egs dir (its ``info.json``); return it."""
    import time

    while True:
        info = read_egs_info(egs_dir)
        if info is not None:
            return info
        time.sleep(poll_s)
