"""A GMM acoustic model as Kaldi keeps it in ``final.mdl`` + ``tree``, in one picklable object.

:class:`GmmModel` bundles the ``khg.TransitionModel``, the ``khg.ContextDependency`` (tree) and
the ``khg.AmDiagGmm``, plus what is needed to rebuild its input features (``feat_type``:
``"raw"``, ``"delta"`` or ``"lda"``; ``transform``: an LDA/MLLT matrix). Transition-id tables
(``tid2pdf`` etc.) are numpy arrays indexed by transition_id (index 0 unused), as in Kaldi.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_write


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
    splice: int = 3
    info: dict = field(default_factory=dict)

    # ---- transition-id tables ------------------------------------------------------------
    @cached_property
    def tid2pdf(self) -> np.ndarray:
        """(num_transition_ids + 1,) int: transition_id -> pdf_id (index 0: -1)."""
        return np.asarray([-1] + list(self.tm.id2pdf_id)[1:], dtype=np.int64)

    @cached_property
    def _tid_tables(self) -> tuple[np.ndarray, ...]:
        return transition_id_tables(self.tm)

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
        for name in ("tuple2tstate", "state2id"):
            state.pop(name, None)
        return state

    def save(self, path: str | os.PathLike) -> None:
        """Pickle to ``path`` atomically (Kaldi's ``final.mdl`` + ``tree``)."""
        with atomic_write(path, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GmmModel:
        from pykaldi2 import kaldi  # noqa: F401  (bindings imported in the safe order)

        path = Path(path)
        if not path.is_file():
            raise DataError("no such model file", file=str(path), fix="train the model first")
        try:
            with open(path, "rb") as f:
                obj = pickle.load(f)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as e:
            raise DataError(
                f"cannot read the model ({type(e).__name__}: {e})",
                file=str(path),
                fix="pass a final.mdl written by pykaldi2 (GmmModel.save)",
            ) from None
        if not isinstance(obj, cls):
            raise DataError(f"not a {cls.__name__} pickle", file=str(path))
        return obj

    def write_tree(self, path: str | os.PathLike, binary: bool = True) -> None:
        """Write the tree in Kaldi's format (readable by Kaldi's ``tree-info``)."""
        with atomic_write(path, "wb") as f:
            f.write(tree_bytes(self.tree, binary))


def tree_bytes(tree, binary: bool = True) -> bytes:
    """The Kaldi serialization of a ``khg.ContextDependency`` (binary or text)."""
    if binary:
        return bytes(np.asarray(tree.__getstate__()[0], dtype=np.int8).tobytes())
    return str(tree).encode()


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
