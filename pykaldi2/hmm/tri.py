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


def convert_ali(
    old: GmmModel,
    new: GmmModel,
    ali: np.ndarray,
    *,
    frame_subsampling_factor: int = 1,
    reorder: bool = True,
    rng: np.random.Generator | None = None,
    utt: str | None = None,
) -> np.ndarray:
    """Map an alignment of ``old`` onto the transition_ids of ``new`` (convert-ali).

    Phone segments, HMM states and transition indices stay; the pdfs come from ``new``'s tree
    given each phone's context in the utterance. With ``frame_subsampling_factor`` f > 1
    (``--frame-subsampling-factor``, as steps/nnet3/chain/build_tree.sh converts to the 1/3
    frame rate) the alignment gets ``(T + f - 1) // f`` frames: phone boundaries are divided
    by f (Kaldi's ComputeNewPhoneLengths: a phone left shorter than its topology's minimum
    borrows frames from the nearest phone that can spare one). Where the length or the
    topology changes, the phone gets a path of the new length through its new HMM, chosen as
    Kaldi's GetRandomAlignmentForPhone does (uniformly among the arcs that can still finish;
    the one-state chain topology has a single path per length), with self-loops after the
    forward transition when ``reorder`` (convert-ali's ``--reorder``, default true).
    Phones transferred directly keep the old alignment's order: Kaldi would reorder them
    when its IsReordered cannot tell the order (an alignment ending in a one-frame state
    visit), which changes no statistics.
    """
    ali = np.asarray(ali, dtype=np.int64)
    f = int(frame_subsampling_factor)
    if f < 1:
        raise ValueError(f"frame_subsampling_factor must be >= 1, got {f}")
    segs = split_to_phones(old, ali)
    phones = [p for p, _, _ in segs]
    old_len = [n for _, _, n in segs]
    n, c = new.tree.context_width, new.tree.central_position
    old_topo, topo = old.tm.topo, new.tm.topo
    same_topo = all(_same_hmm(old_topo, topo, p) for p in set(phones))
    if f == 1 and same_topo:
        new_len = old_len
    else:
        new_len = _new_phone_lengths(topo, phones, old_len, f, utt)
    rng = rng if rng is not None else np.random.default_rng(0)
    out: list[np.ndarray] = []
    for i, (p, start, num) in enumerate(segs):
        window = [phones[i + k - c] if 0 <= i + k - c < len(phones) else 0 for k in range(n)]
        if new_len[i] != num or not _same_hmm(old_topo, topo, p):
            out.append(_phone_path(new, p, window, new_len[i], reorder, rng, utt))
            continue
        hmm = topo.topology_for_phone(p)
        seg = ali[start : start + num]
        states = old.tid2hmm_state[seg]
        first_tid = {}
        for s in np.unique(states).tolist():
            first_tid[s] = _first_tid(new, p, window, s, hmm, utt)
        conv = np.asarray([first_tid[s] for s in states.tolist()], dtype=np.int64)
        conv += old.tid2trans_index[seg]
        out.append(conv)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _same_hmm(topo_a, topo_b, phone: int) -> bool:
    a, b = topo_a.topology_for_phone(phone), topo_b.topology_for_phone(phone)
    return len(a) == len(b) and all(
        (x.forward_pdf_class, x.self_loop_pdf_class, list(x.transitions))
        == (y.forward_pdf_class, y.self_loop_pdf_class, list(y.transitions))
        for x, y in zip(a, b)
    )


def _first_tid(new: GmmModel, p: int, window, s: int, hmm, utt) -> int:
    """The first transition_id of HMM state ``s`` of phone ``p`` in context ``window``."""
    ok_f, fpdf = new.tree.compute(window, int(hmm[s].forward_pdf_class))
    ok_s, spdf = new.tree.compute(window, int(hmm[s].self_loop_pdf_class))
    ts = new.tuple2tstate.get((p, s, fpdf, spdf)) if ok_f and ok_s else None
    if ts is None:
        raise DataError(
            f"convert-ali: context {window} (HMM state {s}) has no transition state in "
            "the new model",
            utt=utt,
            fix="the models must share phones and topology",
        )
    return int(new.state2id[ts])


