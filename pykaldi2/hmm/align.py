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

import numpy as np

from pykaldi2.data.transcripts import MAX_MISSING_TEXT_FRACTION
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


def compile_graph(compiler, utt: str, words: Sequence[int]):
    """The training graph of one transcript (compile-train-graphs), or None (logged) for an
    empty transcript or words that L.fst cannot spell."""
    words = [int(w) for w in words]
    if not words:
        log.warning("utterance %s has an empty transcript; skipped", utt)
        return None
    try:
        fst = compiler.compile_graph_from_text(words)
    except RuntimeError:  # the binding's check fails when L has no path for the words
        fst = None
    if fst is None or fst.num_states == 0:
        log.warning(
            "utterance %s: empty training graph for word ids %s (a word missing from the "
            "lexicon L.fst?); skipped",
            utt,
            words,
        )
        return None
    return fst


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
        fst = compile_graph(gc, utt, words)
        if fst is not None:
            graphs[utt] = fst
    return graphs


def align_equal(graph, num_frames: int, seed: int) -> np.ndarray | None:
    """align-equal-compiled of one utterance: equally spaced transition-ids along a random
    path of ``graph`` with ``num_frames`` frames (None if the graph needs more frames)."""
    from pykaldi2.kaldi import kaldifst

    ok, path = kaldifst.equal_align(
        ifst=graph, length=int(num_frames), rand_seed=int(seed), num_retries=10
    )
    if ok:
        ok, tids, _, _ = kaldifst.get_linear_symbol_sequence(path)
    return np.asarray(tids, dtype=np.int32) if ok else None


def align_equal_compiled(
    graphs: Mapping[str, object], num_frames: Mapping[str, int], seed: int = 0
) -> dict[str, np.ndarray]:
    """Equally spaced alignments along a random path of each graph (align-equal-compiled);
    the i-th graph's path is drawn with seed ``seed + i``.

    Returns utt -> (T,) transition_ids. Utterances too short for their transcript are reported
    and left out.
    """
    alis: dict[str, np.ndarray] = {}
    for i, (utt, g) in enumerate(graphs.items()):
        if utt not in num_frames:
            continue
        ali = align_equal(g, num_frames[utt], seed + i)
        if ali is None:
            log.warning(
                "align-equal: utterance %s (%d frames) is too short for its transcript; skipped",
                utt,
                num_frames[utt],
            )
            continue
        alis[utt] = ali
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

    def add(self, utt: str, ali: np.ndarray | None, like: float, retried: bool) -> None:
        """Record one utterance's outcome (``ali`` None: failed)."""
        self.num_retried += int(retried)
        if ali is None:
            self.failed.append(utt)
            return
        self.alis[utt] = ali
        self.tot_like += like
        self.num_frames += len(ali)

    def report(self, num_utts: int, retry_beam: float) -> None:
        """Log the failures, as gmm-align-compiled does."""
        if self.failed:
            shown = ", ".join(self.failed[:10]) + (" ..." if len(self.failed) > 10 else "")
            log.warning(
                "gmm-align-compiled: %d of %d utterances failed to align even with retry beam "
                "%g and were left out: %s",
                len(self.failed),
                num_utts,
                retry_beam,
                shown,
            )


class Aligner:
    """gmm-align-compiled one utterance at a time: the training graph of the transcript is
    compiled on the fly (compile-train-graphs), transition log-probs of the current model added,
    and the frames Viterbi-aligned with the beam (then the retry beam).

    Args:
        model: transition model + tree + GMMs.
        lex_fst: L.fst (``StdVectorFst`` or path); disambig_phones: its ``#n`` phone ids.
        config: beams and scales.
        am: GMMs to use instead of ``model.am`` (e.g. from ``gmm_boost_silence``).
    """

    def __init__(self, model: GmmModel, lex_fst, disambig_phones, config=None, am=None) -> None:
        self.model = model
        self.cfg = config or AlignConfig()
        self.am = am if am is not None else model.am
        self.compiler = training_graph_compiler(model, lex_fst, disambig_phones)

    def graph(self, utt: str, words: Sequence[int]):
        """The training graph of ``words`` (None, logged, when L has no path for them)."""
        return compile_graph(self.compiler, utt, words)

    def align_graph(self, utt: str, graph, feats: np.ndarray):
        """Align ``feats`` (T, D) to a training graph (left unchanged): ``(ali (T,) int32 or
        None, log-likelihood, retried)``."""
        return _align_one(self.model, self.am, graph, utt, feats, self.cfg)

    def align(self, utt: str, words: Sequence[int], feats: np.ndarray):
        """:meth:`align_graph` on the graph of ``words``; None alignment if it has none."""
        g = self.graph(utt, words)
        if g is None:
            return None, 0.0, False
        return self.align_graph(utt, g, feats)


def _align_one(model, am, graph, utt, feats, cfg):
    from pykaldi2.kaldi import khg

    x = np.ascontiguousarray(feats, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != model.dim:
        raise DataError(f"features have shape {x.shape}, the model wants (T, {model.dim})", utt=utt)
    if len(x) == 0:
        return None, 0.0, False
    fst = graph.copy()
    khg.add_transition_probs(
        trans_model=model.tm,
        transition_scale=cfg.transition_scale,
        self_loop_scale=cfg.self_loop_scale,
        fst=fst,
    )
    dec = khg.DecodableAmDiagGmmScaled(am=am, tm=model.tm, feats=x, scale=cfg.acoustic_scale)
    kcfg = khg.AlignConfig(beam=cfg.beam, retry_beam=cfg.retry_beam, careful=cfg.careful)
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
    if n_err or len(ali) != len(x):
        return None, 0.0, bool(n_retry)
    return np.asarray(ali, dtype=np.int32), float(like), bool(n_retry)


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
    cfg = config or AlignConfig()
    am = am if am is not None else model.am
    res = AlignResult()
    for utt, g in progress(graphs.items(), desc="gmm-align-compiled", total=len(graphs)):
        if utt not in feats:
            continue
        ali, like, retried = _align_one(model, am, g, utt, feats[utt], cfg)
        res.add(utt, ali, like, retried)
    res.report(len(graphs), cfg.retry_beam)
    return res


def run_align_jobs(
    job_fn: Callable[[tuple], AlignResult],
    jobs: Sequence[tuple],
    *,
    cmd: str | None = None,
    log: str | os.PathLike | None = None,
) -> AlignResult:
    """Run alignment ``jobs`` (one per split of the data) with the picklable ``job_fn``: in
    this process for one local job, else as ``--cmd`` ``cmd`` runs them
    (:class:`~pykaldi2.utils.jobs.JobRunner`; ``log``: the jobs' log pattern with ``JOB``);
    returns the merged :class:`AlignResult` (alignments sorted by utterance)."""
    from pykaldi2.utils.jobs import JobRunner

    with JobRunner(len(jobs), cmd=cmd) as run:
        results = run(job_fn, list(jobs), desc="align", log=log)
    merged = AlignResult()
    for r in results:
        merged.alis.update(r.alis)
        merged.failed.extend(r.failed)
        merged.num_retried += r.num_retried
        merged.tot_like += r.tot_like
        merged.num_frames += r.num_frames
    merged.alis = dict(sorted(merged.alis.items()))
    return merged
