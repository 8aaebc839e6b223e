"""The HMM side of LF-MMI from GMM alignments: the chain transition model, den.fst and the
numerator supervision (Kaldi's chain tools, one function each).

- :func:`chain_transition_model`: the chain topology (one HMM state per phone, separate
  forward and self-loop pdf classes) on the alignment model's tree;
- :func:`load_chain_model`: the chain model of a build-tree-chain dir (its own tree), or that;
- :func:`ali_to_phones`: ``ali-to-phones --write-lengths`` of one alignment;
- :func:`chain_den_graph`: chain-make-den-fst (+ the normalization FST) of a phone LM (the
  streamed chain-est-phone-lm: :func:`pykaldi2.training.chain_data.chain_utterances`);
  :func:`read_den_graph_dir`: den.fst + normalization.fst of a Kaldi chain dir instead;
- :func:`utterance_supervision` / :func:`chunk_supervision`: chain-get-supervision of an
  utterance (whole, or split into the output-frame ranges of :func:`chunk_ranges`), composed
  with the normalization FST.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pykaldi2.utils.errors import DataError


def chain_transition_model(ali_model):
    """A :class:`~pykaldi2.hmm.model.GmmModel` (no GMMs) with the chain topology on the tree of
    ``ali_model``: every phone one HMM state, forward pdf class 0, self-loop pdf class 1.

    The tree must give every phone at least two pdf classes (any 2+-state GMM topology does).
    """
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import khg
    from pykaldi2.lang.topo import TopoConfig, make_topo

    phones = sorted(int(p) for p in ali_model.tm.phones)
    n2c = ali_model.tm.topo.get_phone_to_num_pdf_classes()
    few = [p for p in phones if n2c[p] < 2]
    if few:
        raise DataError(
            f"phones {few[:10]} have fewer than 2 pdf classes in the alignment model's tree; the "
            "chain topology needs a forward and a self-loop pdf class",
            fix="align with a model whose topology has >= 2 states per phone (e.g. tri2)",
        )
    topo = khg.HmmTopology()
    topo.read(make_topo(phones, [], TopoConfig.chain()))
    tm = khg.TransitionModel(ali_model.tree, topo)
    return GmmModel(tm=tm, tree=ali_model.tree, am=khg.AmDiagGmm(), info={"chain": True})


def load_chain_model(tree_dir: str | os.PathLike, ali_model, topology: str = "chain"):
    """The chain transition model + tree: ``tree_dir``'s final.mdl (``pykaldi2
    build-tree-chain``, Kaldi's steps/nnet3/chain/build_tree.sh) when given; else the
    alignment model's tree on the chain topology (``topology="chain"``) or the alignment model
    itself (``topology="ali"``)."""
    from pykaldi2.hmm.model import GmmModel

    if tree_dir:
        path = Path(tree_dir) / "final.mdl"
        if not path.is_file():
            raise DataError("no final.mdl in the tree dir", file=str(tree_dir),
                            fix="run `pykaldi2 build-tree-chain` first")  # fmt: skip
        model = GmmModel.load(path)
        if set(int(p) for p in model.tm.phones) != set(int(p) for p in ali_model.tm.phones):
            raise DataError("the chain tree and the alignments have different phones",
                            file=str(path), fix="build the tree from these alignments")  # fmt: skip
        return model
    return chain_transition_model(ali_model) if topology == "chain" else ali_model


def ali_to_phones(ali_model, ali: np.ndarray) -> tuple[list[int], list[int]]:
    """``(phones, durations)`` of one alignment (``ali-to-phones --write-lengths``)."""
    from pykaldi2.hmm.ali import split_to_phones

    segs = split_to_phones(ali_model, ali)
    return [int(p) for p, _, _ in segs], [int(n) for _, _, n in segs]


def chain_den_graph(phone_lm, chain_model):
    """chain-make-den-fst of a phone LM (:class:`~pykaldi2.lang.phone_lm.PhoneLmEstimator`'s):
    ``(den.fst, DenGraph, normalization.fst)``."""
    from pykaldi2.lang.den_fst import DenGraph, chain_make_den_fst, normalization_fst

    den = chain_make_den_fst(phone_lm, chain_model.tree, chain_model.tm)
    graph = DenGraph.from_fst(den, int(chain_model.tm.num_pdfs))
    return den, graph, normalization_fst(den, graph.initial_probs)


def read_den_graph_dir(den_dir: str | os.PathLike, chain_model):
    """den.fst and normalization.fst of ``den_dir`` (Kaldi's chain dir or ours) for
    ``chain_model``: ``(phone_lm or None, den.fst, DenGraph, normalization.fst)``.

    A ``0.trans_mdl`` (Kaldi) or ``final.mdl`` in the dir must hold the chain model's
    transition model; den.fst's labels (pdf-id + 1) must be the chain model's pdfs.
    """
    from pykaldi2.hmm.kaldi_io import read_transition_model_file, transition_model_tuples
    from pykaldi2.lang.den_fst import DenGraph

    d = Path(den_dir)
    for name in ("0.trans_mdl", "final.mdl"):
        if (d / name).is_file():
            tm = read_transition_model_file(d / name)
            if not np.array_equal(
                transition_model_tuples(tm), transition_model_tuples(chain_model.tm)
            ):
                raise DataError(
                    "its transition model is not the chain model's (other tree or topology)",
                    file=str(d / name),
                    fix="use the den.fst made for the tree and topology of ali_dir (topology: "
                    "ali for a den.fst of the GMM's own HMMs, chain for the chain topology)",
                )
            break
    fsts = []
    for name in ("den.fst", "normalization.fst", "phone_lm.fst"):
        path = d / name
        if not path.is_file():
            if name == "phone_lm.fst":
                fsts.append(None)
                continue
            raise DataError(f"no {name}", file=str(d), fix="run chain-make-den-fst first")
        fsts.append(read_vector_fst(path))
    den, norm, phone_lm = fsts
    num_pdfs = int(chain_model.tm.num_pdfs)
    graph = DenGraph.from_fst(den, num_pdfs)
    if int(graph.pdf.max()) >= num_pdfs:
        raise DataError(
            f"den.fst has pdf-id {int(graph.pdf.max())}, the chain model {num_pdfs} pdfs",
            file=str(d / "den.fst"),
            fix="use the den.fst made for this tree",
        )
    return phone_lm, den, graph, norm


def read_vector_fst(path: Path):
    """A VectorFst file (ours or Kaldi's), with a clear error for other files."""
    from pykaldi2.kaldi import kaldifst

    fst = kaldifst.StdVectorFst.read(str(path))
    if fst is None:
        raise DataError(
            "not a readable OpenFst VectorFst",
            file=str(path),
            fix="convert it (fstconvert --fst_type=vector)",
        )
    return fst


def utterance_supervision(phones, durations, chain_model, norm_fst, sup_opts, utt=None):
    """chain-get-supervision of one utterance composed with the normalization FST, as a
    :class:`~pykaldi2.lang.den_fst.ChainGraph` of ``ceil(sum(durations) / factor)`` frames."""
    return chunk_supervision(phones, durations, chain_model, norm_fst, sup_opts, None, utt)[0]


def chunk_supervision(phones, durations, chain_model, norm_fst, sup_opts, ranges, utt=None):
    """chain-get-supervision of one utterance, split into output-frame ``ranges``
    (``[(begin, end), ...]``; None: the whole utterance), each composed with the normalization
    FST: one :class:`~pykaldi2.lang.den_fst.ChainGraph` per range."""
    from pykaldi2.lang.chain_supervision import (
        add_weight_to_supervision,
        chain_get_supervision,
        split_supervision,
    )
    from pykaldi2.lang.den_fst import ChainGraph

    sup = chain_get_supervision(
        phones, durations, chain_model.tree, chain_model.tm, sup_opts, utt=utt
    )
    parts = [sup] if ranges is None else [split_supervision(sup, b, e, utt) for b, e in ranges]
    num_pdfs = int(chain_model.tm.num_pdfs)
    return [
        ChainGraph.from_fst(add_weight_to_supervision(p, norm_fst, utt=utt), num_pdfs)
        for p in parts
    ]


def chunk_ranges(num_out: int, chunk_out: int) -> list[tuple[int, int]]:
    """Output-frame ranges of the chunks of an utterance with ``num_out`` output frames:
    ``chunk_out`` frames each, the last shifted back to end at the utterance end (one range
    ``(0, num_out)`` when the utterance is shorter than a chunk; ``chunk_out`` 0: whole)."""
    from pykaldi2.data.datasets import chunk_starts

    if chunk_out <= 0 or num_out <= chunk_out:
        return [(0, num_out)]
    return [(b, b + chunk_out) for b in chunk_starts(num_out, chunk_out)]
