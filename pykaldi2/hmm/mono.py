"""Monophone training: Kaldi's gmm-init-mono and steps/train_mono.sh.

>>> cfg = MonoConfig(num_iters=40, totgauss=1000)
>>> model, alis, history = train_mono(feats, texts, topo, "lang/L.fst", disambig, [1], cfg,
...                                   exp_dir="exp/mono")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pykaldi2.hmm.align import (
    AlignConfig,
    align_equal_compiled,
    compile_train_graphs,
    gmm_align_compiled,
)
from pykaldi2.hmm.gmm import gmm_acc_stats_ali, gmm_boost_silence, gmm_est
from pykaldi2.hmm.model import GmmModel, gmm_info
from pykaldi2.hmm.topo import read_topo
from pykaldi2.utils.errors import DataError

log = logging.getLogger(__name__)


def global_mean_var(feats: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean (D,) and variance (D,) over all frames of ``feats``, and the frame count."""
    n, s, s2 = 0, None, None
    for x in feats:
        x = np.asarray(x, dtype=np.float64)
        if s is None:
            s, s2 = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        n += len(x)
        s += x.sum(axis=0)
        s2 += (x * x).sum(axis=0)
    if not n:
        raise DataError("no feature frames to initialize the model from", fix="check feats")
    mean = s / n
    return mean, np.maximum(s2 / n - mean * mean, 1e-6), n


def gmm_init_mono(
    topo,
    feats: Iterable[np.ndarray],
    shared_phones: Sequence[Sequence[int]] | None = None,
    perturb_factor: float = 0.0,
) -> GmmModel:
    """A flat-start monophone model (gmm-init-mono): every pdf is one global Gaussian.

    Args:
        topo: ``khg.HmmTopology``, its text, or a path to lang/topo.
        feats: (T, D) feature matrices giving the global mean and variance.
        shared_phones: phone groups sharing pdfs (Kaldi's ``--shared-phones``), e.g. the
            word-position variants of one phone.
        perturb_factor: perturb the means by this times the standard deviation.
    """
    from pykaldi2.kaldi import khg

    if not isinstance(topo, khg.HmmTopology):
        topo = read_topo(topo)
    mean, var, _ = global_mean_var(feats)
    n2c = topo.get_phone_to_num_pdf_classes()
    if shared_phones:
        tree = khg.monophone_context_dependency_shared(
            phone_classes=[sorted(int(p) for p in g) for g in shared_phones],
            phone2num_pdf_classes=n2c,
        )
    else:
        tree = khg.monophone_context_dependency(phones=topo.phones, phone2num_pdf_classes=n2c)
    gmm = khg.DiagGmm(nmix=1, dim=len(mean))
    gmm.set_weights(np.ones(1, dtype=np.float32))
    gmm.set_means(mean[None].astype(np.float32))
    gmm.set_invvars((1.0 / var)[None].astype(np.float32))
    gmm.compute_gconsts()
    am = khg.AmDiagGmm()
    for _ in range(tree.num_pdfs):
        am.add_pdf(gmm)
    if perturb_factor:
        for p in range(tree.num_pdfs):
            am.get_pdf(p).perturb(perturb_factor)
    tm = khg.TransitionModel(ctx_dep=tree, hmm_topo=topo)
    return GmmModel(tm=tm, tree=tree, am=am)


