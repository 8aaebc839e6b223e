"""The training loop shared by steps/train_mono.sh, train_deltas.sh and train_lda_mllt.sh.

Each iteration: realign (at ``realign_iters``, with boosted silence), an optional hook (MLLT),
gmm-acc-stats-ali, gmm-est with mixing up to the current Gaussian target, which grows by
``inc_gauss`` per iteration until ``max_iter_inc``. The configs of the three scripts share
:class:`GmmTrainConfig` (and the triphone ones :class:`TreeConfig`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pykaldi2.data.transcripts import MAX_MISSING_TEXT_FRACTION
from pykaldi2.hmm.ali import ali_to_pdf, write_ali, write_model_id
from pykaldi2.hmm.align import AlignConfig, gmm_align_compiled
from pykaldi2.hmm.gmm import gmm_acc_stats_ali, gmm_boost_silence, gmm_est
from pykaldi2.hmm.model import GmmModel, gmm_info
from pykaldi2.utils.config import ConfigMixin, option
from pykaldi2.utils.io import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class GmmTrainConfig(ConfigMixin):
    """Options every steps/train_*.sh has (Kaldi's names and defaults).

    ``power`` is 0.25 as the scripts pass it (gmm-est's own default is 0.2); the retry beam is
    ``retry_beam_factor * beam`` (40 for beam 10). ``max_missing_text_fraction`` (not Kaldi's):
    utterances with features but no transcript are listed and left out, and more than this
    fraction of them stops the command (:func:`pykaldi2.data.transcripts.check_transcribed`).
    """

    num_iters: int = 35
    max_iter_inc: int = 25
    realign_iters: list[int] = field(default_factory=lambda: [10, 20, 30])
    beam: float = 10.0
    retry_beam_factor: float = option(4.0, ge=0)
    careful: bool = False
    boost_silence: float = 1.0
    power: float = 0.25
    acoustic_scale: float = option(0.1, gt=0)
    transition_scale: float = option(1.0, ge=0)
    self_loop_scale: float = option(0.1, ge=0)
    perturb_factor: float = option(0.01, ge=0)
    min_count: float = option(20.0, ge=0)
    max_missing_text_fraction: float = option(MAX_MISSING_TEXT_FRACTION, ge=0, le=1)

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.num_iters < 1 or not 0 <= self.max_iter_inc <= self.num_iters:
            raise ValueError(f"{name}: need num_iters >= 1 and 0 <= max_iter_inc <= num_iters")
        if self.beam <= 0 or self.boost_silence <= 0 or self.power <= 0:
            raise ValueError(f"{name}: beam, boost_silence and power must be > 0")

    def align_config(self, beam: float | None = None) -> AlignConfig:
        beam = self.beam if beam is None else beam
        return AlignConfig(
            beam=beam,
            retry_beam=beam * self.retry_beam_factor,
            careful=self.careful,
            acoustic_scale=self.acoustic_scale,
            transition_scale=self.transition_scale,
            self_loop_scale=self.self_loop_scale,
        )


@dataclass
class TreeConfig(GmmTrainConfig):
    """Triphone systems: tree size (``--max-leaves``), Gaussian target and build-tree options."""

    num_leaves: int = 2000
    tot_gauss: int = 10000
    cluster_thresh: float = -1.0
    tree_thresh: float = 300.0
    tree_min_count: float = option(0.0, ge=0)
    context_width: int = 3
    central_position: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_leaves < 1 or self.tot_gauss < self.num_leaves:
            raise ValueError(f"{type(self).__name__}: need 1 <= num_leaves <= tot_gauss")
        if not 0 <= self.central_position < self.context_width:
            raise ValueError(f"{type(self).__name__}: central_position not in [0, context_width)")


def train_gmm_iters(
    model: GmmModel,
    graphs: Mapping,
    feats: Mapping[str, np.ndarray],
    alis: dict[str, np.ndarray],
    cfg: GmmTrainConfig,
    sil_phones: Sequence[int],
    *,
    target_gauss: int,
    beam_schedule: Callable[[int], float] | None = None,
    on_realign: Callable[[int, dict], None] | None = None,
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Iterations ``1 .. num_iters-1`` of realign / accumulate / estimate / mix up.

    The Gaussian target starts at the model's count and grows by
    ``(target_gauss - start) // max_iter_inc`` per iteration up to ``max_iter_inc``.

    ``beam_schedule(it)`` gives the alignment beam of iteration ``it`` (default ``cfg.beam``);
    ``on_realign(it, alis)`` runs before accumulation (MLLT updates model and ``feats`` there).
    Returns the last alignments and one history record per iteration.
    """
    num_gauss = int(model.am.num_gauss)
    inc_gauss = max(0, (target_gauss - num_gauss) // max(cfg.max_iter_inc, 1))
    history = []
    for it in range(1, cfg.num_iters):
        t0 = time.time()
        rec: dict = {"iter": it}
        if it in cfg.realign_iters:
            am = gmm_boost_silence(model, sil_phones, cfg.boost_silence)
            beam = beam_schedule(it) if beam_schedule else cfg.beam
            res = gmm_align_compiled(model, graphs, feats, cfg.align_config(beam), am)
            alis = res.alis
            rec.update(align_like=res.like_per_frame, align_failed=len(res.failed))
        if on_realign is not None:
            on_realign(it, alis)
        rec.update(estimate(model, feats, alis, cfg, num_gauss))
        if it <= cfg.max_iter_inc:
            num_gauss += inc_gauss
        rec["seconds"] = round(time.time() - t0, 2)
        log.info("iter %d: %s", it, json.dumps(rec))
        history.append(rec)
    return alis, history


def estimate(model, feats, alis, cfg: GmmTrainConfig, mixup: int, **est_kw) -> dict:
    """One gmm-acc-stats-ali + gmm-est (mixing up to ``mixup``); returns the log record."""
    accs = gmm_acc_stats_ali(model, feats, alis)
    est = gmm_est(
        model,
        accs,
        mixup=mixup,
        power=cfg.power,
        perturb_factor=cfg.perturb_factor,
        min_count=cfg.min_count,
        **est_kw,
    )
    return {
        "like_per_frame": est.like_per_frame,
        "frames": est.num_frames,
        "num_gauss": est.num_gauss,
    }


def finish_training(
    model: GmmModel,
    graphs: Mapping,
    feats: Mapping[str, np.ndarray],
    cfg: GmmTrainConfig,
    system: str,
    history: list[dict],
    exp_dir: str | os.PathLike | None,
) -> dict[str, np.ndarray]:
    """Final alignment with the final model, provenance in ``model.info``, the exp dir."""
    final = gmm_align_compiled(model, graphs, feats, cfg.align_config())
    model.info = {"system": system, "config": cfg.to_dict(), "gmm_info": gmm_info(model)}
    if exp_dir is not None:
        write_exp_dir(exp_dir, model, final.alis, history, cfg.to_dict())
    return final.alis


def write_exp_dir(
    exp_dir: str | os.PathLike,
    model: GmmModel,
    alis: Mapping[str, np.ndarray],
    history: list[dict],
    config: dict,
) -> None:
    """A self-describing exp dir: final.mdl + tree and their side files in Kaldi's formats
    (:meth:`GmmModel.save`), model_id (of final.mdl's transition model), ali.ark/scp (transition-ids), pdf.ark/scp (ali-to-pdf targets),
    config.json, log/history.jsonl."""
    d = Path(exp_dir)
    d.mkdir(parents=True, exist_ok=True)
    model.save(d / "final.mdl")
    write_model_id(d, model)
    write_ali(d / "ali.ark", alis)
    write_ali(d / "pdf.ark", {u: ali_to_pdf(model, a) for u, a in alis.items()})
    atomic_write_text(d / "config.json", json.dumps(config, indent=2) + "\n")
    atomic_write_text(d / "log" / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))
