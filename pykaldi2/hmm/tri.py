"""Triphone training: gmm-init-model, convert-ali and steps/train_deltas.sh.

>>> cfg = DeltasConfig(num_leaves=2000, tot_gauss=10000)
>>> tri1, alis, history = train_deltas(feats, texts, lang_inputs, mono, mono_alis, cfg)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pykaldi2.hmm.ali import split_to_phones
from pykaldi2.hmm.align import compile_train_graphs
from pykaldi2.hmm.blas import one_blas_thread
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.questions import cluster_phones
from pykaldi2.hmm.training import TreeConfig, finish_training, train_gmm_iters
from pykaldi2.hmm.tree import BuiltTree, Root, build_tree
from pykaldi2.hmm.tree_stats import VAR_FLOOR, TreeStats, acc_tree_stats
from pykaldi2.utils.errors import DataError

log = logging.getLogger(__name__)


def gmm_init_model(
    tree: BuiltTree, topo, stats: TreeStats, var_floor: float = VAR_FLOOR
) -> GmmModel:
    """One Gaussian per leaf from the tree statistics (gmm-init-model).

    Each pdf gets the mean and variance of the statistics rows that the tree sends to it;
    a pdf without data (a phone never seen) gets the global mean and variance.
    """
    from pykaldi2.kaldi import khg

    ctx_dep = tree.to_context_dependency()
    tot_n = stats.count.sum()
    g_mean = stats.x1.sum(0) / tot_n
    g_var = np.maximum(stats.x2.sum(0) / tot_n - g_mean**2, var_floor)
    am = khg.AmDiagGmm()
    empty = 0
    for pdf in range(tree.num_pdfs):
        rows = tree.row_pdf == pdf
        n = stats.count[rows].sum()
        if n > 0:
            mean = stats.x1[rows].sum(0) / n
            var = np.maximum(stats.x2[rows].sum(0) / n - mean**2, var_floor)
        else:
            mean, var = g_mean, g_var
            empty += 1
        gmm = khg.DiagGmm(nmix=1, dim=stats.dim)
        gmm.set_weights(np.ones(1, dtype=np.float32))
        gmm.set_means(mean[None].astype(np.float32))
        gmm.set_invvars((1.0 / var)[None].astype(np.float32))
        gmm.compute_gconsts()
        am.add_pdf(gmm)
    if empty:
        log.warning(
            "gmm-init-model: %d of %d pdfs have no data (global Gaussian)", empty, tree.num_pdfs
        )
    tm = khg.TransitionModel(ctx_dep=ctx_dep, hmm_topo=topo)
    return GmmModel(tm=tm, tree=ctx_dep, am=am)


def convert_ali(old: GmmModel, new: GmmModel, ali: np.ndarray) -> np.ndarray:
    """Map an alignment of ``old`` onto the transition_ids of ``new`` (convert-ali).

    Phone segments, HMM states and transition indices stay; the pdfs come from ``new``'s tree
    given each phone's context in the utterance. Both models must share the topology.
    """
    ali = np.asarray(ali, dtype=np.int64)
    segs = split_to_phones(old, ali)
    phones = [p for p, _, _ in segs]
    n, c = new.tree.context_width, new.tree.central_position
    topo = new.tm.topo
    out = np.empty_like(ali)
    for i, (p, start, num) in enumerate(segs):
        window = [phones[i + k - c] if 0 <= i + k - c < len(phones) else 0 for k in range(n)]
        hmm = topo.topology_for_phone(p)
        seg = ali[start : start + num]
        states = old.tid2hmm_state[seg]
        first_tid = {}
        for s in np.unique(states).tolist():
            ok_f, fpdf = new.tree.compute(window, int(hmm[s].forward_pdf_class))
            ok_s, spdf = new.tree.compute(window, int(hmm[s].self_loop_pdf_class))
            ts = new.tuple2tstate.get((p, s, fpdf, spdf)) if ok_f and ok_s else None
            if ts is None:
                raise DataError(
                    f"convert-ali: context {window} (HMM state {s}) has no transition state in "
                    "the new model",
                    fix="the models must share phones and topology",
                )
            first_tid[s] = int(new.state2id[ts])
        out[start : start + num] = [first_tid[s] for s in states.tolist()]
        out[start : start + num] += old.tid2trans_index[seg]
    return out


@dataclass
class DeltasConfig(TreeConfig):
    """steps/train_deltas.sh options (same names and defaults) plus build-tree's."""


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


