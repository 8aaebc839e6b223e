"""The chain tree: Kaldi's steps/nnet3/chain/build_tree.sh.

A chain model has its own tree, built like a triphone system's first stage but on the chain
topology (one HMM state per phone, a forward and a self-loop pdf class) at the network's
output frame rate::

    mono    = a monophone model on the chain topology (lang_chain/topo), only for conversion
    ali_1/3 = convert-ali --frame-subsampling-factor 3  old model -> mono   (phone boundaries / 3)
    feats   = the alignment model's features, subsample-feats --n 3         (frames 0, 3, 6, ...)
    stats   = acc-tree-stats --context-width 2 --central-position 1  (left biphone by default;
              the pdf-class of a frame is the self-loop class on self-loops, Kaldi's
              TransitionIdToPdfClass)
    questions = cluster-phones (+ extra_questions), pdf-class questions from the topology
    tree    = build-tree --max-leaves N
    1.mdl   = gmm-init-model (one Gaussian per leaf; only the transition model is used)
    ali     = convert-ali --frame-subsampling-factor 3  old model -> 1.mdl

With the defaults, on Kaldi's AN4 tri1 alignments and lang_chain topology, this is Kaldi's
``exp/chain_tree`` (tests/unit/hmm/test_hmm_chain_tree.py).

    >>> model, alis = chain_build_tree(tri, feats, tri_alis, chain_topo, tree_inputs,
    ...                                ChainTreeConfig(num_leaves=500))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pykaldi2.hmm.blas import one_blas_thread
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.questions import cluster_phones, compile_questions
from pykaldi2.hmm.tree import Root, build_tree
from pykaldi2.hmm.tree_stats import acc_tree_stats
from pykaldi2.hmm.tri import convert_ali, gmm_init_model
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "ChainTreeConfig",
    "TreeInputs",
    "chain_build_tree",
    "chain_monophone_model",
    "subsample_feats",
]


@dataclass
class TreeInputs:
    """What build-tree needs from the lang dir.

    Attributes:
        roots: ``(shared, split, phones)`` per line of roots.txt.
        phone_sets: units for cluster-phones (sets.int).
        extra_questions: extra_questions.int.
        ci_phones: context-independent phones (silence).
    """

    roots: Sequence[Root]
    phone_sets: Sequence[Sequence[int]]
    extra_questions: Sequence[Sequence[int]] = ()
    ci_phones: Sequence[int] = ()


@dataclass
class ChainTreeConfig(ConfigMixin):
    """build_tree.sh's options (Kaldi's names; the context is the chain recipes' left biphone).

    Attributes:
        num_leaves: ``<#leaves>``, build-tree ``--max-leaves`` (Kaldi's mini_librispeech tdnn_1j
            uses 3500 for 5 h; the AN4 reference 500).
        frame_subsampling_factor: the network's output frame rate divisor (3).
        context_width, central_position: ``--context-opts`` (2 and 1: left biphone).
        cluster_thresh: build-tree ``--cluster-thresh`` (-1: the last split's gain).
        tree_thresh: build-tree ``--thresh`` (300).
        round_num_leaves: build-tree ``--round-num-leaves`` (Kaldi's default: a multiple of 8).
    """

    num_leaves: int = 500
    frame_subsampling_factor: int = 3
    context_width: int = 2
    central_position: int = 1
    cluster_thresh: float = -1.0
    tree_thresh: float = 300.0
    round_num_leaves: bool = True

    def __post_init__(self) -> None:
        if self.num_leaves < 1:
            raise DataError(f"ChainTreeConfig: num_leaves must be >= 1, got {self.num_leaves}")
        if self.frame_subsampling_factor < 1:
            raise DataError("ChainTreeConfig: frame_subsampling_factor must be >= 1")
        if not 0 <= self.central_position < self.context_width:
            raise DataError(
                f"ChainTreeConfig: central_position {self.central_position} not in "
                f"[0, context_width={self.context_width})"
            )


def subsample_feats(x: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """subsample-feats --n: (T, D) -> frames ``offset, offset + n, ...`` ((T - offset) / n
    rounded up)."""
    return np.ascontiguousarray(x[offset::n])


def chain_monophone_model(topo) -> GmmModel:
    """A monophone transition model (no GMMs) on ``topo`` (build_tree.sh's mono.mdl and
    mono.tree, used only to convert alignments to the new topology)."""
    from pykaldi2.kaldi import khg

    phones = sorted(int(p) for p in topo.phones)
    n2c = topo.get_phone_to_num_pdf_classes()
    ctx = khg.monophone_context_dependency(phones, list(n2c))
    tm = khg.TransitionModel(ctx, topo)
    return GmmModel(tm=tm, tree=ctx, am=khg.AmDiagGmm(), info={"chain_tree": "mono"})


@one_blas_thread()
def chain_build_tree(
    ali_model: GmmModel,
    feats: Mapping[str, np.ndarray],
    alis: Mapping[str, np.ndarray],
    topo,
    tree_inputs: TreeInputs,
    cfg: ChainTreeConfig | None = None,
) -> tuple[GmmModel, dict[str, np.ndarray]]:
    """steps/nnet3/chain/build_tree.sh: the chain tree and model, and the alignments converted
    to them at the subsampled rate.

    Args:
        ali_model: the GMM the alignments come from (its ``final.mdl``).
        feats: utt -> (T, D) features as ``ali_model`` was trained on (CMVN, deltas or
            LDA+MLLT, fMLLR), at the full frame rate.
        alis: utt -> (T,) transition-ids of ``ali_model``.
        topo: the chain topology (``khg.HmmTopology`` of lang_chain/topo).
        tree_inputs: roots, phone sets, extra questions and context-independent phones of the
            lang dir.

    Returns:
        ``(model, alis)``: a :class:`GmmModel` on the chain topology with one Gaussian per
        leaf (1.mdl; its transition model and tree are what the chain system uses) and the
        alignments converted to it, ``(T + f - 1) // f`` frames each. Utterances whose
        alignments cannot be converted (too short at the new rate) are dropped with a warning.
    """
    cfg = cfg or ChainTreeConfig()
    f = cfg.frame_subsampling_factor
    mono = chain_monophone_model(topo)
    sub_alis: dict[str, np.ndarray] = {}
    sub_feats: dict[str, np.ndarray] = {}
    failed: list[str] = []
    for utt in sorted(alis):
        if utt not in feats:
            continue
        try:
            sub_alis[utt] = convert_ali(
                ali_model, mono, alis[utt], frame_subsampling_factor=f, utt=utt
            )
        except DataError as e:
            failed.append(utt)
            log.warning("chain tree: %s", e)
            continue
        sub_feats[utt] = subsample_feats(feats[utt], f)
    if not sub_alis:
        raise DataError(
            "no alignment could be converted to the chain topology",
            fix="check that the alignments, features and topology belong together",
        )
    stats = acc_tree_stats(
        mono, sub_feats, sub_alis, tree_inputs.ci_phones, cfg.context_width, cfg.central_position
    )
    questions = cluster_phones(
        stats, tree_inputs.phone_sets, extra_questions=tree_inputs.extra_questions
    )
    n2c = topo.get_phone_to_num_pdf_classes()
    tree = build_tree(
        stats,
        compile_questions(questions, max(n2c)),
        tree_inputs.roots,
        n2c,
        max_leaves=cfg.num_leaves,
        thresh=cfg.tree_thresh,
        cluster_thresh=cfg.cluster_thresh,
        round_num_leaves=cfg.round_num_leaves,
    )
    model, _ = gmm_init_model(tree.to_pdf, tree.context_width, tree.central_position, topo, stats)
    model.feat_type, model.transform, model.splice = (
        ali_model.feat_type, ali_model.transform, ali_model.splice,
    )  # fmt: skip
    model.cmvn_opts, model.delta_opts = ali_model.cmvn_opts, ali_model.delta_opts
    model.info = {"chain_tree": cfg.to_dict(), "num_failed": len(failed)}
    out = {}
    for utt in sub_alis:
        out[utt] = convert_ali(ali_model, model, alis[utt], frame_subsampling_factor=f, utt=utt)
    log.info(
        "chain tree: %d pdfs from %d utterances (%d frames at 1/%d rate); %d failed",
        tree.num_pdfs, len(out), int(stats.count.sum()), f, len(failed),
    )  # fmt: skip
    return model, out
