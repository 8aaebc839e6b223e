"""A GMM acoustic model as Kaldi keeps it: ``final.mdl`` + ``tree`` (+ ``final.mat``, opts files).

:class:`GmmModel` bundles the ``khg.TransitionModel``, the ``khg.ContextDependency`` (tree) and
the ``khg.AmDiagGmm``, plus what is needed to rebuild its input features (``feat_type``:
``"raw"``, ``"delta"`` or ``"lda"``; ``transform``: an LDA/MLLT matrix). Transition-id tables
(``tid2pdf`` etc.) are numpy arrays indexed by transition_id (index 0 unused), as in Kaldi.

On disk it is a Kaldi exp dir, readable by Kaldi's gmm-info, hmm-info, show-transitions and
tree-info, and Kaldi's own exp dirs load the same way (:meth:`GmmModel.load`)::

    final.mdl        TransitionModel + AmDiagGmm, Kaldi binary (gmm-copy's format)
    tree             ContextDependency, Kaldi binary with the \\0B header
    final.mat        the LDA/MLLT matrix, LDA systems only (named after the model: 0.mdl -> 0.mat)
    splice_opts      --left-context=L --right-context=R (LDA systems), as train_lda_mllt.sh
    cmvn_opts        apply-cmvn's options (one line; empty: means only), as every train_*.sh
    delta_opts       add-deltas' options, when not the defaults
    final.mdl.json   what Kaldi has no file for: feat_type and the provenance (``info``)

The feature type of a dir without the JSON file (one written by Kaldi) is Kaldi's rule in
align_si.sh: ``lda`` when the matrix is there, else ``delta``. A ``final.mdl`` pickled by
pykaldi2 before it wrote Kaldi's format still loads (``pykaldi2 gmm-copy`` converts it).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.hmm import kaldi_io
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write_text

log = logging.getLogger(__name__)

#: The side file of a model: ``final.mdl`` -> ``final.mdl.json``.
INFO_SUFFIX = ".json"
_INFO_FORMAT = "pykaldi2-gmm-model"


def transform_path(model_path: str | os.PathLike) -> Path:
    """Where the feature transform of ``model_path`` lives: ``X.mdl`` -> ``X.mat``."""
    return Path(model_path).with_suffix(".mat")


def remove_model(path: str | os.PathLike) -> None:
    """Delete a model file written by :meth:`GmmModel.save` and its ``.json`` side file (an
    intermediate ``N.mdl`` of training); missing files are fine."""
    path = Path(path)
    path.unlink(missing_ok=True)
    path.with_name(path.name + INFO_SUFFIX).unlink(missing_ok=True)


def tuple_of(t) -> tuple[int, int, int, int]:
    """A ``TransitionModelTuple`` as ``(phone, hmm_state, forward_pdf, self_loop_pdf)``."""
    return tuple(int(x) for x in t.__getstate__())  # type: ignore[return-value]


def transition_id_tables(tm) -> tuple[np.ndarray, ...]:
    """Per-transition_id tables of a ``khg.TransitionModel``, each (num_transition_ids + 1,)
    with index 0 unused: phone, HMM state, transition index, is-final, is-self-loop and
    transition state (1-based)."""
    n = tm.num_transition_ids
    id2state = np.asarray(tm.id2state, dtype=np.int64)
    tuples = np.asarray([tuple_of(t) for t in tm.tuples], dtype=np.int64).reshape(-1, 4)
    phone = np.full(n + 1, -1, dtype=np.int64)
    hmm_state = np.full(n + 1, -1, dtype=np.int64)
    phone[1:] = tuples[id2state[1:] - 1, 0]
    hmm_state[1:] = tuples[id2state[1:] - 1, 1]
    state2id = np.asarray(tm.state2id, dtype=np.int64)
    trans_index = np.full(n + 1, -1, dtype=np.int64)
    trans_index[1:] = np.arange(1, n + 1) - state2id[id2state[1:]]
    is_final = np.zeros(n + 1, dtype=bool)
    is_self_loop = np.zeros(n + 1, dtype=bool)
    for tid in range(1, n + 1):
        is_final[tid] = tm.is_final(tid)
        is_self_loop[tid] = tm.is_self_loop(tid)
    id2state[0] = -1
    return phone, hmm_state, trans_index, is_final, is_self_loop, id2state


@dataclass
class GmmModel:
    """Transition model + tree + GMMs (Kaldi's ``*.mdl`` and ``tree``).

    Attributes:
        tm: ``khg.TransitionModel``.
        tree: ``khg.ContextDependency``.
        am: ``khg.AmDiagGmm`` with one ``DiagGmm`` per pdf_id.
        feat_type: how the features fed to ``am`` are made from the stored ones:
            ``"raw"`` (as stored), ``"delta"`` (+ deltas, order 2), ``"lda"`` (splice, transform).
        transform: (D_out, D_in) or (D_out, D_in + 1) matrix for ``feat_type == "lda"``.
        splice: left/right context of the splicing before ``transform``.
        info: free-form provenance (config, iteration), saved with the model.
    """

    tm: Any
    tree: Any
    am: Any
    feat_type: str = "raw"
    transform: np.ndarray | None = None
    splice: int | tuple[int, int] = 3
    info: dict = field(default_factory=dict)
    cmvn_opts: str = ""
    delta_opts: str = ""

    @property
    def splice_context(self) -> tuple[int, int]:
        """(left, right) frames of the splicing before ``transform``."""
        if isinstance(self.splice, int):
            return self.splice, self.splice
        left, right = self.splice
        return int(left), int(right)

    @property
    def delta_config(self) -> tuple[int, int]:
        """(order, window) of add-deltas (``delta_opts``; Kaldi's defaults 2, 2)."""
        o = kaldi_io.parse_opts(self.delta_opts, kaldi_io.DELTA_OPTS, "delta_opts")
        return o["delta-order"], o["delta-window"]

    @property
    def cmvn_config(self) -> tuple[bool, bool]:
        """(norm_means, norm_vars) of apply-cmvn (``cmvn_opts``; Kaldi's defaults: means only)."""
        o = kaldi_io.parse_opts(self.cmvn_opts, kaldi_io.CMVN_OPTS, "cmvn_opts")
        return o["norm-means"], o["norm-vars"]

    # ---- transition-id tables ------------------------------------------------------------
    @cached_property
    def tid2pdf(self) -> np.ndarray:
        """(num_transition_ids + 1,) int: transition_id -> pdf_id (index 0: -1)."""
        return np.asarray([-1] + list(self.tm.id2pdf_id)[1:], dtype=np.int64)

    @cached_property
    def _tid_tables(self) -> tuple[np.ndarray, ...]:
        return transition_id_tables(self.tm)

    @cached_property
    def tid2dest_state(self) -> np.ndarray:
        """(num_transition_ids + 1,) int: the HMM state each transition goes to (its phone's
        final, non-emitting state for the transitions that leave the phone)."""
        phones, phone2idx, entries = kaldi_io.topology_entries(self.tm.topo)
        dest = np.full(self.tm.num_transition_ids + 1, -1, dtype=np.int64)
        for tid in range(1, len(dest)):
            trans = entries[phone2idx[self.tid2phone[tid]]][self.tid2hmm_state[tid]][2]
            dest[tid] = trans[self.tid2trans_index[tid]][0]
        return dest

    @cached_property
    def tuple2tstate(self) -> dict[tuple[int, int, int, int], int]:
        """(phone, hmm_state, forward_pdf, self_loop_pdf) -> transition state (1-based)."""
        return {tuple_of(t): i + 1 for i, t in enumerate(self.tm.tuples)}

    @cached_property
    def state2id(self) -> np.ndarray:
        """(num_transition_states + 2,) int: transition state -> its first transition_id."""
        return np.asarray(self.tm.state2id, dtype=np.int64)

    @property
    def tid2phone(self) -> np.ndarray:
        """(num_transition_ids + 1,) int: transition_id -> phone."""
        return self._tid_tables[0]

    @property
    def tid2hmm_state(self) -> np.ndarray:
        """(num_transition_ids + 1,) int: transition_id -> HMM state of its phone."""
        return self._tid_tables[1]

    @property
    def tid2trans_index(self) -> np.ndarray:
        """(num_transition_ids + 1,) int: transition_id -> index of the transition in its state."""
        return self._tid_tables[2]

    @property
    def tid_is_final(self) -> np.ndarray:
        """(num_transition_ids + 1,) bool: the transition leaves the phone's HMM."""
        return self._tid_tables[3]

    @property
    def tid_is_self_loop(self) -> np.ndarray:
        """(num_transition_ids + 1,) bool: the transition is a self-loop."""
        return self._tid_tables[4]

    @property
    def tid2tstate(self) -> np.ndarray:
        """(num_transition_ids + 1,) int: transition_id -> transition state (1-based)."""
        return self._tid_tables[5]

    @property
    def num_pdfs(self) -> int:
        return int(self.am.num_pdfs)

    @property
    def dim(self) -> int:
        return int(self.am.dim)

    # ---- persistence ---------------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("tid2pdf", None)
        state.pop("_tid_tables", None)
        for name in ("tuple2tstate", "state2id", "tid2dest_state"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        # pickles of earlier versions lack the newer fields
        self.__dict__.update({"cmvn_opts": "", "delta_opts": "", **state})

    def save(self, path: str | os.PathLike, binary: bool = True) -> None:
        """Write the model as a Kaldi exp dir does (see the module docstring), atomically per
        file: ``path`` (Kaldi ``*.mdl``), ``tree``, the transform and opts files beside it, and
        ``path.json``."""
        path = Path(path)
        d = path.parent
        kaldi_io.write_kaldi_model(path, self.tm, self.am, binary)
        kaldi_io.write_tree(d / "tree", self.tree)
        mat = transform_path(path)
        if self.feat_type == "lda":
            if self.transform is None:
                raise DataError("an LDA model without its transform matrix", file=str(path))
            kaldi_io.write_matrix(mat, self.transform)
            left, right = self.splice_context
            kaldi_io.write_opts_file(
                d / "splice_opts", f"--left-context={left} --right-context={right}"
            )
        elif mat.exists():  # a stale matrix would make Kaldi's scripts take this for LDA
            mat.unlink()
        kaldi_io.write_opts_file(d / "cmvn_opts", self.cmvn_opts)
        if self.delta_opts:
            kaldi_io.write_opts_file(d / "delta_opts", self.delta_opts)
        side = {"format": _INFO_FORMAT, "version": 1, "feat_type": self.feat_type}
        side["info"] = self.info
        atomic_write_text(
            path.with_name(path.name + INFO_SUFFIX), json.dumps(side, indent=1, default=str)
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> GmmModel:
        """Load a model written by :meth:`save` or by Kaldi (``final.mdl`` binary or text, the
        ``tree`` in the same dir, ``final.mat`` + ``splice_opts`` for LDA systems, ``cmvn_opts``,
        ``delta_opts``), or a pickle of an earlier pykaldi2."""
        path = Path(path)
        if not path.is_file():
            raise DataError("no such model file", file=str(path), fix="train the model first")
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":
            return cls._load_pickle(path)
        tm, am = kaldi_io.read_kaldi_model(path)
        d = path.parent
        tree_file = d / "tree"
        if not tree_file.is_file():
            raise DataError(
                "no tree beside the model",
                file=str(tree_file),
                fix="a model dir keeps its tree next to final.mdl: copy the tree of the exp dir "
                "that trained this model",
            )
        tree = kaldi_io.read_tree(tree_file)
        _check_tree(tm, tree, tree_file)
        model = cls(
            tm=tm,
            tree=tree,
            am=am,
            cmvn_opts=kaldi_io.read_opts_file(d / "cmvn_opts"),
            delta_opts=kaldi_io.read_opts_file(d / "delta_opts"),
        )
        model._load_features(path)
        return model

    def _load_features(self, path: Path) -> None:
        side_file = path.with_name(path.name + INFO_SUFFIX)
        mat = transform_path(path)
        if not mat.is_file() and (path.parent / "final.mat").is_file():
            mat = path.parent / "final.mat"  # Kaldi's scripts use final.mat for any model
        if side_file.is_file():
            try:
                side = json.loads(side_file.read_text(encoding="utf-8"))
                assert side.get("format") == _INFO_FORMAT
            except (ValueError, AssertionError):
                raise DataError(
                    "not a pykaldi2 model side file", file=str(side_file), fix="remove it"
                ) from None
            self.feat_type = str(side["feat_type"])
            self.info = dict(side.get("info") or {})
        else:  # a Kaldi dir: align_si.sh's rule
            self.feat_type = "lda" if mat.is_file() else "delta"
        if self.feat_type != "lda":
            return
        if not mat.is_file():
            raise DataError(
                "an LDA model without its transform", file=str(mat), fix="copy final.mat too"
            )
        self.transform = kaldi_io.read_matrix(mat)
        o = kaldi_io.parse_opts(
            kaldi_io.read_opts_file(path.parent / "splice_opts"),
            kaldi_io.SPLICE_OPTS,
            str(path.parent / "splice_opts"),
        )
        left, right = o["left-context"], o["right-context"]
        self.splice = left if left == right else (left, right)
        if self.am.num_pdfs and self.transform.shape[0] != self.dim:
            raise DataError(
                f"the transform has {self.transform.shape[0]} rows, the model dimension {self.dim}",
                file=str(mat),
                fix="the matrix belongs to another model",
            )

    @classmethod
    def _load_pickle(cls, path: Path) -> GmmModel:
        try:
            with open(path, "rb") as f:
                obj = pickle.load(f)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as e:
            raise DataError(
                f"cannot read the pickled model ({type(e).__name__}: {e})",
                file=str(path),
                fix="pass a Kaldi final.mdl (or one from pykaldi2 gmm-copy)",
            ) from None
        if not isinstance(obj, cls):
            raise DataError(f"not a {cls.__name__} pickle", file=str(path))
        log.warning(
            "%s is a pickle from an earlier pykaldi2, which Kaldi cannot read; convert it with "
            "`pykaldi2 gmm-copy %s NEW_DIR/final.mdl`",
            path,
            path,
        )
        return obj

    def write_tree(self, path: str | os.PathLike, binary: bool = True) -> None:
        """Write the tree in Kaldi's format (readable by Kaldi's ``tree-info``)."""
        kaldi_io.write_tree(path, self.tree, binary)


def _check_tree(tm, tree, tree_file: Path) -> None:
    """The tree must be the one the transition model was built from (Kaldi does not check;
    a wrong tree would give wrong pdfs silently)."""
    from pykaldi2.kaldi import khg

    fresh = khg.TransitionModel(ctx_dep=tree, hmm_topo=tm.topo)
    if not np.array_equal(
        kaldi_io.transition_model_tuples(fresh), kaldi_io.transition_model_tuples(tm)
    ):
        raise DataError(
            f"the tree ({tree.num_pdfs} pdfs) is not the one of the model ({tm.num_pdfs} pdfs)",
            file=str(tree_file),
            fix="put the tree of the exp dir that trained final.mdl beside it",
        )


def gmm_info(model: GmmModel) -> dict[str, int]:
    """Kaldi's ``gmm-info``: sizes of the model."""
    return {
        "number_of_phones": len(model.tm.phones),
        "number_of_pdfs": model.num_pdfs,
        "number_of_transition_ids": int(model.tm.num_transition_ids),
        "number_of_transition_states": int(model.tm.num_transition_states),
        "feature_dimension": model.dim,
        "number_of_gaussians": int(model.am.num_gauss),
    }
