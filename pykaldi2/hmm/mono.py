"""Monophone training: Kaldi's gmm-init-mono and steps/train_mono.sh.

>>> cfg = MonoConfig(num_iters=40, totgauss=1000)
>>> model, alis, history = train_mono(feats, texts, topo, "lang/L.fst", disambig, [1], cfg,
...                                   exp_dir="exp/mono")
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pykaldi2.hmm.align import align_equal_compiled, compile_train_graphs
from pykaldi2.hmm.blas import one_blas_thread
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.topo import read_topo
from pykaldi2.hmm.training import GmmTrainConfig, estimate, finish_training, train_gmm_iters
from pykaldi2.utils.config import option
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


#: train_mono.sh's realign_iters.
MONO_REALIGN_ITERS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)


@dataclass
class MonoConfig(GmmTrainConfig):
    """steps/train_mono.sh options (same names and defaults): ``initial_beam`` is the beam of
    the first realignment, ``beam`` of the later ones; iteration 0 (from the equal alignment)
    uses ``min_gaussian_occupancy_first``."""

    num_iters: int = option(40, ge=1)
    max_iter_inc: int = option(30, ge=0)
    realign_iters: list[int] = field(default_factory=lambda: list(MONO_REALIGN_ITERS))
    totgauss: int = 1000
    initial_beam: float = 6.0
    min_gaussian_occupancy_first: float = option(3.0, ge=0)
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.totgauss < 1 or self.initial_beam <= 0:
            raise ValueError(f"MonoConfig: totgauss and initial_beam must be > 0: {self}")


@one_blas_thread()
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
    feat_type: str = "delta",
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
            ``log/history.jsonl`` are written there (see :func:`training.write_exp_dir`).
        shared_phones: phone groups sharing pdfs (lang phones/sets.int).
        feat_type: recorded in the model: how ``feats`` were made (``delta`` as Kaldi).

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
    # iteration 0: from the equal alignment, min-gaussian-occupancy 3, no mixing up (0.mdl).
    rec = {"iter": 0, "equal_align_failed": len(graphs) - len(alis)}
    rec.update(
        estimate(
            model,
            feats,
            alis,
            cfg,
            num_gauss,
            min_gaussian_occupancy=cfg.min_gaussian_occupancy_first,
        )
    )
    log.info("iter 0 (equal alignment): %s", json.dumps(rec))
    alis, history = train_gmm_iters(
        model,
        graphs,
        feats,
        alis,
        cfg,
        sil_phones,
        target_gauss=cfg.totgauss,
        beam_schedule=lambda it: cfg.initial_beam if it == 1 else cfg.beam,
    )
    history.insert(0, rec)
    model.feat_type = feat_type
    alis = finish_training(model, graphs, feats, cfg, "mono", history, exp_dir)
    return model, alis, history
