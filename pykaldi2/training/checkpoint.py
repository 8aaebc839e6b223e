"""Checkpoints that resume exactly: model, optimizer, scheduler, sampler position and RNG states.

``exp/<system>/checkpoints/ckpt-<step>.pt`` plus ``latest`` naming the newest;
:func:`average_checkpoints` averages model weights like icefall's ``--avg``;
:class:`BestSnapshots` keeps the weights of the N epochs with the lowest validation loss (ESPnet's
``--keep_nbest_models``) under ``checkpoints/best/``. Files are written
atomically (temp file + rename), so a run killed while saving keeps its previous checkpoint
(and ``latest`` naming it); the killed write's temp file is removed when the run resumes
(:func:`remove_stale_temps`).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pykaldi2.utils.errors import Pykaldi2Error
from pykaldi2.utils.io import atomic_write, atomic_write_text

_CKPT_RE = re.compile(r"ckpt-(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU and CUDA) random states."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (anything torch.save takes) to ``path``."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    return path


def save_step_checkpoint(
    ckpt_dir: str | os.PathLike, step: int, state: dict[str, Any], keep_last: int = 5
) -> Path:
    """Write ``ckpt-<step>.pt``, point ``latest`` at it, and keep only the newest ``keep_last``."""
    ckpt_dir = Path(ckpt_dir)
    path = save_checkpoint(ckpt_dir / f"ckpt-{step}.pt", state)
    atomic_write_text(ckpt_dir / "latest", path.name + "\n")
    if keep_last > 0:
        for old in list_checkpoints(ckpt_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def remove_stale_temps(ckpt_dir: str | os.PathLike, names: str) -> list[Path]:
    """Delete the temp files that writes killed mid-way left in ``ckpt_dir``: the
    ``.<name>.<random>.tmp`` of :func:`~pykaldi2.utils.io.atomic_write` for the file names
    that fully match the regex ``names``. Call it only while no other process writes there.
    Returns the removed files."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    stale = [
        p
        for p in ckpt_dir.iterdir()
        if p.name.startswith(".")
        and p.name.endswith(".tmp")
        and p.name.count(".") >= 3
        and re.fullmatch(names, p.name[1:].rsplit(".", 2)[0])
    ]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Step checkpoints in ``ckpt_dir``, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _CKPT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``latest``, else the highest step, else None."""
    ckpt_dir = Path(ckpt_dir)
    named = ckpt_dir / "latest"
    if named.is_file():
        p = ckpt_dir / named.read_text().strip()
        if p.is_file():
            return p
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, with a clear error if unreadable."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise Pykaldi2Error(f"checkpoint {path} does not exist") from None
    except Exception as e:  # a truncated or foreign file
        raise Pykaldi2Error(
            f"cannot read checkpoint {path} ({type(e).__name__}: {e}); "
            "Fix: resume from an earlier ckpt-*.pt in the same directory"
        ) from None


def check_model_config(
    saved: dict[str, Any],
    current: dict[str, Any],
    path: str | os.PathLike,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Raise if a checkpoint was written for a different model configuration. A key the
    checkpoint lacks whose current value is its ``defaults`` value is an option added after
    the checkpoint was written, with the behaviour it had: no difference."""
    defaults = defaults or {}
    # a key the checkpoint lacks was trained with its default (named as such in the message)
    saved = {**{k: v for k, v in defaults.items() if k not in saved and k in current}, **saved}
    if saved == current:
        return
    saved = {
        **{
            k: v
            for k, v in current.items()
            if k not in saved and k in defaults and v == defaults[k]
        },
        **saved,
    }
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if not diff:
        return
    details = ", ".join(
        f"{k}: checkpoint {saved.get(k)!r} vs config {current.get(k)!r}" for k in diff
    )
    raise Pykaldi2Error(
        f"checkpoint {path} was trained with a different model config ({details}). "
        "Fix: use the config.yaml saved beside the checkpoint, or start a new exp dir"
    )


