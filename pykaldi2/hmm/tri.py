"""Triphone training: gmm-init-model, convert-ali and steps/train_deltas.sh.

>>> cfg = DeltasConfig(num_leaves=2000, tot_gauss=10000)
>>> tri1, alis, history = train_deltas(feats, texts, lang_inputs, mono, mono_alis, cfg)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pykaldi2.hmm.ali import split_to_phones
from pykaldi2.hmm.align import compile_train_graphs, gmm_align_compiled
from pykaldi2.hmm.model import GmmModel, gmm_info, tuple_of
from pykaldi2.hmm.mono import _align_config, train_gmm_iters, write_exp_dir
from pykaldi2.hmm.questions import cluster_phones
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
    tstate = {tuple_of(t): i + 1 for i, t in enumerate(new.tm.tuples)}
    state2id = new.tm.state2id
    out = np.empty_like(ali)
    for i, (p, start, num) in enumerate(segs):
        window = [phones[i + k - c] if 0 <= i + k - c < len(phones) else 0 for k in range(n)]
        hmm = topo.topology_for_phone(p)
        for t in range(start, start + num):
            tid = int(ali[t])
            s = int(old.tid2hmm_state[tid])
            st = hmm[s]
            ok_f, fpdf = new.tree.compute(window, int(st.forward_pdf_class))
            ok_s, spdf = new.tree.compute(window, int(st.self_loop_pdf_class))
            ts = tstate.get((p, s, fpdf, spdf)) if ok_f and ok_s else None
            if ts is None:
                raise DataError(
                    f"convert-ali: context {window} (HMM state {s}) has no transition state in "
                    "the new model",
                    fix="the models must share phones and topology",
                )
            out[t] = state2id[ts] + int(old.tid2trans_index[tid])
    return out


@dataclass
class DeltasConfig:
    """steps/train_deltas.sh options (same names and defaults) plus build-tree's."""

    num_leaves: int = 2000
    tot_gauss: int = 10000
    num_iters: int = 35
    max_iter_inc: int = 25
    realign_iters: list[int] = field(default_factory=lambda: [10, 20, 30])
    beam: float = 10.0
    retry_beam_factor: float = 4.0
    careful: bool = False
    boost_silence: float = 1.0
    power: float = 0.25
    cluster_thresh: float = -1.0
    tree_thresh: float = 300.0
    tree_min_count: float = 0.0
    context_width: int = 3
    central_position: int = 1
    acoustic_scale: float = 0.1
    transition_scale: float = 1.0
    self_loop_scale: float = 0.1
    perturb_factor: float = 0.01
    min_count: float = 20.0

    def __post_init__(self) -> None:
        if self.num_leaves < 1 or self.tot_gauss < self.num_leaves:
            raise ValueError(f"DeltasConfig: need 1 <= num_leaves <= tot_gauss, got {self}")
        if not 0 <= self.central_position < self.context_width:
            raise ValueError("DeltasConfig: central_position must be in [0, context_width)")
        if self.num_iters < 1 or not 0 <= self.max_iter_inc <= self.num_iters:
            raise ValueError("DeltasConfig: num_iters >= 1 and 0 <= max_iter_inc <= num_iters")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> DeltasConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"DeltasConfig: unknown keys {sorted(unknown)}")
        return cls(**d)


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
    alignments, then runs ``num_iters`` iterations of (realign at ``realign_iters``,
    accumulate, estimate, mix up towards ``tot_gauss``).

    Returns:
        ``(model, alis, history)`` as :func:`~pykaldi2.hmm.mono.train_mono`.
    """
    cfg = config or DeltasConfig()
    model, alis = build_triphone_model(prev, feats, prev_alis, tree_inputs, cfg)
    model.feat_type, model.transform, model.splice = prev.feat_type, prev.transform, prev.splice
    graphs = compile_train_graphs(model, lex_fst, disambig_phones, texts)
    num_gauss = model.num_pdfs
    inc_gauss = max(0, (cfg.tot_gauss - num_gauss) // max(cfg.max_iter_inc, 1))
    alis, history = train_gmm_iters(
        model,
        graphs,
        feats,
        alis,
        cfg,
        sil_phones,
        first_iter=1,
        num_gauss=num_gauss,
        inc_gauss=inc_gauss,
        beam_schedule=lambda it: cfg.beam,
    )
    final = gmm_align_compiled(model, graphs, feats, _align_config(cfg, cfg.beam))
    model.info = {"system": "tri_deltas", "config": cfg.to_dict(), "gmm_info": gmm_info(model)}
    if exp_dir is not None:
        write_exp_dir(exp_dir, model, final.alis, history, cfg.to_dict())
    return model, final.alis, history