def build_triphone_model(
    prev: GmmModel,
    feats: Mapping[str, np.ndarray],
    alis: Mapping[str, np.ndarray],
    tree_inputs: TreeInputs,
    cfg,
) -> tuple[GmmModel, dict[str, np.ndarray]]:
    """acc-tree-stats, cluster-phones, build-tree, gmm-init-model and convert-ali in one go."""
    stats = acc_tree_stats(
        prev, feats, alis, tree_inputs.ci_phones, cfg.context_width, cfg.central_position
    )
    questions = cluster_phones(
        stats, tree_inputs.phone_sets, extra_questions=tree_inputs.extra_questions
    )
    n2c = prev.tm.topo.get_phone_to_num_pdf_classes()
    tree = build_tree(
        stats,
        questions,
        tree_inputs.roots,
        n2c,
        max_leaves=cfg.num_leaves,
        thresh=cfg.tree_thresh,
        min_count=cfg.tree_min_count,
        cluster_thresh=cfg.cluster_thresh,
    )
    model = gmm_init_model(tree, prev.tm.topo, stats)
    new_alis = {u: convert_ali(prev, model, a) for u, a in alis.items()}
    return model, new_alis


@one_blas_thread()
def train_triphone(
    prev: GmmModel,
    prev_alis: Mapping[str, np.ndarray],
    feats: dict[str, np.ndarray],
    texts: Mapping[str, Sequence[int]],
    lex_fst,
    disambig_phones: Sequence[int],
    sil_phones: Sequence[int],
    tree_inputs: TreeInputs,
    cfg: TreeConfig,
    system: str,
    exp_dir: str | os.PathLike | None = None,
    on_realign=None,
    setup=None,
) -> tuple[GmmModel, dict[str, np.ndarray], list[dict]]:
    """Tree + one Gaussian per leaf, then ``num_iters`` iterations (train_deltas.sh's loop).

    ``setup(model)`` may set feature attributes on the new model before training;
    ``on_realign`` is passed to :func:`~pykaldi2.hmm.training.train_gmm_iters`.
    """
    model, alis = build_triphone_model(prev, feats, prev_alis, tree_inputs, cfg)
    model.feat_type, model.transform, model.splice = prev.feat_type, prev.transform, prev.splice
    model.cmvn_opts, model.delta_opts = prev.cmvn_opts, prev.delta_opts
    if setup is not None:
        setup(model)
    graphs = compile_train_graphs(model, lex_fst, disambig_phones, texts)
    alis, history = train_gmm_iters(
        model,
        graphs,
        feats,
        alis,
        cfg,
        sil_phones,
        target_gauss=cfg.tot_gauss,
        on_realign=on_realign,
    )
    alis = finish_training(model, graphs, feats, cfg, system, history, exp_dir)
    return model, alis, history


def train_deltas(
    feats: Mapping[str, np.ndarray],
    texts: Mapping[str, Sequence[int]],
    lex_fst,
    disambig_phones: Sequence[int],
    sil_phones: Sequence[int],
    tree_inputs: TreeInputs,
    prev: GmmModel,
    prev_alis: Mapping[str, np.ndarray],
    config: DeltasConfig | None = None,
    exp_dir: str | os.PathLike | None = None,
) -> tuple[GmmModel, dict[str, np.ndarray], list[dict]]:
    """Triphone training on the same features as ``prev`` (steps/train_deltas.sh).

    Builds a tree from ``prev_alis``, initializes one Gaussian per leaf, converts the
    alignments, then runs ``num_iters`` iterations (realign at ``realign_iters``, accumulate,
    estimate, mix up towards ``tot_gauss``).

    Returns:
        ``(model, alis, history)`` as :func:`~pykaldi2.hmm.mono.train_mono`.
    """
    cfg = config or DeltasConfig()
    return train_triphone(
        prev,
        prev_alis,
        dict(feats),
        texts,
        lex_fst,
        disambig_phones,
        sil_phones,
        tree_inputs,
        cfg,
        "tri_deltas",
        exp_dir,
    )
