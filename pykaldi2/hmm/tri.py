"""Triphone training: gmm-init-model, gmm-mixup, convert-ali and steps/train_deltas.sh.

>>> model, history = train_deltas("data/train", "data/lang", "exp/mono_ali", "exp/tri1",
...                               DeltasConfig(num_leaves=2000, tot_gauss=10000), nj=4)

The tree stage, as train_deltas.sh runs it: acc-tree-stats per job on the previous system's
alignments (with the new system's features), sum-tree-stats, cluster-phones (+ the lang's
extra questions) and compile-questions, build-tree with ``--max-leaves``, gmm-init-model (one
Gaussian per leaf from the tree statistics), gmm-mixup to ``num_leaves`` Gaussians, and
convert-ali of the previous alignments to the new tree. Training then starts from ``1.mdl``
with ``num_leaves`` Gaussians, growing by ``(tot_gauss - num_leaves) // max_iter_inc`` per
iteration.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pykaldi2.hmm.ali import split_to_phones
from pykaldi2.hmm.event_map import map_events
from pykaldi2.hmm.gmm import gmm_mixup
from pykaldi2.hmm.jobs import ConvertAliJob, TreeStatsJob, convert_ali_job, tree_stats_job
from pykaldi2.hmm.kaldi_io import Tree
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.questions import cluster_phones, compile_questions
from pykaldi2.hmm.streams import FeaturePipeline, ali_files
from pykaldi2.hmm.training import (
    GmmTraining,
    TreeConfig,
    copy_lang_files,
    gauss_schedule,
    training_setup,
)
from pykaldi2.hmm.tree import build_tree
from pykaldi2.hmm.tree_stats import VAR_FLOOR, TreeStats, read_tree_stats, sum_tree_stats
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write_text
from pykaldi2.utils.jobs import JobRunner, job_log

log = logging.getLogger(__name__)


def gmm_init_model(
    to_pdf, context_width: int, central_position: int, topo, stats: TreeStats,
    var_floor: float = VAR_FLOOR,
) -> tuple[GmmModel, np.ndarray]:  # fmt: skip
    """One Gaussian per leaf from the tree statistics (gmm-init-model).

    Each pdf gets the mean and variance of the statistics rows that the tree ``to_pdf`` (an
    EventMap) sends to it, computed in float as Kaldi's DiagGmm(GaussClusterable) does; a pdf
    without data (a phone never seen) gets the statistics of all rows. Returns the model and
    the (P,) pdf occupancies (``--write-occs``).
    """
    from pykaldi2.kaldi import khg

    ctx_dep = Tree(to_pdf, context_width, central_position).khg()
    num_pdfs = ctx_dep.num_pdfs
    row_pdf = map_events(to_pdf, stats.events, stats.key_columns())
    if (row_pdf < 0).any():
        raise DataError("gmm-init-model: the tree cannot map some statistics (wrong tree?)")
    n = np.bincount(row_pdf, weights=stats.count, minlength=num_pdfs)
    x1 = np.zeros((num_pdfs, stats.dim))
    x2 = np.zeros_like(x1)
    np.add.at(x1, row_pdf, stats.x1)
    np.add.at(x2, row_pdf, stats.x2)
    am = khg.AmDiagGmm()
    f32 = np.float32
    for pdf in range(num_pdfs):
        if n[pdf] > 0:
            cnt, s1, s2 = n[pdf], x1[pdf], x2[pdf]
        else:
            log.warning("gmm-init-model: tree has pdf-id %d with no stats", pdf)
            cnt, s1, s2 = stats.count.sum(), stats.x1.sum(0), stats.x2.sum(0)
        if 0 < n[pdf] < 100:
            log.warning("gmm-init-model: very small count for state %d: %g", pdf, n[pdf])
        mean = (s1.astype(f32) * (f32(1.0) / f32(cnt))).astype(f32)
        var = (s2.astype(f32) * (f32(1.0) / f32(cnt)) - mean * mean).astype(f32)
        var = np.maximum(var, f32(var_floor))
        gmm = khg.DiagGmm(nmix=1, dim=stats.dim)
        gmm.set_weights(np.ones(1, dtype=np.float32))
        gmm.set_invvars_and_means((f32(1.0) / var)[None].astype(f32), mean[None])
        gmm.compute_gconsts()
        am.add_pdf(gmm)
    tm = khg.TransitionModel(ctx_dep=ctx_dep, hmm_topo=topo)
    return GmmModel(tm=tm, tree=ctx_dep, am=am), n


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


def prev_alignments(ali_dir: str | os.PathLike) -> tuple[Path, list[Path]]:
    """The previous system of a triphone stage: its ``final.mdl`` and alignment archives."""
    d = Path(ali_dir)
    mdl = d / "final.mdl"
    if not mdl.is_file():
        raise DataError("no final.mdl", file=str(d), fix="pass an exp or ali dir of a GMM system")
    return mdl, ali_files(d)


def default_nj(ali_dir: str | os.PathLike, nj: int | None) -> int:
    """``nj``, else the alignment dir's ``num_jobs`` (as the scripts take it), else 1."""
    if nj is not None:
        return nj
    f = Path(ali_dir) / "num_jobs"
    return int(f.read_text().split()[0]) if f.is_file() else 1


