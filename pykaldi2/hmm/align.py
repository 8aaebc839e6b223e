"""Training graphs and alignment: compile-train-graphs, align-equal-compiled, gmm-align-compiled.

A training graph is the FST of one transcript (H o C o L o words, without transition
probabilities); aligning adds the current transition log-probs and runs Viterbi with a beam.
An utterance that cannot be aligned (even with the retry beam) is reported and left out of the
result, never silently mis-aligned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pykaldi2.data.transcripts import MAX_MISSING_TEXT_FRACTION, check_transcribed
from pykaldi2.hmm.model import GmmModel
from pykaldi2.utils.config import ConfigMixin, option
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import progress

log = logging.getLogger(__name__)


def load_fst(fst):
    """A ``kaldifst.StdVectorFst`` from itself or a path (L.fst, L_disambig.fst)."""
    from pykaldi2.kaldi import kaldifst

    if isinstance(fst, kaldifst.StdVectorFst):
        return fst
    path = os.fspath(fst)
    if not os.path.isfile(path):
        raise DataError("no such FST file", file=path, fix="build the lang dir first")
    try:
        return kaldifst.StdVectorFst.read(path)
    except Exception as e:
        raise DataError(f"cannot read FST: {e}", file=path) from None


def training_graph_compiler(model: GmmModel, lex_fst, disambig_phones: Sequence[int]):
    """A ``khg.TrainingGraphCompiler`` of ``model`` (transition model + tree) and L.fst
    (``StdVectorFst`` or path; a copy is sorted on output labels): its
    ``compile_graph_from_text(word_ids)`` gives one training graph without transition probs."""
    from pykaldi2.kaldi import kaldifst, khg

    lex = load_fst(lex_fst).copy()
    kaldifst.arcsort(lex, sort_type="olabel")
    opts = khg.TrainingGraphCompilerOptions()
    # compile-train-graphs: no transition probs in the graphs (the binding defaults to 1.0);
    # gmm-align-compiled adds them with the current model's probabilities, once.
    opts.transition_scale = 0.0
    opts.self_loop_scale = 0.0
    return khg.TrainingGraphCompiler(
        trans_model=model.tm,
        ctx_dep=model.tree,
        lex_fst=lex,
        disambig_syms=[int(d) for d in disambig_phones],
        opts=opts,
    )


def compile_train_graphs(
    model: GmmModel,
    lex_fst,
    disambig_phones: Sequence[int],
    texts: Mapping[str, Sequence[int]],
    *,
    batch_desc: str = "compile-train-graphs",
) -> dict:
    """One training graph per utterance (Kaldi's compile-train-graphs).

    Args:
        model: gives the transition model and the tree (context dependency).
        lex_fst: L.fst (``StdVectorFst`` or path) mapping phones to word ids; it is sorted on
            output labels here.
        disambig_phones: ids of the ``#n`` disambiguation phones (phones/disambig.int).
        texts: utt -> word ids of the transcript.

    Returns:
        utt -> ``StdVectorFst`` (input labels transition_ids, output labels words).
    """
    gc = training_graph_compiler(model, lex_fst, disambig_phones)
    graphs = {}
    for utt, words in progress(texts.items(), desc=batch_desc, total=len(texts)):
        words = [int(w) for w in words]
        if not words:
            log.warning("utterance %s has an empty transcript; skipped", utt)
            continue
        try:
            fst = gc.compile_graph_from_text(words)
        except RuntimeError:  # the binding's check fails when L has no path for the words
            fst = None
        if fst is None or fst.num_states == 0:
            log.warning(
                "utterance %s: empty training graph for word ids %s (a word missing from the "
                "lexicon L.fst?); skipped",
                utt,
                words,
            )
            continue
        graphs[utt] = fst
    return graphs


def align_equal_compiled(
    graphs: Mapping[str, object], num_frames: Mapping[str, int], seed: int = 0
) -> dict[str, np.ndarray]:
    """Equally spaced alignments along a random path of each graph (align-equal-compiled).

    Returns utt -> (T,) transition_ids. Utterances too short for their transcript are reported
    and left out.
    """
    from pykaldi2.kaldi import kaldifst

    alis: dict[str, np.ndarray] = {}
    for i, (utt, g) in enumerate(graphs.items()):
        if utt not in num_frames:
            continue
        ok, path = kaldifst.equal_align(
            ifst=g, length=int(num_frames[utt]), rand_seed=seed + i, num_retries=10
        )
        if ok:
            ok, tids, _, _ = kaldifst.get_linear_symbol_sequence(path)
        if not ok:
            log.warning(
                "align-equal: utterance %s (%d frames) is too short for its transcript; skipped",
                utt,
                num_frames[utt],
            )
            continue
        alis[utt] = np.asarray(tids, dtype=np.int32)
    return alis


@dataclass
class AlignConfig(ConfigMixin):
    """gmm-align-compiled options; the scales are Kaldi's ``scale_opts`` of train_*.sh.
    ``max_missing_text_fraction``: align-si / align-nnet list the utterances without a
    transcript and stop when they are more than this fraction
    (:func:`pykaldi2.data.transcripts.check_transcribed`)."""

    beam: float = 10.0
    retry_beam: float = 40.0
    careful: bool = False
    acoustic_scale: float = 0.1
    transition_scale: float = 1.0
    self_loop_scale: float = 0.1
    max_missing_text_fraction: float = option(MAX_MISSING_TEXT_FRACTION, ge=0, le=1)

    def __post_init__(self) -> None:
        if self.beam <= 0 or self.retry_beam < 0 or self.acoustic_scale <= 0:
            raise ValueError(f"bad AlignConfig {self}: beam/acoustic_scale must be > 0")


@dataclass
class AlignResult:
    """Alignments plus the counts gmm-align-compiled logs."""

    alis: dict[str, np.ndarray] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    num_retried: int = 0
    tot_like: float = 0.0
    num_frames: int = 0

    @property
    def like_per_frame(self) -> float:
        return self.tot_like / max(self.num_frames, 1)


def gmm_align_compiled(
    model: GmmModel,
    graphs: Mapping[str, object],
    feats: Mapping[str, np.ndarray],
    config: AlignConfig | None = None,
    am=None,
) -> AlignResult:
    """Viterbi-align each utterance to its training graph (gmm-align-compiled).

    Args:
        model: transition model + GMMs.
        graphs: utt -> training graph from :func:`compile_train_graphs` (left unchanged).
        feats: utt -> (T, D) features.
        config: beams and scales (Kaldi's: beam 10, retry-beam 40, acoustic scale 0.1).
        am: GMMs to use instead of ``model.am`` (e.g. from ``gmm_boost_silence``).

    Returns:
        :class:`AlignResult`; utterances whose alignment failed even with the retry beam are
        listed in ``failed`` (and logged), not in ``alis``.
    """
    from pykaldi2.kaldi import khg

    cfg = config or AlignConfig()
    kcfg = khg.AlignConfig(beam=cfg.beam, retry_beam=cfg.retry_beam, careful=cfg.careful)
    am = am if am is not None else model.am
    res = AlignResult()
    for utt, g in progress(graphs.items(), desc="gmm-align-compiled", total=len(graphs)):
        if utt not in feats:
            continue
        x = np.ascontiguousarray(feats[utt], dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != model.dim:
            raise DataError(
                f"features have shape {x.shape}, the model wants (T, {model.dim})", utt=utt
            )
        if len(x) == 0:
            res.failed.append(utt)
            continue
        fst = g.copy()
        khg.add_transition_probs(
            trans_model=model.tm,
            transition_scale=cfg.transition_scale,
            self_loop_scale=cfg.self_loop_scale,
            fst=fst,
        )
        dec = khg.DecodableAmDiagGmmScaled(am=am, tm=model.tm, feats=x, scale=cfg.acoustic_scale)
        _, n_err, n_retry, like, _, ali, _ = khg.align_utterance_wrapper(
            config=kcfg,
            utt=utt,
            acoustic_scale=cfg.acoustic_scale,
            fst=fst,
            decodable=dec,
            num_done=0,
            num_error=0,
            num_retried=0,
            tot_like=0.0,
            frame_count=0,
        )
        res.num_retried += n_retry
        if n_err or len(ali) != len(x):
            res.failed.append(utt)
            continue
        res.alis[utt] = np.asarray(ali, dtype=np.int32)
        res.tot_like += like
        res.num_frames += len(x)
    if res.failed:
        shown = ", ".join(res.failed[:10]) + (" ..." if len(res.failed) > 10 else "")
        log.warning(
            "gmm-align-compiled: %d of %d utterances failed to align even with retry beam %g "
            "and were left out: %s",
            len(res.failed),
            len(graphs),
            cfg.retry_beam,
            shown,
        )
    return res


def _align_si_job(job: tuple) -> AlignResult:
    """One parallel job of :func:`align_si` (runs in a spawned worker process): FSTs and the
    bindings' objects do not pickle, so each job loads the model and L.fst and compiles its
    own utterances' training graphs."""
    model_path, lang_dir, data_dir, utts, cfg, transform_dir = job
    from pykaldi2.hmm.exp_dir import read_transforms_dir
    from pykaldi2.hmm.inputs import feats_for_model, load_texts
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.lang.lang_dir import load_lang

    lang = load_lang(lang_dir)
    model = GmmModel.load(model_path)
    transforms = read_transforms_dir(transform_dir) if transform_dir else None
    feats = feats_for_model(model, data_dir, utts=utts, transforms=transforms)
    texts = {u: t for u, t in load_texts(data_dir, lang, utts).items() if u in feats}
    graphs = compile_train_graphs(model, lang.read_L(), lang.disambig_phones, texts)
    res = gmm_align_compiled(model, graphs, feats, cfg)
    res.failed.extend(sorted(set(feats) - set(graphs)))  # no usable transcript/graph
    return res


def align_si(
    data_dir: str | os.PathLike,
    lang_dir: str | os.PathLike,
    model_path: str | os.PathLike,
    config: AlignConfig | None = None,
    nj: int = 1,
    transform_dir: str | os.PathLike | None = None,
) -> AlignResult:
    """steps/align_si.sh: align every utterance of ``data_dir`` with ``model_path`` in ``nj``
    processes (utterances split evenly in sorted order, as Kaldi's split_data.sh).
    ``model_path`` is ours or Kaldi's final.mdl (its dir's tree, final.mat, opts files);
    ``transform_dir``: fMLLR ``trans.*`` of the data's speakers, applied after its features.

    Returns the merged :class:`AlignResult`; utterances that failed (no graph, or no alignment
    even with the retry beam) are in ``failed`` and never in ``alis``. Utterances without a
    transcript are listed in a warning and not aligned; more than
    ``config.max_missing_text_fraction`` of them is a :class:`DataError`.
    """
    from pykaldi2.data.datadir import read_data_dir

    cfg = config or AlignConfig()
    d = read_data_dir(data_dir)
    utts = check_transcribed(
        d.utt_ids, d.text, text_file=str(Path(data_dir) / "text"),
        max_missing_fraction=cfg.max_missing_text_fraction, what="alignment",
    )  # fmt: skip
    if not utts:
        raise DataError("no utterance to align", file=str(Path(data_dir) / "text"))
    nj = max(1, min(nj, len(utts)))
    tdir = str(transform_dir) if transform_dir else None
    jobs = [
        (str(model_path), str(lang_dir), str(data_dir), utts[j::nj], cfg, tdir) for j in range(nj)
    ]
    return run_align_jobs(_align_si_job, jobs)


def run_align_jobs(job_fn: Callable[[tuple], AlignResult], jobs: Sequence[tuple]) -> AlignResult:
    """Run alignment ``jobs`` (one per split of the data) with the picklable ``job_fn``: in
    this process for one job, else in as many spawned processes; returns the merged
    :class:`AlignResult` (alignments sorted by utterance)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    if len(jobs) == 1:
        results = [job_fn(jobs[0])]
    else:
        with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(job_fn, jobs))
    merged = AlignResult()
    for r in results:
        merged.alis.update(r.alis)
        merged.failed.extend(r.failed)
        merged.num_retried += r.num_retried
        merged.tot_like += r.tot_like
        merged.num_frames += r.num_frames
    merged.alis = dict(sorted(merged.alis.items()))
    return merged