def _new_phone_lengths(topo, phones, old_len, f: int, utt) -> list[int]:
    """Kaldi's ComputeNewPhoneLengths (conversion shift f - 1, so that the alignment has as
    many frames as ``subsample-feats --n=f`` keeps)."""
    shift = f - 1
    bounds = np.concatenate([[0], np.cumsum(old_len)])
    new_len = [
        int((bounds[i + 1] + shift) // f - (bounds[i] + shift) // f) for i in range(len(phones))
    ]
    min_len = [int(topo.min_length(p)) for p in phones]
    changed = True
    while changed:
        changed = False
        for i in range(len(phones)):
            if new_len[i] >= min_len[i]:
                continue
            changed = True
            best, best_dist = -1, None
            dist = 0
            for j in range(i - 1, -1, -1):  # the nearest phone to the left with a spare frame
                if new_len[j] > min_len[j]:
                    best, best_dist = j, dist
                    break
                dist += new_len[j]
            dist = 0
            for j in range(i + 1, len(phones)):  # ... or to the right, if nearer
                if new_len[j] > min_len[j]:
                    if best_dist is None or dist < best_dist:
                        best = j
                    break
                dist += new_len[j]
            if best < 0:
                raise DataError(
                    f"convert-ali: {sum(old_len)} frames at 1/{f} rate are too few for the "
                    f"{len(phones)} phones' minimum lengths",
                    utt=utt,
                    fix="drop the utterance (Kaldi fails it too)",
                )
            new_len[i] += 1
            new_len[best] -= 1
    return new_len


def _change_reordering(model: GmmModel, ali: np.ndarray) -> np.ndarray:
    """Kaldi's ChangeReorderingOfAlignment: every visit of a transition state (its forward
    transition and self-loops) has its first and last transition swapped, which moves the
    forward transition from the front to the back or back again."""
    out = ali.copy()
    st, loop = model.tid2tstate[ali], model.tid_is_self_loop[ali]
    start, size = 0, len(ali)
    while start != size:
        fwd_first = not loop[start]
        end = start + 1
        while end != size and st[end] == st[start]:
            if not loop[end]:
                if not fwd_first:
                    end += 1  # the forward transition closes a loops-first visit
                break  # ... and opens the next visit of a forward-first one
            end += 1
        out[start], out[end - 1] = ali[end - 1], ali[start]
        start = end
    return out


def _phone_path(new: GmmModel, p: int, window, length: int, reorder: bool, rng, utt):
    """A path of ``length`` transitions through phone ``p``'s HMM in ``new`` (Kaldi's
    GetRandomAlignmentForPhone: uniform choice among the arcs from which the final state can
    still be reached in the frames left), self-loops after the forward transition if
    ``reorder``."""
    hmm = new.tm.topo.topology_for_phone(p)
    final = len(hmm) - 1  # Kaldi's topologies end in a non-emitting final state
    # reach[k][s]: the final state can be reached from s in exactly k transitions
    reach = [[s == final for s in range(len(hmm))]]
    for _ in range(length):
        prev = reach[-1]
        reach.append([any(prev[d] for d, _ in hmm[s].transitions) for s in range(len(hmm))])
    if not reach[length][0]:
        raise DataError(
            f"convert-ali: no path of {length} frames through phone {p}'s HMM "
            f"(minimum {new.tm.topo.min_length(p)})",
            utt=utt,
        )
    path, s = [], 0
    for k in range(length, 0, -1):
        choices = [(i, d) for i, (d, _) in enumerate(hmm[s].transitions) if reach[k - 1][d]]
        i, d = choices[int(rng.integers(len(choices)))] if len(choices) > 1 else choices[0]
        path.append(_first_tid(new, p, window, s, hmm, utt) + i)
        s = d
    out = np.asarray(path, dtype=np.int64)
    return _change_reordering(new, out) if reorder else out


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