def build_tree_stage(
    tr: GmmTraining,
    cfg: TreeConfig,
    prev_mdl: Path,
    prev_alis: list[Path],
    pipe: FeaturePipeline,
) -> GmmModel:
    """acc-tree-stats .. gmm-mixup .. convert-ali (train_deltas.sh stages -3 to -1): writes
    ``tree``, ``questions.int``, ``1.mdl`` and ``ali.JOB.gz`` (converted); returns the model.

    ``pipe`` makes the new system's features (the tree statistics are of those)."""
    from pykaldi2.lang.lang_dir import load_lang

    lang = load_lang(tr.lang_dir)
    prev = GmmModel.load(prev_mdl)
    jobs = [
        TreeStatsJob(
            model=str(prev_mdl),
            data=str(tr.splits[j]),
            pipe=p,
            ali_in=[str(a) for a in prev_alis],
            out=str(tr.path(f"{j + 1}.treeacc")),
            ci_phones=list(lang.silence_phones),
            context_width=cfg.context_width,
            central_position=cfg.central_position,
        )
        for j, p in enumerate(tr.pipes(pipe))
    ]
    tr.runner(tree_stats_job, jobs, log=tr.log("acc_tree.JOB.log"), desc="acc-tree-stats")
    with job_log(tr.log("sum_tree_acc.log"), "sum-tree-stats"):
        stats = sum_tree_stats(read_tree_stats(j.out) for j in jobs)
        for j in jobs:
            os.unlink(j.out)
        log.info(
            "sum-tree-stats: %d individual stats, %.0f frames", len(stats.count), stats.num_frames
        )
    topo = lang.read_topo()
    n2c = topo.get_phone_to_num_pdf_classes()
    extra = (
        lang.read_int_sets("extra_questions")
        if (lang.dir / "phones" / "extra_questions.int").is_file()
        else []
    )
    with job_log(tr.log("questions.log"), "cluster-phones + extra questions"):
        questions = cluster_phones(stats, lang.read_int_sets("sets"), extra_questions=extra)
        atomic_write_text(
            tr.path("questions.int"), "".join(" ".join(map(str, q)) + "\n" for q in questions)
        )
        qst = compile_questions(questions, max(n2c))
    with job_log(tr.log("build_tree.log"), f"build-tree --max-leaves={cfg.num_leaves}"):
        tree = build_tree(
            stats,
            qst,
            lang.roots(),
            n2c,
            max_leaves=cfg.num_leaves,
            thresh=cfg.tree_thresh,
            cluster_thresh=cfg.cluster_thresh,
            round_num_leaves=cfg.round_num_leaves,
        )
    with job_log(tr.log("init_model.log"), "gmm-init-model + gmm-mixup"):
        model, occs = gmm_init_model(
            tree.to_pdf, tree.context_width, tree.central_position, topo, stats
        )
        gmm_mixup(model, occs, cfg.num_leaves, seed=cfg.seed)
        log.info("gmm-mixup: %d pdfs, %d Gaussians", model.num_pdfs, model.am.num_gauss)
    model.feat_type, model.transform, model.splice = pipe.feat_type, pipe.transform, pipe.splice
    model.save(tr.mdl(1))
    model.write_tree(tr.path("tree"))
    convert = [
        ConvertAliJob(
            old=str(prev_mdl),
            new=str(tr.mdl(1)),
            data=str(tr.splits[j]),
            ali_in=[str(a) for a in prev_alis],
            ali_out=str(tr.ali_paths()[j]),
        )
        for j in range(tr.nj)
    ]
    tr.runner(convert_ali_job, convert, log=tr.log("convert.JOB.log"), desc="convert-ali")
    del prev
    return model


@dataclass
class DeltasConfig(TreeConfig):
    """steps/train_deltas.sh options (same names and defaults) plus build-tree's."""


def train_deltas(
    data_dir: str | os.PathLike,
    lang_dir: str | os.PathLike,
    ali_dir: str | os.PathLike,
    exp_dir: str | os.PathLike,
    config: DeltasConfig | None = None,
    *,
    nj: int | None = None,
    runner: JobRunner | None = None,
    cmd: str | None = None,
) -> tuple[GmmModel, list[dict]]:
    """Triphones on the previous system's features (steps/train_deltas.sh) into ``exp_dir``.

    Args:
        data_dir, lang_dir: as train_mono.
        ali_dir: the previous system (``final.mdl`` and ``ali.*.gz``), e.g. exp/mono_ali.
        config: :class:`DeltasConfig` (``num_leaves``, ``tot_gauss`` ...).
        nj: parallel jobs (default: the ali dir's ``num_jobs``).
        cmd: where the jobs run, as :func:`~pykaldi2.hmm.mono.train_mono`.

    Returns:
        ``(model, history)`` as :func:`~pykaldi2.hmm.mono.train_mono`.
    """
    cfg = config or DeltasConfig()
    nj = default_nj(ali_dir, nj)
    prev_mdl, prev_alis = prev_alignments(ali_dir)
    own = runner is None
    runner = runner or JobRunner(nj, cmd=cmd)
    try:
        tr = training_setup(data_dir, lang_dir, exp_dir, nj, runner, cfg.max_missing_text_fraction)
        pipe = FeaturePipeline.for_model(GmmModel.load(prev_mdl))
        first = 1
        if tr.start(cfg, "tri_deltas") and (x := tr.resume_point(1, cfg.num_iters)) is not None:
            first, model = x, GmmModel.load(tr.mdl(x))
        else:
            copy_lang_files(lang_dir, exp_dir)
            model = build_tree_stage(tr, cfg, prev_mdl, prev_alis, pipe)
        schedule = gauss_schedule(cfg.num_leaves, cfg.tot_gauss, cfg.max_iter_inc)
        model = tr.iterate(model, cfg, schedule, first=first)
        return tr.finish(model, cfg, "tri_deltas")
    finally:
        if own:
            runner.close()