def average_checkpoints(
    paths: list[str | os.PathLike], key: str = "model"
) -> dict[str, torch.Tensor]:
    """Element-wise mean of ``state[key]`` over checkpoints (integer buffers taken from the last)."""
    if not paths:
        raise Pykaldi2Error("average_checkpoints: no checkpoints given")
    avg: dict[str, torch.Tensor] = {}
    for i, p in enumerate(paths):
        sd = load_checkpoint(p)[key]
        for k, v in sd.items():
            if i == 0:
                avg[k] = v.clone().double() if v.is_floating_point() else v.clone()
            elif v.is_floating_point():
                avg[k] += v.double()
            else:
                avg[k] = v.clone()
    ref = load_checkpoint(paths[-1])[key]
    return {
        k: (v / len(paths)).to(ref[k].dtype) if v.is_floating_point() else v for k, v in avg.items()
    }


class BestSnapshots:
    """The weights of the ``n`` epochs with the lowest validation loss, ESPnet's
    ``--keep_nbest_models`` (and its ``valid.loss.ave_<n>best`` model): ``<dir>/epoch-<E>.pt``
    ({"model", "epoch", "loss"}) and ``<dir>/best.json`` (their epochs and losses, best first).
    Each is written atomically and an evicted snapshot is deleted only after the index no
    longer names it, so a killed run resumes with a consistent list; an epoch validated again
    after a resume replaces its own entry. Ties keep the earlier epoch; a non-finite loss
    ranks last."""

    def __init__(self, directory: str | os.PathLike, n: int) -> None:
        if n < 1:
            raise Pykaldi2Error(f"BestSnapshots: n must be >= 1, got {n}")
        self.dir, self.n = Path(directory), int(n)
        self.index = self.dir / "best.json"
        self.entries: list[dict[str, Any]] = []
        if self.index.exists():
            try:
                entries = json.loads(self.index.read_text())["best"]
            except (ValueError, KeyError, TypeError) as e:
                raise Pykaldi2Error(
                    f"{self.index}: not a best-epochs index ({e}). Fix: delete {self.dir} "
                    "(its snapshots are then lost) or restore the file"
                ) from None
            # a snapshot deleted by hand is dropped from the list, not averaged as missing
            self.entries = [e for e in entries if self.path(e["epoch"]).exists()][: self.n]

    def path(self, epoch: int) -> Path:
        return self.dir / f"epoch-{int(epoch)}.pt"

    @staticmethod
    def _rank(entry: dict[str, Any]) -> tuple[float, int]:
        loss = float(entry["loss"])
        return (loss if math.isfinite(loss) else math.inf, int(entry["epoch"]))

    def update(self, epoch: int, loss: float, state: Any) -> bool:
        """Record epoch ``epoch``'s validation ``loss``; when it ranks among the ``n`` best,
        write ``state()`` (a callable: the weights are copied only when kept). True if kept."""
        others = [e for e in self.entries if int(e["epoch"]) != int(epoch)]
        entry = {"epoch": int(epoch), "loss": float(loss)}
        keep = sorted([*others, entry], key=self._rank)[: self.n]
        if entry not in keep:
            if len(others) != len(self.entries):  # this epoch was kept before a resume
                self._write_index(keep)
            return False
        save_checkpoint(self.path(epoch), {"model": state(), "epoch": int(epoch), "loss": loss})
        self._write_index(keep)
        return True

    def _write_index(self, keep: list[dict[str, Any]]) -> None:
        atomic_write_text(self.index, json.dumps({"best": keep}, indent=1) + "\n")
        kept = {int(e["epoch"]) for e in keep}
        for e in self.entries:
            if int(e["epoch"]) not in kept:
                self.path(e["epoch"]).unlink(missing_ok=True)
        self.entries = keep

    def average(self) -> dict[str, torch.Tensor]:
        """The mean of the kept snapshots' weights (:func:`average_checkpoints`)."""
        if not self.entries:
            raise Pykaldi2Error(f"{self.dir}: no epoch snapshots to average")
        return average_checkpoints([self.path(e["epoch"]) for e in self.entries])
