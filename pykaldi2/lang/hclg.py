"""HCLG decoding graphs, as Kaldi's ``utils/mkgraph.sh`` builds them.

The steps (Kaldi binary in brackets)::

    LG    = push_special(minimize_encoded(determinize_star(          [fsttablecompose |
                compose(L_disambig, G))))                              fstdeterminizestar |
                                                                       fstminimizeencoded |
                                                                       fstpushspecial]
    CLG   = compose_context(LG), ilabels = context windows              [fstcomposecontext]
    Ha    = get_h_transducer(ilabels, tree, model), disambig_tid        [make-h-transducer]
    HCLGa = minimize_encoded(remove_eps_local(rmsymbols(               [fsttablecompose |
                determinize_star(compose(Ha, CLG)), disambig_tid)))      fstdeterminizestar |
                                                                         fstrmsymbols |
                                                                         fstrmepslocal |
                                                                         fstminimizeencoded]
    HCLG  = add_self_loops(HCLGa, self_loop_scale=0.1)                  [add-self-loops]

Disambiguation: ``L_disambig`` carries the lexicon's ``#1 #2 ...`` on its input side and a
``#0:#0`` self-loop that passes G's backoff ``#0`` through; ``compose_context`` turns each phone
disambiguation symbol into its own ilabel (a window ``[-phone_id]``), ``get_h_transducer`` maps
those onto transition-id disambiguation symbols (``disambig_tid``, ids above the last
transition_id) and they are removed (replaced by epsilon) after determinization, as
``fstrmsymbols`` does. ``fstpushspecial`` (:mod:`pykaldi2.lang.push_special`) and
``fstrmepslocal`` (:mod:`pykaldi2.lang.rm_eps_local`, which removes only the epsilons whose
removal shrinks the graph, where OpenFst's RmEpsilon removes all) are ours, written from
Kaldi's fstext: with both, the graph of Kaldi's AN4 lang and tri1 model has Kaldi's states and
arcs (37,294 / 91,717), and without either it does not. Unlike Kaldi's (which writes an OpenFst
ConstFst), HCLG.fst is a VectorFst sorted on input labels.

Graph dir layout (Kaldi's ``exp/<system>/graph``)::

    HCLG.fst         the graph (OpenFst binary, vector type, arcs sorted by ilabel)
    words.txt        copy of lang/words.txt (olabels of HCLG)
    phones.txt       copy of lang/phones.txt
    phones/          copy of lang/phones/ (word_boundary.int, silence.csl, disambig.int, ...)
    disambig_tid.int transition-id disambiguation symbols (removed from HCLG; kept for tools)
    num_pdfs         number of pdf_ids of the model the graph was built for
    model_id         the identity of that model's transition model (sha256 of its topology and
                     transition-state tuples, :func:`pykaldi2.hmm.ali.transition_model_id`),
                     when the caller gives it (``pykaldi2 mkgraph`` does); checked wherever the
                     graph meets a model (:mod:`pykaldi2.hmm.graph_model`). Not in Kaldi's
                     graph dirs, which are checked by ``num_pdfs`` only (as steps/decode.sh)
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pykaldi2.lang.push_special import push_special
from pykaldi2.lang.rm_eps_local import remove_eps_local
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.io import atomic_dir
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)


@dataclass
class HclgConfig(ConfigMixin):
    """Options of mkgraph.sh.

    Attributes:
        transition_scale: scale of the (non-self-loop) transition log-probs in H (``--tscale``).
        self_loop_scale: scale of the self-loop log-probs added by add-self-loops
            (``--loopscale``; 0.1 for GMM and hybrid systems, 1.0 for chain models).
        reorder: put self-loops after the forward transitions (add-self-loops ``--reorder``).
        max_states: abort a determinization that grows above this many states (-1: no limit).
    """

    transition_scale: float = 1.0
    self_loop_scale: float = 0.1
    reorder: bool = True
    max_states: int = -1

    def __post_init__(self) -> None:
        if self.transition_scale < 0 or self.self_loop_scale < 0:
            raise Pykaldi2Error(
                f"HclgConfig: scales must be >= 0 (transition_scale={self.transition_scale}, "
                f"self_loop_scale={self.self_loop_scale})"
            )


@dataclass
class Hclg:
    """The result of :func:`make_hclg`.

    Attributes:
        fst: HCLG as a ``kaldifst.StdVectorFst`` (ilabel = transition_id, olabel = word id).
        disambig_tids: the transition-id disambiguation symbols that were removed.
        num_pdfs: pdf_ids of the model the graph was built for.
    """

    fst: Any
    disambig_tids: list[int]
    num_pdfs: int


def _check_nonempty(fst, what: str, fix: str) -> None:
    if fst.num_states == 0:
        raise Pykaldi2Error(f"mkgraph: {what} is empty (no successful path). Fix: {fix}")


def fst_rmsymbols(fst, symbols: list[int] | set[int], *, output_side: bool = False) -> int:
    """Replace ``symbols`` by epsilon on the input (or output) side of ``fst`` in place.

    Kaldi's ``fstrmsymbols``. Only states with such an arc are rewritten (a Python loop over
    arcs: a few microseconds per arc). Returns the number of arcs changed.
    """
    from pykaldi2.kaldi import kaldifst

    syms = {int(s) for s in symbols}
    changed = 0
    for s in range(fst.num_states):
        arcs = [
            (a.ilabel, a.olabel, a.weight.value, a.nextstate) for a in kaldifst.ArcIterator(fst, s)
        ]
        hit = [(a[1] if output_side else a[0]) in syms for a in arcs]
        if not any(hit):
            continue
        fst.delete_arcs(s, len(arcs))
        for (il, ol, w, n), h in zip(arcs, hit):
            if h:
                il, ol = (il, 0) if output_side else (0, ol)
                changed += 1
            fst.add_arc(s, kaldifst.StdArc(il, ol, w, n))
    return changed


def make_lg(L_disambig, G, *, max_states: int = -1):
    """LG = fstpushspecial(fstminimizeencoded(fstdeterminizestar --use-log=true (L_disambig o G))).

    Args:
        L_disambig: lexicon FST (phones + disambiguation symbols -> words), ``#0:#0`` self-loops.
        G: grammar acceptor over words (``#0`` on backoff arcs, as arpa2fst writes it).
    Returns a new ``kaldifst.StdVectorFst``; the inputs are not modified.
    """
    from pykaldi2.kaldi import kaldifst

    L = kaldifst.StdVectorFst(L_disambig)
    G = kaldifst.StdVectorFst(G)
    kaldifst.arcsort(L, sort_type="olabel")
    kaldifst.arcsort(G, sort_type="ilabel")
    LG = kaldifst.StdVectorFst(kaldifst.compose(L, G))
    _check_nonempty(
        LG,
        "L_disambig o G",
        "G's words must be words of L (same words.txt ids); G's #0 must be L's #0 word id",
    )
    if kaldifst.determinize_star(LG, max_states=max_states, use_log=True):
        raise Pykaldi2Error(
            f"mkgraph: determinizing LG stopped at max_states={max_states}. "
            "Fix: are there homophones without disambiguation symbols in L_disambig?"
        )
    kaldifst.minimize_encoded(LG)
    push_special(LG)
    return LG


def make_clg(LG, disambig_phones: list[int], context_width: int, central_position: int):
    """CLG and its ilabel windows (Kaldi's fstcomposecontext; ``ilabels`` is ilabels_N_P).

    Returns ``(CLG, ilabels)``: CLG is sorted by ilabel, ``ilabels[i]`` is the phone window of
    ilabel ``i`` (``[-d]`` for the disambiguation symbol ``d``).
    """
    from pykaldi2.kaldi import kaldifst

    CLG, ilabels = kaldifst.compose_context(
        list(disambig_phones), int(context_width), int(central_position), LG
    )
    kaldifst.arcsort(CLG, sort_type="ilabel")
    return CLG, ilabels


def make_hclg(
    L_disambig,
    G,
    disambig_phones: list[int],
    ctx_dep,
    trans_model,
    config: HclgConfig | None = None,
) -> Hclg:
    """Build HCLG (mkgraph.sh) from explicit inputs.

    Args:
        L_disambig: ``kaldifst.StdVectorFst`` lexicon with disambiguation symbols.
        G: ``kaldifst.StdVectorFst`` grammar (words.txt ids; ``#0`` on backoff arcs).
        disambig_phones: phone ids of ``#0 #1 ...`` (lang/phones/disambig.int).
        ctx_dep: ``khg.ContextDependency`` (the tree; gives context width/central position).
        trans_model: ``khg.TransitionModel``.
    """
    from pykaldi2.kaldi import kaldifst, khg

    config = config or HclgConfig()
    for fst, name in ((L_disambig, "L_disambig.fst"), (G, "G.fst")):
        if fst is None:  # what kaldifst's read returns for a file that is not an FST
            raise DataError(f"{name} could not be read", fix="rebuild it (prepare-lang / make-g)")
    t0 = time.time()
    LG = make_lg(L_disambig, G, max_states=config.max_states)
    CLG, ilabels = make_clg(LG, disambig_phones, ctx_dep.context_width, ctx_dep.central_position)
    known = set(trans_model.phones) | {int(d) for d in disambig_phones}
    for window in ilabels:
        bad = [p for p in window if p > 0 and p not in known]
        if bad:
            raise DataError(
                f"mkgraph: phones {bad} of L_disambig have no HMM in the model/topology",
                fix="build the lang dir and the model from the same phones.txt",
            )
    Ha, disambig_tids = khg.get_h_transducer(
        ilabels,
        ctx_dep,
        trans_model,
        khg.HTransducerConfig(transition_scale=config.transition_scale),
    )
    kaldifst.arcsort(Ha, sort_type="olabel")
    HCLGa = kaldifst.StdVectorFst(kaldifst.compose(Ha, CLG))
    _check_nonempty(HCLGa, "H o CLG", "the tree and the lang dir must share phones.txt")
    if kaldifst.determinize_star(HCLGa, max_states=config.max_states, use_log=True):
        raise Pykaldi2Error(
            f"mkgraph: determinizing HCLGa stopped at max_states={config.max_states}"
        )
    fst_rmsymbols(HCLGa, disambig_tids)
    remove_eps_local(HCLGa)
    kaldifst.minimize_encoded(HCLGa)
    HCLG = khg.add_self_loops(
        self_loop_scale=config.self_loop_scale,
        disambig_syms=[],
        reorder=config.reorder,
        trans_model=trans_model,
        ifst=HCLGa,
    )
    kaldifst.arcsort(HCLG, sort_type="ilabel")
    log.info(
        "HCLG: %d states (LG %d, CLG %d states, %d ilabels) in %.1fs",
        HCLG.num_states,
        LG.num_states,
        CLG.num_states,
        len(ilabels),
        time.time() - t0,
    )
    return Hclg(
        fst=HCLG, disambig_tids=[int(t) for t in disambig_tids], num_pdfs=trans_model.num_pdfs
    )


def mkgraph(
    lang_dir: str | os.PathLike,
    ctx_dep,
    trans_model,
    graph_dir: str | os.PathLike,
    config: HclgConfig | None = None,
    *,
    model_id: str | None = None,
) -> Path:
    """``utils/mkgraph.sh LANG MODEL_DIR GRAPH_DIR``: write the graph dir atomically.

    ``model_id``: the identity of ``trans_model``
    (:func:`pykaldi2.hmm.ali.transition_model_id`), written as ``GRAPH_DIR/model_id`` so that
    decoders and exports can check that the graph is used with its model (lang/ cannot compute
    it: the identity belongs to hmm/). Returns the graph dir path. See the module docstring for
    its layout.
    """
    from pykaldi2.lang.lang_dir import load_lang

    lang = load_lang(lang_dir)
    hclg = make_hclg(
        lang.read_L_disambig(), lang.read_G(), lang.disambig_phones, ctx_dep, trans_model, config
    )
    graph_dir = Path(graph_dir)
    with atomic_dir(graph_dir) as tmp:
        if not hclg.fst.write(str(tmp / "HCLG.fst")):
            raise Pykaldi2Error(f"mkgraph: could not write {graph_dir / 'HCLG.fst'}")
        shutil.copyfile(lang.dir / "words.txt", tmp / "words.txt")
        shutil.copyfile(lang.dir / "phones.txt", tmp / "phones.txt")
        shutil.copytree(lang.dir / "phones", tmp / "phones")
        (tmp / "disambig_tid.int").write_text("".join(f"{t}\n" for t in hclg.disambig_tids))
        (tmp / "num_pdfs").write_text(f"{hclg.num_pdfs}\n")
        if model_id is not None:
            (tmp / "model_id").write_text(f"{model_id}\n")
    log.info("wrote %s", graph_dir)
    return graph_dir
