"""Which model a decoding graph was built for, checked wherever a graph meets a model.

HCLG's input labels are transition-ids, and a transition-id means an HMM state only in the
transition model that numbered it. A graph built for another model decodes without any error
from the search when its labels happen to be in range: it just gives the wrong words (a tri1
graph with another tri1 model, a GMM's graph with the chain model trained on its tree). So
``pykaldi2 mkgraph`` writes ``GRAPH_DIR/model_id``, the :func:`~pykaldi2.hmm.ali.
transition_model_id` of the model (the sha256 of its topology and transition-state tuples, as
ali dirs carry it), and :func:`check_graph_model` compares it with the model a graph is used
with: decode, decode-nnet, decode-chain, train-se's lattices, export-gmm-model,
export-hybrid-model and the transcribers of model dirs.

Graph dirs without ``model_id`` (Kaldi's mkgraph.sh, or ours before it existed) get Kaldi's own
check, that of steps/decode.sh: ``GRAPH_DIR/num_pdfs`` must equal the model's pdf count (a
note in the log says that only this was checked). Independently of either file, a loaded graph
whose largest input label is beyond the model's transition-ids is refused
(:func:`check_graph_labels`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pykaldi2.hmm.ali import MODEL_ID, transition_model_id
from pykaldi2.utils.errors import DataError

log = logging.getLogger(__name__)

#: How :func:`check_graph_model` checked a pairing.
CHECKED_MODEL_ID, CHECKED_NUM_PDFS, UNCHECKED = "model_id", "num_pdfs", "unchecked"


def rebuild_fix(graph_dir: str | os.PathLike, model: str | os.PathLike, loopscale: str = "") -> str:
    """The fix of a graph/model mismatch: the mkgraph command that builds the graph for
    ``model`` (``loopscale``: e.g. ``" --self-loop-scale 1.0"`` for chain models)."""
    return (
        f"rebuild the graph for this model: pykaldi2 mkgraph{loopscale} LANG_DIR {model} "
        f"{graph_dir} (or use the graph dir that was built from it)"
    )


def read_graph_model_id(graph_dir: str | os.PathLike) -> str | None:
    """``GRAPH_DIR/model_id`` (written by ``pykaldi2 mkgraph``), or None when there is none."""
    path = Path(graph_dir) / MODEL_ID
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8").strip()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise DataError(
            "not a model identity (64 hex digits, as `pykaldi2 mkgraph` writes)",
            file=str(path),
            fix="rebuild the graph dir with `pykaldi2 mkgraph`",
        )
    return text


def check_model_id(
    recorded: str, tm, *, graph: str, model: str | os.PathLike, fix: str, file: str
) -> None:
    """A :class:`DataError` naming ``graph`` (what was built), ``model`` and ``file`` (where
    ``recorded`` was read) unless ``recorded`` is the identity of ``tm``."""
    have = transition_model_id(tm)
    if recorded != have:
        raise DataError(
            f"{graph} was built for another model (model_id {recorded[:12]}) than {model} "
            f"({have[:12]}): its transition-ids would be read as other HMM states and the "
            "words would be wrong",
            file=file,
            fix=fix,
        )


def check_graph_model(
    graph_dir: str | os.PathLike,
    tm,
    model: str | os.PathLike,
    *,
    fix: str | None = None,
) -> str:
    """Check that ``graph_dir`` (HCLG.fst and its side files) was built for the transition
    model ``tm`` (a ``khg.TransitionModel``) of ``model`` (the file named in messages).

    With ``GRAPH_DIR/model_id``: it must be ``tm``'s identity. Without (Kaldi's graph dirs,
    ours written before it): ``GRAPH_DIR/num_pdfs`` must be ``tm``'s pdf count (steps/decode.sh's
    check), with a note that only that was checked; with neither, a note that nothing was.
    A mismatch is a :class:`DataError` naming both and the fix (``fix``, default: rebuild the
    graph with mkgraph for this model). Returns how it was checked: :data:`CHECKED_MODEL_ID`,
    :data:`CHECKED_NUM_PDFS` or :data:`UNCHECKED`.
    """
    graph_dir = Path(graph_dir)
    fix = fix or rebuild_fix(graph_dir, model)
    recorded = read_graph_model_id(graph_dir)
    if recorded is not None:
        check_model_id(
            recorded,
            tm,
            graph=f"the graph {graph_dir / 'HCLG.fst'}",
            model=model,
            fix=fix,
            file=str(graph_dir / MODEL_ID),
        )
        return CHECKED_MODEL_ID
    pdfs_file = graph_dir / "num_pdfs"
    if not pdfs_file.is_file():
        log.info(
            "%s has neither %s nor num_pdfs (not from mkgraph?): not checked that it was "
            "built for %s",
            graph_dir, MODEL_ID, model,
        )  # fmt: skip
        return UNCHECKED
    words = pdfs_file.read_text(encoding="utf-8").split()
    if len(words) != 1 or not words[0].isdigit():
        raise DataError("not a pdf count", file=str(pdfs_file), fix="rebuild the graph dir")
    n = int(words[0])
    if n != int(tm.num_pdfs):
        raise DataError(
            f"the graph {graph_dir / 'HCLG.fst'} was built for a model with {n} pdfs, "
            f"{model} has {int(tm.num_pdfs)}",
            file=str(pdfs_file),
            fix=fix,
        )
    log.info(
        "%s has no %s (Kaldi's mkgraph.sh, or pykaldi2 before it): only its pdf count (%d) "
        "was checked against %s",
        graph_dir, MODEL_ID, n, model,
    )  # fmt: skip
    return CHECKED_NUM_PDFS


def check_graph_labels(graph, num_transition_ids: int, *, graph_file: str, model: str) -> None:
    """A :class:`DataError` when the loaded ``graph`` (:class:`~pykaldi2.hmm.decoder.Graph`)
    has an input label above ``num_transition_ids`` (the model's): it cannot be this model's
    graph, whatever its side files say."""
    top = int(graph.max_ilabel)
    if top > num_transition_ids:
        raise DataError(
            f"the graph has transition-id {top}, {model} only {num_transition_ids}: it was "
            "built for another model",
            file=graph_file,
            fix=rebuild_fix(Path(graph_file).parent, model),
        )
