"""Two-pass decoding of a speaker-adapted GMM system: Kaldi's steps/decode_fmllr.sh.

1. decode with the SI alignment model (``final.alimdl``) on speaker-independent features
   (beam ``first_beam``);
2. each speaker's first transform from the frames of the first pass's best paths (silence
   weighted ``silence_weight``), with the alignment model's Gaussian posteriors and the final
   model's Gaussians (gmm-post-to-gpost | gmm-est-fmllr-gpost);
3. decode with ``final.mdl`` on the adapted features;
4. a second transform from that pass's best paths (gmm-est-fmllr), composed onto the first;
5. the final decode with ``final.mdl`` and the final transforms (Kaldi rescores the pass-3
   lattices; here the utterances are decoded again).

The frame posteriors come from the best path of each lattice at the decoding acoustic scale
(Kaldi's scripts use lattice posteriors; the best path carries most of their mass). The
transforms are written as ``DECODE_DIR/trans.JOB`` (Kaldi matrices keyed by speaker), the
intermediate decodes as ``DECODE_DIR/si`` and ``DECODE_DIR/pass2``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pykaldi2.decoding.batch import DecodeSummary, PipelineFeats, decode_dir
from pykaldi2.decoding.lattice import best_path
from pykaldi2.decoding.lattice_io import read_lattice_ark
from pykaldi2.decoding.wfst import DecoderConfig
from pykaldi2.hmm.fmllr import FmllrOptions
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.sat import FmllrJob, fmllr_job
from pykaldi2.hmm.streams import AliWriter, FeaturePipeline
from pykaldi2.utils.config import ConfigMixin, option
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.jobs import JobRunner

log = logging.getLogger(__name__)


@dataclass
class DecodeFmllrConfig(ConfigMixin):
    """decode_fmllr.sh options (Kaldi's names and defaults where they apply)."""

    decode: DecoderConfig = field(default_factory=DecoderConfig)
    first_beam: float = option(10.0, gt=0)
    silence_weight: float = option(0.01, ge=0, le=1)
    fmllr: FmllrOptions = field(default_factory=FmllrOptions)


def _best_path_alis(dec_dir: Path, acoustic_scale: float, out: Path) -> int:
    """The transition-ids of each lattice's best path (LM weight 1 / acoustic scale), written
    sorted by utterance to ``out``; returns their number."""
    alis = {}
    for f in sorted([*dec_dir.glob("lat.*.gz"), *dec_dir.glob("lat.*.ark")]):
        for utt, lat in read_lattice_ark(f):
            bp = best_path(lat, lmwt=1.0 / acoustic_scale)
            if bp is not None and bp.ali:
                alis[utt] = np.asarray(bp.ali, dtype=np.int32)
    with AliWriter(out) as w:
        for utt in sorted(alis):
            w.write(utt, alis[utt])
    return len(alis)


def _transforms(
    runner, splits, model_path, pipes, ali, outs, silence, cfg, post=None, compose=None
) -> list[str]:
    jobs = [
        FmllrJob(
            model=str(model_path),
            data=str(d),
            pipe=p,
            ali_in=[str(ali)],
            out=str(o),
            silence_phones=silence,
            silence_weight=cfg.silence_weight,
            compose_with=None if compose is None else str(compose[j]),
            post_model=None if post is None else str(post[0]),
            post_pipe=None if post is None else post[1],
            opts=cfg.fmllr,
        )
        for j, (d, p, o) in enumerate(zip(splits, pipes, outs))
    ]
    log_dir = Path(outs[0]).parent / "log"
    runner(fmllr_job, jobs, desc="gmm-est-fmllr", log=log_dir / f"{Path(outs[0]).stem}.JOB.log")
    return [str(o) for o in outs]


def _decode(graph_dir, data_dirs, pipes, out, model, cfg: DecoderConfig, cmd) -> DecodeSummary:
    """decode_dir with one job per split data dir (its speakers' transforms in its pipe)."""
    sources = [PipelineFeats(str(d), p) for d, p in zip(data_dirs, pipes)]
    num_utts = sum(_num_lines(Path(d) / "feats.scp") for d in data_dirs)  # the bar's total
    return decode_dir(
        graph_dir, sources, out, model.tm, config=cfg, gmm_am=model.am, cmd=cmd,
        num_utts=num_utts or None,
    )  # fmt: skip


def _num_lines(path: Path) -> int:
    """Non-empty lines of a table (0 where it is missing)."""
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def decode_fmllr(
    graph_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    exp_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: DecodeFmllrConfig | None = None,
    *,
    nj: int = 1,
    cmd: str | None = None,
) -> DecodeSummary:
    """steps/decode_fmllr.sh for the SAT system ``exp_dir`` (final.mdl + final.alimdl), in
    ``nj`` jobs by speaker, where ``cmd`` runs them (Kaldi's ``--cmd``)."""
    from pykaldi2.data.split import split_data

    cfg = config or DecodeFmllrConfig()
    exp, out, graph = Path(exp_dir), Path(out_dir), Path(graph_dir)
    final = GmmModel.load(exp / "final.mdl")
    ali_path = exp / "final.alimdl"
    if not ali_path.is_file():
        raise DataError("no final.alimdl (not a SAT system?)", file=str(exp), fix="train-sat first")
    alimdl = GmmModel.load(ali_path)
    csl = graph / "phones" / "silence.csl"
    silence = [int(p) for p in csl.read_text().split(":")] if csl.is_file() else []
    if not silence:
        log.warning("decode-fmllr: no %s; silence frames are not down-weighted", csl)
    splits = split_data(data_dir, nj)
    si_pipe = FeaturePipeline.for_model(final).base()
    out.mkdir(parents=True, exist_ok=True)
    with JobRunner(nj, cmd=cmd) as runner:
        # pass 1: SI
        first = DecoderConfig(**{**cfg.decode.to_dict(), "beam": cfg.first_beam})
        _decode(graph, splits, [si_pipe] * nj, out / "si", alimdl, first, cmd)
        _best_path_alis(out / "si", first.acoustic_scale, out / "si" / "ali.gz")
        pre = _transforms(
            runner, splits, exp / "final.mdl", [si_pipe] * nj, out / "si" / "ali.gz",
            [out / f"pre_trans.{j + 1}" for j in range(nj)], silence, cfg,
            post=(ali_path, si_pipe),
        )  # fmt: skip
        # pass 2: adapted with the first transforms
        pipes = [FeaturePipeline(**{**si_pipe.__dict__, "fmllr": t}) for t in pre]
        _decode(graph, splits, pipes, out / "pass2", final, cfg.decode, cmd)
        _best_path_alis(out / "pass2", cfg.decode.acoustic_scale, out / "pass2" / "ali.gz")
        trans = _transforms(
            runner, splits, exp / "final.mdl", pipes, out / "pass2" / "ali.gz",
            [out / f"trans.{j + 1}" for j in range(nj)], silence, cfg, compose=pre,
        )  # fmt: skip
    for t in pre:
        os.unlink(t)
    pipes = [FeaturePipeline(**{**si_pipe.__dict__, "fmllr": t}) for t in trans]
    return _decode(graph, splits, pipes, out, final, cfg.decode, cmd)