@dataclass
class MonoConfig:
    """steps/train_mono.sh options (same names and defaults).

    ``power`` is 0.25 as train_mono.sh passes it (gmm-est's own default is 0.2).
    """

    num_iters: int = 40
    max_iter_inc: int = 30
    totgauss: int = 1000
    realign_iters: list[int] = field(
        default_factory=lambda: (
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29] + [32, 35, 38]
        )
    )
    initial_beam: float = 6.0
    regular_beam: float = 10.0
    retry_beam_factor: float = 4.0
    careful: bool = False
    boost_silence: float = 1.0
    power: float = 0.25
    min_gaussian_occupancy_first: float = 3.0
    acoustic_scale: float = 0.1
    transition_scale: float = 1.0
    self_loop_scale: float = 0.1
    perturb_factor: float = 0.01
    min_count: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_iters < 1:
            raise ValueError(f"MonoConfig.num_iters must be >= 1, got {self.num_iters}")
        if not 0 <= self.max_iter_inc <= self.num_iters:
            raise ValueError("MonoConfig.max_iter_inc must be in [0, num_iters]")
        if self.totgauss < 1 or self.boost_silence <= 0 or self.power <= 0:
            raise ValueError(f"MonoConfig: totgauss, boost_silence, power must be > 0: {self}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> MonoConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"MonoConfig: unknown keys {sorted(unknown)}")
        return cls(**d)


def _align_config(cfg, beam: float) -> AlignConfig:
    return AlignConfig(
        beam=beam,
        retry_beam=beam * cfg.retry_beam_factor,
        careful=cfg.careful,
        acoustic_scale=cfg.acoustic_scale,
        transition_scale=cfg.transition_scale,
        self_loop_scale=cfg.self_loop_scale,
    )


def train_gmm_iters(
    model: GmmModel,
    graphs: Mapping,
    feats: Mapping[str, np.ndarray],
    alis: dict[str, np.ndarray],
    cfg,
    sil_phones: Sequence[int],
    *,
    first_iter: int,
    num_gauss: int,
    inc_gauss: int,
    beam_schedule,
    on_realign=None,
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The shared loop of train_mono.sh / train_deltas.sh: realign, accumulate, estimate, mix up.

    ``beam_schedule(it)`` gives the alignment beam of iteration ``it``; ``on_realign(it, alis)``
    may transform the model before accumulation (MLLT). Returns the last alignments and one
    history record per iteration.
    """
    history = []
    for it in range(first_iter, cfg.num_iters):
        t0 = time.time()
        rec: dict = {"iter": it}
        if it in cfg.realign_iters:
            am = gmm_boost_silence(model, sil_phones, cfg.boost_silence)
            res = gmm_align_compiled(
                model, graphs, feats, _align_config(cfg, beam_schedule(it)), am
            )
            alis = res.alis
            rec.update(align_like=res.like_per_frame, align_failed=len(res.failed))
        if on_realign is not None:
            on_realign(it, alis)
        accs = gmm_acc_stats_ali(model, feats, alis)
        est = gmm_est(
            model,
            accs,
            mixup=num_gauss,
            power=cfg.power,
            perturb_factor=cfg.perturb_factor,
            min_count=cfg.min_count,
        )
        if it <= cfg.max_iter_inc:
            num_gauss += inc_gauss
        rec.update(
            like_per_frame=est.like_per_frame,
            frames=est.num_frames,
            num_gauss=est.num_gauss,
            seconds=round(time.time() - t0, 2),
        )
        log.info("iter %d: %s", it, json.dumps(rec))
        history.append(rec)
    return alis, history


def train_mono(
    feats: Mapping[str, np.ndarray],
    texts: Mapping[str, Sequence[int]],
    topo,
    lex_fst,
    disambig_phones: Sequence[int],
    sil_phones: Sequence[int],
    config: MonoConfig | None = None,
    exp_dir: str | os.PathLike | None = None,
    shared_phones: Sequence[Sequence[int]] | None = None,
) -> tuple[GmmModel, dict[str, np.ndarray], list[dict]]:
    """Flat-start monophone training (steps/train_mono.sh).

    Args:
        feats: utt -> (T, D) features (Kaldi: CMVN'd MFCC + deltas).
        texts: utt -> word ids of the transcript.
        topo: ``khg.HmmTopology``, topology text, or lang/topo path.
        lex_fst: L.fst (``StdVectorFst`` or path); disambig_phones: its ``#n`` phone ids.
        sil_phones: silence phone ids (for ``boost_silence``).
        config: :class:`MonoConfig`.
        exp_dir: when given, ``final.mdl``, ``tree``, ``ali.{ark,scp}``, ``config.json`` and
            ``log/history.jsonl`` are written there (see :func:`write_exp_dir`).

    Returns:
        ``(model, alis, history)``: the final model, its alignments of the training data
        (utt -> (T,) transition_ids) and one record per iteration (``like_per_frame`` ...).
    """
    cfg = config or MonoConfig()
    model = gmm_init_mono(topo, feats.values(), shared_phones=shared_phones)
    graphs = compile_train_graphs(model, lex_fst, disambig_phones, texts)
    if not graphs:
        raise DataError("no utterance has a training graph", fix="check texts and lang dir")
    alis = align_equal_compiled(graphs, {u: len(x) for u, x in feats.items()}, seed=cfg.seed)
    num_gauss = int(model.am.num_gauss)
    inc_gauss = max(0, (cfg.totgauss - num_gauss) // max(cfg.max_iter_inc, 1))
    # iteration 0: from the equal alignment, min-gaussian-occupancy 3, no mixing up (0.mdl).
    accs = gmm_acc_stats_ali(model, feats, alis)
    est = gmm_est(
        model,
        accs,
        mixup=num_gauss,
        power=cfg.power,
        min_gaussian_occupancy=cfg.min_gaussian_occupancy_first,
    )
    history = [
        {
            "iter": 0,
            "like_per_frame": est.like_per_frame,
            "frames": est.num_frames,
            "num_gauss": est.num_gauss,
            "equal_align_failed": len(graphs) - len(alis),
        }
    ]
    log.info("iter 0 (equal alignment): %s", json.dumps(history[0]))
    alis, rest = train_gmm_iters(
        model,
        graphs,
        feats,
        alis,
        cfg,
        sil_phones,
        first_iter=1,
        num_gauss=num_gauss,
        inc_gauss=inc_gauss,
        beam_schedule=lambda it: cfg.initial_beam if it == 1 else cfg.regular_beam,
    )
    history += rest
    final = gmm_align_compiled(model, graphs, feats, _align_config(cfg, cfg.regular_beam))
    model.info = {"system": "mono", "config": cfg.to_dict(), "gmm_info": gmm_info(model)}
    if exp_dir is not None:
        write_exp_dir(exp_dir, model, final.alis, history, cfg.to_dict())
    return model, final.alis, history


def write_exp_dir(
    exp_dir: str | os.PathLike,
    model: GmmModel,
    alis: Mapping[str, np.ndarray],
    history: list[dict],
    config: dict,
) -> None:
    """A self-describing exp dir: final.mdl, tree (Kaldi binary), ali.ark/scp (transition-ids),
    pdf.ark/scp (ali-to-pdf targets), config.json, log/history.jsonl."""
    from pathlib import Path

    from pykaldi2.hmm.ali import ali_to_pdf, write_ali
    from pykaldi2.utils.io import atomic_write_text

    d = Path(exp_dir)
    d.mkdir(parents=True, exist_ok=True)
    model.save(d / "final.mdl")
    model.write_tree(d / "tree")
    write_ali(d / "ali.ark", alis)
    write_ali(d / "pdf.ark", {u: ali_to_pdf(model, a) for u, a in alis.items()})
    atomic_write_text(d / "config.json", json.dumps(config, indent=2) + "\n")
    atomic_write_text(d / "log" / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))
